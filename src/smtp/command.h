// command.h — parsing of SMTP command lines, paths and parameters.
//
// Standards: RFC 5321 4.1.1 (commands), 4.1.2 (path syntax: Dot-string,
// Quoted-string, address literals, source routes), 4.5.3.1 (size limits);
// RFC 1870 (SIZE=), RFC 6152 (BODY=8BITMIME), RFC 6531 (SMTPUTF8, UTF-8 in
// addresses). Pure functions; no I/O, so the parser is table-tested and fuzzed.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace mk::smtp {

enum class Verb { Helo, Ehlo, Mail, Rcpt, Data, Rset, Noop, Quit, Vrfy, Expn, Help, Starttls, Auth, Unknown };

struct CommandLine {
  Verb verb = Verb::Unknown;
  std::string_view name;  // the verb as the client typed it
  std::string_view arg;   // the rest, leading spaces removed
};

// Splits "MAIL FROM:<a@b>" into verb and argument; the verb is case-insensitive.
CommandLine parse_command(std::string_view line);

struct Mailbox {
  std::string local;   // as written (a Quoted-string keeps its quotes)
  std::string domain;  // as written; compare with domain_lower
  std::string domain_lower;
  bool null = false;     // the null reverse-path <>
  bool quoted = false;   // local part was a Quoted-string
  bool non_ascii = false;
  std::string local_unquoted() const;  // quoted-pairs resolved, quotes removed
  std::string address() const;         // "local@domain", "" for <>
};

enum class BodyType { Unspecified, SevenBit, EightBitMime };

struct MailParams {
  std::optional<uint64_t> size;  // RFC 1870
  BodyType body = BodyType::Unspecified;
  bool smtputf8 = false;
};

// The result of parsing a MAIL or RCPT argument. On failure `error` is set
// and `status` is the RFC 3463 code to answer with (5.5.4, 5.1.3, 5.1.7 ...).
struct PathArgument {
  Mailbox mailbox;
  std::string_view params;  // everything after '>'
  std::string error;
  std::string status;
  bool ok() const { return error.empty(); }
};

// Parses "FROM:<path> params" (keyword "FROM") or "TO:<path> params" (keyword "TO").
// A source route (<@a,@b:user@c>) is accepted and dropped, as RFC 5321 4.1.1.3 / C says.
PathArgument parse_path_argument(std::string_view arg, std::string_view keyword, bool allow_null);

// Parses MAIL parameters (SIZE, BODY, SMTPUTF8). Unknown ones are an error (555 5.5.4).
bool parse_mail_params(std::string_view params, MailParams& out, std::string& error);

// Validates a domain (or address literal) as RFC 5321 4.1.2 Domain; UTF-8 labels
// are allowed when `allow_utf8`.
bool valid_domain(std::string_view d, bool allow_utf8);

}  // namespace mk::smtp
