// session.h — one SMTP server session: a straight-line coroutine that owns
// its client connection and, while a transaction needs one, an upstream.
//
// Standards: RFC 5321 (commands, replies, 4.5.3 limits and timeouts),
// RFC 2920 PIPELINING (replies are buffered until the client's input runs
// dry; DATA flushes), RFC 1870 SIZE, RFC 6152 8BITMIME, RFC 2034/3463
// enhanced status codes, RFC 6531 SMTPUTF8.
// The acknowledgement rule: the client gets 250 for DATA only after the
// upstream's 250 for the same bytes; every failure that might pass is 4xx.
// Threading: all members are used on the session's strand; shutdown() and
// abort() are posted there by the server.
#pragma once
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "aliases/service.h"
#include "core/stats.h"
#include "policy/dnsbl.h"
#include "policy/rate_limit.h"
#include "spam/calibration.h"
#include "spam/classifier.h"
#include "spam/history.h"
#include "spam/tokenizer.h"
#include "tls/tls_context.h"
#include "users/authenticator.h"
#include "config/settings.h"
#include "delivery/upstream.h"
#include "route/router.h"
#include "smtp/checks.h"
#include "smtp/command.h"
#include "smtp/data_reader.h"
#include "smtp/reply.h"
#include "smtp/spool.h"
#include "smtp/transport.h"

namespace mk::smtp {

// What every session of a server shares. Immutable while sessions run.
struct SessionEnvironment {
  const Settings* settings = nullptr;
  const route::Router* router = nullptr;
  // The upstream for each route destination.
  std::function<delivery::UpstreamFactory*(route::Destination)> upstream_for;
  std::string spool_dir;
  size_t spool_memory_limit = 256 * 1024;
  // Where blocking file work (archive copies, fsync) runs; see core/blocking.h.
  boost::asio::any_io_executor blocking;
  aliases::AliasService* aliases = nullptr;  // null: no alias domains
  policy::DnsblChecker* dnsbl = nullptr;     // null: no [dnsbl] smtp_zones
  policy::WindowLimiter* message_limiter = nullptr;
  tls::ServerContext* tls = nullptr;  // null: no STARTTLS
  spam::Classifier* spam = nullptr;   // null: [spam] enabled = false
  spam::History* spam_history = nullptr;  // null: verdicts are not recorded; must not block (make_buffered_history)
  // Submission (RFC 6409): a server whose sessions offer AUTH and relay only
  // for authenticated users. Null on port 25.
  users::Authenticator* auth = nullptr;
  bool implicit_tls = false;      // TLS before the greeting (RFC 8314, port 465)
  std::vector<HostPort> listen;   // empty: [smtp] listen
  std::string label;              // names the listener in logs: "" (SMTP), "submission"
  // The pre-acceptance stage beside DNSBL and spam ([milter] smtp); null or empty: none.
  const SessionChecksFactory* checks = nullptr;
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(const SessionEnvironment& env, std::unique_ptr<Transport> transport, std::string client_address,
          uint16_t client_port);
  ~Session();

  // Runs the whole session; returns when the client is gone. Never throws for
  // expected endings (EOF, timeout); unexpected exceptions escape to the caller.
  awaitable<void> run();

  // Graceful shutdown: an idle session answers 421 and ends; a transfer in flight finishes.
  void shutdown();
  // Hard shutdown: closes both connections now.
  void abort();
  const std::string& id() const { return id_; }
  boost::asio::any_io_executor executor() { return client_->get_executor(); }

 private:
  struct CommandSpec;
  static const CommandSpec* find_command(Verb verb);

  // Transaction state, reset by RSET, HELO/EHLO and after DATA (RFC 5321 4.1.4).
  struct Transaction {
    bool active = false;
    Mailbox sender;
    MailParams params;
    std::vector<Mailbox> recipients;           // accepted by the upstream
    delivery::UpstreamFactory* upstream = nullptr;  // where this transaction goes
    std::vector<archive::ArchiveTarget> archive;    // INBOX copies of archived recipients
    std::vector<std::string> alias_uses;            // aliases with a use reserved for this message
    std::optional<Reply> upstream_mail_reply;  // set once MAIL went upstream
    Mailbox upstream_sender;                   // what that MAIL named (an SRS sender for forwarded mail)
    uint32_t recipients_over_limit = 0;        // RCPTs answered 452 for max_recipients
    std::optional<CheckResult> checks_verdict;  // a discard or quarantine decided before the message
    // Per recipient, parallel to `recipients`: what the milters' envelope changes need.
    struct Note {
      std::string given;  // the RCPT address as the client wrote it (what the milters saw)
      std::optional<archive::ArchiveTarget> archive;
      bool forwarded = false;
    };
    std::vector<Note> notes;
    bool junk = false;  // the spam verdict sent the archive copies to .Junk
  };

