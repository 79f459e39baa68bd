// session_checks.cpp — the pre-acceptance stage (smtp/checks.h: the milter
// chain) in Session: one call per SMTP step, and what its verdict at the end
// of the message does. Kept out of session.cpp, which holds the relay path
// every message takes; a session without [milter] smtp never gets here
// beyond a null check.
#include <fmt/format.h>

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

}  // namespace mk::smtp
