// router.h — who a recipient is, and where its mail goes.
//
// route() is THE place a recipient is classified:
//   - the client is one of the provider's outbound relays ([backup] relay_from):
//     outbound mail, to the smarthost (any recipient domain);
//   - the SRS domain ([aliases] srs_domain): a bounce to the rewritten
//     sender of forwarded mail, decoded (srs/srs.h) and sent on to the
//     original sender; a forged or expired one is 550 5.1.1;
//   - an alias domain: a temporary alias, expanded by the session (which
//     reserves a use with the alias service and rewrites the recipient);
//   - a backup domain: a listed account (or an alias address of one) is
//     archived into the account's INBOX and the mail goes to the provider's
//     inbound servers; anyone else is 550 5.1.1;
//   - a relay domain, a client in [relay] relay_from, or a user authenticated
//     on submission: to the smarthost;
//   - anything else: 550 5.7.1 relaying denied.
// Each route names its destination; a transaction keeps one upstream
// (452 4.5.3 for a recipient whose upstream differs). sent_folder() decides
// the archive copy of outbound mail in the sender's Sent folder.
// Standards: RFC 5321 3.6.1 (relaying), 7.1 (no open relays); the
// `user%host@`, `host!user@` and quoted-`@` tricks are refused the way
// Postfix's allow_untrusted_routing = no refuses them.
// Threading: immutable after construction (the account list it reads is
// swapped atomically); safe from any thread.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "archive/accounts.h"
#include "archive/archive.h"
#include "config/settings.h"
#include "core/net.h"
#include "smtp/command.h"
#include "smtp/reply.h"
#include "srs/srs.h"

namespace mk::route {

// Where accepted mail goes next. Each destination has an upstream factory;
// two destinations may share one (then they may share a transaction).
enum class Destination { Relay, BackupInbound, Outbound, Alias };
const char* destination_name(Destination d);

struct ClientInfo {
  IpAddress ip;
  bool relay_allowed = false;    // inside [relay] relay_from
  bool backup_outbound = false;  // inside [backup] relay_from: the provider's outbound relay
  // Our own networks, the provider's relays and [dnsbl] allow: never DNSBL-checked
  // and exempt from [limits] (a provider's gateway sends thousands a minute).
  bool trusted = false;
  // Set by a successful AUTH on submission: the account (lower-case address).
  // Such a client may relay, and its mail gets a copy in its Sent folder.
  std::string user;
};

struct RouteDecision {
  Outcome outcome = Outcome::Ok;
  smtp::Reply reply;        // the rejection when outcome != Ok
  std::string reason;       // short reason for the log line
  Destination destination = Destination::Relay;
  smtp::Mailbox recipient;  // the address to relay to (rewritten by later routes)
  std::optional<archive::ArchiveTarget> archive;  // the recipient's INBOX copy
  bool is_alias = false;  // Destination::Alias: the local part is an alias id to expand
  // Mail forwarded to someone outside (an alias's target, an SRS bounce's
  // original sender): upstream, its envelope sender is forwarding_sender().
  bool forwarded = false;
};

// The networks of `spf:NAME` entries of [relay] and [backup] relay_from,
// resolved by spf/ on its own thread; null when there are none.
struct SpfNetworks {
  const SharedNetworks* relay = nullptr;
  const SharedNetworks* backup = nullptr;
};

class Router {
 public:
  // `accounts` may be null when no backup domains are configured.
  // `srs` (may be null: no [aliases] srs_domain) outlives the router.
  Router(const Settings& settings, const archive::AccountDirectory* accounts, SpfNetworks spf = {},
         const srs::Rewriter* srs = nullptr);
  ClientInfo classify_client(const IpAddress& ip) const;
  RouteDecision route(const ClientInfo& client, const smtp::Mailbox& recipient) const;
  // The Sent-folder copy for mail from `client` with envelope sender `sender`, if archived.
  std::optional<archive::ArchiveTarget> sent_folder(const ClientInfo& client, const smtp::Mailbox& sender) const;
  // The envelope sender of forwarded mail from `sender` at Unix time `now`:
  // its SRS address, or `sender` itself without SRS, for <> and for senders
  // already in the SRS domain.
  smtp::Mailbox forwarding_sender(const smtp::Mailbox& sender, int64_t now) const;
  // True if `address` (any case) is an archived account's own address (not one of its aliases).
  bool is_account(std::string_view address) const;
  // The account that receives mail for `address`: itself, or the owner of an alias address.
  std::optional<archive::Account> account_of_address(std::string_view address) const;
  // True if the authenticated `user` may use `sender` as envelope sender: one of
  // their addresses (their own, or an alias of theirs).
  bool may_send_as(const std::string& user, const smtp::Mailbox& sender) const;
  bool is_relay_domain(const std::string& domain_lower) const;
  bool is_backup_domain(const std::string& domain_lower) const;
  bool is_alias_domain(const std::string& domain_lower) const;

 private:
  // The archived account for an address of a backup domain; nullopt if unlisted.
  std::optional<archive::Account> account_of(const smtp::Mailbox& mailbox) const;
  std::optional<archive::Account> account_of(std::string_view local, std::string_view domain) const;
  archive::ArchiveTarget target(const archive::Account& account, const char* subfolder) const;

  std::vector<std::string> relay_domains_;
  std::vector<Cidr> relay_from_;
  std::vector<std::string> backup_domains_;
  std::vector<std::string> alias_domains_;
  std::vector<Cidr> backup_relay_from_;
  std::vector<Cidr> dnsbl_allow_;
  SpfNetworks spf_;
  std::string archive_root_;
  const archive::AccountDirectory* accounts_;
  const srs::Rewriter* srs_;
};

}  // namespace mk::route
