// srs.cpp — SRS0/SRS1 encoding and decoding (see srs.h for the format).
#include "srs/srs.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <fstream>
#include <stdexcept>

#include "core/strings.h"

namespace mk::srs {
namespace {

constexpr std::string_view kBase32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
constexpr std::string_view kBase64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr int64_t kDay = 86400;
constexpr int64_t kSlots = 1024;  // two base-32 digits
constexpr size_t kHashLength = 4;
constexpr char kSep = '=';

bool is_separator(char c) { return c == '=' || c == '+' || c == '-'; }

// "SRS0" or "SRS1" (any case) followed by a separator.
bool has_tag(std::string_view local, char digit) {
  return local.size() > 4 && istarts_with(local, std::string("SRS") + digit) && is_separator(local[4]);
}

std::string stamp_of(int64_t now) {
  int64_t day = (now / kDay) % kSlots;
  if (day < 0) day += kSlots;
  return {kBase32[(day >> 5) & 31], kBase32[day & 31]};
}

}  // namespace

const char* error_text(Error e) {
  switch (e) {
    case Error::None: return "ok";
    case Error::NotSrs: return "not an SRS address";
    case Error::Malformed: return "malformed SRS address";
    case Error::BadHash: return "SRS hash does not verify";
    case Error::Expired: return "SRS timestamp expired";
  }
  return "?";
}

Rewriter::Rewriter(std::string domain, std::vector<std::string> secrets, unsigned max_age_days)
    : domain_(to_lower(domain)), secrets_(std::move(secrets)), max_age_days_(max_age_days) {
  if (domain_.empty()) throw std::invalid_argument("SRS needs a domain");
  if (secrets_.empty()) throw std::invalid_argument("SRS needs a secret");
}

std::vector<std::string> Rewriter::read_secrets(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot read the SRS secret file");
  std::vector<std::string> out;
  std::string line;
  while (std::getline(in, line)) {
    while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) line.pop_back();
    if (!line.empty()) out.push_back(line);
  }
  if (in.bad()) throw std::runtime_error(path + ": error reading the SRS secret file");
  if (out.empty()) throw std::runtime_error(path + ": no secret in the SRS secret file");
  return out;
}

bool Rewriter::looks_like_srs(std::string_view local) { return has_tag(local, '0') || has_tag(local, '1'); }

