// pg_alias_store.cpp — see pg_alias_store.h.
#include "store/pg_alias_store.h"

#include <condition_variable>
#include <mutex>
#include <thread>

#include "core/log.h"

namespace mk::store {
namespace {

using aliases::Alias;

// Each entry upgrades the schema by one version; never edit a shipped entry.
const char* const kMigrations[] = {
    // 1: aliases, every id ever issued (none is reused after a purge), and the held uses.
    "CREATE TABLE alias_ids (id TEXT PRIMARY KEY);"
    "CREATE TABLE aliases ("
    "  id TEXT PRIMARY KEY REFERENCES alias_ids(id),"
    "  target TEXT NOT NULL,"
    "  created BIGINT NOT NULL,"
    "  valid_until BIGINT,"
    "  max_usage BIGINT,"
    "  uses BIGINT NOT NULL DEFAULT 0,"
    "  pending BIGINT NOT NULL DEFAULT 0,"
    "  creator_ip TEXT NOT NULL,"
    "  disabled BOOLEAN NOT NULL DEFAULT false,"
    "  token_hash TEXT NOT NULL"
    ");"
    "CREATE INDEX aliases_created ON aliases(created);"
    "CREATE TABLE alias_holds ("
    "  token TEXT PRIMARY KEY,"
    "  alias_id TEXT NOT NULL REFERENCES aliases(id) ON DELETE CASCADE,"
    "  expires BIGINT NOT NULL"
    ");"
    "CREATE INDEX alias_holds_expires ON alias_holds(expires);",
    // 2: the alias-creation limit per client key, shared by every gateway.
    "CREATE TABLE alias_creation_turns ("
    "  client_key TEXT PRIMARY KEY,"
    "  next_allowed BIGINT NOT NULL"
    ");"
    "CREATE INDEX alias_creation_turns_next ON alias_creation_turns(next_allowed);",
    // 3: a hold is one index entry: no foreign key (its check locked the alias's row once more per
    // RCPT; a purged alias's holds just expire) and no index on the expiry (expire_holds reads the
    // table, which holds only the uses in flight).
    "ALTER TABLE alias_holds DROP CONSTRAINT alias_holds_alias_id_fkey;"
    "DROP INDEX alias_holds_expires;",
};

constexpr const char* kColumns = "id, target, created, valid_until, max_usage, uses, creator_ip, disabled, token_hash, pending";

std::string num(int64_t v) { return std::to_string(v); }

class PgAliasStore final : public aliases::AliasStore {
 public:
  explicit PgAliasStore(std::shared_ptr<PgPool> pool) : pool_(std::move(pool)) {
    pool_->migrate("aliases", kMigrations);
    writer_ = std::thread([this] { run(); });
  }
  ~PgAliasStore() override {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_one();
    writer_.join();
    try {
      flush();
    } catch (const db::Error& e) {
      spdlog::warn("alias store: {} committed uses not written at exit ({}); their holds lapse", queued(), e.what());
    }
  }

  bool insert(const Alias& a) override {
    auto r = pool_->exec(
        "WITH issued AS (INSERT INTO alias_ids(id) VALUES ($1) ON CONFLICT DO NOTHING RETURNING id) "
        "INSERT INTO aliases(id, target, created, valid_until, max_usage, creator_ip, token_hash) "
        "SELECT id, $2, $3::bigint, $4::bigint, $5::bigint, $6, $7 FROM issued",
        {a.id, a.target, num(a.created), a.valid_until ? PgParam(num(*a.valid_until)) : std::nullopt,
         a.max_usage ? PgParam(num(*a.max_usage)) : std::nullopt, a.creator_ip, a.token_hash});
    return r.affected() == 1;  // 0: the id was issued before
  }

  std::optional<Alias> find(const std::string& id) override {
    flush();  // this process's committed uses are in what it reads
    uint32_t pending = 0;
    return find_with_pending(id, pending);
  }

  void add_use(const std::string& id) override {
    pool_->exec("UPDATE aliases SET uses = uses + 1 WHERE id = $1", {id});
  }

  bool disable(const std::string& id) override {
    return pool_->exec("UPDATE aliases SET disabled = true WHERE id = $1", {id}).affected() > 0;
  }

  std::vector<Alias> list(size_t limit) override {
    flush();
    auto r = pool_->exec(std::string("SELECT ") + kColumns + " FROM aliases ORDER BY created DESC, id LIMIT $1::bigint",
                         {num(int64_t(limit))});
    std::vector<Alias> out;
    for (int i = 0; i < r.rows(); ++i) out.push_back(row(r, i));
    return out;
  }

