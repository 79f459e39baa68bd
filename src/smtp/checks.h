// checks.h — the pre-acceptance stage beside DNSBL and spam: an object per
// session that the session tells each step of the conversation, and that
// may answer in the session's place. The milter chain (milter/chain.h)
// implements it; the session knows nothing of milters.
//
// Every call returns Continue unless the stage has something to say; a
// stage that cannot be sure (its peer is down) says so through its own
// policy ([milter] default_action), never by throwing.
// Threading: one object per session, used on the session's strand.
#pragma once
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/content.h"
#include "smtp/command.h"
#include "smtp/reply.h"
#include "smtp/transport.h"

namespace mk::smtp {

struct CheckResult {
  enum class Kind {
    Continue,    // go on as if the stage were not there
    Reply,       // answer `reply` (4xx/5xx) to this command; at connect, as the greeting
    Discard,     // end of message: answer 250, deliver nowhere
    Quarantine,  // end of message: keep it out of the upstream, file it as junk, answer 250
  };
  Kind kind = Kind::Continue;
  Reply reply;
  std::string reason;  // for the session's log line: who said it and why
};

// What the stage knows of the client at connect.
struct ConnectFacts {
  std::string client_address;  // "192.0.2.7", "2001:db8::1"
  uint16_t client_port = 0;
  std::string client_name;     // reverse DNS when known, else "unknown"
  std::string local_address;   // the address the client connected to
  uint16_t local_port = 0;
  std::string listener;        // "smtp", "submission"
};

// One change of the envelope at the end of the message (a milter's add
// recipient, delete recipient, change sender). The session applies them:
// added recipients are routed like any RCPT, the upstream transaction is
// sent again when the sender changes or a recipient goes.
struct EnvelopeChange {
  enum class Kind { AddRecipient, DeleteRecipient, ChangeSender };
  Kind kind = Kind::AddRecipient;
  std::string address;  // as the stage wrote it: "<a@b>" or "a@b"
  std::string args;     // ESMTP parameters that came with it, maybe empty
  std::string by;       // who asked, for the log line
};

// Changes the stage made to the message at its end.
struct MessageChanges {
  CheckResult verdict;
  std::vector<EnvelopeChange> envelope;  // in the order they were asked
  // The whole new message — every header, in order, then the body — when
  // the stage changed anything; null: as it was.
  std::unique_ptr<ContentSource> content;
};

class SessionChecks {
 public:
  virtual ~SessionChecks() = default;
  virtual awaitable<CheckResult> connect(const ConnectFacts& facts) = 0;
  // `tls`: the TLS description once STARTTLS succeeded; `user`: the AUTH account.
  virtual awaitable<CheckResult> helo(std::string_view name, std::string_view tls) = 0;
  // `params`: the ESMTP parameters as the client wrote them (SIZE=…, BODY=…).
  virtual awaitable<CheckResult> mail(const Mailbox& sender, std::string_view params, std::string_view user) = 0;
  virtual awaitable<CheckResult> rcpt(const Mailbox& recipient) = 0;
  virtual awaitable<CheckResult> data() = 0;
  // The message as it will be kept and relayed: `top` (our Received field,
  // then our own headers), then `content` as the client sent it.
  virtual awaitable<MessageChanges> message(std::string_view top, const ContentSource& content) = 0;
  // The transaction ended without a message (RSET, a refusal, a new MAIL).
  virtual awaitable<void> abort() = 0;
  // The client is gone; no call follows.
  virtual awaitable<void> close() = 0;
  // True when a later stage needs nothing from this session (every peer accepted it).
  virtual bool done() const { return false; }
  // Label for `mailkeep stats`/logs.
  virtual std::string_view name() const = 0;
  // Transaction id for the stage's logs (the session's id and transaction number).
  void set_queue_id(std::string id) { queue_id_ = std::move(id); }
  const std::string& queue_id() const { return queue_id_; }

 private:
  std::string queue_id_;
};

// Makes each session's checks; null result: no checks for this client
// (say, trusted clients without [milter] outbound).
struct SessionChecksFactory {
  std::function<std::unique_ptr<SessionChecks>(boost::asio::any_io_executor, bool outbound)> create;
};

}  // namespace mk::smtp
