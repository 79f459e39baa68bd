// labels.cpp — see labels.h.
#include "index/labels.h"

#include <array>
#include <stdexcept>

#include "db/sqlite.h"

namespace mk::index {

namespace {
constexpr std::array<const char*, 1> kMigrations = {
    "CREATE TABLE labels (base TEXT NOT NULL, digest TEXT NOT NULL, label TEXT NOT NULL,"
    " PRIMARY KEY (base, label));"
    "CREATE INDEX labels_digest ON labels (digest);",
};
}  // namespace

struct LabelStore::Impl {
  sqlite3* db = nullptr;
  ~Impl() {
    if (db) sqlite3_close(db);
  }
};

LabelStore::LabelStore(const std::string& index_dir) : impl_(std::make_unique<Impl>()) {
  try {
    impl_->db = db::open_database(index_dir + "/labels.db", kMigrations);
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("labels: ") + e.what());
  }
}

LabelStore::~LabelStore() = default;

std::vector<std::string> LabelStore::labels(const std::string& base, const std::string& digest) {
  std::vector<std::string> out;
  {
    db::Statement st(impl_->db, "SELECT label FROM labels WHERE base = ?1 ORDER BY label");
    st.bind(1, base);
    while (st.step() == SQLITE_ROW) out.push_back(st.text(0));
  }
  if (!out.empty() || digest.empty()) return out;
  db::Statement st(impl_->db,
                   "SELECT DISTINCT label FROM labels WHERE digest = ?1 AND base = "
                   "(SELECT base FROM labels WHERE digest = ?1 LIMIT 1) ORDER BY label");
  st.bind(1, digest);
  while (st.step() == SQLITE_ROW) out.push_back(st.text(0));
  return out;
}

void LabelStore::set(const std::string& base, const std::string& digest, const std::vector<std::string>& labels) {
  db::Transaction tx(impl_->db);
  {
    db::Statement del(impl_->db, "DELETE FROM labels WHERE base = ?1");
    del.bind(1, base);
    del.step();
  }
  db::Statement ins(impl_->db, "INSERT OR IGNORE INTO labels (base, digest, label) VALUES (?1, ?2, ?3)");
  for (auto& l : labels) {
    auto use = ins.use();
    ins.bind(1, base);
    ins.bind(2, digest);
    ins.bind(3, l);
    ins.step();
  }
  tx.commit();
}

bool LabelStore::empty() {
  db::Statement st(impl_->db, "SELECT 1 FROM labels LIMIT 1");
  return st.step() != SQLITE_ROW;
}

}  // namespace mk::index