  size_t purge(int64_t now) override {
    pool_->exec("DELETE FROM alias_creation_turns WHERE next_allowed <= $1::bigint", {num(now)});  // turns that passed
    return pool_
        ->exec("DELETE FROM aliases WHERE disabled OR (valid_until IS NOT NULL AND valid_until <= $1::bigint) "
               "OR (max_usage IS NOT NULL AND uses >= max_usage)",
               {num(now)})
        .affected();
  }

  Hold hold(const std::string& id, const std::string& token, int64_t now, int64_t expires) override {
    Hold h;
    bool swept = false;
    for (int attempt = 0; attempt < 3; ++attempt) {
      // One statement: the row update takes the row lock and is re-checked on
      // the newest version, and the hold row goes in with it.
      auto r = pool_->exec(std::string("WITH held AS (UPDATE aliases SET pending = pending + 1 "
                                       "WHERE id = $1 AND NOT disabled AND (valid_until IS NULL OR valid_until > $2::bigint) "
                                       "AND (max_usage IS NULL OR uses + pending < max_usage) RETURNING ") +
                               kColumns +
                               "), kept AS (INSERT INTO alias_holds(token, alias_id, expires) "
                               "SELECT $3, id, $4::bigint FROM held) SELECT * FROM held",
                           {id, num(now), token, num(expires)});
      h = Hold{};
      if (r.rows() == 1) {
        h.alias = row(r, 0);
        h.pending = uint32_t(r.integer(0, 9) - 1);
        h.held = true;
        return h;
      }
      // Why not: read the row as it is now.
      h.alias = find_with_pending(id, h.pending);
      if (!h.alias) return h;
      auto state = aliases::state_of(*h.alias, now, h.pending);
      if (state == aliases::AliasState::Live) continue;  // a hold finished in between
      // Used up only by holds? Some may have expired (a gateway killed while
      // holding them): give those back and look once more.
      if (state == aliases::AliasState::UsedUp && h.pending > 0 && !swept) {
        swept = true;
        if (expire_holds(now) > 0) continue;
      }
      return h;
    }
    return h;
  }

  // Queued, and written with the others of the next few milliseconds in one
  // statement (the writer thread), so that a message costs PostgreSQL one
  // statement (its hold) rather than two, and the session does not wait for
  // the second. Until written the use still counts, as its hold. A gateway
  // killed in those milliseconds loses the queue: the holds lapse after
  // hold_seconds and those uses are not counted (as when a commit fails).
  void commit_hold(const std::string& id, const std::string& token) override {
    {
      std::lock_guard lock(mutex_);
      queue_.emplace_back(id, token);
      if (queue_.size() < kBatch) return;
    }
    wake_.notify_one();
  }

  void release_hold(const std::string& token) override {
    pool_->exec(
        "WITH done AS (DELETE FROM alias_holds WHERE token = $1 RETURNING alias_id) "
        "UPDATE aliases SET pending = aliases.pending - 1 FROM done WHERE aliases.id = done.alias_id",
        {token});
  }

  std::optional<int64_t> creation_wait(const std::string& key, int64_t now) override {
    auto r = pool_->exec("SELECT next_allowed FROM alias_creation_turns WHERE client_key = $1", {pg_text(key)});
    if (r.rows() == 0 || r.integer(0, 0) <= now) return std::nullopt;
    return r.integer(0, 0) - now;
  }

  bool take_creation(const std::string& key, int64_t now, int64_t interval) override {
    // One statement: the row lock makes racing takes (on any gateway) queue, and
    // the WHERE is re-checked on the newest row, so only one of them gets the turn.
    return pool_
               ->exec("INSERT INTO alias_creation_turns(client_key, next_allowed) VALUES ($1, $2::bigint + $3::bigint) "
                      "ON CONFLICT (client_key) DO UPDATE SET next_allowed = EXCLUDED.next_allowed "
                      "WHERE alias_creation_turns.next_allowed <= $2::bigint",
                      {pg_text(key), num(now), num(interval)})
               .affected() == 1;
  }

  void give_back_creation(const std::string& key, int64_t now) override {
    pool_->exec("DELETE FROM alias_creation_turns WHERE client_key = $1 AND next_allowed > $2::bigint",
                {pg_text(key), num(now)});
  }

