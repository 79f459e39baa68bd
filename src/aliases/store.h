// store.h — where aliases live. An interface, so that PostgreSQL can be
// added later without touching callers; SqliteAliasStore (sqlite_store.h) is
// the embedded default; tests/unit has an in-memory fake.
// Failures of the database throw StoreError; callers answer TempFail (SMTP
// 451, HTTP 503), never a permanent error.
// Threading: implementations are safe to call from any thread.
#pragma once
#include <optional>
#include <stdexcept>
#include <string>
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
};

}  // namespace mk::aliases
