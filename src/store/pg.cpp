// pg.cpp — see pg.h.
#include "store/pg.h"

#include <libpq-fe.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <unordered_set>

#include "core/conninfo.h"
#include "core/log.h"

namespace mk::store {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kMaxBackoff = std::chrono::milliseconds(5000);
constexpr auto kWaitForConnection = std::chrono::seconds(10);

// libpq's messages end in a newline and may span lines: one log line.
std::string one_line(std::string m) {
  while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
  std::replace(m.begin(), m.end(), '\n', ' ');
  return m;
}

std::string message_of(pg_conn* c) { return one_line(c ? PQerrorMessage(c) : "out of memory"); }

// Throws unless `result` says the statement worked; `broken` says whether
// the connection is gone (to be closed, not pooled again).
void check(pg_conn* c, pg_result* r, bool& broken) {
  auto status = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return;
  broken = PQstatus(c) == CONNECTION_BAD;
  std::string why = r && *PQresultErrorMessage(r) ? one_line(PQresultErrorMessage(r)) : message_of(c);
  throw db::Error("PostgreSQL: " + why);
}

std::vector<const char*> values_of(const std::vector<PgParam>& params) {
  std::vector<const char*> values;
  values.reserve(params.size());
  for (auto& p : params) values.push_back(p ? p->c_str() : nullptr);
  return values;
}

// Runs one statement (or, without parameters, several: migrations) on `c`.
PgResult run(pg_conn* c, const std::string& sql, const std::vector<PgParam>& params, bool& broken) {
  auto values = values_of(params);
  pg_result* r = params.empty() ? PQexec(c, sql.c_str())
                                : PQexecParams(c, sql.c_str(), int(values.size()), nullptr, values.data(), nullptr,
                                               nullptr, 0);
  PgResult result(r);
  check(c, r, broken);
  return result;
}

// As run(), as a statement prepared once per connection (`prepared` names
// those it has): PostgreSQL parses and plans it once, not on every call.
PgResult run_prepared(pg_conn* c, std::unordered_set<std::string>& prepared, const std::string& sql,
                      const std::vector<PgParam>& params, bool& broken) {
  std::string name = "mk" + std::to_string(std::hash<std::string>{}(sql));
  if (!prepared.count(name)) {
    pg_result* p = PQprepare(c, name.c_str(), sql.c_str(), int(params.size()), nullptr);
    PgResult held(p);  // freed on the way out, thrown or not
    check(c, p, broken);
    prepared.insert(name);
  }
  auto values = values_of(params);
  pg_result* r = PQexecPrepared(c, name.c_str(), int(values.size()), values.data(), nullptr, nullptr, 0);
  PgResult result(r);
  check(c, r, broken);
  return result;
}

}  // namespace

PgResult::~PgResult() {
  if (r_) PQclear(r_);
}
int PgResult::rows() const { return r_ ? PQntuples(r_) : 0; }
bool PgResult::null(int row, int col) const { return PQgetisnull(r_, row, col) != 0; }
std::string PgResult::text(int row, int col) const {
  return std::string(PQgetvalue(r_, row, col), size_t(PQgetlength(r_, row, col)));
}
int64_t PgResult::integer(int row, int col) const {
  const char* v = PQgetvalue(r_, row, col);
  int64_t out = 0;
  auto [end, ec] = std::from_chars(v, v + std::strlen(v), out);
  if (ec != std::errc() || *end) throw db::Error(std::string("PostgreSQL: not an integer: ") + v);
  return out;
}
bool PgResult::boolean(int row, int col) const { return PQgetvalue(r_, row, col)[0] == 't'; }
uint64_t PgResult::affected() const {
  const char* n = r_ ? PQcmdTuples(r_) : "";
  return *n ? std::strtoull(n, nullptr, 10) : 0;
}

PgPool::PgPool(std::string url, size_t size) : url_(std::move(url)), size_(std::max<size_t>(size, 1)) {}

PgPool::~PgPool() {
  for (auto* c : free_) PQfinish(c);
}

std::string PgPool::redacted(const std::string& url) { return without_password(url); }

