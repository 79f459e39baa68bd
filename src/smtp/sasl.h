// sasl.h — the server side of SMTP AUTH (RFC 4954) for the PLAIN (RFC 4616)
// and LOGIN mechanisms: decoding the client's lines into a user name and a
// password, with the RFC's replies for everything a client can get wrong.
// The session drives it: start() with the AUTH argument, then next() with
// each line the client sends after a 334 challenge. The password check
// itself is not here (users/authenticator.h).
// Bounds: a decoded response is at most 4 KB; an authorization identity other
// than the authentication identity is refused (no proxy logins).
// Threading: a value owned by one session.
#pragma once
#include <string>
#include <string_view>

#include "smtp/reply.h"

namespace mk::smtp {

struct SaslStep {
  enum class Kind { Challenge, Credentials, Failed } kind = Kind::Failed;
  Reply reply;            // Challenge: the 334 to send; Failed: the error
  std::string user, password;  // Credentials
  std::string mechanism;  // "PLAIN" | "LOGIN", for the log
};

class SaslExchange {
 public:
  // `arg`: what follows "AUTH " on the command line.
  SaslStep start(std::string_view arg);
  // A response line (without CRLF) after a challenge.
  SaslStep next(std::string_view line);
  ~SaslExchange();

 private:
  SaslStep plain(std::string_view base64);
  SaslStep failed(Reply r);
  std::string mechanism_;
  int stage_ = 0;  // LOGIN: 1 = waiting for the user name, 2 = for the password
  std::string user_;
};

// Strict base64 (RFC 4648 alphabet, padding required, no whitespace) through
// OpenSSL; false if `in` is not that.
bool decode_base64(std::string_view in, std::string& out);
std::string encode_base64(std::string_view in);

}  // namespace mk::smtp
