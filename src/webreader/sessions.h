// sessions.h — the web view's logins: server-side sessions behind an
// opaque cookie, each with its CSRF token, for one account.
//
// A session ends after `idle` seconds without a request, `absolute` seconds
// after the login, or at logout. Tokens are 256 random bits (OpenSSL's
// RAND_bytes), compared in constant time; the store keeps only their SHA-256,
// so a memory dump, a log or a database dump never yields a usable cookie.
// An interface: MemorySessionStore keeps them in this process (a restart
// logs everyone out; memory is bounded: at `max_sessions` the oldest session
// goes); with [store] url, store/pg_sessions.h keeps them in PostgreSQL,
// where every gateway finds them. Its own small library (mk_web_sessions),
// so that the stores can implement it without the web view's dependencies.
// Threading: implementations are safe from any thread; the PostgreSQL one
// blocks and throws db::Error (the web view answers 503).
#pragma once
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>

namespace mk::webreader {

struct SessionLimits {
  int64_t idle = 30 * 60;
  int64_t absolute = 12 * 3600;
  size_t max_sessions = 10000;
};

struct SessionInfo {
  std::string user;  // lower-case address
  std::string csrf;  // the token state changes must carry (X-CSRF-Token)
  int64_t created = 0;
};

class SessionStore {
 public:
  virtual ~SessionStore() = default;
  // A new session for `user`; returns the cookie value.
  virtual std::string create(const std::string& user, int64_t now, SessionInfo* info = nullptr) = 0;
  // The live session of a cookie value (and marks it used), or nullopt.
  virtual std::optional<SessionInfo> find(const std::string& cookie, int64_t now) = 0;
  virtual void remove(const std::string& cookie) = 0;
};

class MemorySessionStore final : public SessionStore {
 public:
  explicit MemorySessionStore(SessionLimits limits = {}) : limits_(limits) {}
  std::string create(const std::string& user, int64_t now, SessionInfo* info = nullptr) override;
  std::optional<SessionInfo> find(const std::string& cookie, int64_t now) override;
  void remove(const std::string& cookie) override;
  size_t size();

 private:
  struct Entry {
    SessionInfo info;
    int64_t last_used = 0;
  };
  SessionLimits limits_;
  std::mutex mutex_;
  std::map<std::string, Entry> sessions_;  // by sha256(cookie)
};

// Constant-time comparison of two tokens.
bool same_token(const std::string& a, const std::string& b);
// 256 random bits as 64 hex digits (a cookie, a CSRF token). Throws when the CSPRNG fails.
std::string new_session_token();
// What a store keeps of a cookie: its SHA-256 (32 bytes); "" for a value that is no cookie of ours.
std::string session_key(const std::string& cookie);

}  // namespace mk::webreader
