// pg_sessions.cpp — see pg_sessions.h.
#include "store/pg_sessions.h"

#include <atomic>

namespace mk::store {
namespace {

const char* const kMigrations[] = {
    // 1: sessions by sha256(cookie).
    "CREATE TABLE web_sessions ("
    "  key BYTEA PRIMARY KEY,"
    "  username TEXT NOT NULL,"
    "  csrf TEXT NOT NULL,"
    "  created BIGINT NOT NULL,"
    "  last_used BIGINT NOT NULL"
    ");"
    "CREATE INDEX web_sessions_last_used ON web_sessions(last_used);"
    "CREATE INDEX web_sessions_created ON web_sessions(created);",
};

std::string num(int64_t v) { return std::to_string(v); }

class PgSessions final : public webreader::SessionStore {
 public:
  PgSessions(std::shared_ptr<PgPool> pool, webreader::SessionLimits limits) : pool_(std::move(pool)), limits_(limits) {
    pool_->migrate("web_sessions", kMigrations);
  }

  std::string create(const std::string& user, int64_t now, webreader::SessionInfo* info) override {
    if (++logins_ % 256 == 0)
      pool_->exec("DELETE FROM web_sessions WHERE last_used < $1::bigint OR created < $2::bigint",
                  {num(now - limits_.idle), num(now - limits_.absolute)});
    auto cookie = webreader::new_session_token();
    webreader::SessionInfo made{user, webreader::new_session_token(), now};
    pool_->exec("INSERT INTO web_sessions(key, username, csrf, created, last_used) "
                "VALUES ($1::bytea, $2, $3, $4::bigint, $4::bigint)",
                {bytea_text(webreader::session_key(cookie)), pg_text(made.user), made.csrf, num(now)});
    if (info) *info = made;
    return cookie;
  }

  std::optional<webreader::SessionInfo> find(const std::string& cookie, int64_t now) override {
    auto key = webreader::session_key(cookie);
    if (key.empty()) return std::nullopt;
    auto r = pool_->exec(
        "UPDATE web_sessions SET last_used = GREATEST(last_used, $2::bigint) WHERE key = $1::bytea "
        "AND $2::bigint - last_used <= $3::bigint AND $2::bigint - created <= $4::bigint "
        "RETURNING username, csrf, created",
        {bytea_text(key), num(now), num(limits_.idle), num(limits_.absolute)});
    if (r.rows() == 0) {
      pool_->exec("DELETE FROM web_sessions WHERE key = $1::bytea", {bytea_text(key)});  // gone or past its time
      return std::nullopt;
    }
    return webreader::SessionInfo{r.text(0, 0), r.text(0, 1), r.integer(0, 2)};
  }

  void remove(const std::string& cookie) override {
    auto key = webreader::session_key(cookie);
    if (!key.empty()) pool_->exec("DELETE FROM web_sessions WHERE key = $1::bytea", {bytea_text(key)});
  }

 private:
  std::shared_ptr<PgPool> pool_;
  webreader::SessionLimits limits_;
  std::atomic<uint64_t> logins_{0};
};

}  // namespace

std::unique_ptr<webreader::SessionStore> open_pg_sessions(std::shared_ptr<PgPool> pool, webreader::SessionLimits limits) {
  return std::make_unique<PgSessions>(std::move(pool), limits);
}

}  // namespace mk::store
