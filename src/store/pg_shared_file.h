// pg_shared_file.h — shared files (core/shared_file.h) in PostgreSQL: one row
// per name holding the newest file's bytes and a version that every publish
// raises. A turn is a session advisory lock on a connection of its own
// (waited for at most 30 s); publishing writes the row and sends NOTIFY on
// the name's channel with the version, in one transaction, so that every
// gateway's listener (pg_listener.h) pulls it as soon as it is committed.
// Names in use: "spam_model" ([spam] model), "accounts" ([directory] cache),
// "passwd" ([users] passwd, which Dovecot reads too), and one per account
// "filters/<domain>/<localpart>" (<[index] path>/<domain>/<localpart>/filters.xml).
// Schema: versioned in mailkeep_schema, component "shared_files".
// Threading: safe from any thread; every call blocks on the pool.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/shared_file.h"
#include "store/pg.h"

namespace mk::store {

inline constexpr const char* kSpamModel = "spam_model";
inline constexpr const char* kAccounts = "accounts";
inline constexpr const char* kPasswd = "passwd";

// How a pulled version becomes the file at `path`; returns "" or the error.
// The default is core/fd_io.h replace_file (mode 0640, the directory's owner).
using FileWriter = std::function<std::string(const std::string& path, std::string_view bytes)>;

inline constexpr const char* kFiltersPrefix = "filters/";

// The NOTIFY channel of a shared file: "mailkeep_" + name, or for a name with
// a '/' (one of a family: filters/...) "mailkeep_" + the part before it. The
// notification's payload is the name.
std::string channel_of(const std::string& name);
// The names shared so far that start with `prefix`. Throws db::Error.
std::vector<std::string> shared_file_names(PgPool& pool, const std::string& prefix);

// Migrates the schema. Throws db::Error.
std::unique_ptr<SharedFile> open_pg_shared_file(std::shared_ptr<PgPool> pool, const std::string& name,
                                                FileWriter writer = nullptr);

}  // namespace mk::store
