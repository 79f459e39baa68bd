// session.cpp — see session.h. Reading order: run(), the command table, then
// one handler per command, then the I/O helpers.
#include "smtp/session.h"

#include <fmt/format.h>

#include <boost/asio/error.hpp>

#include <algorithm>
#include <atomic>
#include <ctime>

#include "core/blocking.h"
#include "core/log.h"
#include "core/strings.h"

namespace mk::smtp {
namespace {

constexpr size_t kMaxCommandLine = 2048;  // RFC 5321 4.5.3.1.4 says 512; extensions need more (Postfix: 2048)
constexpr size_t kReadChunk = 1024;       // idle sessions keep only this much
constexpr size_t kDataChunk = 64 * 1024;

std::string make_session_id() {
  static std::atomic<uint32_t> counter{0};
  return fmt::format("{:05X}{:05X}", static_cast<uint32_t>(std::time(nullptr)) & 0xFFFFF,
                     counter.fetch_add(1) & 0xFFFFF);
}

// Text from the client placed in a header or a log: printable ASCII only.
std::string printable(std::string_view s, size_t max = 255) { return printable_ascii(s, max, "()"); }

std::string rfc5322_date() {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S %z", &tm);
  return buf;
}

}  // namespace

// The command table (Postfix smtpd_cmd_table): name, handler, and the rules
// RFC 5321 / 2920 attach to each command.
struct Session::CommandSpec {
  Verb verb;
  awaitable<void> (Session::*handler)(std::string_view);
  bool needs_hello;  // 503 before HELO/EHLO
  bool needs_tls;    // 530 before STARTTLS when [smtp] require_tls (RFC 3207 4)
};

const Session::CommandSpec* Session::find_command(Verb verb) {
  static const CommandSpec table[] = {
      {Verb::Helo, &Session::handle_helo, false, false},
      {Verb::Ehlo, &Session::handle_ehlo, false, false},
      {Verb::Starttls, &Session::handle_starttls, true, false},
      {Verb::Auth, &Session::handle_auth, true, false},  // session_auth.cpp
      {Verb::Mail, &Session::handle_mail, true, true},
      {Verb::Rcpt, &Session::handle_rcpt, true, true},
      {Verb::Data, &Session::handle_data, true, true},
      {Verb::Rset, &Session::handle_rset, false, false},
      {Verb::Noop, &Session::handle_noop, false, false},
      {Verb::Quit, &Session::handle_quit, false, false},
      {Verb::Vrfy, &Session::handle_vrfy, false, true},
      {Verb::Expn, &Session::handle_expn, false, true},
      {Verb::Help, &Session::handle_help, false, false},
  };
  for (auto& c : table)
    if (c.verb == verb) return &c;
  return nullptr;
}

Session::Session(const SessionEnvironment& env, std::unique_ptr<Transport> transport, std::string client_address,
                 uint16_t client_port)
    : env_(env),
      settings_(*env.settings),
      client_(std::move(transport)),
      client_address_(std::move(client_address)),
      client_port_(client_port),
      id_(make_session_id()) {
  if (auto ip = IpAddress::parse(client_address_)) client_info_ = env_.router->classify_client(*ip);
}

Session::~Session() = default;

awaitable<void> Session::run() {
  spdlog::debug("{}: connect from [{}]:{}", id_, client_address_, client_port_);
  // (co_await stays out of conditions: GCC 12 miscompiles some of those forms.)
  auto refusal = co_await check_dnsbl();
  if (!refusal) refusal = co_await check_connect();  // the milters' connect stage
  if (refusal) {
    // RFC 5321 3.1: a server may refuse service with a 554 (or 421) greeting.
    reply(*refusal);
    co_await flush();
    client_->close();
    co_return;
  }
  if (env_.implicit_tls) {  // RFC 8314 3.3: TLS before the greeting
    bool secured = co_await secure_connection();
    if (!secured) {
      client_->close();
      co_return;
    }
  }
  reply(Reply{220, "", settings_.smtp.hostname + " ESMTP mailkeep"});
  std::string line;
  while (!quit_ && !too_many_errors_) {
    bool flushed = co_await flush();
    if (!flushed) break;
    if (draining_) {
      reply(replies::shutting_down(settings_.smtp.hostname));
      co_await flush();
      break;
    }
    auto status = co_await read_line(line);
    if (status == LineStatus::TooLong) {
      reply_error(replies::line_too_long());
      continue;
    }
    if (status == LineStatus::TimedOut) {
      stats::count(stats::Counter::reject_timeout);
      spdlog::info("{}: timeout after {} from [{}]:{}", id_, tx_.active ? "MAIL" : "command", client_address_, client_port_);
      reply(replies::timeout(settings_.smtp.hostname));
      co_await flush();
      break;
    }
    if (status == LineStatus::Aborted && draining_) continue;  // answered 421 at the top of the loop
    if (status != LineStatus::Ok) break;

    if (line.find('\0') != std::string::npos) {
      reply_error(Reply{500, "5.5.2", "Error: NUL character in command"});
      continue;
    }
    auto cmd = parse_command(line);
    const CommandSpec* spec = find_command(cmd.verb);
    if (!spec) {
      log_reject(printable(cmd.name, 16), replies::unknown_command(), "unknown command");
      reply_error(replies::unknown_command());
      continue;
    }
    if (spec->needs_hello && helo_.empty()) {
      reply_error(replies::bad_sequence("Error: send HELO/EHLO first"));
      continue;
    }
    if (spec->needs_tls && settings_.smtp.require_tls && tls_.empty()) {
      reply_error(Reply{530, "5.7.0", "Must issue a STARTTLS command first"});
      continue;
    }
    co_await (this->*spec->handler)(cmd.arg);
  }
  if (too_many_errors_) {
    stats::count(stats::Counter::reject_too_many_errors);
    spdlog::info("{}: too many errors from [{}]:{}, disconnecting", id_, client_address_, client_port_);
    reply(replies::too_many_errors());
  }
  co_await flush();
  co_await finish_alias_uses(false);  // a disconnect spends nothing
  if (checks_) co_await checks_->close();
  if (upstream_) co_await upstream_->quit();
  client_->close();
  spdlog::debug("{}: disconnect from [{}]:{}", id_, client_address_, client_port_);
}

awaitable<std::optional<Reply>> Session::check_dnsbl() {
  if (!env_.dnsbl || settings_.dnsbl.smtp_zones.empty() || client_info_.trusted) co_return std::nullopt;
  auto verdict = co_await env_.dnsbl->check(client_info_.ip, settings_.dnsbl.smtp_zones);
  if (verdict.kind == policy::DnsblVerdict::Listed) {
    stats::count(stats::Counter::reject_dnsbl_listed);
    Reply r{554, "5.7.1", "Service unavailable; client [" + client_address_ + "] blocked using " + verdict.zone};
    log_reject("CONNECT", r, "dnsbl " + verdict.zone + "=" + verdict.answer);
    co_return r;
  }
  if (verdict.kind == policy::DnsblVerdict::Error) {
    if (settings_.dnsbl.on_error == "tempfail") {
      stats::count(stats::Counter::reject_dnsbl_error);
      Reply r{421, "4.7.0", settings_.smtp.hostname + " Service temporarily unavailable; DNSBL lookup failed"};
      log_reject("CONNECT", r, "dnsbl error " + verdict.zone + ": " + verdict.detail + " (on_error = tempfail)");
      co_return r;
    }
    spdlog::warn("{}: dnsbl {} lookup for [{}] failed ({}); accepting (on_error = accept)", id_, verdict.zone,
                 client_address_, verdict.detail);
  }
  co_return std::nullopt;
}

void Session::shutdown() {
  draining_ = true;
  if (waiting_for_command_) client_->cancel();
}

void Session::abort() {
  draining_ = true;
  client_->close();
  if (upstream_) upstream_->abort();
}

// ---- Commands -------------------------------------------------------------

awaitable<void> Session::handle_helo(std::string_view arg) {
  if (arg.empty()) {
    reply_error(replies::bad_syntax("Syntax: HELO hostname"));
    co_return;
  }
  co_await reset_transaction();
  helo_ = printable(arg);
  esmtp_ = false;
  bool allowed = co_await check_stage(Verb::Helo, nullptr, {});
  if (!allowed) {
    helo_.clear();
    co_return;
  }
  reply(Reply{250, "", settings_.smtp.hostname});
}

awaitable<void> Session::handle_ehlo(std::string_view arg) {
  if (arg.empty()) {
    reply_error(replies::bad_syntax("Syntax: EHLO hostname"));
    co_return;
  }
  co_await reset_transaction();
  helo_ = printable(arg);
  esmtp_ = true;
  bool allowed = co_await check_stage(Verb::Ehlo, nullptr, {});
  if (!allowed) {
    helo_.clear();
    co_return;
  }
  Reply r{250, "", settings_.smtp.hostname};
  r.lines.push_back("PIPELINING");
  r.lines.push_back("SIZE " + std::to_string(settings_.smtp.max_message_size));
  r.lines.push_back("8BITMIME");
  r.lines.push_back("ENHANCEDSTATUSCODES");
  r.lines.push_back("SMTPUTF8");
  if (env_.tls && tls_.empty()) r.lines.push_back("STARTTLS");
  if (auth_offered()) r.lines.push_back("AUTH PLAIN LOGIN");
  r.lines.push_back("HELP");
  reply(r);
}

awaitable<void> Session::handle_mail(std::string_view arg) {
  if (tx_.active) {
    reply_error(replies::bad_sequence("Error: nested MAIL command"));
    co_return;
  }
  auto path = parse_path_argument(arg, "FROM", /*allow_null=*/true);
  if (!path.ok()) {
    reply_error(Reply{501, path.status, path.error});
    co_return;
  }
  MailParams params;
  std::string error;
  if (!parse_mail_params(path.params, params, error)) {
    reply_error(Reply{555, "5.5.4", error});
    co_return;
  }
  if (!esmtp_ && !path.params.empty()) {
    reply_error(Reply{555, "5.5.4", "Error: parameters need EHLO"});
    co_return;
  }
  if (path.mailbox.non_ascii && !params.smtputf8) {
    reply_error(Reply{553, "5.6.7", "Error: non-ASCII address requires SMTPUTF8"});
    co_return;
  }
  if (params.size && *params.size > settings_.smtp.max_message_size) {
    auto r = replies::message_too_big();
    log_reject("MAIL", r, "SIZE=" + std::to_string(*params.size), {}, &path.mailbox);
    reply(r);
    co_return;
  }
  if (env_.message_limiter && !client_info_.trusted &&
      !env_.message_limiter->allow(policy::client_key(client_info_.ip), std::time(nullptr))) {
    stats::count(stats::Counter::reject_messages_per_ip);
    Reply r{450, "4.7.1", "Error: too many messages from [" + client_address_ + "]; try again later"};
    log_reject("MAIL", r, "smtp_messages_per_ip_per_minute", {}, &path.mailbox);
    reply(r);
    co_return;
  }
  if (auto refusal = submission_sender_check(path.mailbox)) {  // session_auth.cpp
    reply_error(*refusal);
    co_return;
  }
  bool allowed = co_await check_stage(Verb::Mail, &path.mailbox, path.params);
  if (!allowed) co_return;
  tx_ = Transaction{};
  tx_.active = true;
  tx_.sender = std::move(path.mailbox);
  tx_.params = params;
  tx_started_ = std::chrono::steady_clock::now();
  reply(Reply{250, "2.1.0", "Ok"});
}

awaitable<void> Session::handle_rcpt(std::string_view arg) {
  if (!tx_.active) {
    reply_error(replies::bad_sequence("Error: need MAIL command"));
    co_return;
  }
  if (tx_.recipients.size() >= settings_.smtp.max_recipients) {
    auto r = Reply{452, "4.5.3", "Error: too many recipients"};
    stats::count(stats::Counter::reject_too_many_recipients);
    log_reject("RCPT", r, "too many recipients");
    if (++tx_.recipients_over_limit > settings_.smtp.recipient_overshoot_limit)
      reply_error(r);
    else
      reply(r);
    co_return;
  }
  auto path = parse_path_argument(arg, "TO", /*allow_null=*/false);
  if (!path.ok()) {
    reply_error(Reply{501, path.status, path.error});
    co_return;
  }
  if (!path.params.empty()) {
    reply_error(Reply{555, "5.5.4", "Error: unsupported RCPT parameter"});
    co_return;
  }
  if (path.mailbox.non_ascii && !tx_.params.smtputf8) {
    reply_error(Reply{553, "5.6.7", "Error: non-ASCII address requires SMTPUTF8"});
    co_return;
  }
  auto route = env_.router->route(client_info_, path.mailbox);
  std::string reserved_alias;  // an alias use this RCPT reserved, if any
  if (route.outcome == Outcome::Ok && route.is_alias) {
    auto rejection = co_await expand_alias(route, reserved_alias);
    if (rejection) {
      route.outcome = rejection->outcome();
      route.reply = *rejection;
    }
  }
  if (route.outcome != Outcome::Ok) {
    stats::count(route.is_alias ? (route.reply.status == "5.2.1" ? stats::Counter::reject_alias_dead
                                                                  : stats::Counter::reject_alias_unknown)
                 : route.reply.status == "5.7.1" ? stats::Counter::reject_relay_denied
                                                 : stats::Counter::reject_unknown_user);
    log_reject("RCPT", route.reply, route.reason, path.mailbox.address());
    reply(route.reply);
    co_return;
  }
  // Releases this RCPT's reservation unless it ends up in the transaction.
  struct ReleaseGuard {
    aliases::AliasService* service;
    std::string* id;
    ~ReleaseGuard() {
      if (service && !id->empty()) service->release(*id);
    }
  } release_guard{env_.aliases, &reserved_alias};
  bool allowed = co_await check_stage(Verb::Rcpt, &path.mailbox, {});
  if (!allowed) co_return;
  // The same final recipient twice in one transaction (say, two aliases of one
  // target) is relayed once: a second RCPT upstream could mean a second copy.
  auto same = [&](const Mailbox& m) {
    return m.local == route.recipient.local && m.domain_lower == route.recipient.domain_lower;
  };
  if (std::any_of(tx_.recipients.begin(), tx_.recipients.end(), same)) {
    if (!reserved_alias.empty()) tx_.alias_uses.push_back(std::exchange(reserved_alias, {}));
    reply(Reply{250, "2.1.5", "Ok (duplicate recipient)"});
    co_return;
  }
  auto* factory = env_.upstream_for(route.destination);
  if (tx_.upstream && tx_.upstream != factory) {
    // RFC 5321 3.3: the client sends the remaining recipients in another transaction.
    reply(Reply{452, "4.5.3", "Error: recipient uses another upstream; send it in a separate transaction"});
    co_return;
  }
  // Forwarded mail goes upstream with its SRS sender; a transaction has one sender upstream.
  Mailbox sender = route.forwarded ? env_.router->forwarding_sender(tx_.sender, std::time(nullptr)) : tx_.sender;
  if (tx_.upstream_mail_reply && sender.address() != tx_.upstream_sender.address()) {
    reply(Reply{452, "4.5.3", "Error: recipient needs another envelope sender; send it in a separate transaction"});
    co_return;
  }

  // Open the upstream for this destination (or reuse the session's).
  if (!upstream_ || upstream_factory_ != factory) {
    if (upstream_) co_await upstream_->quit();
    upstream_ = factory->create(client_->get_executor());
    upstream_factory_ = factory;
  }
  if (!tx_.upstream_mail_reply) {
    tx_.upstream_sender = sender;
    tx_.upstream_mail_reply = co_await upstream_->mail(sender, tx_.params);
    const Reply& mr = *tx_.upstream_mail_reply;
    if (!mr.positive() && !mr.log_detail.empty())  // it failed (connect, TLS, AUTH …) rather than refused
      spdlog::warn("{}: {}; MAIL FROM:<{}> answered {} {}", id_, mr.log_detail, printable(sender.address()),
                   mr.code, mr.status);
    else if (!mr.positive())
      spdlog::warn("{}: upstream {} refused MAIL FROM:<{}>: {}", id_, upstream_->peer_name(),
                   printable(sender.address()), mr.summary());
  }
  Reply r = *tx_.upstream_mail_reply;
  if (r.positive()) r = co_await upstream_->rcpt(route.recipient);
  if (!r.positive()) {
    stats::count(stats::Counter::reject_upstream_rcpt);
    log_reject("RCPT", r, "upstream " + upstream_->peer_name(), path.mailbox.address());
    reply(r);
    co_return;
  }
  tx_.upstream = factory;
  tx_.recipients.push_back(route.recipient);
  tx_.notes.push_back({path.mailbox.address(), route.archive, route.forwarded});
  if (!reserved_alias.empty()) tx_.alias_uses.push_back(std::exchange(reserved_alias, {}));
  if (route.archive && std::find(tx_.archive.begin(), tx_.archive.end(), *route.archive) == tx_.archive.end())
    tx_.archive.push_back(*route.archive);
  reply(r);
}

awaitable<void> Session::handle_data(std::string_view arg) {
  if (!arg.empty()) {
    reply_error(replies::bad_syntax("Syntax: DATA"));
    co_return;
  }
  if (!tx_.active) {
    reply_error(replies::bad_sequence("Error: need MAIL command"));
    co_return;
  }
  if (tx_.recipients.empty()) {
    reply_error(Reply{554, "5.5.1", "Error: no valid recipients"});
    co_return;
  }
  if (inpos_ < inbuf_.size() || client_->input_pending()) {
    // RFC 2920 3.1: the message text may follow only our 354. A client that
    // sends it earlier is not an MTA (Postfix: smtpd_forbid_unauth_pipelining);
    // what it sent cannot be told apart from commands, so the connection ends.
    Reply r{554, "5.5.0", "Error: SMTP protocol synchronization: message text sent before the 354 reply"};
    stats::count(stats::Counter::reject_early_data);
    log_reject("DATA", r, "input before 354 (" + std::to_string(inbuf_.size() - inpos_) + " bytes buffered)");
    co_await reset_transaction();
    reply(r);
    quit_ = true;
    co_return;
  }
  bool allowed = co_await check_stage(Verb::Data, nullptr, {});
  if (!allowed) {
    co_await reset_transaction();
    co_return;
  }
  reply(Reply{354, "", "End data with <CR><LF>.<CR><LF>"});
  bool flushed = co_await flush();
  if (!flushed) {
    quit_ = true;  // the client is gone: never read its message as commands
    co_return;
  }

  Spool spool(env_.spool_dir, env_.spool_memory_limit);
  // Inbound mail from the internet is scored; our own networks' and the provider's mail is not.
  std::shared_ptr<const spam::Model> spam_model;
  std::optional<spam::Tokenizer> tokenizer;
  if (env_.spam && !client_info_.relay_allowed && !client_info_.backup_outbound) spam_model = env_.spam->model();
  if (spam_model) {
    // Our Received field first, as it will stand on top of every copy: the message is
    // tokenized as the archive keeps it, and the client's IP and HELO become features.
    tokenizer.emplace(env_.spam->settings());
    tokenizer->feed(received_header());
  }
  auto data = co_await read_message(spool, tokenizer ? &*tokenizer : nullptr);
  if (data.connection == LineStatus::TimedOut) {
    stats::count(stats::Counter::reject_timeout);
    spdlog::info("{}: timeout after DATA from [{}]:{} after {} bytes; nothing was acknowledged", id_, client_address_,
                 client_port_, data.size);
    co_await reset_transaction();
    reply(replies::timeout(settings_.smtp.hostname));
    co_await flush();
    quit_ = true;
    co_return;
  }
  if (data.connection != LineStatus::Ok) {
    spdlog::info("{}: lost connection with [{}]:{} during DATA after {} bytes; nothing was acknowledged", id_,
                 client_address_, client_port_, data.size);
    quit_ = true;
    co_return;
  }

  Reply result;
  bool sent_upstream = false;
  std::optional<spam::Judgement> judged;  // set when the message was scored
  std::string signature;
  if (data.defect != DataDecoder::Defect::None) {
    const char* what = data.defect == DataDecoder::Defect::BareLineFeed   ? "bare <LF>"
                       : data.defect == DataDecoder::Defect::BareCarriageReturn ? "bare <CR>"
                                                                                : "NUL character";
    result = Reply{554, "5.6.0", fmt::format("Error: message contains a {}; lines must end with <CR><LF> (RFC 5321 2.3.8)", what)};
    stats::count(stats::Counter::reject_bad_line_endings);
    log_reject("DATA", result, what);
  } else if (data.too_big) {
    result = replies::message_too_big();
    stats::count(stats::Counter::reject_message_size);
    log_reject("DATA", result, "size " + std::to_string(data.size));
  } else if (!spool.error().empty()) {
    spdlog::error("{}: spool failure: {}", id_, spool.error());
    result = Reply{451, "4.3.0", "Error: local problem storing the message; try again later"};
  } else {
    delivery::MessageBody body{received_header(), &spool};
    // The spam verdict (spam/calibration.h): headers on the relayed message;
    // spam to an alias is refused and a backup copy goes to .Junk; unsure is only tagged.
    if (tokenizer) {
      judged = spam::judge(*spam_model, tokenizer->finish(), settings_.spam.tag_score, settings_.spam.reject_score);
      signature = spam::make_signature(std::time(nullptr));
      body.prefix += spam::header_fields(*judged, signature);
      stats::count(judged->call == spam::Call::Spam     ? stats::Counter::spam_detected
                   : judged->call == spam::Call::Unsure ? stats::Counter::spam_unsure
                                                        : stats::Counter::spam_ham);
    }
    bool is_spam = judged && judged->call == spam::Call::Spam;
    if (is_spam) {
      for (auto& t : tx_.archive) t = junk_target(std::move(t));  // INBOX copies become .Junk copies
      tx_.junk = true;
    }
    if (is_spam && !tx_.alias_uses.empty()) {
      result = Reply{550, "5.7.1", "Message rejected as spam"};
      stats::count(stats::Counter::reject_spam);
      log_reject("DATA", result, fmt::format("spam score {:.3f} >= reject_score {:.6g}, signature {}", judged->score,
                                             judged->cutoffs.spam, signature));
      record_verdict(signature, *judged, tokenizer->finish(), tokenizer->subject(), result);
      count_transaction(result);
      co_await reset_transaction();  // releases the alias uses too
      reply(result);
      co_return;
    }
    // The milters judge (and may change) the message: session_checks.cpp.
    std::unique_ptr<ContentSource> changed;
    auto decided = co_await check_message(body, spool, changed);
    if (decided) {
      if (judged) record_verdict(signature, *judged, tokenizer->finish(), tokenizer->subject(), *decided);
      count_transaction(*decided);
      co_await reset_transaction();
      reply(*decided);
      co_return;
    }
    // The acknowledgement order: archive copies fsynced in tmp/ → upstream
    // 250 → copies renamed into new/ and the directories fsynced → our 250.
    auto targets = tx_.archive;
    if (auto sent = env_.router->sent_folder(client_info_, tx_.sender)) targets.push_back(*sent);
    archive::ArchiveCopies copies;
    bool archived = true;
    if (!targets.empty()) {
      auto prepared = co_await run_blocking(env_.blocking, [&] {
        return copies.prepare(targets, tx_.sender.address(), body.prefix, *body.content);
      });
      if (prepared.outcome != Outcome::Ok) {
        // Nothing goes upstream without its archive copies.
        stats::count(stats::Counter::defer_archive);
        spdlog::error("{}: archive copy failed: {}; answering 4xx, nothing relayed", id_, prepared.detail);
        result = Reply{451, "4.3.0", "Error: cannot archive the message now; try again later"};
        archived = false;
      }
    }
    if (archived) {
      result = co_await upstream_->data(body);
      sent_upstream = true;
      const bool delivered = result.positive();  // the upstream has it, whatever we answer
      if (delivered && !targets.empty()) {
        auto committed = co_await run_blocking(env_.blocking, [&] { return copies.commit(); });
        if (committed.outcome != Outcome::Ok) {
          // The upstream has it but an archive copy is not published: make the
          // client retry (a duplicate upstream is better than a missing copy).
          spdlog::error("{}: upstream accepted but archive commit failed: {}; answering 4xx", id_, committed.detail);
          stats::count(stats::Counter::defer_archive);
          result = Reply{451, "4.3.0", "Error: archive failure after relay; please retry"};
          result.log_detail = "archive";  // not the upstream's deferral (log_transaction)
        } else if (copies.duplicates()) {
          spdlog::info("{}: {} duplicate Sent copy not stored again", id_, copies.duplicates());
        }
      } else {
        copies.abort();
      }
      log_transaction(result, body.size(), targets.size());
      co_await finish_alias_uses(delivered);
    }
  }
  if (judged) record_verdict(signature, *judged, tokenizer->finish(), tokenizer->subject(), result);
  if (!sent_upstream) {
    count_transaction(result);  // refused here (defect, size, spool, archive): never reached log_transaction
    co_await reset_transaction();
  }
  tx_ = Transaction{};  // after DATA the upstream's transaction is over whatever it answered
  reply(result);
}

awaitable<void> Session::handle_rset(std::string_view) {
  co_await reset_transaction();
  reply(replies::ok());
}

awaitable<void> Session::handle_noop(std::string_view) {
  reply(replies::ok());
  co_return;
}

awaitable<void> Session::handle_quit(std::string_view) {
  // The transaction ends here (RFC 5321 4.1.1.10): alias uses it held are given back
  // before the 221, so the client's next connection finds them free.
  co_await finish_alias_uses(false);
  reply(Reply{221, "2.0.0", "Bye"});
  quit_ = true;
  co_return;
}

awaitable<void> Session::handle_vrfy(std::string_view arg) {
  if (arg.empty()) {
    reply_error(replies::bad_syntax("Syntax: VRFY address"));
    co_return;
  }
  // RFC 5321 3.5.3: 252 when we will accept but cannot verify.
  reply(Reply{252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery"});
}

awaitable<void> Session::handle_expn(std::string_view) {
  reply_error(Reply{502, "5.5.1", "Error: EXPN not available"});
  co_return;
}

awaitable<void> Session::handle_starttls(std::string_view arg) {
  if (!env_.tls) {
    reply_error(Reply{502, "5.5.1", "Error: STARTTLS not available"});
    co_return;
  }
  if (!arg.empty()) {
    reply_error(replies::bad_syntax("Syntax: STARTTLS"));
    co_return;
  }
  if (!tls_.empty()) {
    reply_error(replies::bad_sequence("Error: TLS already active"));
    co_return;
  }
  reply(Reply{220, "2.0.0", "Ready to start TLS"});
  bool flushed = co_await flush();
  if (!flushed) {
    quit_ = true;
    co_return;
  }
  // Anything the client pipelined after STARTTLS arrived in plaintext and is
  // discarded, never executed inside the TLS session (CVE-2011-0411).
  if (inpos_ < inbuf_.size())
    spdlog::info("{}: discarding {} bytes pipelined after STARTTLS from [{}]", id_, inbuf_.size() - inpos_,
                 client_address_);
  inbuf_.clear();
  inpos_ = 0;
  bool secured = co_await secure_connection();
  if (!secured) {
    quit_ = true;  // the connection is in an unknown state: close it
    co_return;
  }
  // RFC 3207 4.2: the client must start over; forget all it told us before.
  co_await reset_transaction();
  helo_.clear();
  esmtp_ = false;
  client_info_.user.clear();
}

awaitable<bool> Session::secure_connection() {
  auto ctx = env_.tls->current();  // held for the handshake even if SIGHUP swaps it
  error_code ec;
  client_->expires_after(std::chrono::seconds(settings_.smtp.timeout));
  auto secured = co_await client_->start_tls(*ctx, Transport::TlsRole::Server, "", ec);
  if (!secured) {
    spdlog::info("{}: TLS handshake with [{}] failed: {}", id_, client_address_, ec.message());
    co_return false;
  }
  client_ = std::move(secured);
  tls_ = client_->tls_description();
  spdlog::info("{}: TLS established with [{}]: {}", id_, client_address_, tls_);
  co_return true;
}

awaitable<void> Session::handle_help(std::string_view) {
  Reply r{214, "2.0.0", "mailkeep: commands HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP"};
  r.lines.push_back("See RFC 5321");
  reply(r);
  co_return;
}

// ---- Transaction helpers --------------------------------------------------

archive::ArchiveTarget Session::junk_target(archive::ArchiveTarget t) {
  t.folder += "/.Junk";
  t.label = t.label.substr(0, t.label.rfind('/')) + "/Junk";
  return t;
}

awaitable<void> Session::reset_transaction() {
  bool upstream_in_transaction = tx_.upstream_mail_reply && tx_.upstream_mail_reply->positive() && upstream_;
  co_await finish_alias_uses(false);
  tx_ = Transaction{};
  if (checks_) co_await checks_->abort();
  if (upstream_in_transaction) {
    bool usable = co_await upstream_->reset();
    if (!usable) upstream_.reset();
  }
}

awaitable<std::optional<Reply>> Session::expand_alias(route::RouteDecision& route, std::string& reserved_id) {
  if (!env_.aliases) co_return Reply{550, "5.1.1", "<" + route.recipient.address() + ">: Recipient address rejected: no such alias"};
  auto local = route.recipient.local_unquoted();
  aliases::ReserveResult r;
  try {
    r = co_await run_blocking(env_.blocking, [&] { return env_.aliases->reserve(local); });
  } catch (const std::exception& e) {
    spdlog::error("{}: alias store failure: {}", id_, e.what());
    route.reason = "alias store unavailable";
    co_return Reply{451, "4.3.0", "Error: alias lookup failed; try again later"};
  }
  auto addr = route.recipient.address();
  switch (r.status) {
    case aliases::Reservation::Reserved: break;
    case aliases::Reservation::Unknown:
      route.reason = "unknown alias";
      co_return Reply{550, "5.1.1", "<" + addr + ">: Recipient address rejected: no such alias"};
    case aliases::Reservation::Expired:
      route.reason = "alias expired";
      co_return Reply{550, "5.2.1", "<" + addr + ">: this alias has expired"};
    case aliases::Reservation::UsedUp:
      route.reason = "alias used up";
      co_return Reply{550, "5.2.1", "<" + addr + ">: this alias has been used up"};
    case aliases::Reservation::Disabled:
      route.reason = "alias disabled";
      co_return Reply{550, "5.2.1", "<" + addr + ">: this alias has been disabled"};
  }
  // One use per message per alias: a second RCPT to the same alias holds nothing more.
  if (std::find(tx_.alias_uses.begin(), tx_.alias_uses.end(), r.id) != tx_.alias_uses.end())
    env_.aliases->release(r.id);
  else
    reserved_id = r.id;
  auto target = parse_path_argument("TO:<" + r.target + ">", "TO", false);
  if (!target.ok()) {  // validated at creation; a corrupt row must not crash the session
    route.reason = "alias target unusable";
    co_return Reply{451, "4.3.0", "Error: alias target unusable"};
  }
  spdlog::debug("{}: alias {} -> <{}>", id_, r.id, r.target);
  route.recipient = target.mailbox;
  co_return std::nullopt;
}

awaitable<void> Session::finish_alias_uses(bool delivered) {
  if (tx_.alias_uses.empty()) co_return;
  auto ids = std::move(tx_.alias_uses);
  tx_.alias_uses.clear();
  try {
    co_await run_blocking(env_.blocking, [&] {
      for (auto& id : ids) delivered ? env_.aliases->commit_use(id) : env_.aliases->release(id);
    });
    if (delivered) stats::count(stats::Counter::alias_used, ids.size());
  } catch (const std::exception& e) {
    spdlog::error("{}: alias store failure while counting uses: {}", id_, e.what());
  }
}

awaitable<Session::DataResult> Session::read_message(Spool& spool, spam::Tokenizer* tokenizer) {
  DataResult result;
  DataDecoder decoder;
  const uint64_t limit = settings_.smtp.max_message_size;
  auto sink = [&](std::string_view bytes) {
    if (result.too_big) return;
    if (decoder.content_size() + bytes.size() > limit) {
      result.too_big = true;
      return;
    }
    spool.append(bytes);  // a failure is kept in spool.error()
    if (tokenizer) tokenizer->feed(bytes);
  };
  // Bytes the client sent after DATA in the same packet come first.
  std::string_view pending(inbuf_);
  pending.remove_prefix(inpos_);
  inpos_ += decoder.feed(pending, sink);
  std::unique_ptr<char[]> chunk;  // uninitialised: a memset per message costs more than it protects
  while (!decoder.finished()) {
    if (!chunk) chunk.reset(new char[kDataChunk]);
    error_code ec;
    client_->expires_after(std::chrono::seconds(settings_.smtp.timeout));
    size_t n = co_await client_->read_some(boost::asio::buffer(chunk.get(), kDataChunk), ec);
    if (ec) {
      result.connection = ec == boost::asio::error::timed_out ? LineStatus::TimedOut : LineStatus::Closed;
      result.size = decoder.content_size();
      co_return result;
    }
    std::string_view got(chunk.get(), n);
    size_t used = decoder.feed(got, sink);
    if (decoder.finished()) {
      // Whatever follows the end of data is the next command (pipelining).
      inbuf_.erase(0, inpos_);
      inpos_ = 0;
      inbuf_.append(got.substr(used));
    }
  }
  result.defect = decoder.defect();
  result.size = decoder.content_size();
  co_return result;
}

std::string Session::received_header() const {
  // RFC 5321 4.4; RFC 6531 4.3 names the protocol UTF8SMTP when SMTPUTF8 was used.
  // RFC 3848: ESMTPS when TLS is active; RFC 6531 4.3: UTF8SMTP(S).
  std::string protocol = !esmtp_ ? "SMTP" : tx_.params.smtputf8 ? "UTF8SMTP" : "ESMTP";
  if (!tls_.empty()) protocol += "S";
  if (!client_info_.user.empty()) protocol += "A";
  std::string tls_clause = tls_.empty() ? "" : "\r\n\t(using " + tls_ + ")";
  std::string for_clause;
  if (tx_.recipients.size() == 1) for_clause = "\r\n\tfor <" + printable(tx_.recipients[0].address(), 512) + ">";
  return fmt::format("Received: from {} ([{}]){}\r\n\tby {} (mailkeep) with {} id {}.{}{};\r\n\t{}\r\n", helo_,
                     client_address_, tls_clause, settings_.smtp.hostname, protocol, id_, transactions_ + 1,
                     for_clause, rfc5322_date());
}

// Every transaction that reached the end of DATA, whoever answered it: the
// messages counters by direction and result, and the duration histogram.
void Session::count_transaction(const Reply& final_reply) {
  // Outbound: our own networks, submission and the provider's outgoing copies.
  using C = stats::Counter;
  const bool outbound = client_info_.relay_allowed || client_info_.backup_outbound || !client_info_.user.empty();
  const int result = final_reply.positive() ? 0 : final_reply.code < 500 ? 1 : 2;
  static constexpr C kMessages[2][3] = {
      {C::messages_inbound_accepted, C::messages_inbound_deferred, C::messages_inbound_rejected},
      {C::messages_outbound_accepted, C::messages_outbound_deferred, C::messages_outbound_rejected}};
  stats::count(kMessages[outbound][result]);
  stats::observe(stats::Histogram::transaction_duration,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - tx_started_).count());
}

void Session::log_transaction(const Reply& final_reply, uint64_t size, size_t archive_copies) {
  ++transactions_;
  if (final_reply.positive()) {
    stats::count(stats::Counter::messages_relayed);
    if (archive_copies) stats::count(stats::Counter::messages_archived);
  } else if (final_reply.code < 500 && final_reply.log_detail != "archive") {
    stats::count(stats::Counter::defer_upstream);
  }
  count_transaction(final_reply);
  std::string to;
  for (auto& r : tx_.recipients) to += (to.empty() ? "<" : ",<") + printable(r.address(), 512) + ">";
  auto elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - tx_started_).count();
  const char* status = final_reply.positive() ? "sent" : final_reply.code < 500 ? "deferred" : "bounced";
  std::string srs;  // the envelope sender upstream, when SRS rewrote it
  if (tx_.upstream_mail_reply && tx_.upstream_sender.address() != tx_.sender.address())
    srs = ", srs=<" + printable(tx_.upstream_sender.address(), 512) + ">";
  spdlog::info("{}.{}: client=[{}]:{}, from=<{}>{}, to={}, size={}, relay={}, archived={}, status={} ({}), duration={:.3f}s",
               id_, transactions_, client_address_, client_port_, printable(tx_.sender.address(), 512), srs, to, size,
               upstream_ ? upstream_->peer_name() : "none", archive_copies, status,
               printable(final_reply.summary(), 512), elapsed);
}

void Session::record_verdict(const std::string& signature, const spam::Judgement& judged, const std::vector<uint32_t>& features,
                             const std::string& subject, const Reply& result) {
  if (!env_.spam_history) return;
  spam::Verdict v;
  v.signature = signature;
  v.time = std::time(nullptr);
  v.client = client_address_;
  v.sender = printable(tx_.sender.address(), 512);
  for (auto& r : tx_.recipients) v.recipients += (v.recipients.empty() ? "" : ", ") + printable(r.address(), 512);
  v.subject = subject;
  v.score = judged.score;
  v.call = judged.call;
  v.action = result.positive() ? "relayed" : result.code >= 500 ? "rejected" : "deferred";
  // Queued, never blocking (spam::make_buffered_history); the history is for
  // the operator and never changes the answer to the client.
  try {
    env_.spam_history->record(v, features);
  } catch (const std::exception& e) {
    spdlog::warn("{}: spam history: cannot record signature {}: {}", id_, signature, e.what());
  }
}

void Session::log_reject(std::string_view command, const Reply& r, std::string_view reason,
                         std::string_view recipient, const Mailbox* sender) {
  spdlog::info("{}: reject: {} from [{}]:{}: {}; reason={}; from=<{}>{}{}{} helo=<{}>", id_, command, client_address_,
               client_port_, r.summary(), reason, printable((sender ? *sender : tx_.sender).address(), 512),
               recipient.empty() ? "" : " to=<", printable(recipient, 512), recipient.empty() ? "" : ">", helo_);
}

// ---- I/O helpers ----------------------------------------------------------

void Session::reply(const Reply& r) { outbuf_ += r.wire(); }

void Session::reply_error(const Reply& r) {
  reply(r);
  if (++errors_ >= settings_.smtp.max_errors) too_many_errors_ = true;
}

awaitable<bool> Session::flush() {
  if (outbuf_.empty()) co_return true;
  error_code ec;
  client_->expires_after(std::chrono::seconds(settings_.smtp.timeout));
  co_await client_->write_all(outbuf_, ec);
  outbuf_.clear();
  co_return !ec;
}

// Reads one command line (without CRLF). Replies buffered so far are sent
// first whenever the client's input has no complete line (RFC 2920 3.2).
awaitable<Session::LineStatus> Session::read_line(std::string& line) {
  // One deadline for the whole line, not per read: a client dripping a byte
  // at a time must not hold the session forever (Postfix's per-request deadline).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(settings_.smtp.timeout);
  bool discarding = false;  // inside an over-long line: skip to its end
  size_t scanned = inpos_;
  while (true) {
    auto eol = inbuf_.find('\n', scanned);
    if (eol != std::string::npos) {
      if (discarding) {
        inpos_ = eol + 1;
        co_return LineStatus::TooLong;
      }
      size_t end = eol > inpos_ && inbuf_[eol - 1] == '\r' ? eol - 1 : eol;
      if (end - inpos_ > kMaxCommandLine) {
        inpos_ = eol + 1;
        co_return LineStatus::TooLong;
      }
      line.assign(inbuf_, inpos_, end - inpos_);
      inpos_ = eol + 1;
      co_return LineStatus::Ok;
    }
    // No complete line buffered.
    if (inbuf_.size() - inpos_ > kMaxCommandLine) {
      discarding = true;
      inbuf_.clear();
      inpos_ = 0;
    } else if (inpos_ > 0) {
      inbuf_.erase(0, inpos_);
      inpos_ = 0;
    }
    scanned = inbuf_.size();
    bool flushed = co_await flush();
    if (!flushed) co_return LineStatus::Closed;
    size_t old = inbuf_.size();
    inbuf_.resize(old + kReadChunk);
    error_code ec;
    client_->expires_at(deadline);
    waiting_for_command_ = true;
    size_t n = 0;
    if (!draining_) n = co_await client_->read_some(boost::asio::buffer(inbuf_.data() + old, kReadChunk), ec);
    waiting_for_command_ = false;
    inbuf_.resize(old + n);
    if (draining_) co_return LineStatus::Aborted;
    if (ec == boost::asio::error::timed_out) co_return LineStatus::TimedOut;
    if (ec == boost::asio::error::operation_aborted) co_return LineStatus::Aborted;
    if (ec) co_return LineStatus::Closed;
  }
}

}  // namespace mk::smtp
