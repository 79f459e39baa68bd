// service.cpp — see service.h.
#include "aliases/service.h"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "aliases/alias_id.h"
#include "core/strings.h"
#include "smtp/command.h"

namespace mk::aliases {

AliasService::AliasService(AliasStore& store, AliasPolicy policy, Clock clock)
    : store_(store), policy_(std::move(policy)), clock_(std::move(clock)) {}

bool AliasService::is_alias_domain(std::string_view d) const {
  if (!d.empty() && d.back() == '.') d.remove_suffix(1);
  return std::find(policy_.domains.begin(), policy_.domains.end(), d) != policy_.domains.end();
}

std::string AliasService::address_of(const Alias& a) const {
  return a.id + "@" + (policy_.domains.empty() ? std::string("alias.localhost") : policy_.domains.front());
}

std::string AliasService::validate_target(const std::string& target) const {
  if (target.empty()) return "target is missing";
  if (target.size() > 254) return "target is too long";
  auto path = smtp::parse_path_argument("TO:<" + target + ">", "TO", false);
  if (!path.ok() || !path.params.empty() || target.find_first_of("<> ") != std::string::npos)
    return "target is not a valid RFC 5321 address" + (path.ok() ? std::string() : ": " + path.error);
  if (path.mailbox.domain.front() == '[') return "target must name a domain, not an address literal";
  if (is_alias_domain(path.mailbox.domain_lower)) return "target must not be an alias of ours";
  return "";
}

CreateResult AliasService::create(const CreateRequest& req) {
  CreateResult r;
  if (auto err = validate_target(req.target); !err.empty()) {
    r.error = err;
    return r;
  }
  int64_t days = req.days.value_or(policy_.default_days);
  if (days < 1 || days > policy_.max_days) {
    r.error = "days must be between 1 and " + std::to_string(policy_.max_days);
    return r;
  }
  if (req.max_usage && (*req.max_usage < 1 || *req.max_usage > policy_.max_usage)) {
    r.error = "max_usage must be between 1 and " + std::to_string(policy_.max_usage);
    return r;
  }
  Alias a;
  a.target = req.target;
  a.created = clock_();
  a.valid_until = a.created + days * 86400;
  if (req.max_usage) a.max_usage = uint32_t(*req.max_usage);
  a.creator_ip = req.creator_ip;
  r.token = generate_token();
  a.token_hash = hash_token(r.token);
  for (int attempt = 0; attempt < 10; ++attempt) {
    a.id = generate_alias_id();
    if (store_.insert(a)) {
      r.alias = a;
      return r;
    }
  }
  throw StoreError("could not find an unused alias id");  // 10 collisions at 69 bits: the CSPRNG is broken
}

std::optional<Alias> AliasService::find(std::string_view id) {
  auto normal = normalise_alias_id(id);
  if (!normal) return std::nullopt;
  return store_.find(*normal);
}

AliasState AliasService::state(const Alias& a) { return state_of(a, clock_()); }

ReserveResult AliasService::reserve(std::string_view local_part) {
  ReserveResult r;
  auto id = normalise_alias_id(local_part);
  if (!id) return r;  // cannot be one of ours: Unknown
  const int64_t now = clock_();
  std::string token = generate_token();
  auto h = store_.hold(*id, token, now, now + policy_.hold_seconds);
  if (!h.alias) return r;
  r.id = h.alias->id;
  r.target = h.alias->target;
  if (h.held) {
    std::lock_guard lock(mutex_);
    held_[r.id].push_back(std::move(token));
    r.status = Reservation::Reserved;
    return r;
  }
  switch (state_of(*h.alias, now, h.pending)) {
    case AliasState::Disabled: r.status = Reservation::Disabled; break;
    case AliasState::Expired: r.status = Reservation::Expired; break;
    case AliasState::UsedUp:
    case AliasState::Live: r.status = Reservation::UsedUp; break;  // Live: the store saw it used up
  }
  return r;
}

std::optional<std::string> AliasService::take_token(const std::string& id) {
  std::lock_guard lock(mutex_);
  auto it = held_.find(id);
  if (it == held_.end() || it->second.empty()) return std::nullopt;
  std::string token = std::move(it->second.back());
  it->second.pop_back();
  if (it->second.empty()) held_.erase(it);
  return token;
}

void AliasService::commit_use(const std::string& id) {
  // Holds of one alias by this process are interchangeable: any of them will do.
  if (auto token = take_token(id)) store_.commit_hold(id, *token);
  else store_.add_use(id);  // not held here (cannot happen): counted all the same
}

void AliasService::release(const std::string& id) noexcept {
  std::optional<std::string> token;
  try {
    token = take_token(id);
    if (!token) return;
    auto give_back = [this, id, token = *token] {
      try {
        store_.release_hold(token);
      } catch (const std::exception& e) {
        spdlog::warn("alias {}: a held use could not be given back now ({}); it lapses after {} s", id, e.what(),
                     policy_.hold_seconds);
      }
    };
    if (background_) background_(std::move(give_back));
    else give_back();
  } catch (const std::exception& e) {  // out of memory
    spdlog::warn("alias {}: releasing a held use failed: {}", id, e.what());
  }
}

size_t AliasService::expire_holds() { return store_.expire_holds(clock_()); }

}  // namespace mk::aliases
