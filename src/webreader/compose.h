// compose.h — a message written in the web view (compose, reply, reply-all,
// forward) as RFC 5322 text, built with GMime: UTF-8 headers encoded per
// RFC 2047, the text quoted-printable, CRLF line ends, a fresh Message-ID,
// and In-Reply-To/References for a reply so that it threads everywhere.
// Threading: call index::init_mime() first; then from any thread.
#pragma once
#include <string>
#include <vector>

namespace mk::webreader {

struct Draft {
  std::string from;  // the account's address
  std::vector<std::string> to, cc, bcc;
  std::string subject, text;
  std::string in_reply_to;              // Message-ID (without <>) of the message answered; "" = new
  std::vector<std::string> references;  // of the message answered, oldest first (without <>)
  std::string hostname;                 // for the Message-ID
};

struct Composed {
  std::string message;  // the whole message, CRLF
  std::string message_id;
  std::string error;  // a bad address (nothing built)
};

Composed compose(const Draft& draft, int64_t now);

}  // namespace mk::webreader