std::string Rewriter::hash(size_t secret, std::initializer_list<std::string_view> fields) const {
  // The fields are signed lower-cased: a next hop may change the case of an address.
  std::string data;
  for (auto f : fields) data += to_lower(f);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  const std::string& key = secrets_[secret];
  HMAC(EVP_sha1(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
       data.size(), md, &len);
  // The first four base-64 digits: 24 bits.
  std::string out(kHashLength, '\0');
  out[0] = kBase64[md[0] >> 2];
  out[1] = kBase64[((md[0] & 0x03) << 4) | (md[1] >> 4)];
  out[2] = kBase64[((md[1] & 0x0F) << 2) | (md[2] >> 6)];
  out[3] = kBase64[md[2] & 0x3F];
  return out;
}

bool Rewriter::hash_ok(std::string_view given, std::initializer_list<std::string_view> fields) const {
  // Compared without case, as libsrs2 does: some hops lower-case whole addresses.
  if (given.size() < kHashLength) return false;
  given = given.substr(0, kHashLength);
  for (size_t i = 0; i < secrets_.size(); ++i)
    if (iequals(given, hash(i, fields))) return true;
  return false;
}

bool Rewriter::stamp_ok(std::string_view stamp, int64_t now) const {
  if (stamp.size() != 2) return false;
  int64_t then = 0;
  for (char c : stamp) {
    auto p = kBase32.find(static_cast<char>(c >= 'a' && c <= 'z' ? c - 32 : c));
    if (p == std::string_view::npos) return false;
    then = (then << 5) | static_cast<int64_t>(p);
  }
  int64_t today = (now / kDay) % kSlots;
  if (today < 0) today += kSlots;
  while (today < then) today += kSlots;  // the day counter wrapped since
  return today <= then + max_age_days_;
}

std::optional<std::string> Rewriter::forward(std::string_view local, std::string_view domain, int64_t now) const {
  if (local.empty() || domain.empty()) return std::nullopt;
  if (iequals(domain, domain_)) return std::nullopt;  // ours already (includes our own SRS addresses)
  std::string out;
  if (has_tag(local, '1')) {
    // SRS1=HHHH=first-forwarder=REST@other → re-signed for us, keeping the first forwarder.
    auto rest = local.substr(5);
    auto e1 = rest.find(kSep);
    if (e1 != std::string_view::npos) {
      auto host_and_user = rest.substr(e1 + 1);
      auto e2 = host_and_user.find(kSep);
      if (e2 != std::string_view::npos && e2 > 0 && e2 + 1 < host_and_user.size()) {
        auto host = host_and_user.substr(0, e2), user = host_and_user.substr(e2 + 1);
        return "SRS1" + std::string(1, kSep) + hash(0, {host, user}) + kSep + std::string(host) + kSep +
               std::string(user);
      }
    }
    // Not a well-formed SRS1: treated as an ordinary local part below.
  } else if (has_tag(local, '0')) {
    // SRS0 from another forwarder: SRS1=HHHH=that-forwarder==HHHH=TT=…, so the bounce goes back through it.
    auto user = local.substr(4);  // from its separator on
    return "SRS1" + std::string(1, kSep) + hash(0, {domain, user}) + kSep + std::string(domain) + kSep +
           std::string(user);
  }
  auto stamp = stamp_of(now);
  out = "SRS0";
  out += kSep;
  out += hash(0, {stamp, domain, local});
  out += kSep;
  out += stamp;
  out += kSep;
  out += domain;
  out += kSep;
  out += local;
  return out;
}

Reversed Rewriter::reverse(std::string_view local, int64_t now) const {
  Reversed r;
  if (has_tag(local, '1')) {
    // SRS1=HHHH=host=REST → SRS0REST@host (REST starts with the SRS0 separator).
    auto rest = local.substr(5);
    auto e1 = rest.find(kSep);
    if (e1 == std::string_view::npos) return {Error::Malformed, {}, {}};
    auto given = rest.substr(0, e1);
    auto host_and_user = rest.substr(e1 + 1);
    auto e2 = host_and_user.find(kSep);
    if (e2 == std::string_view::npos || e2 == 0 || e2 + 1 >= host_and_user.size()) return {Error::Malformed, {}, {}};
    auto host = host_and_user.substr(0, e2), user = host_and_user.substr(e2 + 1);
    if (!hash_ok(given, {host, user})) return {Error::BadHash, {}, {}};
    r.local = "SRS0" + std::string(user);
    r.domain = std::string(host);
    return r;
  }
  if (!has_tag(local, '0')) return {Error::NotSrs, {}, {}};
  // SRS0=HHHH=TT=domain=local; the original local part may itself hold '='.
  auto rest = local.substr(5);
  auto e1 = rest.find(kSep);
  if (e1 == std::string_view::npos) return {Error::Malformed, {}, {}};
  auto e2 = rest.find(kSep, e1 + 1);
  if (e2 == std::string_view::npos) return {Error::Malformed, {}, {}};
  auto e3 = rest.find(kSep, e2 + 1);
  if (e3 == std::string_view::npos) return {Error::Malformed, {}, {}};
  auto given = rest.substr(0, e1), stamp = rest.substr(e1 + 1, e2 - e1 - 1);
  auto host = rest.substr(e2 + 1, e3 - e2 - 1), user = rest.substr(e3 + 1);
  if (host.empty() || user.empty()) return {Error::Malformed, {}, {}};
  if (!stamp_ok(stamp, now)) {
    bool digits = stamp.size() == 2 && std::all_of(stamp.begin(), stamp.end(), [](char c) {
      return kBase32.find(static_cast<char>(c >= 'a' && c <= 'z' ? c - 32 : c)) != std::string_view::npos;
    });
    return {digits ? Error::Expired : Error::Malformed, {}, {}};
  }
  if (!hash_ok(given, {stamp, host, user})) return {Error::BadHash, {}, {}};
  r.local = std::string(user);
  r.domain = std::string(host);
  return r;
}

}  // namespace mk::srs
