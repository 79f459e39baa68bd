// password.cpp — see password.h.
#include "users/password.h"

#include <argon2.h>
#include <crypt.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <stdexcept>
#include <vector>

namespace mk::users {
namespace {

constexpr size_t kSaltBytes = 16;
constexpr size_t kHashBytes = 32;
constexpr size_t kMaxPassword = 1024;  // longer input is refused, not hashed

// Splits "{SCHEME}rest"; empty scheme if there is none.
std::pair<std::string_view, std::string_view> split_scheme(std::string_view stored) {
  if (stored.size() < 2 || stored.front() != '{') return {"", stored};
  auto end = stored.find('}');
  if (end == std::string_view::npos) return {"", stored};
  return {stored.substr(1, end - 1), stored.substr(end + 1)};
}

bool crypt_matches(std::string_view hash, std::string_view password) {
  std::string setting(hash), pw(password);
  crypt_data data{};
  const char* out = crypt_rn(pw.c_str(), setting.c_str(), &data, sizeof data);
  OPENSSL_cleanse(pw.data(), pw.size());
  if (!out || out[0] == '*') return false;
  std::string_view result(out);
  bool same = result.size() == hash.size() && CRYPTO_memcmp(result.data(), hash.data(), hash.size()) == 0;
  OPENSSL_cleanse(&data, sizeof data);
  return same;
}

}  // namespace

std::string hash_password(std::string_view password, const HashParams& params) {
  if (password.size() > kMaxPassword) throw std::runtime_error("password longer than 1024 bytes");
  unsigned char salt[kSaltBytes];
  if (RAND_bytes(salt, sizeof salt) != 1) throw std::runtime_error("no random bytes for the salt");
  size_t length = argon2_encodedlen(params.time_cost, params.memory_kib, 1, kSaltBytes, kHashBytes, Argon2_id);
  std::vector<char> encoded(length + 1);
  int rc = argon2id_hash_encoded(params.time_cost, params.memory_kib, 1, password.data(), password.size(), salt,
                                 sizeof salt, kHashBytes, encoded.data(), encoded.size());
  if (rc != ARGON2_OK) throw std::runtime_error(std::string("argon2id: ") + argon2_error_message(rc));
  return "{ARGON2ID}" + std::string(encoded.data());
}

bool known_scheme(std::string_view stored) {
  auto [scheme, rest] = split_scheme(stored);
  return scheme == "ARGON2ID" || scheme == "ARGON2I" || scheme == "SHA512-CRYPT" || scheme == "SHA256-CRYPT" ||
         scheme == "BLF-CRYPT";
}

bool verify_password(std::string_view stored, std::string_view password) {
  if (password.size() > kMaxPassword) return false;
  auto [scheme, rest] = split_scheme(stored);
  std::string hash(rest);
  if (scheme == "ARGON2ID" && hash.starts_with("$argon2id$"))
    return argon2id_verify(hash.c_str(), password.data(), password.size()) == ARGON2_OK;
  if (scheme == "ARGON2I" && hash.starts_with("$argon2i$"))
    return argon2i_verify(hash.c_str(), password.data(), password.size()) == ARGON2_OK;
  if ((scheme == "SHA512-CRYPT" && hash.starts_with("$6$")) || (scheme == "SHA256-CRYPT" && hash.starts_with("$5$")) ||
      (scheme == "BLF-CRYPT" && hash.starts_with("$2")))
    return crypt_matches(hash, password);
  return false;
}

}  // namespace mk::users
