// sessions.h — the web view's logins: server-side sessions behind an
// opaque cookie, each with its CSRF token, for one account.
//
// A session ends after `idle` seconds without a request, `absolute` seconds
// after the login, or at logout. Tokens are 256 random bits (OpenSSL's
// RAND_bytes), compared in constant time; the store keeps only their SHA-256,
// so a memory dump or a log never yields a usable cookie. Sessions live in
// memory: a restart logs everyone out (the PostgreSQL issue moves them).
// Memory is bounded: at `max_sessions` the oldest session goes.
// Threading: safe from any thread (one mutex).
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
  explicit SessionStore(SessionLimits limits = {}) : limits_(limits) {}
  // A new session for `user`; returns the cookie value.
  std::string create(const std::string& user, int64_t now, SessionInfo* info = nullptr);
  // The live session of a cookie value (and marks it used), or nullopt.
  std::optional<SessionInfo> find(const std::string& cookie, int64_t now);
  void remove(const std::string& cookie);
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

}  // namespace mk::webreader