pg_conn* pg_connect(const std::string& url) {
  // Our connect timeout first: one in the URL, processed later, wins.
  const char* keys[] = {"connect_timeout", "application_name", "dbname", nullptr};
  const char* values[] = {"5", "mailkeep", url.c_str(), nullptr};
  pg_conn* c = PQconnectdbParams(keys, values, /*expand_dbname=*/1);
  if (!c || PQstatus(c) != CONNECTION_OK) {
    std::string why = message_of(c);
    if (c) PQfinish(c);
    throw db::Error("PostgreSQL " + without_password(url) + ": cannot connect: " + why);
  }
  // The server's notices ("relation ... already exists, skipping") are not
  // ours to print on stderr: debug log lines.
  PQsetNoticeProcessor(
      c, [](void*, const char* message) { spdlog::debug("PostgreSQL: {}", one_line(message)); }, nullptr);
  return c;
}

pg_conn* PgPool::connect() { return pg_connect(url_); }

pg_conn* PgPool::acquire() {
  std::unique_lock lock(mutex_);
  for (;;) {
    if (Clock::now() < down_until_)
      throw db::Error("PostgreSQL unavailable (retrying in at most " + std::to_string(backoff_.count()) +
                      " ms): " + last_error_);
    while (!free_.empty()) {
      pg_conn* c = free_.back();
      free_.pop_back();
      // An idle connection the server closed (a restart) shows it here, before
      // a statement is sent on it.
      if (PQconsumeInput(c) && PQstatus(c) == CONNECTION_OK) return c;
      prepared_.erase(c);
      PQfinish(c);
      --open_;
    }
    if (open_ < size_) {
      ++open_;
      lock.unlock();
      try {
        pg_conn* c = connect();
        std::lock_guard relock(mutex_);
        backoff_ = std::chrono::milliseconds(0);
        return c;
      } catch (const db::Error& e) {
        std::lock_guard relock(mutex_);
        --open_;
        backoff_ = std::clamp(backoff_ * 2, std::chrono::milliseconds(100), kMaxBackoff);
        down_until_ = Clock::now() + backoff_;
        last_error_ = e.what();
        free_cv_.notify_all();
        throw;
      }
    }
    if (free_cv_.wait_for(lock, kWaitForConnection) == std::cv_status::timeout && free_.empty() && open_ >= size_)
      throw db::Error("PostgreSQL: all " + std::to_string(size_) + " connections stayed busy for 10 s");
  }
}

void PgPool::give_back(pg_conn* c, bool broken) {
  std::lock_guard lock(mutex_);
  if (broken) {
    prepared_.erase(c);
    PQfinish(c);
    --open_;
  } else {
    free_.push_back(c);
  }
  free_cv_.notify_one();
}

// A connection for the length of a scope; given back broken or not.
struct PgPool::Lease {
  PgPool& pool;
  pg_conn* c;
  bool broken = false;
  explicit Lease(PgPool& p) : pool(p), c(p.acquire()) {}
  ~Lease() { pool.give_back(c, broken || PQstatus(c) == CONNECTION_BAD); }
  // The statements prepared on this connection (only its lessee touches them).
  std::unordered_set<std::string>& prepared() {
    std::lock_guard lock(pool.mutex_);
    return pool.prepared_[c];
  }
};

void PgPool::check() { Lease lease(*this); }

std::unique_ptr<PgConnection> PgPool::connection() {
  pg_conn* c = acquire();
  return std::unique_ptr<PgConnection>(new PgConnection(*this, c));
}

PgConnection::~PgConnection() {
  bool broken = broken_ || PQstatus(c_) == CONNECTION_BAD;
  if (!broken && PQtransactionStatus(c_) != PQTRANS_IDLE) {
    pg_result* r = PQexec(c_, "ROLLBACK");
    broken = !r || PQresultStatus(r) != PGRES_COMMAND_OK;
    if (r) PQclear(r);
  }
  pool_.give_back(c_, broken);
}

