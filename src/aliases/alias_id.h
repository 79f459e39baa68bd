// alias_id.h — alias ids and management tokens, from a CSPRNG (OpenSSL RAND_bytes).
//
// Alphabet: 31 symbols without look-alikes (2-9 and a-z without i, l, o; no
// 0 or 1): log2(31) = 4.95 bits each; length 14 = 69.4 bits (8·10^20 ids).
// Why that is enough — guessing a live alias must be hopeless at the rates we allow:
//   live aliases  ≤ 10^7   (one creation per IP per create_interval = 30 s for
//                           up to max_days = 60: 10^7 live aliases take ~58,000
//                           IPs creating non-stop for two months)
//   guesses       ≤ 10^4 per second for a year = 3.2·10^11 (far beyond what
//                           max_connections, max_errors and the timeouts let
//                           one gateway answer; the HTTP API answers a wrong
//                           id exactly like a wrong token)
//   expected hits = 3.2·10^11 · 10^7 / 8·10^20 ≈ 0.004 per year.
// Ids are never reused: every id ever issued stays in the store's id table.
#pragma once
#include <optional>
#include <string>
#include <string_view>

namespace mk::aliases {

inline constexpr std::string_view kAliasAlphabet = "23456789abcdefghjkmnpqrstuvwxyz";
inline constexpr size_t kAliasIdLength = 14;

std::string generate_alias_id();
// Lower-cases `local_part` and checks it could be an alias id (alphabet and length).
std::optional<std::string> normalise_alias_id(std::string_view local_part);

// 32 random bytes, hex: shown once to the creator, stored only as a hash.
std::string generate_token();
std::string hash_token(std::string_view token);
// Constant-time comparison of hash_token(token) with `hash`.
bool token_matches(std::string_view hash, std::string_view token);

}  // namespace mk::aliases
