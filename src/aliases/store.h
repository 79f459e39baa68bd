// store.h — where aliases live, and where their uses are held while a
// message is on its way. An interface: SqliteAliasStore (sqlite_store.h) is
// the embedded default, one gateway's file; the PostgreSQL store
// (store/pg_alias_store.h) is shared by every gateway; tests/unit has an
// in-memory fake. tests/unit/aliases/store_suite_test.cpp runs the same
// cases against each.
// Failures of the database throw StoreError; callers answer TempFail (SMTP
// 451, HTTP 503), never a permanent error.
// Threading: implementations are safe to call from any thread; every call
// may block (callers run them on the blocking pool, never on an I/O loop).
#pragma once
#include <cstdint>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "aliases/alias.h"
#include "db/error.h"

namespace mk::aliases {

using StoreError = db::Error;

class AliasStore {
 public:
  virtual ~AliasStore() = default;
  // Stores a new alias. False if its id was ever issued before (ids are never reused).
  virtual bool insert(const Alias& a) = 0;
  virtual std::optional<Alias> find(const std::string& id) = 0;
  // Counts one use (a message the upstream accepted).
  virtual void add_use(const std::string& id) = 0;
  virtual bool disable(const std::string& id) = 0;
  // Newest first.
  virtual std::vector<Alias> list(size_t limit) = 0;
  // Removes aliases expired at `now`, used up, or disabled; their ids stay reserved.
  virtual size_t purge(int64_t now) = 0;

  // Holds (where an alias use is held across gateways). hold() at RCPT holds
  // one use of `id` under `token` until `expires` when, at `now`, the alias
  // is live with its stored uses plus the uses held under live tokens below
  // max_usage — one atomic step, so that racing RCPTs (on any gateway) never
  // hold more than max_usage allows. commit_hold() after the upstream's 250
  // turns the hold into a stored use (counted even if the hold expired
  // meanwhile); release_hold() gives it back. A hold nobody finishes (its
  // gateway was killed) counts until it expires; expire_holds() gives such
  // uses back.
  //
  // The defaults here hold in this process's memory: right for a store that
  // one process owns (the SQLite file, the fake), where a crash forgets the
  // holds with the process. A shared store overrides all four.
  struct Hold {
    std::optional<Alias> alias;  // as found; nullopt: no such alias
    bool held = false;
    uint32_t pending = 0;  // uses held (not yet stored) when it was decided, this one excluded
  };
  virtual Hold hold(const std::string& id, const std::string& token, int64_t now, int64_t expires);
  virtual void commit_hold(const std::string& id, const std::string& token);
  virtual void release_hold(const std::string& token);
  // Returns how many held uses were given back.
  virtual size_t expire_holds(int64_t now);

  // The alias-creation limit per client ([aliases] create_interval: one
  // creation per `interval` seconds per client key, policy::client_key), kept
  // with the aliases so that it holds across every gateway sharing the store.
  // creation_wait(): seconds until `key` may create again (nullopt: now).
  // take_creation(): takes the turn in one atomic step; false when it is not
  // `key`'s turn yet (another request, on any gateway, took it first).
  // give_back_creation(): undoes a take whose request was then refused.
  // The defaults keep the turns in this process's memory (the SQLite file,
  // the fake); a shared store overrides all three.
  virtual std::optional<int64_t> creation_wait(const std::string& key, int64_t now);
  virtual bool take_creation(const std::string& key, int64_t now, int64_t interval);
  virtual void give_back_creation(const std::string& key, int64_t now);

 private:
  std::mutex creations_mutex_;
  std::unordered_map<std::string, int64_t> next_creation_;  // client key → when it may create again
  size_t takes_since_sweep_ = 0;

  std::mutex holds_mutex_;  // makes find + count + hold one step
  struct Held {
    std::string id;
    int64_t expires;
  };
  std::unordered_map<std::string, Held> holds_;                   // by token
  std::unordered_map<std::string, std::vector<std::string>> by_alias_;  // alias id → its tokens
  void forget_hold(const std::string& token);  // under holds_mutex_
};

}  // namespace mk::aliases
