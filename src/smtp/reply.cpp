// reply.cpp — see reply.h.
#include "smtp/reply.h"

#include <cctype>

namespace mk::smtp {

std::string Reply::wire() const {
  std::string out;
  auto code_text = std::to_string(code);
  if (lines.empty()) return code_text + (status.empty() ? "" : " " + status) + "\r\n";
  for (size_t i = 0; i < lines.size(); ++i) {
    out += code_text;
    out += (i + 1 < lines.size()) ? '-' : ' ';
    if (!status.empty()) out += status + " ";
    out += lines[i];
    out += "\r\n";
  }
  return out;
}

std::string Reply::summary() const {
  std::string out = std::to_string(code);
  if (!status.empty()) out += " " + status;
  for (size_t i = 0; i < lines.size(); ++i) out += (i ? " / " : " ") + lines[i];
  if (!log_detail.empty()) out += " (" + log_detail + ")";
  return out;
}

// An enhanced status code is "class.subject.detail", class matching the reply's
// first digit (RFC 3463 2; RFC 2034 3).
static size_t enhanced_code_length(std::string_view text, int code) {
  size_t i = 0;
  if (text.size() < 5 || text[0] - '0' != code / 100 || text[1] != '.') return 0;
  i = 2;
  auto digits = [&](size_t max) {
    size_t n = 0;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])) && n < max) ++i, ++n;
    return n;
  };
  if (!digits(3) || i >= text.size() || text[i] != '.') return 0;
  ++i;
  if (!digits(3)) return 0;
  if (i < text.size() && text[i] != ' ') return 0;
  return i;
}

Reply parse_reply_lines(const std::vector<std::string>& raw) {
  Reply r;
  for (auto& line : raw) {
    if (line.size() < 3 || !std::isdigit((unsigned char)line[0]) || !std::isdigit((unsigned char)line[1]) ||
        !std::isdigit((unsigned char)line[2]))
      return Reply{};
    int code = std::stoi(line.substr(0, 3));
    if (r.code && code != r.code) return Reply{};
    r.code = code;
    std::string_view text = line.size() > 4 ? std::string_view(line).substr(4) : std::string_view();
    if (auto n = enhanced_code_length(text, code)) {
      if (r.status.empty()) r.status = std::string(text.substr(0, n));
      text.remove_prefix(std::min(text.size(), n + 1));
    }
    r.lines.emplace_back(text);
  }
  if (r.code < 200 || r.code > 599) return Reply{};
  return r;
}

namespace replies {
Reply ok(std::string text) { return {250, "2.0.0", std::move(text)}; }
Reply bad_syntax(std::string text) { return {501, "5.5.4", std::move(text)}; }
Reply bad_sequence(std::string text) { return {503, "5.5.1", std::move(text)}; }
Reply unknown_command() { return {500, "5.5.2", "Error: command not recognized"}; }
Reply line_too_long() { return {500, "5.5.2", "Error: line too long"}; }
Reply too_many_errors() { return {421, "4.7.0", "Error: too many errors, closing connection"}; }
Reply shutting_down(std::string_view host) {
  return {421, "4.3.2", std::string(host) + " Service shutting down, closing connection"};
}
Reply timeout(std::string_view host) {
  return {421, "4.4.2", std::string(host) + " Error: timeout exceeded, closing connection"};
}
Reply too_many_connections(std::string_view host) {
  return {421, "4.7.0", std::string(host) + " Error: too many connections, try again later"};
}
Reply upstream_unavailable(std::string detail) {
  Reply r{451, "4.4.1", "Upstream unavailable, try again later"};
  r.log_detail = std::move(detail);
  return r;
}
Reply message_too_big() { return {552, "5.3.4", "Error: message size exceeds fixed limit"}; }
}  // namespace replies

}  // namespace mk::smtp
