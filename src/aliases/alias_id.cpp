// alias_id.cpp — see alias_id.h.
#include "aliases/alias_id.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <stdexcept>

#include "core/strings.h"

namespace mk::aliases {
namespace {

void random_bytes(unsigned char* buf, size_t n) {
  if (RAND_bytes(buf, static_cast<int>(n)) != 1) throw std::runtime_error("CSPRNG failure (RAND_bytes)");
}


}  // namespace

static_assert(kAliasAlphabet.size() == 31);

std::string generate_alias_id() {
  // Rejection sampling: bytes ≥ 248 (= 8 · 31) are dropped so that
  // `byte % 31` gives every symbol the same chance.
  std::string id;
  unsigned char buf[32];
  while (id.size() < kAliasIdLength) {
    random_bytes(buf, sizeof buf);
    for (unsigned char b : buf) {
      if (b >= 248 || id.size() == kAliasIdLength) continue;
      id += kAliasAlphabet[b % kAliasAlphabet.size()];
    }
  }
  return id;
}

std::optional<std::string> normalise_alias_id(std::string_view local) {
  if (local.size() != kAliasIdLength) return std::nullopt;
  std::string id;
  for (char c : local) {
    char l = (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c;
    if (kAliasAlphabet.find(l) == std::string_view::npos) return std::nullopt;
    id += l;
  }
  return id;
}

std::string generate_token() {
  unsigned char buf[32];
  random_bytes(buf, sizeof buf);
  return to_hex(buf, sizeof buf);
}

std::string hash_token(std::string_view token) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(token.data(), token.size(), digest, &len, EVP_sha256(), nullptr);
  return to_hex(digest, len);
}

bool token_matches(std::string_view hash, std::string_view token) {
  auto computed = hash_token(token);
  return computed.size() == hash.size() && CRYPTO_memcmp(computed.data(), hash.data(), hash.size()) == 0;
}

}  // namespace mk::aliases
