// authenticator.cpp — see authenticator.h.
#include "users/authenticator.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <sys/stat.h>

#include <stdexcept>

#include "core/strings.h"
#include "users/password.h"

namespace mk::users {

Authenticator::Authenticator(AuthenticatorConfig config)
    : config_(std::move(config)),
      dummy_hash_(hash_password("mailkeep dummy password for unknown users")),
      per_ip_(config_.max_failures, config_.lockout_seconds),
      per_account_(config_.max_failures, config_.lockout_seconds) {}

std::shared_ptr<const PasswdFile> Authenticator::current(std::string& error) {
  std::lock_guard lock(mutex_);
  struct stat st{};
  if (::stat(config_.passwd.c_str(), &st) != 0) {
    file_ = std::make_shared<PasswdFile>();  // no file: nobody has a password
    size_ = -1;
    return file_;
  }
  int64_t mtime = int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  if (!file_ || st.st_ino != inode_ || st.st_size != size_ || mtime != mtime_ns_) {
    auto fresh = std::make_shared<PasswdFile>();
    error = read_passwd(config_.passwd, *fresh);
    if (!error.empty()) return file_ ? file_ : std::make_shared<PasswdFile>();
    file_ = std::move(fresh);
    inode_ = st.st_ino;
    size_ = st.st_size;
    mtime_ns_ = mtime;
  }
  return file_;
}

AuthOutcome Authenticator::check(const std::string& client_key, std::string_view user_in, std::string_view password,
                                 int64_t now) {
  AuthOutcome out;
  auto user = to_lower(user_in);
  if (per_ip_.locked(client_key, now) || per_account_.locked(user, now)) {
    out.verdict = AuthVerdict::LockedOut;
    out.reason = per_ip_.locked(client_key, now) ? "client locked out" : "account locked out";
    return out;
  }
  if (password.size() == 64) {  // a one-time token from issue_token()?
    std::lock_guard lock(mutex_);
    std::erase_if(tokens_, [&](auto& kv) { return kv.second.second < now; });
    for (auto it = tokens_.begin(); it != tokens_.end(); ++it)
      if (CRYPTO_memcmp(it->first.data(), password.data(), 64) == 0 && it->second.first == user) {
        tokens_.erase(it);
        out.verdict = AuthVerdict::Ok;
        out.user = user;
        return out;
      }
  }
  std::string error;
  auto file = current(error);
  if (!error.empty()) out.reason = "passwd-file: " + error + "; ";
  const PasswdEntry* entry = config_.is_account && config_.is_account(user) ? file->find(user) : nullptr;
  // Always one verification: an unknown user takes as long as a wrong password.
  bool match = verify_password(entry ? entry->password : dummy_hash_, password);
  if (entry && match && !entry->locked) {
    per_account_.clear(user);
    out.verdict = AuthVerdict::Ok;
    out.user = user;
    out.reason.clear();
    return out;
  }
  out.reason += !entry ? "unknown user" : entry->locked ? "account locked" : "wrong password";
  bool ip_locked = per_ip_.failed(client_key, now);
  bool account_locked = per_account_.failed(user, now);
  if (ip_locked) out.reason += "; client now locked out";
  if (account_locked) out.reason += "; account now locked out";
  return out;
}

std::string Authenticator::issue_token(const std::string& user, int64_t now) {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof bytes) != 1) throw std::runtime_error("no random bytes for a token");
  auto token = to_hex(bytes, sizeof bytes);
  std::lock_guard lock(mutex_);
  if (tokens_.size() > 10000) std::erase_if(tokens_, [&](auto& kv) { return kv.second.second < now; });
  tokens_[token] = {to_lower(user), now + 60};
  return token;
}

}  // namespace mk::users
