// sessions.cpp — see sessions.h.
#include "webreader/sessions.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <stdexcept>

#include "core/strings.h"

namespace mk::webreader {
std::string new_session_token() {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof bytes) != 1) throw std::runtime_error("no random bytes for a session token");
  return to_hex(bytes, sizeof bytes);
}

std::string session_key(const std::string& cookie) {
  if (cookie.size() != 64) return "";
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(cookie.data(), cookie.size(), md, &len, EVP_sha256(), nullptr);
  return std::string(reinterpret_cast<char*>(md), len);
}

bool same_token(const std::string& a, const std::string& b) {
  return a.size() == b.size() && !a.empty() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string MemorySessionStore::create(const std::string& user, int64_t now, SessionInfo* info) {
  auto cookie = new_session_token();
  Entry e{SessionInfo{user, new_session_token(), now}, now};
  std::lock_guard lock(mutex_);
  if (sessions_.size() >= limits_.max_sessions) {
    std::erase_if(sessions_, [&](auto& kv) {
      return now - kv.second.last_used > limits_.idle || now - kv.second.info.created > limits_.absolute;
    });
    while (sessions_.size() >= limits_.max_sessions) {
      auto oldest = sessions_.begin();
      for (auto it = sessions_.begin(); it != sessions_.end(); ++it)
        if (it->second.info.created < oldest->second.info.created) oldest = it;
      sessions_.erase(oldest);
    }
  }
  if (info) *info = e.info;
  sessions_[session_key(cookie)] = std::move(e);
  return cookie;
}

std::optional<SessionInfo> MemorySessionStore::find(const std::string& cookie, int64_t now) {
  auto key = session_key(cookie);
  if (key.empty()) return std::nullopt;
  std::lock_guard lock(mutex_);
  auto it = sessions_.find(key);
  if (it == sessions_.end()) return std::nullopt;
  if (now - it->second.last_used > limits_.idle || now - it->second.info.created > limits_.absolute) {
    sessions_.erase(it);
    return std::nullopt;
  }
  it->second.last_used = now;
  return it->second.info;
}

void MemorySessionStore::remove(const std::string& cookie) {
  auto key = session_key(cookie);
  std::lock_guard lock(mutex_);
  sessions_.erase(key);
}

size_t MemorySessionStore::size() {
  std::lock_guard lock(mutex_);
  return sessions_.size();
}

}  // namespace mk::webreader
