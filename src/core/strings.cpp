// strings.cpp — see strings.h.
#include "core/strings.h"

#include <cctype>

#include <ctime>

namespace mk {

static char lower(char c) { return (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c; }

std::string printable_ascii(std::string_view s, size_t max, std::string_view also_replace) {
  std::string out;
  for (unsigned char c : s.substr(0, max))
    out += (c >= 32 && c < 127 && also_replace.find(char(c)) == std::string_view::npos) ? char(c) : '?';
  return out;
}

std::string to_lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = lower(c);
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

bool valid_dns_name(std::string_view name) {
  if (name.empty() || name.size() > 253) return false;
  size_t label = 0;
  for (char c : name) {
    if (c == '.') {
      if (label == 0) return false;
      label = 0;
      continue;
    }
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
    if (!ok || ++label > 63) return false;
  }
  return label > 0;
}

bool istarts_with(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n'))
    s.remove_suffix(1);
  return s;
}

std::vector<std::string> split_list(std::string_view s, char sep) {
  std::vector<std::string> out;
  while (true) {
    auto pos = s.find(sep);
    auto piece = trim(s.substr(0, pos));
    if (!piece.empty()) out.emplace_back(piece);
    if (pos == std::string_view::npos) break;
    s.remove_prefix(pos + 1);
  }
  return out;
}

std::string to_hex(const unsigned char* p, size_t n) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    out += digits[p[i] >> 4];
    out += digits[p[i] & 15];
  }
  return out;
}

std::string format_utc(int64_t unix_seconds, const char* format) {
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, format, &tm);
  return buf;
}

std::string percent_decode(std::string_view s, bool plus_is_space) {
  auto hex = [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; };
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+' && plus_is_space) out += ' ';
    else if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) && hex(s[i + 2])) {
      out += char(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else out += s[i];
  }
  return out;
}

std::string iso8601_utc(int64_t unix_seconds) { return format_utc(unix_seconds, "%Y-%m-%dT%H:%M:%SZ"); }

std::optional<int64_t> parse_date_utc(const std::string& date) {
  std::tm tm{};
  const char* end = date.size() == 10 ? strptime(date.c_str(), "%Y-%m-%d", &tm) : nullptr;
  if (!end || *end) return std::nullopt;
  return int64_t(timegm(&tm));
}

std::string header_value(std::string_view msg, std::string_view name, size_t max) {
  size_t pos = 0;
  while (pos < msg.size()) {
    auto eol = msg.find('\n', pos);
    if (eol == std::string_view::npos) eol = msg.size();
    std::string_view line = msg.substr(pos, eol - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) return {};  // end of the header section
    if (line.size() > name.size() && line[name.size()] == ':' && iequals(line.substr(0, name.size()), name)) {
      std::string v(line.substr(name.size() + 1));
      size_t next = eol + 1;
      while (next < msg.size() && (msg[next] == ' ' || msg[next] == '\t')) {
        auto e2 = msg.find('\n', next);
        if (e2 == std::string_view::npos) e2 = msg.size();
        std::string_view cont = msg.substr(next, e2 - next);
        if (!cont.empty() && cont.back() == '\r') cont.remove_suffix(1);
        v += cont;
        next = e2 + 1;
        if (v.size() > max) break;
      }
      return std::string(trim(v));
    }
    pos = eol + 1;
  }
  return {};
}

}  // namespace mk
