// upstream.h — the interface to where relayed mail goes next.
//
// One Upstream is one SMTP conversation with the next hop (a smarthost, the
// provider's inbound servers) or an equivalent sink (the outbox Maildir).
// MAIL and RCPT are relayed live so that the next hop's verdict on each
// recipient reaches our client at RCPT time; data() sends the message and
// returns the next hop's final reply, which decides ours.
// Every failure is a Reply: I/O errors and timeouts become 4xx (TempFail),
// never 5xx, so that nothing is bounced for a reason that may pass.
// Implementations: SmtpUpstream (smtp_upstream.h), OutboxUpstream
// (outbox_upstream.h); tests/unit has a fake.
// Threading: used from one session's strand only.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "core/content.h"
#include "smtp/command.h"
#include "smtp/reply.h"
#include "smtp/transport.h"

namespace mk::delivery {

using smtp::awaitable;
using smtp::Reply;

// The message as it will be sent: our added header lines, then the client's content.
struct MessageBody {
  std::string prefix;  // e.g. the Received header, CRLF-terminated lines
  const ContentSource* content = nullptr;
  uint64_t size() const { return prefix.size() + (content ? content->size() : 0); }
};

class Upstream {
 public:
  virtual ~Upstream() = default;
  // Opens the connection if needed, then MAIL FROM. A failure to connect is a 4xx reply.
  virtual awaitable<Reply> mail(const smtp::Mailbox& sender, const smtp::MailParams& params) = 0;
  virtual awaitable<Reply> rcpt(const smtp::Mailbox& recipient) = 0;
  // DATA, the message, the final dot; returns the final reply.
  virtual awaitable<Reply> data(const MessageBody& body) = 0;
  // Ends the transaction (RSET) so that the connection can carry another; returns
  // false if the connection is no longer usable.
  virtual awaitable<bool> reset() = 0;
  // QUIT and close.
  virtual awaitable<void> quit() = 0;
  // Closes the connection at once, aborting any pending operation (hard shutdown).
  virtual void abort() = 0;
  // For logs: "relay=127.0.0.1:2526" style name of the host in use.
  virtual std::string peer_name() const = 0;
};

// Creates Upstreams for a route's destination.
class UpstreamFactory {
 public:
  virtual ~UpstreamFactory() = default;
  virtual std::unique_ptr<Upstream> create(boost::asio::any_io_executor ex) = 0;
};

}  // namespace mk::delivery
