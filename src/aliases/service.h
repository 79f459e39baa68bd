// service.h — the alias service: creation with validation and caps, and the
// SMTP side's reserve → commit/release protocol that counts uses.
//
// Counting (where an alias is counted): reserve() at RCPT holds one use in
// the store (AliasStore::hold: "uses + held < max_usage" and the hold are one
// atomic step there, so sessions racing for the last use never over-deliver,
// on one gateway or several sharing a store); commit_use() after the
// upstream accepted the message turns it into a stored use; release() on
// RSET, rejection or disconnect gives it back. A hold expires after
// [aliases] hold_seconds, so one a killed gateway held comes back
// (expire_holds(), run with the purge). The service remembers which holds
// this process has, per alias, since callers name the alias, not the hold.
// A message is only counted once its upstream said 250.
// Threading: all methods are safe from any thread; store calls block (run
// them on the blocking pool).
#pragma once
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "aliases/alias.h"
#include "aliases/store.h"

namespace mk::aliases {

struct AliasPolicy {
  std::vector<std::string> domains;  // lower-cased; the first is used in addresses
  uint32_t default_days = 7;
  uint32_t max_days = 60;
  uint32_t max_usage = 100;
  uint32_t hold_seconds = 3600;  // a held use not finished by then is given back
};

struct CreateRequest {
  std::string target;
  std::optional<int64_t> days;       // none: default_days
  std::optional<int64_t> max_usage;  // none: no message limit
  std::string creator_ip;
};

struct CreateResult {
  std::optional<Alias> alias;  // set on success
  std::string token;           // the management token, shown once
  std::string error;           // why the request is invalid (HTTP 400 invalid-data)
};

enum class Reservation { Reserved, Unknown, Expired, UsedUp, Disabled };

struct ReserveResult {
  Reservation status = Reservation::Unknown;
  std::string id;
  std::string target;
};

class AliasService {
 public:
  using Clock = std::function<int64_t()>;  // unix seconds; injected for tests
  AliasService(AliasStore& store, AliasPolicy policy, Clock clock);

  // Validates and stores a new alias. Throws StoreError on database failure.
  CreateResult create(const CreateRequest& request);
  std::optional<Alias> find(std::string_view id);
  AliasState state(const Alias& a);
  // "id@first-alias-domain".
  std::string address_of(const Alias& a) const;
  bool is_alias_domain(std::string_view domain_lower) const;

  // RCPT: holds one use of the alias named by `local_part` if it is live.
  ReserveResult reserve(std::string_view local_part);
  // The upstream accepted the message: THE place an alias use is counted.
  void commit_use(const std::string& id);
  // The transaction ended without delivery: the held use is given back.
  // Never throws and never waits for the store when a background runner is
  // set (the SMTP side calls it from I/O threads, also from destructors): a
  // failure is logged, and the hold then lapses after hold_seconds.
  void release(const std::string& id) noexcept;
  // Where release() sends its store call: main posts it onto the blocking
  // pool; unset (tests, the CLI), release() calls the store itself.
  void set_background(std::function<void(std::function<void()>)> post) { background_ = std::move(post); }

  bool disable(const std::string& id) { return store_.disable(id); }
  std::vector<Alias> list(size_t limit) { return store_.list(limit); }
  size_t purge() { return store_.purge(clock_()); }
  // Gives back held uses whose holds expired (a gateway was killed holding them).
  size_t expire_holds();
  int64_t now() const { return clock_(); }
  const AliasPolicy& policy() const { return policy_; }
  // The creation limit per client key (AliasStore::creation_wait and the
  // rest), on every gateway sharing the store. Throw StoreError.
  std::optional<int64_t> creation_wait(const std::string& key) { return store_.creation_wait(key, clock_()); }
  bool take_creation(const std::string& key, int64_t interval) { return store_.take_creation(key, clock_(), interval); }
  void give_back_creation(const std::string& key) { store_.give_back_creation(key, clock_()); }

 private:
  std::string validate_target(const std::string& target) const;

  AliasStore& store_;
  AliasPolicy policy_;
  Clock clock_;
  std::optional<std::string> take_token(const std::string& id);
  std::function<void(std::function<void()>)> background_;
  std::mutex mutex_;  // guards held_
  std::unordered_map<std::string, std::vector<std::string>> held_;  // alias id → this process's hold tokens
};

}  // namespace mk::aliases
