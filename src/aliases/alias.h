// alias.h — the temporary alias: `k3x9q7wdm2fa8c@alias.example` → a real
// address, valid until a time and/or for a number of messages.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace mk::aliases {

struct Alias {
  std::string id;      // lower-case, from the alias alphabet (alias_id.h)
  std::string target;  // RFC 5321 mailbox
  int64_t created = 0;                // unix seconds
  std::optional<int64_t> valid_until; // unix seconds; none = no time limit
  std::optional<uint32_t> max_usage;  // none = no message limit
  uint32_t uses = 0;                  // messages the upstream accepted
  std::string creator_ip;
  bool disabled = false;
  std::string token_hash;  // SHA-256 of the management token, hex
};

enum class AliasState { Live, Expired, UsedUp, Disabled };
const char* state_name(AliasState s);

// The state at `now`, counting `pending` reserved-but-unfinished uses as used.
AliasState state_of(const Alias& a, int64_t now, uint32_t pending = 0);

}  // namespace mk::aliases
