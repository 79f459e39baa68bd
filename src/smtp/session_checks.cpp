// session_checks.cpp — the pre-acceptance stage (smtp/checks.h: the milter
// chain) in Session: one call per SMTP step, and what its verdict at the end
// of the message does. Kept out of session.cpp, which holds the relay path
// every message takes; a session without [milter] smtp never gets here
// beyond a null check.
#include <fmt/format.h>

#include <algorithm>
#include <ctime>

#include "core/blocking.h"
#include "core/log.h"
#include "core/strings.h"
#include "smtp/session.h"

namespace mk::smtp {

awaitable<std::optional<Reply>> Session::check_connect() {
  if (!env_.checks || !env_.checks->create) co_return std::nullopt;
  const bool outbound = client_info_.relay_allowed || client_info_.backup_outbound || env_.auth != nullptr;
  checks_ = env_.checks->create(client_->get_executor(), outbound);
  if (!checks_) co_return std::nullopt;
  checks_->set_queue_id(id_);
  ConnectFacts facts;
  facts.client_address = client_address_;
  facts.client_port = client_port_;
  facts.listener = env_.label.empty() ? "smtp" : env_.label;
  auto r = co_await checks_->connect(facts);
  if (r.kind != CheckResult::Kind::Reply) co_return std::nullopt;
  log_reject("CONNECT", r.reply, r.reason);
  co_return r.reply;
}

awaitable<bool> Session::check_stage(Verb verb, const Mailbox* mailbox, std::string_view arg) {
  if (!checks_) co_return true;
  checks_->set_queue_id(id_ + "." + std::to_string(transactions_ + 1));
  CheckResult r;
  const char* command = "DATA";
  switch (verb) {
    case Verb::Helo:
    case Verb::Ehlo:
      command = verb == Verb::Helo ? "HELO" : "EHLO";
      r = co_await checks_->helo(helo_, tls_);
      break;
    case Verb::Mail:
      command = "MAIL";
      r = co_await checks_->mail(*mailbox, arg, client_info_.user);
      break;
    case Verb::Rcpt:
      command = "RCPT";
      r = co_await checks_->rcpt(*mailbox);
      break;
    default:
      r = co_await checks_->data();
      break;
  }
  if (r.kind == CheckResult::Kind::Continue) co_return true;
  if (r.kind != CheckResult::Kind::Reply) {
    // Discard or quarantine before the message: decided now, carried out at its end.
    tx_.checks_verdict = r;
    co_return true;
  }
  log_reject(command, r.reply, r.reason, verb == Verb::Rcpt ? mailbox->address() : std::string(),
             verb == Verb::Mail ? mailbox : nullptr);
  if (verb == Verb::Mail) co_await checks_->abort();
  if (r.reply.code == 421) quit_ = true;
  reply(r.reply);
  co_return false;
}

awaitable<std::optional<Reply>> Session::check_message(delivery::MessageBody& body, const Spool& spool,
                                                       std::unique_ptr<ContentSource>& changed) {
  if (!checks_) co_return std::nullopt;
  auto m = co_await checks_->message(body.prefix, spool);
  CheckResult verdict = m.verdict;
  if (verdict.kind == CheckResult::Kind::Continue && tx_.checks_verdict) verdict = *tx_.checks_verdict;
  if (!m.envelope.empty() && verdict.kind == CheckResult::Kind::Continue) {
    auto ended = co_await apply_envelope(m.envelope);
    if (ended) co_return ended;
  } else if (!m.envelope.empty()) {
    spdlog::info("{}.{}: {} envelope change(s) of the milters not applied: the message is not relayed", id_,
                 transactions_ + 1, m.envelope.size());
  }
  if (m.content) {
    // The milters' message replaces ours: every header, ours included, then the body.
    changed = std::move(m.content);
    body.prefix.clear();
    body.content = changed.get();
  }
  switch (verdict.kind) {
    case CheckResult::Kind::Continue:
      co_return std::nullopt;
    case CheckResult::Kind::Reply:
      log_reject("DATA", verdict.reply, verdict.reason);
      if (verdict.reply.code == 421) quit_ = true;
      co_return verdict.reply;
    case CheckResult::Kind::Discard: {
      spdlog::info("{}.{}: discarded: {}; from=<{}>, nothing delivered or archived", id_, transactions_ + 1,
                   verdict.reason, printable_ascii(tx_.sender.address(), 512, "()"));
      co_return Reply{250, "2.0.0", "Ok: discarded"};
    }
    case CheckResult::Kind::Quarantine:
      break;
  }
  // Quarantine: kept out of the upstream, filed as junk — the archived
  // recipients' .Junk, or [milter] quarantine when there is none — and
  // acknowledged only once those copies are in new/.
  std::vector<archive::ArchiveTarget> targets;
  for (auto& t : tx_.archive) targets.push_back(junk_target(t));
  if (targets.empty()) targets.push_back(archive::ArchiveTarget{settings_.milter.quarantine, "quarantine", "", ""});
  archive::ArchiveCopies copies;
  auto prepared = co_await run_blocking(env_.blocking, [&] {
    return copies.prepare(targets, tx_.sender.address(), body.prefix, *body.content);
  });
  Outcome outcome = prepared.outcome;
  std::string detail = prepared.detail;
  if (outcome == Outcome::Ok) {
    auto committed = co_await run_blocking(env_.blocking, [&] { return copies.commit(); });
    outcome = committed.outcome;
    detail = committed.detail;
  } else {
    copies.abort();
  }
  if (outcome != Outcome::Ok) {
    stats::count(stats::Counter::defer_archive);
    spdlog::error("{}: quarantine copy failed: {}; answering 4xx", id_, detail);
    co_return Reply{451, "4.3.0", "Error: cannot store the message now; try again later"};
  }
  std::string where;
  for (auto& t : targets) where += (where.empty() ? "" : ",") + t.label;
  spdlog::info("{}.{}: quarantined: {}; from=<{}>, filed in {}, not relayed", id_, transactions_ + 1, verdict.reason,
               printable_ascii(tx_.sender.address(), 512, "()"), where);
  co_return Reply{250, "2.0.0", "Ok: queued as quarantined"};
}

// Milters' envelope changes, in the order they came. A deleted recipient is
// matched by the address the milters saw (or the one it was routed to); an
// added one is routed like any RCPT from this client (so a milter cannot
// make us an open relay) and dropped, with a log line, when the router or
// the upstream refuses it: the client's own recipients still get the
// message. A new sender, a deleted recipient or a new SRS sender restarts
// the upstream transaction (RSET, MAIL, every RCPT again); additions alone
// go as more RCPTs. Anything the upstream cannot take for sure is 4xx.
awaitable<std::optional<Reply>> Session::apply_envelope(const std::vector<EnvelopeChange>& changes) {
  const std::string tx_id = id_ + "." + std::to_string(transactions_ + 1);
  const Reply unsure{451, "4.3.0", "Error: cannot relay the message with the milters' changes now; try again later"};
  auto path_of = [](const std::string& address) {
    return address.empty() || address.front() != '<' ? "<" + address + ">" : address;
  };
  // Local parts compared without case, as every mailbox provider does: a milter
  // that adds Alice@ beside alice@ means no second copy.
  auto same = [](const Mailbox& a, const Mailbox& b) {
    return a.domain_lower == b.domain_lower && to_lower(a.local) == to_lower(b.local);
  };
  bool restart = false;
  std::vector<size_t> added;  // indexes into tx_.recipients of recipients still to send upstream
  for (auto& c : changes) {
    std::string shown = printable_ascii(c.address, 512, "()");
    const bool sender = c.kind == EnvelopeChange::Kind::ChangeSender;
    auto path = parse_path_argument("X:" + path_of(c.address), "X", /*allow_null=*/sender);
    if (path.ok()) shown = printable_ascii(path.mailbox.address(), 512, "()");
    if (!path.ok()) {
      spdlog::warn("{}: milter {}: {} <{}> not applied: {}", tx_id, c.by,
                   sender ? "change sender to" : "recipient", shown, path.error);
      continue;
    }
    if (!c.args.empty())
      spdlog::info("{}: milter {}: ESMTP parameters \"{}\" for <{}> ignored", tx_id, c.by,
                   printable_ascii(c.args, 200), shown);
    if (sender) {
      spdlog::info("{}: milter {}: sender <{}> changed to <{}>", tx_id, c.by,
                   printable_ascii(tx_.sender.address(), 512, "()"), shown);
      tx_.sender = path.mailbox;
      restart = true;
      continue;
    }
    if (c.kind == EnvelopeChange::Kind::DeleteRecipient) {
      size_t i = 0;
      while (i < tx_.recipients.size() && !same(tx_.recipients[i], path.mailbox) &&
             !(tx_.notes[i].given == path.mailbox.address()))
        ++i;
      if (i == tx_.recipients.size()) {
        spdlog::info("{}: milter {}: delete recipient <{}>: not a recipient of this message", tx_id, c.by, shown);
        continue;
      }
      spdlog::info("{}: milter {}: recipient <{}> deleted", tx_id, c.by, shown);
      tx_.recipients.erase(tx_.recipients.begin() + i);
      tx_.notes.erase(tx_.notes.begin() + i);
      std::erase_if(added, [i](size_t k) { return k == i; });
      for (auto& k : added)
        if (k > i) --k;
      restart = true;
      continue;
    }
    auto route = env_.router->route(client_info_, path.mailbox);
    std::string reserved;
    if (route.outcome == Outcome::Ok && route.is_alias) {
      auto rejection = co_await expand_alias(route, reserved);
      if (rejection) {
        route.outcome = rejection->outcome();
        route.reply = *rejection;
      }
    }
    const char* refused = nullptr;
    if (route.outcome != Outcome::Ok)
      refused = "refused by routing";
    else if (std::any_of(tx_.recipients.begin(), tx_.recipients.end(), [&](auto& r) { return same(r, route.recipient); }))
      refused = "already a recipient";
    else if (env_.upstream_for(route.destination) != tx_.upstream)
      refused = "it goes to another upstream than this message";
    if (refused) {
      if (!reserved.empty()) env_.aliases->release(reserved);
      spdlog::warn("{}: milter {}: add recipient <{}> dropped: {}{}{}", tx_id, c.by, shown, refused,
                   route.outcome != Outcome::Ok ? ": " : "", route.outcome != Outcome::Ok ? route.reply.summary() : "");
      continue;
    }
    if (!reserved.empty()) tx_.alias_uses.push_back(std::move(reserved));
    spdlog::info("{}: milter {}: recipient <{}> added, routed to <{}> ({})", tx_id, c.by, shown,
                 printable_ascii(route.recipient.address(), 512, "()"), route::destination_name(route.destination));
    tx_.recipients.push_back(route.recipient);
    tx_.notes.push_back({path.mailbox.address(), route.archive, route.forwarded});
    added.push_back(tx_.recipients.size() - 1);
  }
  if (tx_.recipients.empty()) {
    spdlog::info("{}: the milters removed every recipient; from=<{}>, delivered nowhere, nothing archived", tx_id,
                 printable_ascii(tx_.sender.address(), 512, "()"));
    co_return Reply{250, "2.0.0", "Ok: no recipients left"};
  }
  // One envelope sender upstream: the SRS one when any recipient is forwarded.
  const bool forwarded = std::any_of(tx_.notes.begin(), tx_.notes.end(), [](auto& n) { return n.forwarded; });
  Mailbox sender = forwarded ? env_.router->forwarding_sender(tx_.sender, std::time(nullptr)) : tx_.sender;
  if (sender.address() != tx_.upstream_sender.address()) restart = true;
  // Sends recipients [from, end) upstream; a 5xx drops an added one, anything else unsure.
  auto send_recipients = [&](bool all) -> awaitable<std::optional<Reply>> {
    for (size_t i = 0; i < tx_.recipients.size();) {
      const bool is_added = std::find(added.begin(), added.end(), i) != added.end();
      if (!all && !is_added) {
        ++i;
        continue;
      }
      Reply r = co_await upstream_->rcpt(tx_.recipients[i]);
      if (r.positive()) {
        ++i;
        continue;
      }
      spdlog::warn("{}: upstream {} refused {} recipient <{}>: {}", tx_id, upstream_->peer_name(),
                   is_added ? "the milter-added" : "the resent", printable_ascii(tx_.recipients[i].address(), 512, "()"), r.summary());
      if (!is_added || r.code < 500) co_return unsure;
      tx_.recipients.erase(tx_.recipients.begin() + i);
      tx_.notes.erase(tx_.notes.begin() + i);
      std::erase_if(added, [i](size_t k) { return k == i; });
      for (auto& k : added)
        if (k > i) --k;
    }
    co_return std::nullopt;
  };
  std::optional<Reply> failed;
  if (restart) {
    bool usable = co_await upstream_->reset();
    if (!usable) co_return unsure;
    tx_.upstream_sender = sender;
    tx_.upstream_mail_reply = co_await upstream_->mail(sender, tx_.params);
    if (!tx_.upstream_mail_reply->positive()) {
      spdlog::warn("{}: upstream {} refused the milters' sender <{}>: {}", tx_id, upstream_->peer_name(),
                   printable_ascii(sender.address(), 512, "()"), tx_.upstream_mail_reply->summary());
      co_return tx_.upstream_mail_reply->code >= 500 ? *tx_.upstream_mail_reply : unsure;
    }
    failed = co_await send_recipients(true);
  } else {
    failed = co_await send_recipients(false);
  }
  if (failed) co_return failed;
  // Every recipient left was one a milter added and the upstream refused: nothing is sure to go.
  if (tx_.recipients.empty()) co_return unsure;
  // The archive copies follow the recipients that remain.
  tx_.archive.clear();
  for (auto& n : tx_.notes) {
    if (!n.archive) continue;
    auto t = tx_.junk ? junk_target(*n.archive) : *n.archive;
    if (std::find(tx_.archive.begin(), tx_.archive.end(), t) == tx_.archive.end()) tx_.archive.push_back(t);
  }
  co_return std::nullopt;
}

}  // namespace mk::smtp
