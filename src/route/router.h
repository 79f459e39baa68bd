// router.h — who a recipient is, and where its mail goes.
//
// route() is THE place a recipient is classified: a relay domain, a client
// allowed to relay anywhere, or a reject. Later issues add alias and backup
// routes here; each route names its destination (the upstream it goes to),
// and the session keeps one destination per transaction (452 4.5.3 otherwise).
// Standards: RFC 5321 3.6.1 (relaying), 7.1 (no open relays); the
// `user%host@`, `host!user@` and quoted-`@` tricks are refused the way
// Postfix's allow_untrusted_routing = no refuses them.
// Threading: immutable after construction; safe from any thread.
#pragma once
#include <string>
#include <vector>

#include "config/settings.h"
#include "core/net.h"
#include "smtp/command.h"
#include "smtp/reply.h"

namespace mk::route {

// Where accepted mail goes next. Each destination has its own upstream factory.
enum class Destination { Relay };
const char* destination_name(Destination d);

struct ClientInfo {
  IpAddress ip;
  bool relay_allowed = false;  // inside [relay] relay_from
};

struct RouteDecision {
  Outcome outcome = Outcome::Ok;
  smtp::Reply reply;          // the rejection when outcome != Ok
  std::string reason;         // short reason for the log line
  Destination destination = Destination::Relay;
  smtp::Mailbox recipient;    // the address to relay to (rewritten by later routes)
};

class Router {
 public:
  explicit Router(const Settings& settings);
  ClientInfo classify_client(const IpAddress& ip) const;
  RouteDecision route(const ClientInfo& client, const smtp::Mailbox& recipient) const;
  bool is_relay_domain(const std::string& domain_lower) const;

 private:
  std::vector<std::string> relay_domains_;
  std::vector<Cidr> relay_from_;
};

}  // namespace mk::route
