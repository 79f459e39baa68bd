// migrate.cpp — see migrate.h.
#include "store/migrate.h"

#include <sqlite3.h>

#include <cstdio>
#include <memory>

#include "db/sqlite.h"
#include "store/pg_alias_store.h"
#include "store/pg_history.h"
#include "store/pg_shared_file.h"

namespace mk::store {
namespace {

constexpr size_t kBatch = 1000;

struct Closer {
  void operator()(sqlite3* db) const { sqlite3_close(db); }
};

std::string fmt_double(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

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

namespace {

// Rows of verdicts after `after` (by signature), at most kBatch, with their features.
struct VerdictRow {
  std::vector<PgParam> columns;  // signature, time, client, sender, recipients, subject, score, call, action, reclassified
  std::optional<std::string> features;  // bytea text
};

std::vector<VerdictRow> read_verdicts(sqlite3* db, const std::string& after) {
  db::Statement st(db,
                   "SELECT v.signature, v.time, v.client, v.sender, v.recipients, v.subject, v.score, "
                   "CASE WHEN v.spam THEN 2 WHEN v.unsure THEN 1 ELSE 0 END, v.action, "
                   "CASE WHEN v.reclassified IS NULL THEN NULL WHEN v.reclassified THEN 't' ELSE 'f' END, "
                   "f.data FROM verdicts v LEFT JOIN features f USING (signature) "
                   "WHERE v.signature > ? ORDER BY v.signature LIMIT ?");
  auto u = st.use();
  st.bind(1, after);
  st.bind(2, int64_t(kBatch));
  std::vector<VerdictRow> rows;
  while (st.step() == SQLITE_ROW) {
    VerdictRow r;
    for (int i = 0; i < 10; ++i) {
      auto v = column(st.get(), i);
      if (v && (i == 0 || i == 2 || i == 3 || i == 4 || i == 5 || i == 8)) v = pg_text(*v);
      if (i == 6 && v) v = fmt_double(sqlite3_column_double(st.get(), 6));
      r.columns.push_back(std::move(v));
    }
    if (sqlite3_column_type(st.get(), 10) != SQLITE_NULL)
      r.features = bytea_text(std::string_view(static_cast<const char*>(sqlite3_column_blob(st.get(), 10)),
                                               size_t(sqlite3_column_bytes(st.get(), 10))));
    rows.push_back(std::move(r));
  }
  return rows;
}

}  // namespace

HistoryReport migrate_sqlite_history(const std::string& sqlite_path, PgPool& pool,
                                     const std::function<void(const std::string&)>& progress) {
  std::unique_ptr<sqlite3, Closer> src(db::open_reader(sqlite_path));
  open_pg_history(std::shared_ptr<PgPool>(&pool, [](PgPool*) {}));  // creates or upgrades the schema
  HistoryReport r;
  std::string after;
  for (;;) {
    auto rows = read_verdicts(src.get(), after);
    if (rows.empty()) break;
    after = *rows.back().columns[0];
    std::vector<PgParam> params;
    for (size_t c = 0; c < 10; ++c) {
      std::vector<PgParam> column;
      for (auto& row : rows) column.push_back(row.columns[c]);
      params.push_back(array_literal(column));
    }
    r.verdicts += rows.size();
    r.verdicts_copied +=
        pool.exec("INSERT INTO spam_verdicts(signature, time, client, sender, recipients, subject, score, call, action, "
                  "reclassified) SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], "
                  "$6::text[], $7::float8[], $8::smallint[], $9::text[], $10::boolean[]) "
                  "ON CONFLICT (signature) DO NOTHING",
                  params)
            .affected();
    std::vector<PgParam> sigs, times, data;
    for (auto& row : rows)
      if (row.features) {
        sigs.push_back(row.columns[0]);
        times.push_back(row.columns[1]);
        data.push_back(row.features);
      }
    r.features += sigs.size();
    if (!sigs.empty())
      r.features_copied += pool.exec("INSERT INTO spam_features(signature, time, data) SELECT * FROM "
                                     "unnest($1::text[], $2::bigint[], $3::bytea[]) ON CONFLICT (signature) DO NOTHING",
                                     {array_literal(sigs), array_literal(times), array_literal(data)})
                               .affected();
    std::vector<PgParam> all;
    for (auto& row : rows) all.push_back(row.columns[0]);
    r.verdicts_present += size_t(
        pool.exec("SELECT count(*) FROM spam_verdicts WHERE signature = ANY($1::text[])", {array_literal(all)}).integer(0, 0));
    if (!sigs.empty())
      r.features_present += size_t(pool.exec("SELECT count(*) FROM spam_features WHERE signature = ANY($1::text[])",
                                             {array_literal(sigs)})
                                       .integer(0, 0));
    if (progress) progress("spam verdicts " + std::to_string(r.verdicts));
  }
  return r;
}

FileCopy migrate_shared_file(const std::string& name, const std::string& path, PgPool& pool) {
  auto share = open_pg_shared_file(std::shared_ptr<PgPool>(&pool, [](PgPool*) {}), name);  // creates the schema
  if (pool.exec("SELECT 1 FROM shared_files WHERE name = $1", {name}).rows() > 0) return FileCopy::AlreadyShared;
  auto turn = share->begin(path);  // nothing to pull: none is shared
  if (pool.exec("SELECT 1 FROM shared_files WHERE name = $1", {name}).rows() > 0) return FileCopy::AlreadyShared;
  turn->publish();
  return FileCopy::Copied;
}

}  // namespace mk::store
