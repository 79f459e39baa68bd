// pg_shared_file.h — shared files (core/shared_file.h) in PostgreSQL: one row
// per name holding the newest file's bytes and a version that every publish
// raises. A turn is a session advisory lock on a connection of its own
// (waited for at most 30 s); publishing writes the row and sends NOTIFY on
// the name's channel with the version, in one transaction, so that every
// gateway's listener (pg_listener.h) pulls it as soon as it is committed.
// Names in use: "spam_model" ([spam] model), "accounts" ([directory] cache),
// "passwd" ([users] passwd, which Dovecot reads too).
// Schema: versioned in mailkeep_schema, component "shared_files".
// Threading: safe from any thread; every call blocks on the pool.
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "core/shared_file.h"
#include "store/pg.h"

namespace mk::store {

inline constexpr const char* kSpamModel = "spam_model";
inline constexpr const char* kAccounts = "accounts";
inline constexpr const char* kPasswd = "passwd";

// How a pulled version becomes the file at `path`; returns "" or the error.
// The default is core/fd_io.h replace_file (mode 0640, the directory's owner).
using FileWriter = std::function<std::string(const std::string& path, std::string_view bytes)>;

// The NOTIFY channel of a shared file: "mailkeep_" + name.
std::string channel_of(const std::string& name);

// Migrates the schema. Throws db::Error.
std::unique_ptr<SharedFile> open_pg_shared_file(std::shared_ptr<PgPool> pool, const std::string& name,
                                                FileWriter writer = nullptr);

}  // namespace mk::store
