// store.cpp — see store.h: the in-process holds of a store one process owns.
#include "aliases/store.h"

#include <algorithm>

namespace mk::aliases {

AliasStore::Hold AliasStore::hold(const std::string& id, const std::string& token, int64_t now, int64_t expires) {
  std::lock_guard lock(holds_mutex_);
  Hold h;
  h.alias = find(id);
  if (!h.alias) return h;
  auto& tokens = by_alias_[id];
  std::erase_if(tokens, [&](const std::string& t) {
    auto it = holds_.find(t);
    if (it == holds_.end()) return true;  // finished
    if (it->second.expires > now) return false;
    holds_.erase(it);  // expired: its use is given back
    return true;
  });
  h.pending = uint32_t(tokens.size());
  if (state_of(*h.alias, now, h.pending) == AliasState::Live) {
    holds_[token] = {id, expires};
    tokens.push_back(token);
    h.held = true;
  }
  if (tokens.empty()) by_alias_.erase(id);
  return h;
}

void AliasStore::forget_hold(const std::string& token) {
  auto it = holds_.find(token);
  if (it == holds_.end()) return;
  auto a = by_alias_.find(it->second.id);
  if (a != by_alias_.end()) {
    std::erase(a->second, token);
    if (a->second.empty()) by_alias_.erase(a);
  }
  holds_.erase(it);
}

void AliasStore::commit_hold(const std::string& id, const std::string& token) {
  // Stored before the hold is dropped, so there is never a moment of
  // over-delivery (at worst a racing hold sees the use twice and refuses).
  // The write happens outside the lock: a slow write must not stall RCPTs.
  std::exception_ptr failure;
  try {
    add_use(id);
  } catch (...) {
    failure = std::current_exception();  // the hold is dropped all the same
  }
  {
    std::lock_guard lock(holds_mutex_);
    forget_hold(token);
  }
  if (failure) std::rethrow_exception(failure);
}

void AliasStore::release_hold(const std::string& token) {
  std::lock_guard lock(holds_mutex_);
  forget_hold(token);
}

size_t AliasStore::expire_holds(int64_t now) {
  std::lock_guard lock(holds_mutex_);
  std::vector<std::string> gone;
  for (auto& [token, h] : holds_)
    if (h.expires <= now) gone.push_back(token);
  for (auto& t : gone) forget_hold(t);
  return gone.size();
}

std::optional<int64_t> AliasStore::creation_wait(const std::string& key, int64_t now) {
  std::lock_guard lock(creations_mutex_);
  auto it = next_creation_.find(key);
  if (it == next_creation_.end() || it->second <= now) return std::nullopt;
  return it->second - now;
}

bool AliasStore::take_creation(const std::string& key, int64_t now, int64_t interval) {
  std::lock_guard lock(creations_mutex_);
  if (++takes_since_sweep_ >= 1024) {  // bounded memory: turns that passed are forgotten
    takes_since_sweep_ = 0;
    std::erase_if(next_creation_, [now](const auto& kv) { return kv.second <= now; });
  }
  auto& next = next_creation_[key];
  if (next > now) return false;
  next = now + interval;
  return true;
}

void AliasStore::give_back_creation(const std::string& key, int64_t now) {
  std::lock_guard lock(creations_mutex_);
  if (auto it = next_creation_.find(key); it != next_creation_.end() && it->second > now) next_creation_.erase(it);
}

}  // namespace mk::aliases
