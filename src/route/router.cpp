// router.cpp — see router.h.
#include "route/router.h"

#include <algorithm>

namespace mk::route {

const char* destination_name(Destination d) {
  switch (d) {
    case Destination::Relay: return "relay";
  }
  return "?";
}

Router::Router(const Settings& s) : relay_domains_(s.relay.domains), relay_from_(s.relay.relay_from) {}

ClientInfo Router::classify_client(const IpAddress& ip) const {
  ClientInfo c;
  c.ip = ip;
  c.relay_allowed = std::any_of(relay_from_.begin(), relay_from_.end(), [&](const Cidr& n) { return n.contains(ip); });
  return c;
}

bool Router::is_relay_domain(const std::string& domain_lower) const {
  std::string_view d = domain_lower;
  if (!d.empty() && d.back() == '.') d.remove_suffix(1);  // "example.org." is example.org
  return std::find(relay_domains_.begin(), relay_domains_.end(), d) != relay_domains_.end();
}

RouteDecision Router::route(const ClientInfo& client, const smtp::Mailbox& rcpt) const {
  RouteDecision d;
  d.recipient = rcpt;
  if (client.relay_allowed) return d;  // trusted networks may send anywhere

  auto deny = [&](std::string reason) {
    d.outcome = Outcome::PermFail;
    d.reason = std::move(reason);
    d.reply = smtp::Reply{550, "5.7.1", "<" + rcpt.address() + ">: Relaying denied"};
    return d;
  };
  if (!is_relay_domain(rcpt.domain_lower)) return deny("relay denied: domain not ours");
  // A local part that itself names another host would be re-routed by a
  // naive next hop (sendmail's %-hack, UUCP bang paths, a quoted '@').
  auto local = rcpt.local_unquoted();
  if (local.find_first_of("%!@") != std::string::npos) return deny("relay denied: routing characters in local part");
  return d;
}

}  // namespace mk::route
