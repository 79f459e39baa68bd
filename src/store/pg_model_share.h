// pg_model_share.h — the shared spam model (spam/model_share.h) in
// PostgreSQL: one row holding the newest model file's bytes and a version
// that every publish raises. A turn is a session advisory lock on a
// connection of its own (waited for at most 30 s); publishing writes the row
// and sends NOTIFY mailkeep_spam_model with the version, in one transaction,
// so that every gateway's listener (pg_listener.h) pulls it within a second.
// Schema: versioned in mailkeep_schema, component "spam_model".
// Threading: safe from any thread; every call blocks on the pool.
#pragma once
#include <memory>

#include "spam/model_share.h"
#include "store/pg.h"

namespace mk::store {

inline constexpr const char* kSpamModelChannel = "mailkeep_spam_model";

// Migrates the schema. Throws db::Error.
std::unique_ptr<spam::ModelShare> open_pg_model_share(std::shared_ptr<PgPool> pool);

}  // namespace mk::store
