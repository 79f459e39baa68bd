// dnsbl_zone.h — a DNS blocklist zone with its return-code filter, in
// Postfix's syntax: `zen.spamhaus.org=127.0.0.[2..11]`, `list=127.0.0.[2;4;10..12]`.
// Parsing and matching only (no DNS), so the configuration can validate zones.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/net.h"

namespace mk::policy {

struct DnsblZone {
  std::string name;  // lower-case, no trailing dot
  std::string spec;  // as configured, for logs
  // Allowed values for each of the answer's four octets; empty = any value.
  std::vector<std::vector<std::pair<int, int>>> octets;
  bool matches(const IpAddress& answer) const;
};

// Parses "zone" or "zone=127.0.0.[2..11]". nullopt + error on bad syntax.
std::optional<DnsblZone> parse_dnsbl_zone(std::string_view spec, std::string* error);

// "2.0.0.127.zen.spamhaus.org" for 127.0.0.2; IPv6 in nibble form (RFC 5782 2.4).
std::string dnsbl_query_name(const IpAddress& ip, const std::string& zone);

// True for an answer that means "error", not "listed": outside 127/8 or in 127.255.255.0/24.
bool is_dnsbl_error_answer(const IpAddress& answer);

}  // namespace mk::policy
