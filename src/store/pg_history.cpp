// pg_history.cpp — see pg_history.h.
#include "store/pg_history.h"

#include <fmt/format.h>

#include <map>

namespace mk::store {
namespace {

using spam::Call;
using spam::Verdict;

// Each entry upgrades the schema by one version; never edit a shipped entry.
const char* const kMigrations[] = {
    // 1: verdicts (seq orders those of one second), and the features of recent ones.
    "CREATE TABLE spam_verdicts ("
    "  signature TEXT PRIMARY KEY,"
    "  seq BIGSERIAL NOT NULL,"
    "  time BIGINT NOT NULL,"
    "  client TEXT NOT NULL,"
    "  sender TEXT NOT NULL,"
    "  recipients TEXT NOT NULL,"
    "  subject TEXT NOT NULL,"
    "  score DOUBLE PRECISION NOT NULL,"
    "  call SMALLINT NOT NULL,"  // 0 ham, 1 unsure, 2 spam
    "  action TEXT NOT NULL,"
    "  reclassified BOOLEAN"
    ");"
    "CREATE INDEX spam_verdicts_time ON spam_verdicts(time, seq);"
    "CREATE TABLE spam_features ("
    "  signature TEXT PRIMARY KEY,"
    "  time BIGINT NOT NULL,"
    "  data BYTEA NOT NULL"
    ");"
    "CREATE INDEX spam_features_time ON spam_features(time);",
};

constexpr const char* kColumns = "signature, time, client, sender, recipients, subject, score, call, action, reclassified";

int call_code(Call c) { return c == Call::Spam ? 2 : c == Call::Unsure ? 1 : 0; }

class PgHistory final : public spam::History {
 public:
  explicit PgHistory(std::shared_ptr<PgPool> pool) : pool_(std::move(pool)) { pool_->migrate("spam_history", kMigrations); }

  void record(const Verdict& v, const std::vector<uint32_t>& features) override { record_all({{v, features}}); }

  void record_all(const std::vector<Entry>& entries) override {
    if (entries.empty()) return;
    // One row per signature (ON CONFLICT may not touch a row twice in one statement): the last wins, as in SQLite.
    std::map<std::string, const Entry*> last;
    for (auto& e : entries) last[e.verdict.signature] = &e;
    std::vector<std::vector<PgParam>> columns(11);
    for (auto& [signature, e] : last) {
      const Verdict& v = e->verdict;
      columns[0].push_back(pg_text(v.signature));
      columns[1].push_back(std::to_string(v.time));
      columns[2].push_back(pg_text(v.client));
      columns[3].push_back(pg_text(v.sender));
      columns[4].push_back(pg_text(v.recipients));
      columns[5].push_back(pg_text(v.subject));
      columns[6].push_back(fmt::format("{:.17g}", v.score));
      columns[7].push_back(std::to_string(call_code(v.call)));
      columns[8].push_back(pg_text(v.action));
      columns[9].push_back(bytea_text(spam::encode_features(e->features)));
    }
    std::vector<PgParam> params;
    for (size_t c = 0; c < 10; ++c) params.push_back(array_literal(columns[c]));
    pool_->exec(
        "WITH rows AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], "
        "$7::float8[], $8::smallint[], $9::text[], $10::bytea[]) "
        "AS r(signature, time, client, sender, recipients, subject, score, call, action, data)), "
        "verdicts AS (INSERT INTO spam_verdicts(signature, time, client, sender, recipients, subject, score, call, action) "
        "SELECT signature, time, client, sender, recipients, subject, score, call, action FROM rows "
        "ON CONFLICT (signature) DO UPDATE SET time = EXCLUDED.time, client = EXCLUDED.client, sender = EXCLUDED.sender, "
        "recipients = EXCLUDED.recipients, subject = EXCLUDED.subject, score = EXCLUDED.score, call = EXCLUDED.call, "
        "action = EXCLUDED.action, reclassified = NULL) "
        "INSERT INTO spam_features(signature, time, data) SELECT signature, time, data FROM rows "
        "ON CONFLICT (signature) DO UPDATE SET time = EXCLUDED.time, data = EXCLUDED.data",
        params);
  }

