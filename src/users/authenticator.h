// authenticator.h — checks an account's password for SMTP AUTH (submission)
// against the same passwd-file Dovecot reads, with the failure limits.
//
// The verdicts a client may see are only "ok", "wrong" and "locked out":
// an unknown or unlisted user, a wrong password and a locked account all are
// "wrong", and an unknown user costs one full hash verification (of a dummy
// hash with the same parameters), so the timing does not tell them apart
// either. Failures are limited per client IP and per account name
// ([submission] max_auth_failures within auth_lockout seconds, then locked for
// auth_lockout): a lockout answers at once, without a verification.
// The file is re-read when it changes (size, mtime, inode).
// Threading: check() is blocking (tens of ms of CPU): run it on the blocking
// pool; it is safe from several threads at once.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <sys/types.h>

#include "policy/rate_limit.h"
#include "users/passwd_file.h"

namespace mk::users {

struct AuthenticatorConfig {
  std::string passwd;  // the passwd-file
  // True if the lower-case address is an archived account now (the accounts list).
  std::function<bool(const std::string&)> is_account;
  uint32_t max_failures = 10;
  int64_t lockout_seconds = 900;
};

enum class AuthVerdict { Ok, Wrong, LockedOut };

struct AuthOutcome {
  AuthVerdict verdict = AuthVerdict::Wrong;
  std::string user;    // the lower-cased account on Ok
  std::string reason;  // for the log: "unknown user", "wrong password", "account locked", ...
};

class Authenticator {
 public:
  explicit Authenticator(AuthenticatorConfig config);
  // `client_key`: the client's address key (policy::client_key).
  AuthOutcome check(const std::string& client_key, std::string_view user, std::string_view password, int64_t now);
  // A one-time password for `user`, valid for 60 seconds, that check()
  // accepts once: the web view (logged in, with no password kept) submits a
  // user's mail through the submission listener with it. 256 random bits,
  // in memory only.
  std::string issue_token(const std::string& user, int64_t now);

 private:
  std::shared_ptr<const PasswdFile> current(std::string& error);

  AuthenticatorConfig config_;
  std::string dummy_hash_;
  policy::FailureLimiter per_ip_, per_account_;
  std::mutex mutex_;  // guards the cached file
  std::shared_ptr<const PasswdFile> file_;
  std::map<std::string, std::pair<std::string, int64_t>> tokens_;  // token → (user, expiry); under mutex_
  ino_t inode_ = 0;
  off_t size_ = -1;
  int64_t mtime_ns_ = -1;
};

}  // namespace mk::users
