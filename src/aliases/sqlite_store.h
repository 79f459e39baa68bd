// sqlite_store.h — AliasStore on an SQLite file in WAL mode, the embedded default.
// The schema is versioned with PRAGMA user_version and migrated on open.
#pragma once
#include <memory>
#include <string>

#include "aliases/store.h"

namespace mk::aliases {

// Opens (creating and migrating as needed) the database at `path`. Throws StoreError.
std::unique_ptr<AliasStore> open_sqlite_store(const std::string& path);

}  // namespace mk::aliases
