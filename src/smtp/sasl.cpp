// sasl.cpp — see sasl.h.
#include "smtp/sasl.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "core/strings.h"

namespace mk::smtp {
namespace {

constexpr size_t kMaxDecoded = 4096;

std::string upper(std::string_view s) {
  std::string out(s);
  for (auto& c : out)
    if (c >= 'a' && c <= 'z') c = char(c - 'a' + 'A');
  return out;
}

Reply cannot_decode() { return Reply{501, "5.5.2", "Error: cannot decode the response (base64)"}; }

}  // namespace

bool decode_base64(std::string_view in, std::string& out) {
  out.clear();
  if (in.size() % 4 != 0 || in.size() / 4 * 3 > kMaxDecoded + 3) return false;
  for (size_t i = 0; i < in.size(); ++i) {
    unsigned char c = in[i];
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/' ||
              (c == '=' && i + 2 >= in.size() && (i + 1 == in.size() || in[i + 1] == '='));
    if (!ok) return false;
  }
  out.resize(in.size() / 4 * 3);
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(in.data()),
                          int(in.size()));
  if (n < 0) return false;
  // EVP_DecodeBlock counts the padding as zero bytes.
  size_t pad = in.ends_with("==") ? 2 : in.ends_with("=") ? 1 : 0;
  out.resize(size_t(n) - pad);
  return true;
}

std::string encode_base64(std::string_view in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(in.data()),
                          int(in.size()));
  out.resize(size_t(n));
  return out;
}

SaslExchange::~SaslExchange() { OPENSSL_cleanse(user_.data(), user_.size()); }

SaslStep SaslExchange::failed(Reply r) {
  SaslStep s;
  s.kind = SaslStep::Kind::Failed;
  s.reply = std::move(r);
  s.mechanism = mechanism_;
  return s;
}

SaslStep SaslExchange::start(std::string_view arg) {
  auto sp = arg.find(' ');
  mechanism_ = upper(arg.substr(0, sp));
  std::string_view initial = sp == std::string_view::npos ? std::string_view{} : arg.substr(sp + 1);
  if (mechanism_.empty()) return failed(Reply{501, "5.5.4", "Syntax: AUTH mechanism [initial-response]"});
  if (mechanism_ == "PLAIN") {
    if (initial.empty()) {
      SaslStep s;
      s.kind = SaslStep::Kind::Challenge;
      s.reply = Reply{334, "", ""};
      s.mechanism = mechanism_;
      stage_ = 1;
      return s;
    }
    return plain(initial);
  }
  if (mechanism_ == "LOGIN") {
    SaslStep s;
    s.kind = SaslStep::Kind::Challenge;
    s.mechanism = mechanism_;
    if (initial.empty()) {
      stage_ = 1;
      s.reply = Reply{334, "", encode_base64("Username:")};
      return s;
    }
    if (initial == "=") initial = {};
    if (!decode_base64(initial, user_)) return failed(cannot_decode());
    stage_ = 2;
    s.reply = Reply{334, "", encode_base64("Password:")};
    return s;
  }
  return failed(Reply{504, "5.5.4", "Error: unrecognized authentication mechanism"});
}

SaslStep SaslExchange::next(std::string_view line) {
  // RFC 4954 4: a "*" cancels the exchange.
  if (line == "*") return failed(Reply{501, "5.0.0", "Authentication cancelled"});
  if (mechanism_ == "PLAIN" && stage_ == 1) {
    stage_ = 0;
    return plain(line);
  }
  if (mechanism_ == "LOGIN" && stage_ == 1) {
    if (!decode_base64(line, user_)) return failed(cannot_decode());
    stage_ = 2;
    SaslStep s;
    s.kind = SaslStep::Kind::Challenge;
    s.mechanism = mechanism_;
    s.reply = Reply{334, "", encode_base64("Password:")};
    return s;
  }
  if (mechanism_ == "LOGIN" && stage_ == 2) {
    stage_ = 0;
    SaslStep s;
    s.mechanism = mechanism_;
    if (!decode_base64(line, s.password)) return failed(cannot_decode());
    s.kind = SaslStep::Kind::Credentials;
    s.user = std::move(user_);
    user_.clear();
    return s;
  }
  return failed(Reply{503, "5.5.1", "Error: no authentication in progress"});
}

SaslStep SaslExchange::plain(std::string_view base64) {
  std::string decoded;
  if (base64 == "=") base64 = {};
  if (!decode_base64(base64, decoded)) return failed(cannot_decode());
  // authzid NUL authcid NUL passwd (RFC 4616 2)
  auto first = decoded.find('\0');
  auto second = first == std::string::npos ? std::string::npos : decoded.find('\0', first + 1);
  if (second == std::string::npos) {
    OPENSSL_cleanse(decoded.data(), decoded.size());
    return failed(Reply{501, "5.5.2", "Error: malformed PLAIN response"});
  }
  SaslStep s;
  s.mechanism = mechanism_;
  auto authz = decoded.substr(0, first);
  s.user = decoded.substr(first + 1, second - first - 1);
  s.password = decoded.substr(second + 1);
  OPENSSL_cleanse(decoded.data(), decoded.size());
  if (!authz.empty() && to_lower(authz) != to_lower(s.user)) {
    OPENSSL_cleanse(s.password.data(), s.password.size());
    return failed(Reply{535, "5.7.8", "Error: authentication credentials invalid"});
  }
  if (s.user.empty()) return failed(Reply{501, "5.5.2", "Error: malformed PLAIN response"});
  s.kind = SaslStep::Kind::Credentials;
  return s;
}

}  // namespace mk::smtp
