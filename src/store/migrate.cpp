// migrate.cpp — see migrate.h.
#include "store/migrate.h"

#include <sqlite3.h>

#include <memory>

#include "db/sqlite.h"
#include "store/pg_alias_store.h"

namespace mk::store {
namespace {

constexpr size_t kBatch = 1000;

struct Closer {
  void operator()(sqlite3* db) const { sqlite3_close(db); }
};

std::optional<std::string> column(sqlite3_stmt* s, int i) {
  if (sqlite3_column_type(s, i) == SQLITE_NULL) return std::nullopt;
  auto* t = reinterpret_cast<const char*>(sqlite3_column_text(s, i));
  return std::string(t ? t : "", size_t(sqlite3_column_bytes(s, i)));
}

// Every row of `sql` from SQLite, `width` text columns each.
std::vector<std::vector<PgParam>> read_all(sqlite3* db, const char* sql, int width) {
  db::Statement st(db, sql);
  auto u = st.use();
  std::vector<std::vector<PgParam>> rows;
  while (st.step() == SQLITE_ROW) {
    std::vector<PgParam> row;
    for (int i = 0; i < width; ++i) row.push_back(column(st.get(), i));
    rows.push_back(std::move(row));
  }
  return rows;
}

// Column `c` of rows [from, to) as one array parameter.
PgParam array_of(const std::vector<std::vector<PgParam>>& rows, size_t from, size_t to, size_t c) {
  std::vector<PgParam> v;
  for (size_t i = from; i < to; ++i) v.push_back(rows[i][c]);
  return array_literal(v);
}

}  // namespace

MigrateReport migrate_sqlite_aliases(const std::string& sqlite_path, PgPool& pool,
                                     const std::function<void(const std::string&)>& progress) {
  std::unique_ptr<sqlite3, Closer> src(db::open_reader(sqlite_path));
  auto ids = read_all(src.get(), "SELECT id FROM alias_ids ORDER BY id", 1);
  // disabled as PostgreSQL's boolean text: 't' / 'f'.
  auto aliases = read_all(src.get(),
                          "SELECT id, target, created, valid_until, max_usage, uses, creator_ip, "
                          "CASE WHEN disabled THEN 't' ELSE 'f' END, token_hash FROM aliases ORDER BY id",
                          9);
  open_pg_alias_store(std::shared_ptr<PgPool>(&pool, [](PgPool*) {}));  // creates or upgrades the schema
  MigrateReport r;
  r.ids = ids.size();
  r.aliases = aliases.size();
  auto say = [&](const std::string& line) {
    if (progress) progress(line);
  };
  for (size_t from = 0; from < ids.size(); from += kBatch) {
    size_t to = std::min(ids.size(), from + kBatch);
    r.ids_copied += pool.exec("INSERT INTO alias_ids(id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
                              {array_of(ids, from, to, 0)})
                        .affected();
    say("alias ids " + std::to_string(to) + " of " + std::to_string(ids.size()));
  }
  for (size_t from = 0; from < aliases.size(); from += kBatch) {
    size_t to = std::min(aliases.size(), from + kBatch);
    std::vector<PgParam> params;
    for (size_t c = 0; c < 9; ++c) params.push_back(array_of(aliases, from, to, c));
    r.aliases_copied +=
        pool.exec("INSERT INTO aliases(id, target, created, valid_until, max_usage, uses, creator_ip, disabled, token_hash) "
                  "SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], "
                  "$7::text[], $8::boolean[], $9::text[]) ON CONFLICT (id) DO NOTHING",
                  params)
            .affected();
    say("aliases " + std::to_string(to) + " of " + std::to_string(aliases.size()));
  }
  // The check: every source row is there now.
  for (size_t from = 0; from < ids.size(); from += kBatch) {
    size_t to = std::min(ids.size(), from + kBatch);
    r.ids_present += size_t(pool.exec("SELECT count(*) FROM alias_ids WHERE id = ANY($1::text[])",
                                      {array_of(ids, from, to, 0)})
                                .integer(0, 0));
  }
  for (size_t from = 0; from < aliases.size(); from += kBatch) {
    size_t to = std::min(aliases.size(), from + kBatch);
    r.aliases_present += size_t(pool.exec("SELECT count(*) FROM aliases WHERE id = ANY($1::text[])",
                                          {array_of(aliases, from, to, 0)})
                                    .integer(0, 0));
  }
  return r;
}

}  // namespace mk::store
