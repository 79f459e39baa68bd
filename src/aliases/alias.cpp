// alias.cpp — see alias.h.
#include "aliases/alias.h"

namespace mk::aliases {

const char* state_name(AliasState s) {
  switch (s) {
    case AliasState::Live: return "live";
    case AliasState::Expired: return "expired";
    case AliasState::UsedUp: return "used-up";
    case AliasState::Disabled: return "disabled";
  }
  return "?";
}

AliasState state_of(const Alias& a, int64_t now, uint32_t pending) {
  if (a.disabled) return AliasState::Disabled;
  if (a.valid_until && now >= *a.valid_until) return AliasState::Expired;
  if (a.max_usage && a.uses + pending >= *a.max_usage) return AliasState::UsedUp;
  return AliasState::Live;
}

}  // namespace mk::aliases
