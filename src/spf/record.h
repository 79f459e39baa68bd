// record.h — the networks an SPF record (RFC 7208) allows to send: what
// `[backup] relay_from = spf:_spf.google.com` means.
//
// Only the question "which client networks are the provider's relays" is
// answered, not a full SPF check_host(): `ip4:` and `ip6:` mechanisms with a
// pass qualifier become networks; `include:` and `redirect=` are followed;
// `a`, `mx`, `ptr` and `exists` count towards the limit of 10 DNS-querying
// terms (RFC 7208 4.6.4) but add no networks (providers publish their relays
// as ip4/ip6; a relay list from `a`/`mx` would change with every lookup).
// Any error makes the whole expansion fail, so that the caller keeps its
// last good set: a loop, more than 10 terms, a missing or doubled record, a
// macro (section 7; not needed for a provider's relay list), a syntax error.
// Hand-written: libspf2 (Debian) answers check_host() for one IP and sender;
// it does not enumerate the networks of a record.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/net.h"

namespace mk::spf {

struct TxtAnswer {
  enum Status { Ok, NoRecord, Error } status = Error;  // NoRecord: NXDOMAIN or no TXT
  std::vector<std::string> texts;  // each TXT record, its strings joined (RFC 7208 3.3)
  uint32_t ttl = 0;                // the smallest TTL of the answer
  std::string error;
};
// A blocking TXT lookup (cares_txt.h in the server; a table in the tests).
using TxtLookup = std::function<TxtAnswer(const std::string& name)>;

struct Expansion {
  bool ok = false;
  std::vector<Cidr> networks;  // in record order, duplicates removed
  uint32_t ttl = 0;            // smallest TTL of every record read
  int lookups = 0;             // DNS-querying terms used (at most 10)
  std::string error;           // when !ok: what failed, naming the record
};

Expansion expand(const std::string& name, const TxtLookup& lookup);

}  // namespace mk::spf
