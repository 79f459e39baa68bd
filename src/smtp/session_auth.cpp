// session_auth.cpp — the submission half of Session (RFC 6409, RFC 4954):
// AUTH, and the rules it adds to MAIL. Kept out of session.cpp, which holds
// the relay path every message takes.
//
// The log line of every failed AUTH is one line, for fail2ban:
//   "<id>: auth failed: client=[IP] user=<NAME> mechanism=M reply=CODE reason=..."
#include <openssl/crypto.h>

#include <ctime>

#include "core/blocking.h"
#include "core/log.h"
#include "core/strings.h"
#include "smtp/sasl.h"
#include "smtp/session.h"

namespace mk::smtp {
namespace {

std::string log_text(std::string_view s, size_t max = 128) { return printable_ascii(s, max, " <>"); }

void cleanse(std::string& s) { OPENSSL_cleanse(s.data(), s.size()); }

}  // namespace

bool Session::auth_offered() const {
  if (!env_.auth) return false;
  if (!tls_.empty()) return true;
  return std::any_of(settings_.submission.auth_without_tls_from.begin(), settings_.submission.auth_without_tls_from.end(),
                     [&](const Cidr& c) { return c.contains(client_info_.ip); });
}

std::optional<Reply> Session::submission_sender_check(const Mailbox& sender) {
  if (!env_.auth) return std::nullopt;  // port 25: no AUTH, no such rule
  if (client_info_.user.empty()) {
    Reply r{530, "5.7.0", "Authentication required"};
    log_reject("MAIL", r, "submission without AUTH", {}, &sender);
    return r;
  }
  if (!env_.router->may_send_as(client_info_.user, sender)) {
    Reply r{553, "5.7.1", "<" + log_text(sender.address(), 512) + ">: Sender address rejected: not owned by user " +
                              client_info_.user};
    log_reject("MAIL", r, "sender not the authenticated user's (user=" + client_info_.user + ")", {}, &sender);
    return r;
  }
  return std::nullopt;
}

awaitable<void> Session::handle_auth(std::string_view arg) {
  if (!env_.auth) {
    reply_error(Reply{502, "5.5.1", "Error: authentication not enabled"});
    co_return;
  }
  if (!client_info_.user.empty()) {
    reply_error(replies::bad_sequence("Error: already authenticated"));
    co_return;
  }
  if (tx_.active) {
    reply_error(replies::bad_sequence("Error: AUTH not allowed during a mail transaction"));
    co_return;
  }
  auto fail = [&](const Reply& r, std::string_view user, std::string_view mechanism, std::string_view reason) {
    stats::count(stats::Counter::reject_auth);
    spdlog::warn("{}: auth failed: client=[{}] user=<{}> mechanism={} reply={} reason={}", id_, client_address_,
                 log_text(user), log_text(mechanism, 16), r.code, reason);
    reply_error(r);
  };
  if (!auth_offered()) {
    // RFC 4954 4 / 6: no plaintext password over a clear connection.
    fail(Reply{538, "5.7.11", "Encryption required for requested authentication mechanism"}, "", "", "no TLS");
    co_return;
  }
  SaslExchange sasl;
  auto step = sasl.start(arg);
  std::string line;
  while (step.kind == SaslStep::Kind::Challenge) {
    reply(step.reply);
    bool flushed = co_await flush();
    if (!flushed) {
      quit_ = true;
      co_return;
    }
    auto status = co_await read_line(line);
    if (status == LineStatus::TooLong) {
      step = SaslStep{SaslStep::Kind::Failed, Reply{500, "5.5.6", "Error: authentication line too long"}, "", "",
                      step.mechanism};
      break;
    }
    if (status != LineStatus::Ok) {  // gone, timed out or shut down: nothing to answer
      if (status == LineStatus::TimedOut) reply(replies::timeout(settings_.smtp.hostname));
      quit_ = true;
      co_return;
    }
    step = sasl.next(line);
    cleanse(line);
  }
  if (step.kind == SaslStep::Kind::Failed) {
    fail(step.reply, step.user, step.mechanism, "bad exchange: " + step.reply.summary());
    co_return;
  }
  auto key = policy::client_key(client_info_.ip);
  auto outcome = co_await run_blocking(
      env_.blocking, [&] { return env_.auth->check(key, step.user, step.password, std::time(nullptr)); });
  cleanse(step.password);
  switch (outcome.verdict) {
    case users::AuthVerdict::Ok:
      stats::count(stats::Counter::auth_ok);
      client_info_.user = outcome.user;
      client_info_.relay_allowed = true;
      client_info_.trusted = true;
      spdlog::info("{}: auth ok: client=[{}] user=<{}> mechanism={}", id_, client_address_, outcome.user,
                   step.mechanism);
      reply(Reply{235, "2.7.0", "Authentication successful"});
      break;
    case users::AuthVerdict::LockedOut:
      fail(Reply{454, "4.7.0", "Too many failed authentications; try again later"}, step.user, step.mechanism,
           outcome.reason);
      break;
    case users::AuthVerdict::Wrong:
      fail(Reply{535, "5.7.8", "Error: authentication credentials invalid"}, step.user, step.mechanism,
           outcome.reason);
      break;
  }
}

}  // namespace mk::smtp
