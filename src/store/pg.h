// pg.h — PostgreSQL through libpq, for the stores several gateways share
// ([store] url): a bounded pool of blocking connections, one statement at a
// time with text parameters (prepared once per connection), versioned migrations, and reconnection with
// backoff. Blocking by design: callers run on the blocking pool, never on an
// I/O loop (store.h's rule), and a bounded pool keeps them from opening a
// connection each.
//
// Failures throw db::Error (callers answer 451 / 503). A connection that
// broke is reset on its next use; while the server stays unreachable, calls
// fail at once for a backoff that doubles from 100 ms to 5 s, so that a down
// database costs nobody a connect timeout per RCPT, and service resumes by
// itself when it returns.
// Threading: PgPool is safe from any thread.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "db/error.h"

struct pg_conn;
struct pg_result;

namespace mk::store {

// One statement's result: rows of text (NULL: nullopt).
class PgResult {
 public:
  explicit PgResult(pg_result* r) : r_(r) {}
  PgResult(PgResult&& o) noexcept : r_(o.r_) { o.r_ = nullptr; }
  PgResult(const PgResult&) = delete;
  ~PgResult();
  int rows() const;
  bool null(int row, int col) const;
  std::string text(int row, int col) const;
  int64_t integer(int row, int col) const;  // throws db::Error when not a number
  bool boolean(int row, int col) const;     // 't' / 'f'
  uint64_t affected() const;                // rows changed by INSERT/UPDATE/DELETE

 private:
  pg_result* r_;
};

using PgParam = std::optional<std::string>;  // nullopt: NULL

// {"a","b\"c",NULL}: a PostgreSQL array literal of text (nullopt: NULL), to
// pass many rows as one parameter (unnest($1::text[])).
std::string array_literal(const std::vector<PgParam>& values);

// `s` as PostgreSQL text can hold it: valid UTF-8 without NUL (each byte
// that is neither is replaced by U+FFFD).
std::string pg_text(std::string_view s);

// Bytes as bytea's text form (\x and hex digits), for a parameter ($1::bytea),
// and back from a result's text (nullopt: not that form).
std::string bytea_text(std::string_view bytes);
std::optional<std::string> bytes_of_bytea(std::string_view text);

// A new connection to `url` (connect_timeout 5 s unless the URL says), for
// what the pool does not do (LISTEN). Throws db::Error, password not shown.
pg_conn* pg_connect(const std::string& url);

class PgPool;

// One connection of the pool held for a while, for statements that must
// share a connection: a transaction, a session advisory lock. Given back
// (closed when broken) when destroyed; a transaction left open is rolled back.
class PgConnection {
 public:
  ~PgConnection();
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;
  PgResult exec(const std::string& sql, const std::vector<PgParam>& params = {});

 private:
  friend class PgPool;
  PgConnection(PgPool& pool, pg_conn* c) : pool_(pool), c_(c) {}
  PgPool& pool_;
  pg_conn* c_;
  bool broken_ = false;
};

class PgPool {
 public:
  // `url`: a libpq connection URI or key=value string. Connects lazily;
  // check() connects once to fail early with the server's reason.
  PgPool(std::string url, size_t size);
  ~PgPool();
  PgPool(const PgPool&) = delete;
  PgPool& operator=(const PgPool&) = delete;

  void check();
  // A connection for several statements (see PgConnection).
  std::unique_ptr<PgConnection> connection();
  PgResult exec(const std::string& sql, const std::vector<PgParam>& params = {});
  // Applies `migrations[version..]` of `component` in one transaction under
  // an advisory lock (two gateways starting at once migrate once); versions
  // are kept in mailkeep_schema. Refuses a schema newer than this build.
  void migrate(const std::string& component, std::span<const char* const> migrations);

  // The URL without its password, for logs.
  static std::string redacted(const std::string& url);
  const std::string& url() const { return url_; }

 private:
  struct Lease;
  friend class PgConnection;
  pg_conn* acquire();
  void give_back(pg_conn* c, bool broken);
  pg_conn* connect();

  std::string url_;
  size_t size_;
  std::mutex mutex_;
  std::condition_variable free_cv_;
  std::vector<pg_conn*> free_;
  std::unordered_map<pg_conn*, std::unordered_set<std::string>> prepared_;  // per connection
  size_t open_ = 0;
  std::chrono::steady_clock::time_point down_until_{};
  std::chrono::milliseconds backoff_{0};
  std::string last_error_;
};

}  // namespace mk::store
