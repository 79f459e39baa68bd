// rate_limit.h — "one action per key per interval" limits, keyed by client
// address (IPv6 clients by their /64, which one subscriber usually owns).
// Threading: safe from any thread (one mutex).
#pragma once
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "core/net.h"

namespace mk::policy {

// The key a client is limited by: the address, or its /64 for IPv6.
std::string client_key(const IpAddress& ip);

class IntervalLimiter {
 public:
  explicit IntervalLimiter(int64_t interval_seconds) : interval_(interval_seconds) {}
  // Seconds until `key` may act again, or nullopt if it may act now. Spends nothing.
  std::optional<int64_t> retry_after(const std::string& key, int64_t now);
  // Records an action of `key` at `now`.
  void spend(const std::string& key, int64_t now);
  bool enabled() const { return interval_ > 0; }

 private:
  int64_t interval_;
  std::mutex mutex_;
  std::unordered_map<std::string, int64_t> next_allowed_;
  size_t spends_since_sweep_ = 0;
};

// "At most N per key per minute" (fixed one-minute windows).
class WindowLimiter {
 public:
  explicit WindowLimiter(uint32_t per_minute) : limit_(per_minute) {}
  // Counts one event of `key`; false (counting nothing) when the key is over its limit.
  bool allow(const std::string& key, int64_t now);
  // True when `key` has used up this minute's events. Counts nothing.
  bool exhausted(const std::string& key, int64_t now);
  bool enabled() const { return limit_ > 0; }

 private:
  struct Window {
    int64_t minute = 0;
    uint32_t count = 0;
  };
  uint32_t limit_;
  std::mutex mutex_;
  std::unordered_map<std::string, Window> windows_;
};

// "At most N at once per key" (simultaneous connections).
class ConcurrencyLimiter {
 public:
  explicit ConcurrencyLimiter(uint32_t limit) : limit_(limit) {}
  // Takes a slot for `key`; false when it has `limit` already.
  bool acquire(const std::string& key);
  void release(const std::string& key);
  bool enabled() const { return limit_ > 0; }

 private:
  uint32_t limit_;
  std::mutex mutex_;
  std::unordered_map<std::string, uint32_t> open_;
};

// "N failures per key within a window, then locked for the window" (failed
// logins). Memory is bounded: expired keys are swept as the map grows.
class FailureLimiter {
 public:
  FailureLimiter(uint32_t max_failures, int64_t window_seconds) : max_(max_failures), window_(window_seconds) {}
  // True while `key` is locked out.
  bool locked(const std::string& key, int64_t now);
  // Counts one failure; returns true if this failure started a lockout.
  bool failed(const std::string& key, int64_t now);
  void clear(const std::string& key);

 private:
  struct Failures {
    int64_t first = 0;         // start of the counting window
    uint32_t count = 0;
    int64_t locked_until = 0;
  };
  uint32_t max_;
  int64_t window_;
  std::mutex mutex_;
  std::unordered_map<std::string, Failures> keys_;
};

}  // namespace mk::policy
