// outbox_upstream.cpp — see outbox_upstream.h.
#include "delivery/outbox_upstream.h"

#include "archive/maildir.h"
#include "core/blocking.h"

namespace mk::delivery {
namespace {

class OutboxUpstream final : public Upstream {
 public:
  OutboxUpstream(std::string maildir, boost::asio::any_io_executor blocking)
      : maildir_(std::move(maildir)), blocking_(std::move(blocking)) {}

  awaitable<Reply> mail(const smtp::Mailbox& sender, const smtp::MailParams&) override {
    envelope_ = "Return-Path: <" + sender.address() + ">\r\n";
    co_return Reply{250, "2.1.0", "Ok"};
  }
  awaitable<Reply> rcpt(const smtp::Mailbox& recipient) override {
    envelope_ += "X-Original-To: <" + recipient.address() + ">\r\n";
    co_return Reply{250, "2.1.5", "Ok"};
  }
  awaitable<Reply> data(const MessageBody& body) override {
    if (!body.content) co_return Reply{451, "4.3.0", "Outbox write failed: no message content"};
    // The outbox file = the envelope lines, our header lines, the message as received.
    auto r = co_await run_blocking(
        blocking_, [&] { return archive::deliver_to_maildir(maildir_, envelope_ + body.prefix, *body.content); });
    if (r.outcome != Outcome::Ok) co_return Reply{451, "4.3.0", "Outbox write failed: " + r.detail};
    co_return Reply{250, "2.0.0", "Ok: stored in outbox as " + r.detail};
  }
  awaitable<bool> reset() override {
    envelope_.clear();
    co_return true;
  }
  awaitable<void> quit() override { co_return; }
  void abort() override {}
  std::string peer_name() const override { return "outbox:" + maildir_; }

 private:
  std::string maildir_;
  boost::asio::any_io_executor blocking_;
  std::string envelope_;
};

class OutboxFactory final : public UpstreamFactory {
 public:
  OutboxFactory(std::string maildir, boost::asio::any_io_executor blocking)
      : maildir_(std::move(maildir)), blocking_(std::move(blocking)) {}
  std::unique_ptr<Upstream> create(boost::asio::any_io_executor) override {
    return std::make_unique<OutboxUpstream>(maildir_, blocking_);
  }

 private:
  std::string maildir_;
  boost::asio::any_io_executor blocking_;
};

}  // namespace

std::unique_ptr<UpstreamFactory> make_outbox_upstream_factory(std::string maildir,
                                                              boost::asio::any_io_executor blocking) {
  return std::make_unique<OutboxFactory>(std::move(maildir), std::move(blocking));
}

}  // namespace mk::delivery