  size_t expire_holds(int64_t now) override {
    auto r = pool_->exec(
        "WITH gone AS (DELETE FROM alias_holds WHERE expires <= $1::bigint RETURNING alias_id), "
        "per_alias AS (SELECT alias_id, count(*) AS n FROM gone GROUP BY alias_id), "
        "given AS (UPDATE aliases SET pending = aliases.pending - per_alias.n FROM per_alias "
        "WHERE aliases.id = per_alias.alias_id RETURNING per_alias.n) "
        "SELECT COALESCE(sum(n), 0) FROM given",
        {num(now)});
    return r.rows() ? size_t(r.integer(0, 0)) : 0;
  }

 private:
  std::optional<Alias> find_with_pending(const std::string& id, uint32_t& pending) {
    auto r = pool_->exec(std::string("SELECT ") + kColumns + " FROM aliases WHERE id = $1", {id});
    if (r.rows() == 0) return std::nullopt;
    pending = uint32_t(r.integer(0, 9));
    return row(r, 0);
  }

  static Alias row(const PgResult& r, int i) {
    Alias a;
    a.id = r.text(i, 0);
    a.target = r.text(i, 1);
    a.created = r.integer(i, 2);
    if (!r.null(i, 3)) a.valid_until = r.integer(i, 3);
    if (!r.null(i, 4)) a.max_usage = uint32_t(r.integer(i, 4));
    a.uses = uint32_t(r.integer(i, 5));
    a.creator_ip = r.text(i, 6);
    a.disabled = r.boolean(i, 7);
    a.token_hash = r.text(i, 8);
    return a;
  }

  static constexpr size_t kBatch = 256;
  static constexpr auto kInterval = std::chrono::milliseconds(5);

  size_t queued() {
    std::lock_guard lock(mutex_);
    return queue_.size();
  }

  void run() {
    std::unique_lock lock(mutex_);
    bool failing = false;
    while (!stopping_) {
      wake_.wait_for(lock, failing ? std::chrono::milliseconds(200) : kInterval,
                     [this] { return stopping_ || queue_.size() >= kBatch; });
      if (stopping_) break;
      lock.unlock();
      try {
        flush();
        if (failing) spdlog::info("alias store: committed uses written again");
        failing = false;
      } catch (const db::Error& e) {
        if (!failing) spdlog::warn("alias store: committed uses not written yet ({}); retrying", e.what());
        failing = true;
      }
      lock.lock();
    }
  }

  // Writes the queued commits: each hold row goes and its alias gains a use
  // (also when the hold expired meanwhile: the message was delivered). The
  // aliases' rows are locked in id order, so that two gateways' batches never
  // deadlock. One statement: on failure nothing changed, and the batch is
  // queued again. Throws db::Error.
  void flush() {
    std::lock_guard writing(write_mutex_);
    std::vector<std::pair<std::string, std::string>> batch;
    {
      std::lock_guard lock(mutex_);
      batch.swap(queue_);
    }
    if (batch.empty()) return;
    std::vector<PgParam> ids, tokens;
    for (auto& [id, token] : batch) {
      ids.push_back(id);
      tokens.push_back(token);
    }
    try {
      pool_->exec(
          "WITH c AS (SELECT * FROM unnest($1::text[], $2::text[]) AS c(id, token)), "
          "locked AS (SELECT id FROM aliases WHERE id IN (SELECT id FROM c) ORDER BY id FOR NO KEY UPDATE), "
          "done AS (DELETE FROM alias_holds h USING c WHERE h.token = c.token RETURNING h.alias_id), "
          "used AS (SELECT id, count(*) AS n FROM c GROUP BY id), "
          "freed AS (SELECT alias_id, count(*) AS n FROM done GROUP BY alias_id) "
          "UPDATE aliases a SET uses = a.uses + used.n, pending = a.pending - COALESCE(freed.n, 0) "
          "FROM used JOIN locked ON locked.id = used.id LEFT JOIN freed ON freed.alias_id = used.id "
          "WHERE a.id = used.id",
          {array_literal(ids), array_literal(tokens)});
    } catch (...) {
      std::lock_guard lock(mutex_);
      queue_.insert(queue_.begin(), std::make_move_iterator(batch.begin()), std::make_move_iterator(batch.end()));
      throw;
    }
  }

  std::shared_ptr<PgPool> pool_;
  std::mutex mutex_;        // guards queue_, stopping_
  std::mutex write_mutex_;  // one batch at a time
  std::condition_variable wake_;
  std::vector<std::pair<std::string, std::string>> queue_;  // (alias id, hold token)
  bool stopping_ = false;
  std::thread writer_;  // last: started when everything above exists
};

}  // namespace

std::unique_ptr<aliases::AliasStore> open_pg_alias_store(std::shared_ptr<PgPool> pool) {
  return std::make_unique<PgAliasStore>(std::move(pool));
}

}  // namespace mk::store
