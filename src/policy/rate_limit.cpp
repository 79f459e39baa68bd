// rate_limit.cpp — see rate_limit.h.
#include "policy/rate_limit.h"

namespace mk::policy {

std::string client_key(const IpAddress& ip) {
  if (ip.is_v4()) return ip.to_string();
  IpAddress net = ip;
  for (size_t i = 8; i < 16; ++i) net.bytes[i] = 0;
  return net.to_string() + "/64";
}

std::optional<int64_t> IntervalLimiter::retry_after(const std::string& key, int64_t now) {
  if (interval_ <= 0) return std::nullopt;
  std::lock_guard lock(mutex_);
  auto it = next_allowed_.find(key);
  if (it == next_allowed_.end() || it->second <= now) return std::nullopt;
  return it->second - now;
}

void IntervalLimiter::spend(const std::string& key, int64_t now) {
  if (interval_ <= 0) return;
  std::lock_guard lock(mutex_);
  next_allowed_[key] = now + interval_;
  // Forget expired entries now and then, so memory stays bounded by the
  // number of clients active within one interval.
  if (++spends_since_sweep_ >= 1024) {
    spends_since_sweep_ = 0;
    std::erase_if(next_allowed_, [now](auto& kv) { return kv.second <= now; });
  }
}

bool WindowLimiter::allow(const std::string& key, int64_t now) {
  if (limit_ == 0) return true;
  std::lock_guard lock(mutex_);
  int64_t minute = now / 60;
  if (windows_.size() > 100000) std::erase_if(windows_, [minute](auto& kv) { return kv.second.minute != minute; });
  auto& w = windows_[key];
  if (w.minute != minute) w = {minute, 0};
  if (w.count >= limit_) return false;
  ++w.count;
  return true;
}

bool WindowLimiter::exhausted(const std::string& key, int64_t now) {
  if (limit_ == 0) return false;
  std::lock_guard lock(mutex_);
  auto it = windows_.find(key);
  return it != windows_.end() && it->second.minute == now / 60 && it->second.count >= limit_;
}

bool ConcurrencyLimiter::acquire(const std::string& key) {
  if (limit_ == 0) return true;
  std::lock_guard lock(mutex_);
  auto& n = open_[key];
  if (n >= limit_) return false;
  ++n;
  return true;
}

void ConcurrencyLimiter::release(const std::string& key) {
  if (limit_ == 0) return;
  std::lock_guard lock(mutex_);
  if (auto it = open_.find(key); it != open_.end() && --it->second == 0) open_.erase(it);
}

bool FailureLimiter::locked(const std::string& key, int64_t now) {
  std::lock_guard lock(mutex_);
  auto it = keys_.find(key);
  return it != keys_.end() && it->second.locked_until > now;
}

bool FailureLimiter::failed(const std::string& key, int64_t now) {
  std::lock_guard lock(mutex_);
  if (keys_.size() >= 100000)  // sweep what no longer counts
    std::erase_if(keys_, [&](auto& kv) { return kv.second.locked_until <= now && now - kv.second.first > window_; });
  auto& f = keys_[key];
  if (now - f.first > window_) f = Failures{now, 0, f.locked_until};
  ++f.count;
  if (f.count >= max_ && f.locked_until <= now) {
    f.locked_until = now + window_;
    f.count = 0;
    f.first = now;
    return true;
  }
  return false;
}

void FailureLimiter::clear(const std::string& key) {
  std::lock_guard lock(mutex_);
  keys_.erase(key);
}

}  // namespace mk::policy