  std::vector<Verdict> recent(size_t limit) override {
    auto r = pool_->exec(fmt::format("SELECT {} FROM spam_verdicts ORDER BY time DESC, seq DESC LIMIT $1::bigint", kColumns),
                         {std::to_string(limit)});
    std::vector<Verdict> out;
    for (int i = 0; i < r.rows(); ++i) out.push_back(row(r, i));
    return out;
  }

  std::optional<Verdict> find(const std::string& signature, std::vector<uint32_t>* features) override {
    auto r = pool_->exec(fmt::format("SELECT {}, f.data FROM spam_verdicts v LEFT JOIN spam_features f USING (signature) "
                                     "WHERE signature = $1",
                                     "v.signature, v.time, v.client, v.sender, v.recipients, v.subject, v.score, v.call, "
                                     "v.action, v.reclassified"),
                         {pg_text(signature)});
    if (r.rows() == 0) return std::nullopt;
    if (features) {
      features->clear();
      if (!r.null(0, 10)) {
        auto blob = bytes_of_bytea(r.text(0, 10));
        if (!blob || !spam::decode_features(*blob, *features))
          throw db::Error("stored features of " + signature + " are damaged");
      }
    }
    return row(r, 0);
  }

  void set_reclassified(const std::string& signature, bool as_spam) override {
    pool_->exec("UPDATE spam_verdicts SET reclassified = $2::boolean WHERE signature = $1",
                {pg_text(signature), as_spam ? "true" : "false"});
  }

  spam::VerdictCounts counts(int64_t since) override {
    auto r = pool_->exec(
        "SELECT count(*) FILTER (WHERE call = 2), count(*) FILTER (WHERE call = 1), count(*) FILTER (WHERE call = 0), "
        "count(*) FILTER (WHERE call < 2 AND reclassified), count(*) FILTER (WHERE call = 2 AND NOT reclassified) "
        "FROM spam_verdicts WHERE time >= $1::bigint",
        {std::to_string(since)});
    spam::VerdictCounts c;
    c.spam = uint64_t(r.integer(0, 0));
    c.unsure = uint64_t(r.integer(0, 1));
    c.ham = uint64_t(r.integer(0, 2));
    c.missed_spam = uint64_t(r.integer(0, 3));
    c.false_positives = uint64_t(r.integer(0, 4));
    return c;
  }

  void purge(int64_t features_before, int64_t rows_before) override {
    auto conn = pool_->connection();
    conn->exec("BEGIN");
    conn->exec("DELETE FROM spam_features WHERE time < $1::bigint", {std::to_string(std::max(features_before, rows_before))});
    conn->exec("DELETE FROM spam_verdicts WHERE time < $1::bigint", {std::to_string(rows_before)});
    conn->exec("COMMIT");
  }

 private:
  static Verdict row(const PgResult& r, int i) {
    Verdict v;
    v.signature = r.text(i, 0);
    v.time = r.integer(i, 1);
    v.client = r.text(i, 2);
    v.sender = r.text(i, 3);
    v.recipients = r.text(i, 4);
    v.subject = r.text(i, 5);
    v.score = std::strtod(r.text(i, 6).c_str(), nullptr);
    auto call = r.integer(i, 7);
    v.call = call == 2 ? Call::Spam : call == 1 ? Call::Unsure : Call::Ham;
    v.action = r.text(i, 8);
    if (!r.null(i, 9)) v.reclassified_as = r.boolean(i, 9);
    return v;
  }

  std::shared_ptr<PgPool> pool_;
};

}  // namespace

std::unique_ptr<spam::History> open_pg_history(std::shared_ptr<PgPool> pool) {
  return std::make_unique<PgHistory>(std::move(pool));
}

}  // namespace mk::store
