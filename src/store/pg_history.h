// pg_history.h — the spam verdict history (spam/history.h) on PostgreSQL
// ([store] url), shared by every gateway: a verdict one gateway recorded is
// found, reclassified and counted on any other. A batch of verdicts (the
// buffered history's round) is one statement, its rows passed as arrays.
// Text PostgreSQL cannot hold (NUL, bytes that are not UTF-8: a raw 8-bit
// Subject) is stored with U+FFFD in their place; SQLite keeps the bytes.
// Schema: versioned in mailkeep_schema, component "spam_history".
// Threading: safe from any thread; every call blocks on the pool.
#pragma once
#include <memory>

#include "spam/history.h"
#include "store/pg.h"

namespace mk::store {

// Migrates the schema. Throws db::Error (the server unreachable, a newer schema).
std::unique_ptr<spam::History> open_pg_history(std::shared_ptr<PgPool> pool);

}  // namespace mk::store