  awaitable<void> handle_helo(std::string_view arg);
  awaitable<void> handle_ehlo(std::string_view arg);
  awaitable<void> handle_mail(std::string_view arg);
  awaitable<void> handle_rcpt(std::string_view arg);
  awaitable<void> handle_data(std::string_view arg);
  awaitable<void> handle_rset(std::string_view arg);
  awaitable<void> handle_noop(std::string_view arg);
  awaitable<void> handle_quit(std::string_view arg);
  awaitable<void> handle_vrfy(std::string_view arg);
  awaitable<void> handle_expn(std::string_view arg);
  awaitable<void> handle_help(std::string_view arg);
  awaitable<void> handle_starttls(std::string_view arg);
  awaitable<void> handle_auth(std::string_view arg);  // session_auth.cpp, like the two below

  // Submission: AUTH is offered after TLS, or to [submission] auth_without_tls_from.
  bool auth_offered() const;
  // MAIL on submission: 530 before AUTH, 553 for a sender that is not the user's.
  std::optional<Reply> submission_sender_check(const Mailbox& sender);
  awaitable<bool> secure_connection();  // the TLS handshake (STARTTLS, implicit TLS)

  // I/O helpers.
  enum class LineStatus { Ok, TooLong, Closed, TimedOut, Aborted };
  awaitable<LineStatus> read_line(std::string& line);
  awaitable<bool> flush();
  void reply(const Reply& r);
  // Replies with an error and counts it towards [smtp] max_errors.
  void reply_error(const Reply& r);
  // `sender`: the one a rejected MAIL named (before it becomes tx_.sender).
  void log_reject(std::string_view command, const Reply& r, std::string_view reason,
                  std::string_view recipient = {}, const Mailbox* sender = nullptr);
  // The DNSBL check at connect: the rejecting greeting, or nullopt to go on.
  awaitable<std::optional<Reply>> check_dnsbl();
  // The pre-acceptance stage (session_checks.cpp): the greeting's refusal at
  // connect; false when the stage answered this command (already replied);
  // at the end of the message, the final reply when the stage decided it
  // (rejected, discarded, quarantined), else nullopt with `body` pointing at
  // the stage's version of the message (kept in `changed`).
  awaitable<std::optional<Reply>> check_connect();
  awaitable<bool> check_stage(Verb verb, const Mailbox* mailbox, std::string_view arg);
  // The milters' envelope changes (session_checks.cpp): nullopt, or the reply that ends the message.
  awaitable<std::optional<Reply>> apply_envelope(const std::vector<EnvelopeChange>& changes);
  awaitable<std::optional<Reply>> check_message(delivery::MessageBody& body, const Spool& spool,
                                                std::unique_ptr<ContentSource>& changed);

  // Transaction helpers.
  awaitable<void> reset_transaction();
  // The .Junk copy of an INBOX archive target (spam, a milter's quarantine).
  static archive::ArchiveTarget junk_target(archive::ArchiveTarget t);
  // Commits (delivered) or releases the alias uses reserved by this transaction.
  awaitable<void> finish_alias_uses(bool delivered);
  // Expands an alias recipient; returns the rejection or nullopt when `route` was rewritten.
  awaitable<std::optional<Reply>> expand_alias(route::RouteDecision& route, std::string& reserved_id);
  struct DataResult {
    DataDecoder::Defect defect = DataDecoder::Defect::None;
    uint64_t size = 0;        // content size as received, even past the limit
    bool too_big = false;
    LineStatus connection = LineStatus::Ok;  // not Ok: the client is gone mid-DATA
  };
  // `tokenizer` (may be null) sees the content as it arrives: no second pass.
  awaitable<DataResult> read_message(Spool& spool, spam::Tokenizer* tokenizer);
  // Records a verdict in the spam history (the /spam page, reclassification).
  void record_verdict(const std::string& signature, const spam::Judgement& judged, const std::vector<uint32_t>& features,
                                 const std::string& subject, const Reply& result);
  std::string received_header() const;
  void log_transaction(const Reply& final_reply, uint64_t size, size_t archive_copies);
  void count_transaction(const Reply& final_reply);

  const SessionEnvironment& env_;
  const Settings& settings_;
  std::unique_ptr<Transport> client_;
  std::string client_address_;  // "127.0.0.1"
  uint16_t client_port_;
  route::ClientInfo client_info_;
  std::string id_;
  std::string inbuf_;  // unread client bytes
  size_t inpos_ = 0;
  std::string outbuf_;  // replies not yet sent (pipelining)
  std::string helo_;
  bool esmtp_ = false;
  std::string tls_;  // the TLS description once STARTTLS succeeded
  bool quit_ = false;
  bool draining_ = false;
  bool waiting_for_command_ = false;
  bool too_many_errors_ = false;
  unsigned errors_ = 0;
  unsigned transactions_ = 0;
  Transaction tx_;
  std::chrono::steady_clock::time_point tx_started_;
  std::unique_ptr<delivery::Upstream> upstream_;
  std::unique_ptr<SessionChecks> checks_;  // null: no milters for this session
  delivery::UpstreamFactory* upstream_factory_ = nullptr;  // what upstream_ was made by
};

}  // namespace mk::smtp
