// command.cpp — see command.h.
#include "smtp/command.h"

#include <charconv>
#include <cstring>

#include "core/strings.h"

namespace mk::smtp {
namespace {

struct VerbName {
  std::string_view name;
  Verb verb;
};
constexpr VerbName kVerbs[] = {
    {"HELO", Verb::Helo}, {"EHLO", Verb::Ehlo}, {"MAIL", Verb::Mail}, {"RCPT", Verb::Rcpt},
    {"DATA", Verb::Data}, {"RSET", Verb::Rset}, {"NOOP", Verb::Noop}, {"QUIT", Verb::Quit},
    {"VRFY", Verb::Vrfy}, {"EXPN", Verb::Expn}, {"HELP", Verb::Help}, {"STARTTLS", Verb::Starttls}, {"AUTH", Verb::Auth},
};

bool is_atext(unsigned char c) {
  if (std::isalnum(c)) return true;
  return c != 0 && std::strchr("!#$%&'*+-/=?^_`{|}~", c) != nullptr;
}

// Let-dig / Ldh-str labels, or any UTF-8 byte when allowed (RFC 6531 3.3).
bool valid_label(std::string_view label, bool allow_utf8) {
  if (label.empty() || label.size() > 63) return false;
  for (unsigned char c : label) {
    if (c >= 0x80) {
      if (!allow_utf8) return false;
      continue;
    }
    if (!std::isalnum(c) && c != '-') return false;
  }
  return label.front() != '-' && label.back() != '-';
}

}  // namespace

CommandLine parse_command(std::string_view line) {
  CommandLine cmd;
  auto space = line.find(' ');
  cmd.name = line.substr(0, space);
  if (space != std::string_view::npos) {
    cmd.arg = line.substr(space + 1);
    while (!cmd.arg.empty() && cmd.arg.front() == ' ') cmd.arg.remove_prefix(1);
    while (!cmd.arg.empty() && cmd.arg.back() == ' ') cmd.arg.remove_suffix(1);
  }
  for (auto& v : kVerbs)
    if (iequals(cmd.name, v.name)) cmd.verb = v.verb;
  return cmd;
}

std::string Mailbox::local_unquoted() const {
  if (!quoted) return local;
  std::string out;
  for (size_t i = 1; i + 1 < local.size(); ++i) {
    if (local[i] == '\\' && i + 2 < local.size()) ++i;
    out += local[i];
  }
  return out;
}

std::string Mailbox::address() const {
  if (null) return "";
  return domain.empty() ? local : local + "@" + domain;
}

bool valid_domain(std::string_view d, bool allow_utf8) {
  if (d.empty() || d.size() > 255) return false;
  if (d.front() == '[') {
    // address-literal: [IPv4] or [IPv6:...] or [tag:...]; printable, no brackets inside.
    if (d.size() < 3 || d.back() != ']') return false;
    for (unsigned char c : d.substr(1, d.size() - 2))
      if (c < 33 || c > 126 || c == '[' || c == ']' || c == '\\') return false;
    return true;
  }
  while (true) {
    auto dot = d.find('.');
    if (!valid_label(d.substr(0, dot), allow_utf8)) return false;
    if (dot == std::string_view::npos) return true;
    d.remove_prefix(dot + 1);
  }
}

PathArgument parse_path_argument(std::string_view arg, std::string_view keyword, bool allow_null) {
  PathArgument r;
  auto fail = [&](std::string status, std::string error) {
    r.status = std::move(status);
    r.error = std::move(error);
    return r;
  };
  if (!istarts_with(arg, keyword) || arg.size() <= keyword.size() || arg[keyword.size()] != ':')
    return fail("5.5.4", "Syntax: " + std::string(keyword) + ":<address>");
  arg.remove_prefix(keyword.size() + 1);
  while (!arg.empty() && arg.front() == ' ') arg.remove_prefix(1);  // "MAIL FROM: <a@b>" is common
  if (arg.empty() || arg.front() != '<') return fail("5.5.4", "Syntax: address must be enclosed in <>");

  // Find the closing '>' outside a quoted string.
  size_t i = 1;
  bool in_quotes = false;
  for (; i < arg.size(); ++i) {
    char c = arg[i];
    if (in_quotes && c == '\\') {
      ++i;
      continue;
    }
    if (c == '"') in_quotes = !in_quotes;
    if (!in_quotes && c == '>') break;
  }
  if (i >= arg.size()) return fail("5.5.4", "Syntax: missing '>'");
  std::string_view path = arg.substr(1, i - 1);
  r.params = arg.substr(i + 1);
  while (!r.params.empty() && r.params.front() == ' ') r.params.remove_prefix(1);
  if (!r.params.empty() && arg[i + 1] != ' ') return fail("5.5.4", "Syntax: space required after '>'");
  if (path.size() > 256) return fail("5.1.3", "Address too long");  // RFC 5321 4.5.3.1.3

  if (path.empty()) {
    if (!allow_null) return fail("5.1.3", "Null recipient address not allowed");
    r.mailbox.null = true;
    return r;
  }
  // Source route: "@a,@b:" is dropped (RFC 5321 4.1.1.3, Appendix C).
  if (path.front() == '@') {
    auto colon = path.find(':');
    if (colon == std::string_view::npos) return fail("5.1.3", "Bad source route");
    for (auto& hop : split_list(path.substr(0, colon)))
      if (hop.size() < 2 || hop[0] != '@' || !valid_domain(std::string_view(hop).substr(1), true))
        return fail("5.1.3", "Bad source route");
    path.remove_prefix(colon + 1);
  }

  Mailbox& mb = r.mailbox;
  size_t at;
  if (!path.empty() && path.front() == '"') {
    // Quoted-string: qtextSMTP or quoted-pairSMTP (RFC 5321 4.1.2).
    size_t j = 1;
    for (; j < path.size(); ++j) {
      unsigned char c = path[j];
      if (c == '\\') {
        if (j + 1 >= path.size() || path[j + 1] < 32 || path[j + 1] > 126) return fail("5.1.3", "Bad quoted local part");
        ++j;
        continue;
      }
      if (c == '"') break;
      if (c >= 0x80) {
        mb.non_ascii = true;
        continue;
      }
      if (c < 32 || c > 126) return fail("5.1.3", "Bad character in local part");
    }
    if (j >= path.size()) return fail("5.1.3", "Unterminated quoted local part");
    at = j + 1;
    mb.quoted = true;
    if (at >= path.size() || path[at] != '@') return fail("5.1.3", "Address must be local-part@domain");
  } else {
    at = path.rfind('@');
    if (at == std::string_view::npos || at == 0) return fail("5.1.3", "Address must be local-part@domain");
    // Dot-string: atoms separated by single dots.
    auto local = path.substr(0, at);
    if (local.front() == '.' || local.back() == '.' || local.find("..") != std::string_view::npos)
      return fail("5.1.3", "Bad dot in local part");
    for (unsigned char c : local) {
      if (c >= 0x80) {
        mb.non_ascii = true;
        continue;
      }
      if (c != '.' && !is_atext(c)) return fail("5.1.3", "Bad character in local part");
    }
  }
  mb.local = std::string(path.substr(0, at));
  mb.domain = std::string(path.substr(at + 1));
  for (unsigned char c : mb.domain)
    if (c >= 0x80) mb.non_ascii = true;
  if (!valid_domain(mb.domain, true)) return fail("5.1.2", "Bad domain in address");
  mb.domain_lower = to_lower(mb.domain);
  return r;
}

bool parse_mail_params(std::string_view params, MailParams& out, std::string& error) {
  for (auto& param : split_list(params, ' ')) {
    auto eq = param.find('=');
    std::string_view key = std::string_view(param).substr(0, eq);
    std::string_view value = eq == std::string::npos ? std::string_view() : std::string_view(param).substr(eq + 1);
    if (iequals(key, "SIZE")) {
      uint64_t n = 0;
      auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (value.empty() || ec != std::errc() || p != value.data() + value.size()) {
        error = "Bad SIZE parameter";
        return false;
      }
      out.size = n;
    } else if (iequals(key, "BODY")) {
      if (iequals(value, "7BIT")) out.body = BodyType::SevenBit;
      else if (iequals(value, "8BITMIME")) out.body = BodyType::EightBitMime;
      else {
        error = "Unsupported BODY type '" + std::string(value) + "'";
        return false;
      }
    } else if (iequals(key, "SMTPUTF8") && eq == std::string::npos) {
      out.smtputf8 = true;
    } else {
      error = "Unsupported parameter '" + std::string(key) + "'";
      return false;
    }
  }
  return true;
}

}  // namespace mk::smtp
