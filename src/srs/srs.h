// srs.h — the Sender Rewriting Scheme for forwarded mail.
//
// A message forwarded through an alias keeps the original sender's domain in
// its envelope, and the next hop's SPF check then fails against our address.
// forward() rewrites the sender into our SRS domain; reverse() turns a bounce
// to such an address back into the original sender. The format is Shevek's
// (libsrs2, postsrsd, Exim), so that addresses rewritten by any of them
// decode here with the same secret and the other way round:
//
//   SRS0=HHHH=TT=orig-domain=orig-local@srs-domain
//   SRS1=HHHH=first-forwarder==HHHH=TT=orig-domain=orig-local@srs-domain
//
// TT is the day (Unix time / 86400, modulo 1024) in two base-32 digits;
// HHHH are the first four base-64 characters of HMAC-SHA1(secret, the
// lower-cased fields). SRS1 is what a second forwarder makes of an SRS0
// address: it keeps the first forwarder's hash and timestamp and signs only
// the host, so that the bounce goes back through the first forwarder.
// Written here because no Debian package has a C or C++ library for it
// (libsrs2 is not packaged; postsrsd is a daemon); the arithmetic is small
// and OpenSSL does the HMAC.
// Threading: immutable after construction; safe from any thread.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mk::srs {

enum class Error { None, NotSrs, Malformed, BadHash, Expired };
const char* error_text(Error e);

struct Reversed {
  Error error = Error::None;
  std::string local, domain;  // the address to relay to (for SRS1: the first forwarder's SRS0 address)
};

class Rewriter {
 public:
  // `secrets`: the first signs, all of them verify (rotation). Throws
  // std::invalid_argument when there is none or the domain is empty.
  Rewriter(std::string domain, std::vector<std::string> secrets, unsigned max_age_days = 21);
  // One secret per line, as postsrsd reads it (the first signs; line ends
  // removed, nothing else); throws std::runtime_error naming the file.
  static std::vector<std::string> read_secrets(const std::string& path);

  const std::string& domain() const { return domain_; }  // lower-case

  // The SRS local part (at domain()) for the envelope sender local@domain, at
  // Unix time `now`; nullopt when the sender stays as it is: the null sender,
  // or a sender already in our SRS domain.
  std::optional<std::string> forward(std::string_view local, std::string_view domain, int64_t now) const;
  // Decodes the local part of a recipient at domain().
  Reversed reverse(std::string_view local, int64_t now) const;

  // True if `local` has the shape of an SRS address (SRS0/SRS1 and a separator).
  static bool looks_like_srs(std::string_view local);

 private:
  std::string hash(size_t secret, std::initializer_list<std::string_view> fields) const;
  bool hash_ok(std::string_view given, std::initializer_list<std::string_view> fields) const;
  bool stamp_ok(std::string_view stamp, int64_t now) const;

  std::string domain_;
  std::vector<std::string> secrets_;
  unsigned max_age_days_;
};

}  // namespace mk::srs
