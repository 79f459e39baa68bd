// router.cpp — see router.h.
#include "route/router.h"

#include <algorithm>

#include <ctime>

#include "core/strings.h"

namespace mk::route {
namespace {

bool in_networks(const std::vector<Cidr>& nets, const IpAddress& ip) {
  return std::any_of(nets.begin(), nets.end(), [&](const Cidr& n) { return n.contains(ip); });
}

bool valid_local(std::string_view s) { return archive::valid_account_name(s); }

// The mailbox local@domain, the local part quoted when it is not a dot-atom
// (an SRS field keeps the original's spelling); nullopt when it is no address.
std::optional<smtp::Mailbox> mailbox_of(std::string_view local, std::string_view domain) {
  auto parse = [&](const std::string& l) -> std::optional<smtp::Mailbox> {
    auto p = smtp::parse_path_argument("TO:<" + l + "@" + std::string(domain) + ">", "TO", false);
    if (!p.ok() || !p.params.empty()) return std::nullopt;
    return p.mailbox;
  };
  if (local.empty() || domain.empty() || local.size() > 512 || domain.size() > 255) return std::nullopt;
  if (auto m = parse(std::string(local))) return m;
  std::string quoted = "\"";
  for (char c : local) {
    if (c == '"' || c == '\\') quoted += '\\';
    quoted += c;
  }
  return parse(quoted + "\"");
}

bool in_domains(const std::vector<std::string>& domains, std::string_view d) {
  if (!d.empty() && d.back() == '.') d.remove_suffix(1);
  return std::find(domains.begin(), domains.end(), d) != domains.end();
}

}  // namespace

const char* destination_name(Destination d) {
  switch (d) {
    case Destination::Relay: return "relay";
    case Destination::BackupInbound: return "backup-inbound";
    case Destination::Outbound: return "outbound";
    case Destination::Alias: return "alias";
  }
  return "?";
}

Router::Router(const Settings& s, const archive::AccountDirectory* accounts, SpfNetworks spf,
               const srs::Rewriter* srs)
    : relay_domains_(s.relay.domains),
      relay_from_(s.relay.relay_from),
      backup_domains_(s.backup.domains),
      alias_domains_(s.aliases.domains),
      backup_relay_from_(s.backup.relay_from),
      dnsbl_allow_(s.dnsbl.allow),
      spf_(spf),
      archive_root_(s.backup.archive),
      accounts_(accounts),
      srs_(srs) {}

ClientInfo Router::classify_client(const IpAddress& ip) const {
  ClientInfo c;
  c.ip = ip;
  c.relay_allowed = in_networks(relay_from_, ip) || (spf_.relay && spf_.relay->contains(ip));
  bool provider = in_networks(backup_relay_from_, ip) || (spf_.backup && spf_.backup->contains(ip));
  c.backup_outbound = !backup_domains_.empty() && provider;
  c.trusted = c.relay_allowed || provider || in_networks(dnsbl_allow_, ip);
  return c;
}

bool Router::is_relay_domain(const std::string& domain_lower) const { return in_domains(relay_domains_, domain_lower); }

bool Router::is_alias_domain(const std::string& domain_lower) const { return in_domains(alias_domains_, domain_lower); }

bool Router::is_backup_domain(const std::string& domain_lower) const {
  return in_domains(backup_domains_, domain_lower);
}

std::optional<archive::Account> Router::account_of(std::string_view local, std::string_view domain) const {
  if (!accounts_) return std::nullopt;
  auto d = to_lower(domain);
  if (!d.empty() && d.back() == '.') d.pop_back();
  if (!is_backup_domain(d)) return std::nullopt;
  // Only a listed name — validated as a safe path component when the list
  // was loaded — ever becomes a directory; the client's spelling never does.
  auto account = accounts_->find(to_lower(local), d);
  // An account outside the backup domains (a hand-written file's mistake) has no archive.
  if (!account || !is_backup_domain(account->domain)) return std::nullopt;
  return account;
}

std::optional<archive::Account> Router::account_of(const smtp::Mailbox& mb) const {
  if (mb.null) return std::nullopt;
  return account_of(mb.local_unquoted(), mb.domain_lower);
}

archive::ArchiveTarget Router::target(const archive::Account& a, const char* subfolder) const {
  archive::ArchiveTarget t;
  t.folder = archive_root_ + "/" + a.domain + "/" + a.local;
  t.label = a.domain + "/" + a.local + "/INBOX";
  if (subfolder) {
    t.folder += std::string("/.") + subfolder;
    t.label = a.domain + "/" + a.local + "/" + subfolder;
  }
  return t;
}

RouteDecision Router::route(const ClientInfo& client, const smtp::Mailbox& rcpt) const {
  RouteDecision d;
  d.recipient = rcpt;
  if (srs_ && !rcpt.null && rcpt.domain_lower == srs_->domain() &&
      (srs::Rewriter::looks_like_srs(rcpt.local_unquoted()) || !is_alias_domain(rcpt.domain_lower))) {
    // A bounce (or a reply) to the SRS sender of mail we forwarded: back to
    // the original sender. Only an address we signed, and not too old.
    auto back = srs_->reverse(rcpt.local_unquoted(), std::time(nullptr));
    std::optional<smtp::Mailbox> to;
    if (back.error == srs::Error::None) to = mailbox_of(back.local, back.domain);
    if (!to) {
      d.outcome = Outcome::PermFail;
      d.reason = std::string("SRS: ") + srs::error_text(back.error == srs::Error::None ? srs::Error::Malformed
                                                                                      : back.error);
      d.reply = smtp::Reply{550, "5.1.1", "<" + rcpt.address() + ">: Recipient address rejected: invalid SRS address"};
      return d;
    }
    d.recipient = *to;
    d.destination = Destination::Alias;  // out to the world, as alias mail goes
    d.forwarded = true;
    return d;
  }
  if (client.backup_outbound) {
    d.destination = Destination::Outbound;  // the provider's outgoing mail, to anywhere
    return d;
  }
  if (is_alias_domain(rcpt.domain_lower)) {
    // Anyone may send to an alias (that is what it is for); the session looks
    // it up and answers 550 5.1.1 (unknown) or 550 5.2.1 (expired, used up, disabled).
    d.destination = Destination::Alias;
    d.is_alias = true;
    d.forwarded = true;
    return d;
  }
  if (is_backup_domain(rcpt.domain_lower)) {
    if (accounts_ && accounts_->pending()) {
      // The directory's first list has not arrived yet: nobody is unknown yet.
      d.outcome = Outcome::TempFail;
      d.reason = "account list not loaded yet (first directory sync)";
      d.reply = smtp::Reply{451, "4.3.0", "<" + rcpt.address() + ">: Account list not loaded yet, try again later"};
      return d;
    }
    auto account = account_of(rcpt);
    if (!account) {
      d.outcome = Outcome::PermFail;
      d.reason = "unknown user in backup domain";
      d.reply = smtp::Reply{550, "5.1.1", "<" + rcpt.address() + ">: Recipient address rejected: User unknown"};
      return d;
    }
    d.destination = Destination::BackupInbound;
    d.archive = target(*account, nullptr);
    d.archive->delivered_to = account->address();
    return d;
  }
  if (client.relay_allowed) return d;  // trusted networks may send anywhere

  auto deny = [&](std::string reason) {
    if ((spf_.relay && !spf_.relay->ready()) || (spf_.backup && !spf_.backup->ready())) {
      // The networks of an spf: entry are not known yet (its first lookup
      // failed): this client may be one of them, so it is asked to retry.
      d.outcome = Outcome::TempFail;
      d.reason = reason + " (relay networks from SPF not resolved yet)";
      d.reply = smtp::Reply{451, "4.4.3", "<" + rcpt.address() + ">: Relay networks not known yet, try again later"};
      return d;
    }
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

std::optional<archive::Account> Router::account_of_address(std::string_view address) const {
  auto at = address.rfind('@');
  if (at == std::string_view::npos || !valid_local(to_lower(address.substr(0, at)))) return std::nullopt;
  return account_of(address.substr(0, at), address.substr(at + 1));
}

smtp::Mailbox Router::forwarding_sender(const smtp::Mailbox& sender, int64_t now) const {
  if (!srs_ || sender.null) return sender;
  auto local = srs_->forward(sender.local_unquoted(), sender.domain_lower, now);
  if (!local) return sender;
  auto m = mailbox_of(*local, srs_->domain());
  return m ? *m : sender;
}

bool Router::is_account(std::string_view address) const {
  auto account = account_of_address(address);
  return account && account->address() == to_lower(address);
}

bool Router::may_send_as(const std::string& user, const smtp::Mailbox& sender) const {
  auto account = account_of(sender);
  if (!account) return false;
  if (account->address() == user) return true;
  // A line without '@' ("alice") is one person in every backup domain.
  auto own = account_of_address(user);
  return account->every_domain && own && own->every_domain && own->local == account->local &&
         own->address() == user;
}

std::optional<archive::ArchiveTarget> Router::sent_folder(const ClientInfo& client, const smtp::Mailbox& sender) const {
  if (!client.backup_outbound && client.user.empty()) return std::nullopt;
  auto account = account_of(sender);
  if (!account) return std::nullopt;
  auto t = target(*account, "Sent");
  t.dedupe_dir = archive_root_ + "/.mailkeep/sent-seen/" + t.label;
  return t;
}

}  // namespace mk::route
