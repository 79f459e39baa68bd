// migrate.h — `mailkeep store migrate`: copies a gateway's SQLite store into
// the shared PostgreSQL one: the aliases ([store] path), the spam verdict
// history ([spam] history), and the files every gateway shares (the spam
// model, the synced account list) when PostgreSQL has none yet. Every issued alias id (purged ones too: ids are
// never reused) and every alias with its use count, in batches of one
// statement each that skip rows already there, so a run that stopped half
// way is resumed by running it again, and a second full run copies nothing.
// At the end it checks that every source row is in PostgreSQL. Holds are not
// copied: the SQLite store keeps them in its gateway's memory, so stop that
// gateway first.
// Threading: blocking; one caller.
#pragma once
#include <cstddef>
#include <functional>
#include <string>

#include "store/pg.h"

namespace mk::store {

struct MigrateReport {
  size_t ids = 0, ids_copied = 0;          // alias_ids in the source; of them newly written
  size_t aliases = 0, aliases_copied = 0;  // aliases in the source; of them newly written
  size_t ids_present = 0, aliases_present = 0;  // source rows found in PostgreSQL afterwards
  bool verified() const { return ids_present == ids && aliases_present == aliases; }
};

// Throws db::Error (either database unreachable or damaged). `progress` hears
// one line per batch (may be empty).
MigrateReport migrate_sqlite_aliases(const std::string& sqlite_path, PgPool& pool,
                                     const std::function<void(const std::string&)>& progress);

// The spam history: verdicts and their features, in batches read by key (a
// history of millions of rows is never in memory at once), each row written
// unless its signature is there already; then the same check as above.
struct HistoryReport {
  size_t verdicts = 0, verdicts_copied = 0, verdicts_present = 0;
  size_t features = 0, features_copied = 0, features_present = 0;
  bool verified() const { return verdicts_present == verdicts && features_present == features; }
};
HistoryReport migrate_sqlite_history(const std::string& sqlite_path, PgPool& pool,
                                     const std::function<void(const std::string&)>& progress);

// A shared file (pg_shared_file.h) from this gateway's copy at `path`, unless
// PostgreSQL has one already (a second run, or another gateway published).
enum class FileCopy { Copied, AlreadyShared };
FileCopy migrate_shared_file(const std::string& name, const std::string& path, PgPool& pool);

}  // namespace mk::store
