// sqlite.cpp — see sqlite.h.
#include "db/sqlite.h"

#include <filesystem>

namespace mk::db {

Statement::Statement(sqlite3* db, const char* sql) : db_(db) {
  if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt_, nullptr) != SQLITE_OK)
    throw Error(std::string("prepare: ") + sqlite3_errmsg(db));
}

Statement::~Statement() { sqlite3_finalize(stmt_); }

int Statement::step() {
  int rc = sqlite3_step(stmt_);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE && rc != SQLITE_CONSTRAINT)
    throw Error(std::string("sqlite: ") + sqlite3_errmsg(db_));
  return rc;
}

std::string Statement::text(int column) {
  auto p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, column));
  return std::string(p ? p : "");
}

std::string Statement::blob(int column) {
  auto p = static_cast<const char*>(sqlite3_column_blob(stmt_, column));
  return p ? std::string(p, size_t(sqlite3_column_bytes(stmt_, column))) : std::string();
}

void exec(sqlite3* db, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errmsg(db);
    sqlite3_free(err);
    throw Error(std::string(sql).substr(0, 40) + ": " + msg);
  }
}

void exec_noexcept(sqlite3* db, const char* sql) noexcept { sqlite3_exec(db, sql, nullptr, nullptr, nullptr); }

namespace {

int user_version(sqlite3* db) {
  sqlite3_stmt* s = nullptr;
  sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, nullptr);
  int version = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int(s, 0) : 0;
  sqlite3_finalize(s);
  return version;
}

// One migration per write transaction; the version is read inside it, so
// that a server and a CLI opening a new database at once migrate it once.
void migrate(sqlite3* db, std::span<const char* const> migrations) {
  const int latest = int(migrations.size());
  while (true) {
    Transaction t(db);
    int version = user_version(db);
    if (version > latest)
      throw Error("database schema version " + std::to_string(version) + " is newer than this mailkeep (" +
                  std::to_string(latest) + ")");
    if (version == latest) {
      t.commit();
      return;
    }
    exec(db, migrations[size_t(version)]);
    exec(db, ("PRAGMA user_version = " + std::to_string(version + 1)).c_str());
    t.commit();
  }
}

}  // namespace

sqlite3* open_database(const std::string& path, std::span<const char* const> migrations) {
  auto parent = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK) {
    std::string err = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    throw Error("cannot open " + path + ": " + err);
  }
  try {
    sqlite3_busy_timeout(db, 5000);  // another process (the CLI) may hold the write lock briefly
    exec(db, "PRAGMA journal_mode = WAL");
    exec(db, "PRAGMA synchronous = NORMAL");
    exec(db, "PRAGMA foreign_keys = ON");
    migrate(db, migrations);
  } catch (const Error& e) {
    sqlite3_close(db);
    throw Error(path + ": " + e.what());
  }
  return db;
}

sqlite3* open_reader(const std::string& path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_FULLMUTEX, nullptr) != SQLITE_OK) {
    std::string err = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    throw Error("cannot open " + path + " for reading: " + err);
  }
  sqlite3_busy_timeout(db, 5000);
  return db;
}

}  // namespace mk::db
