// pg_alias_store.h — AliasStore on PostgreSQL ([store] url), shared by every
// gateway: an alias created on one is found on all, and a use is held,
// committed and released by one atomic statement each, against the alias's
// row (uses + pending < max_usage re-checked on the newest row version under
// its row lock, so racing gateways never hold more than max_usage). Each hold
// is also a row with its expiry, so that the uses a killed gateway held come
// back (expire_holds; hold() runs it by itself before calling an alias used up).
// Schema: versioned in mailkeep_schema, component "aliases" (PgPool::migrate).
// Threading: safe from any thread; every call blocks on the pool.
#pragma once
#include <memory>
#include <string>

#include "aliases/store.h"
#include "store/pg.h"

namespace mk::store {

// Migrates the schema. Throws db::Error (the server unreachable, a newer schema).
std::unique_ptr<aliases::AliasStore> open_pg_alias_store(std::shared_ptr<PgPool> pool);

}  // namespace mk::store
