// dnsbl_zone.cpp — see dnsbl_zone.h.
#include "policy/dnsbl_zone.h"

#include <charconv>

#include "core/strings.h"

namespace mk::policy {

bool DnsblZone::matches(const IpAddress& a) const {
  if (octets.empty()) return true;
  for (size_t i = 0; i < 4; ++i) {
    int v = a.bytes[12 + i];
    if (octets[i].empty()) continue;
    bool ok = false;
    for (auto& [lo, hi] : octets[i]) ok = ok || (v >= lo && v <= hi);
    if (!ok) return false;
  }
  return true;
}

static bool parse_number(std::string_view s, int& out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size() && out >= 0 && out <= 255;
}

std::optional<DnsblZone> parse_dnsbl_zone(std::string_view spec, std::string* error) {
  auto fail = [&](std::string why) -> std::optional<DnsblZone> {
    if (error) *error = "'" + std::string(spec) + "': " + why;
    return std::nullopt;
  };
  DnsblZone z;
  z.spec = std::string(spec);
  auto eq = spec.find('=');
  z.name = to_lower(trim(spec.substr(0, eq)));
  if (!z.name.empty() && z.name.back() == '.') z.name.pop_back();
  if (z.name.empty() || z.name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-.") != std::string::npos)
    return fail("invalid zone name");
  if (eq == std::string_view::npos) return z;
  auto filter = trim(spec.substr(eq + 1));
  // Split into four octets on dots outside brackets.
  std::vector<std::string_view> parts;
  size_t start = 0;
  int depth = 0;
  for (size_t i = 0; i <= filter.size(); ++i) {
    if (i < filter.size() && filter[i] == '[') ++depth;
    if (i < filter.size() && filter[i] == ']') --depth;
    if (i == filter.size() || (filter[i] == '.' && depth == 0)) {
      parts.push_back(filter.substr(start, i - start));
      start = i + 1;
    }
  }
  if (parts.size() != 4) return fail("a filter has four octets, like 127.0.0.[2..11]");
  for (auto part : parts) {
    std::vector<std::pair<int, int>> ranges;
    if (!part.empty() && part.front() == '[' && part.back() == ']') {
      for (auto& item : split_list(part.substr(1, part.size() - 2), ';')) {
        auto dots = item.find("..");
        int lo, hi;
        if (dots == std::string::npos) {
          if (!parse_number(item, lo)) return fail("bad octet '" + item + "'");
          hi = lo;
        } else if (!parse_number(std::string_view(item).substr(0, dots), lo) ||
                   !parse_number(std::string_view(item).substr(dots + 2), hi) || lo > hi) {
          return fail("bad range '" + item + "'");
        }
        ranges.emplace_back(lo, hi);
      }
      if (ranges.empty()) return fail("empty []");
    } else {
      int v;
      if (!parse_number(part, v)) return fail("bad octet '" + std::string(part) + "'");
      ranges.emplace_back(v, v);
    }
    z.octets.push_back(std::move(ranges));
  }
  return z;
}

}  // namespace mk::policy
