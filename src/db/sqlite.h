// sqlite.h — what every SQLite-backed store here shares: opening a file in
// WAL mode with a busy timeout, schema migrations by PRAGMA user_version, and
// a prepared-statement wrapper. Included only by the stores' .cpp files.
//
// WAL: readers never wait for the writer, and a server and a CLI command may
// use one file at once. synchronous = NORMAL: a commit survives a crash of
// the process; after a power failure the last commits may be lost — these
// databases hold counters and history, never a message.
// Threading: a connection is used under its owner's mutex.
#pragma once
#include <sqlite3.h>

#include <span>
#include <string>

#include "db/error.h"

namespace mk::db {

class Statement {
 public:
  Statement(sqlite3* db, const char* sql);
  ~Statement();
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  sqlite3_stmt* get() { return stmt_; }
  // Resets and clears bindings when the caller is done with a use.
  struct Use {
    sqlite3_stmt* s;
    ~Use() {
      sqlite3_reset(s);
      sqlite3_clear_bindings(s);
    }
  };
  Use use() { return Use{stmt_}; }
  void bind(int i, const std::string& v) { sqlite3_bind_text(stmt_, i, v.data(), int(v.size()), SQLITE_TRANSIENT); }
  void bind(int i, int64_t v) { sqlite3_bind_int64(stmt_, i, v); }
  void bind(int i, double v) { sqlite3_bind_double(stmt_, i, v); }
  void bind_blob(int i, const std::string& v) { sqlite3_bind_blob(stmt_, i, v.data(), int(v.size()), SQLITE_TRANSIENT); }
  void bind_null(int i) { sqlite3_bind_null(stmt_, i); }
  // SQLITE_ROW, SQLITE_DONE or SQLITE_CONSTRAINT; throws Error on anything else.
  int step();
  std::string text(int column);
  std::string blob(int column);

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
};

// Opens `path` read-write (creating it and its directory), sets WAL, NORMAL,
// a 5 s busy timeout and foreign keys, and applies the migrations it lacks:
// entry i upgrades schema version i to i+1 (never edit a shipped entry).
// Throws Error naming the file.
sqlite3* open_database(const std::string& path, std::span<const char* const> migrations);
// A second, read-only connection for lookups that must not wait for writes.
sqlite3* open_reader(const std::string& path);
void exec(sqlite3* db, const char* sql);                  // throws Error
void exec_noexcept(sqlite3* db, const char* sql) noexcept;  // for ROLLBACK in error paths

// A write transaction (BEGIN IMMEDIATE): committed by commit(), rolled back
// when left any other way (an exception, an early return).
class Transaction {
 public:
  explicit Transaction(sqlite3* db) : db_(db) { exec(db, "BEGIN IMMEDIATE"); }
  ~Transaction() {
    if (open_) exec_noexcept(db_, "ROLLBACK");
  }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  void commit() {
    exec(db_, "COMMIT");
    open_ = false;
  }

 private:
  sqlite3* db_;
  bool open_ = true;
};

}  // namespace mk::db
