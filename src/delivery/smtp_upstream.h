// smtp_upstream.h — the SMTP client side: relays one transaction to a list
// of hosts tried in order (like an MX list).
//
// Standards: RFC 5321 (client side: 4.5.3.2 timeouts, 3.8 connection
// failures), RFC 1870 SIZE, RFC 6152 8BITMIME, RFC 6531 SMTPUTF8 (only
// offered where the next hop advertises it), RFC 2920 is not used upstream:
// each command waits for its reply, so each reply can be relayed live.
#pragma once
#include <chrono>
#include <vector>

#include "config/settings.h"
#include "core/net.h"
#include "delivery/upstream.h"
#include "tls/tls_context.h"

namespace mk::delivery {

enum class UpstreamTls { Off, Opportunistic, Required };

struct SmtpUpstreamConfig {
  std::vector<HostPort> hosts;
  std::string helo_name;
  std::chrono::seconds connect_timeout{30};
  std::chrono::seconds timeout{600};
  // STARTTLS (RFC 3207). Opportunistic: used when offered; a failed handshake
  // is retried in plaintext. Required: a host without STARTTLS, or whose
  // certificate does not verify for `tls_name`, is skipped (4xx if none is left).
  UpstreamTls tls = UpstreamTls::Opportunistic;
  tls::ContextPtr tls_context;  // verifying when tls = Required
  std::string tls_name;         // empty: the host name as configured
  // AUTH PLAIN (RFC 4954) after EHLO (and STARTTLS) when set: the web view
  // submits through mailkeep's own submission listener this way. A refused
  // AUTH is the transaction's answer (5xx passes through, else 4xx).
  std::string auth_user, auth_password;
  // Keep idle connections for the next session. Off for short-lived users
  // (replay, the web view's send) whose io_context ends before the factory.
  bool pool = true;
};

std::unique_ptr<UpstreamFactory> make_smtp_upstream_factory(SmtpUpstreamConfig config);

// The configuration [delivery] gives an SMTP upstream of `hosts` (the smarthost,
// [backup] upstream). Throws std::runtime_error for an unusable ca_file.
SmtpUpstreamConfig smtp_upstream_config(const Settings& settings, const std::vector<HostPort>& hosts);

}  // namespace mk::delivery
