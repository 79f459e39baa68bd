// dnsbl.h — DNS blocklist checks (RFC 5782) with return-code filters in
// Postfix's syntax: `zen.spamhaus.org=127.0.0.[2..11]`, `list=127.0.0.[2;4;10..12]`.
//
// Semantics: a client is listed when a zone answers an A record inside
// 127.0.0.0/8 that matches the zone's filter (any such answer when it has
// none). Answers outside 127.0.0.0/8, or in 127.255.255.0/24 (the lists'
// "your resolver is refused" codes), are errors, not listings. All zones are
// queried in parallel; answers are cached for their TTL (NXDOMAIN for the
// zone's SOA minimum, RFC 2308); each query has a timeout.
// Implementations: make_cares_dnsbl (c-ares, its own thread); tests/unit
// has a fake.
#pragma once
#include <boost/asio/awaitable.hpp>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/net.h"
#include "policy/dnsbl_zone.h"

namespace mk::policy {

struct DnsblVerdict {
  enum Kind { NotListed, Listed, Error } kind = NotListed;
  std::string zone;    // the listing (or failing) zone
  std::string answer;  // e.g. "127.0.0.2"
  std::string detail;  // error text
};

class DnsblChecker {
 public:
  virtual ~DnsblChecker() = default;
  // Checks `ip` against every zone at once. Completes on the caller's executor.
  virtual boost::asio::awaitable<DnsblVerdict> check(IpAddress ip, std::vector<DnsblZone> zones) = 0;
};

struct CaresConfig {
  std::vector<HostPort> servers;  // empty: /etc/resolv.conf
  int timeout_ms = 2000;
};

// A checker on c-ares, with its own thread: lookups never block a session's thread.
std::unique_ptr<DnsblChecker> make_cares_dnsbl(CaresConfig config);

}  // namespace mk::policy