PgResult PgConnection::exec(const std::string& sql, const std::vector<PgParam>& params) {
  if (params.empty()) return run(c_, sql, params, broken_);
  std::unordered_set<std::string>* prepared;
  {
    std::lock_guard lock(pool_.mutex_);
    prepared = &pool_.prepared_[c_];
  }
  return run_prepared(c_, *prepared, sql, params, broken_);
}

std::string bytea_text(std::string_view bytes) {
  static const char digits[] = "0123456789abcdef";
  std::string out = "\\x";
  out.reserve(2 + bytes.size() * 2);
  for (unsigned char b : bytes) {
    out += digits[b >> 4];
    out += digits[b & 15];
  }
  return out;
}

std::optional<std::string> bytes_of_bytea(std::string_view text) {
  if (!text.starts_with("\\x") || text.size() % 2) return std::nullopt;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(text.size() / 2);
  for (size_t i = 2; i < text.size(); i += 2) {
    int hi = nibble(text[i]), lo = nibble(text[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out += char(hi << 4 | lo);
  }
  return out;
}

std::string pg_text(std::string_view s) {
  // The shortest well-formed sequences only (no overlong forms, no surrogates), as PostgreSQL checks.
  auto cont = [&](size_t i) { return i < s.size() && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80; };
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    auto b = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    if (b >= 0x01 && b < 0x80) n = 1;
    else if (b >= 0xC2 && b <= 0xDF && cont(i + 1)) n = 2;
    else if (b >= 0xE0 && b <= 0xEF && cont(i + 1) && cont(i + 2)) {
      auto b1 = static_cast<unsigned char>(s[i + 1]);
      if (!(b == 0xE0 && b1 < 0xA0) && !(b == 0xED && b1 >= 0xA0)) n = 3;
    } else if (b >= 0xF0 && b <= 0xF4 && cont(i + 1) && cont(i + 2) && cont(i + 3)) {
      auto b1 = static_cast<unsigned char>(s[i + 1]);
      if (!(b == 0xF0 && b1 < 0x90) && !(b == 0xF4 && b1 >= 0x90)) n = 4;
    }
    if (n) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

std::string array_literal(const std::vector<PgParam>& values) {
  std::string out = "{";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i) out += ',';
    if (!values[i]) {
      out += "NULL";
      continue;
    }
    out += '"';
    for (char ch : *values[i]) {
      if (ch == '"' || ch == '\\') out += '\\';
      out += ch;
    }
    out += '"';
  }
  return out + "}";
}

PgResult PgPool::exec(const std::string& sql, const std::vector<PgParam>& params) {
  Lease lease(*this);
  if (params.empty()) return run(lease.c, sql, params, lease.broken);
  return run_prepared(lease.c, lease.prepared(), sql, params, lease.broken);
}

void PgPool::migrate(const std::string& component, std::span<const char* const> migrations) {
  Lease lease(*this);
  auto q = [&](const std::string& sql, const std::vector<PgParam>& params = {}) {
    return run(lease.c, sql, params, lease.broken);
  };
  q("BEGIN");
  try {
    q("SELECT pg_advisory_xact_lock(hashtext('mailkeep_schema'))");
    q("CREATE TABLE IF NOT EXISTS mailkeep_schema (component TEXT PRIMARY KEY, version INTEGER NOT NULL)");
    auto v = q("SELECT version FROM mailkeep_schema WHERE component = $1", {component});
    size_t version = v.rows() ? size_t(v.integer(0, 0)) : 0;
    if (version > migrations.size())
      throw db::Error("PostgreSQL: the " + component + " schema is version " + std::to_string(version) +
                      ", newer than this mailkeep knows (" + std::to_string(migrations.size()) + ")");
    for (size_t i = version; i < migrations.size(); ++i) q(migrations[i]);
    q("INSERT INTO mailkeep_schema(component, version) VALUES ($1, $2) "
      "ON CONFLICT (component) DO UPDATE SET version = EXCLUDED.version",
      {component, std::to_string(migrations.size())});
    q("COMMIT");
  } catch (...) {
    if (!lease.broken) {
      bool ignored = false;
      try {
        run(lease.c, "ROLLBACK", {}, ignored);
      } catch (const db::Error&) {
      }
    }
    throw;
  }
}

}  // namespace mk::store
