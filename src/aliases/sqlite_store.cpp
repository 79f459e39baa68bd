// sqlite_store.cpp — see sqlite_store.h.
#include "aliases/sqlite_store.h"

#include <mutex>

#include "db/sqlite.h"

namespace mk::aliases {
namespace {

using db::Statement;

// Each entry upgrades the schema by one version; never edit a shipped entry.
const char* const kMigrations[] = {
    // 1: aliases, and every id ever issued (so that none is reused after a purge).
    "CREATE TABLE alias_ids (id TEXT PRIMARY KEY) WITHOUT ROWID;"
    "CREATE TABLE aliases ("
    "  id TEXT PRIMARY KEY REFERENCES alias_ids(id),"
    "  target TEXT NOT NULL,"
    "  created INTEGER NOT NULL,"
    "  valid_until INTEGER,"
    "  max_usage INTEGER,"
    "  uses INTEGER NOT NULL DEFAULT 0,"
    "  creator_ip TEXT NOT NULL,"
    "  disabled INTEGER NOT NULL DEFAULT 0,"
    "  token_hash TEXT NOT NULL"
    ") WITHOUT ROWID;"
    "CREATE INDEX aliases_created ON aliases(created);",
};

class SqliteAliasStore final : public AliasStore {
 public:
  explicit SqliteAliasStore(const std::string& path) {
    db_ = db::open_database(path, kMigrations);
    try {
      prepare(path);
    } catch (...) {
      // A constructor that throws runs no destructor: close the handles here.
      finalize();
      sqlite3_close(reader_);
      sqlite3_close(db_);
      throw;
    }
  }

  void prepare(const std::string& path) {
    insert_id_ = std::make_unique<Statement>(db_, "INSERT OR IGNORE INTO alias_ids(id) VALUES (?)");
    insert_ = std::make_unique<Statement>(
        db_, "INSERT INTO aliases(id,target,created,valid_until,max_usage,uses,creator_ip,disabled,token_hash) "
             "VALUES (?,?,?,?,?,0,?,0,?)");
    // Lookups use a second connection: in WAL mode readers never wait for a
    // writer, so an RCPT is not held up while a creation (or the CLI) writes.
    reader_ = db::open_reader(path);
    find_ = std::make_unique<Statement>(
        reader_,
        "SELECT id,target,created,valid_until,max_usage,uses,creator_ip,disabled,token_hash FROM aliases WHERE id=?");
    add_use_ = std::make_unique<Statement>(db_, "UPDATE aliases SET uses = uses + 1 WHERE id=?");
    disable_ = std::make_unique<Statement>(db_, "UPDATE aliases SET disabled = 1 WHERE id=?");
    list_ = std::make_unique<Statement>(
        reader_, "SELECT id,target,created,valid_until,max_usage,uses,creator_ip,disabled,token_hash FROM aliases "
             "ORDER BY created DESC, id LIMIT ?");
    purge_ = std::make_unique<Statement>(
        db_, "DELETE FROM aliases WHERE disabled = 1 OR (valid_until IS NOT NULL AND valid_until <= ?) "
             "OR (max_usage IS NOT NULL AND uses >= max_usage)");
  }
  ~SqliteAliasStore() override {
    finalize();
    sqlite3_close(reader_);
    sqlite3_close(db_);
  }

  void finalize() {
    insert_id_.reset();
    insert_.reset();
    find_.reset();
    add_use_.reset();
    disable_.reset();
    list_.reset();
    purge_.reset();
  }

  bool insert(const Alias& a) override {
    std::lock_guard lock(mutex_);
    db::Transaction t(db_);
    auto u = insert_id_->use();
    insert_id_->bind(1, a.id);
    insert_id_->step();
    if (sqlite3_changes(db_) == 0) return false;  // issued before (rolled back)
    auto v = insert_->use();
    insert_->bind(1, a.id);
    insert_->bind(2, a.target);
    insert_->bind(3, a.created);
    a.valid_until ? insert_->bind(4, *a.valid_until) : insert_->bind_null(4);
    a.max_usage ? insert_->bind(5, int64_t(*a.max_usage)) : insert_->bind_null(5);
    insert_->bind(6, a.creator_ip);
    insert_->bind(7, a.token_hash);
    if (insert_->step() != SQLITE_DONE) throw StoreError("insert failed");
    t.commit();
    return true;
  }

  std::optional<Alias> find(const std::string& id) override {
    std::lock_guard lock(reader_mutex_);
    auto u = find_->use();
    find_->bind(1, id);
    if (find_->step() != SQLITE_ROW) return std::nullopt;
    return row(*find_);
  }

  void add_use(const std::string& id) override {
    std::lock_guard lock(mutex_);
    auto u = add_use_->use();
    add_use_->bind(1, id);
    add_use_->step();
  }

  bool disable(const std::string& id) override {
    std::lock_guard lock(mutex_);
    auto u = disable_->use();
    disable_->bind(1, id);
    disable_->step();
    return sqlite3_changes(db_) > 0;
  }

  std::vector<Alias> list(size_t limit) override {
    std::lock_guard lock(reader_mutex_);
    std::vector<Alias> out;
    auto u = list_->use();
    list_->bind(1, int64_t(limit));
    while (list_->step() == SQLITE_ROW) out.push_back(row(*list_));
    return out;
  }

  size_t purge(int64_t now) override {
    std::lock_guard lock(mutex_);
    auto u = purge_->use();
    purge_->bind(1, now);
    purge_->step();
    return size_t(sqlite3_changes(db_));
  }

 private:
  static Alias row(Statement& st) {
    auto* s = st.get();
    Alias a;
    a.id = st.text(0);
    a.target = st.text(1);
    a.created = sqlite3_column_int64(s, 2);
    if (sqlite3_column_type(s, 3) != SQLITE_NULL) a.valid_until = sqlite3_column_int64(s, 3);
    if (sqlite3_column_type(s, 4) != SQLITE_NULL) a.max_usage = uint32_t(sqlite3_column_int64(s, 4));
    a.uses = uint32_t(sqlite3_column_int64(s, 5));
    a.creator_ip = st.text(6);
    a.disabled = sqlite3_column_int64(s, 7) != 0;
    a.token_hash = st.text(8);
    return a;
  }

  sqlite3* db_ = nullptr;      // writes (and migrations)
  sqlite3* reader_ = nullptr;  // lookups
  std::mutex mutex_;           // guards db_ and its statements
  std::mutex reader_mutex_;    // guards reader_ and its statements
  std::unique_ptr<Statement> insert_id_, insert_, find_, add_use_, disable_, list_, purge_;
};

}  // namespace

std::unique_ptr<AliasStore> open_sqlite_store(const std::string& path) {
  return std::make_unique<SqliteAliasStore>(path);
}

}  // namespace mk::aliases
