// password.h — password hashes in the form Dovecot's passwd-file stores them:
// "{SCHEME}hash", so that Dovecot and mailkeep's own AUTH check the same file.
//
// New hashes are Argon2id (RFC 9106) through libargon2, the reference
// implementation, written as the PHC string "$argon2id$v=19$m=..,t=..,p=1$salt$hash"
// that Dovecot 2.3's ARGON2ID scheme (libsodium) verifies; p is 1 because
// libsodium verifies nothing else. Verification also takes ARGON2I and the
// crypt(3) schemes an operator may have made with `doveadm pw`
// (SHA512-CRYPT, SHA256-CRYPT, BLF-CRYPT), through libxcrypt.
// Threading: pure functions; hashing is CPU- and memory-heavy (tens of ms):
// run it off the event loops.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace mk::users {

struct HashParams {
  // libsodium's "interactive" limits (crypto_pwhash_*_INTERACTIVE), 64 MiB per
  // check. Measured (bench/standalone_bench.py, 2-core VM): about 270 ms per
  // login with Debian's libargon2 (a portable build without SIMD), 165 ms for
  // Dovecot's libsodium on the same hash.
  uint32_t time_cost = 2;
  uint32_t memory_kib = 64 * 1024;
};

// "{ARGON2ID}$argon2id$...". Throws std::runtime_error if the library fails.
std::string hash_password(std::string_view password, const HashParams& params = {});

// True if `password` matches `stored` ("{SCHEME}..."). Unknown schemes,
// {PLAIN} and malformed hashes never match.
bool verify_password(std::string_view stored, std::string_view password);

// True if verify_password understands the scheme of `stored`.
bool known_scheme(std::string_view stored);

}  // namespace mk::users
