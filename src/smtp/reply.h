// reply.h — typed SMTP replies: code, enhanced status code, text.
//
// Standards: RFC 5321 4.2 (reply codes, multi-line replies), RFC 2034 and
// RFC 3463 (enhanced status codes). Every reply the server sends is a Reply
// value built here or parsed from an upstream; never a loose string.
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "core/outcome.h"

namespace mk::smtp {

struct Reply {
  int code = 0;              // 3 digits, 200..599
  std::string status;        // enhanced code "5.7.1", or "" where RFC 3463 has none (220, 221 ...)
  std::vector<std::string> lines;  // text, one entry per line of a multi-line reply
  // What failed, for our log only, never on the wire: a client is told "try
  // again later", the log names the internal host and the error.
  std::string log_detail;

  Reply() = default;
  Reply(int c, std::string st, std::string text) : code(c), status(std::move(st)), lines{std::move(text)} {}

  Outcome outcome() const { return code < 400 ? Outcome::Ok : code < 500 ? Outcome::TempFail : Outcome::PermFail; }
  bool positive() const { return code >= 200 && code < 400; }
  // The reply as sent on the wire, CRLF-terminated, "250-" continuation lines.
  std::string wire() const;
  // One line for logs: "550 5.7.1 text", then " (log_detail)" if there is one.
  std::string summary() const;
};

// Parses one complete (possibly multi-line) reply from `text`, lines joined by CRLF
// without the final CRLF. Used for upstream replies. Returns code 0 if malformed.
Reply parse_reply_lines(const std::vector<std::string>& lines);

// Replies with a fixed meaning, so that every place says the same thing.
namespace replies {
Reply ok(std::string text = "Ok");
Reply bad_syntax(std::string text);           // 501 5.5.4
Reply bad_sequence(std::string text);         // 503 5.5.1
Reply unknown_command();                      // 500 5.5.2
Reply line_too_long();                        // 500 5.5.2
Reply too_many_errors();                      // 421 4.7.0
Reply shutting_down(std::string_view host);   // 421 4.3.2
Reply timeout(std::string_view host);         // 421 4.4.2
Reply too_many_connections(std::string_view host);  // 421 4.7.0
Reply upstream_unavailable(std::string detail);     // 451 4.4.1; detail goes to log_detail
Reply message_too_big();                      // 552 5.3.4
}  // namespace replies

}  // namespace mk::smtp
