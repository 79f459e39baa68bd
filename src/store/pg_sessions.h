// pg_sessions.h — the web view's sessions (webreader/sessions.h) in
// PostgreSQL ([store] url): a login on one gateway is good on every other
// (a load balancer may send each request elsewhere), and a logout ends it on
// all. Rows hold the cookie's SHA-256, never the cookie. The idle and
// absolute limits are checked in the one statement that renews a session;
// sessions past them are deleted as they are met and, every 256th login,
// all at once (so the table stays as big as the live sessions; there is no
// max_sessions bound here).
// Schema: versioned in mailkeep_schema, component "web_sessions".
// Threading: safe from any thread; every call blocks on the pool.
#pragma once
#include <memory>

#include "store/pg.h"
#include "webreader/sessions.h"

namespace mk::store {

// Migrates the schema. Throws db::Error.
std::unique_ptr<webreader::SessionStore> open_pg_sessions(std::shared_ptr<PgPool> pool, webreader::SessionLimits limits);

}  // namespace mk::store
