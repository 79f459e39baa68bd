// outbox_upstream.cpp — see outbox_upstream.h.
#include "delivery/outbox_upstream.h"

#include "archive/maildir.h"
#include "core/blocking.h"
#include "core/stats.h"

namespace mk::delivery {
namespace {

class OutboxUpstream final : public Upstream {
 public:
  OutboxUpstream(std::string maildir, boost::asio::any_io_executor blocking, bool per_recipient)
      : maildir_(std::move(maildir)), blocking_(std::move(blocking)), per_recipient_(per_recipient) {}

  awaitable<Reply> mail(const smtp::Mailbox& sender, const smtp::MailParams&) override {
    return_path_ = "Return-Path: <" + sender.address() + ">\r\n";
    recipients_.clear();
    co_return Reply{250, "2.1.0", "Ok"};
  }
  awaitable<Reply> rcpt(const smtp::Mailbox& recipient) override {
    recipients_.push_back("X-Original-To: <" + recipient.address() + ">\r\n");
    co_return Reply{250, "2.1.5", "Ok"};
  }
  awaitable<Reply> data(const MessageBody& body) override {
    if (!body.content) co_return Reply{451, "4.3.0", "Outbox write failed: no message content"};
    // The outbox file = the envelope lines, our header lines, the message as received.
    std::vector<std::string> envelopes;
    if (per_recipient_) {
      for (auto& r : recipients_) envelopes.push_back(return_path_ + r);
    } else {
      envelopes.push_back(return_path_);
      for (auto& r : recipients_) envelopes.back() += r;
    }
    auto r = co_await run_blocking(blocking_, [&] {
      archive::MaildirResult last;
      for (auto& envelope : envelopes) {
        auto one = archive::deliver_to_maildir(maildir_, envelope + body.prefix, *body.content);
        if (one.outcome != Outcome::Ok) return one;
        last.detail += (last.detail.empty() ? "" : ", ") + one.detail;
      }
      return last;
    });
    if (r.outcome != Outcome::Ok) co_return Reply{451, "4.3.0", "Outbox write failed: " + r.detail};
    if (per_recipient_) stats::count(stats::Counter::messages_standalone);
    co_return Reply{250, "2.0.0", std::string(per_recipient_ ? "Ok: delivered, recorded for replay as " : "Ok: stored in outbox as ") + r.detail};
  }
  awaitable<bool> reset() override {
    return_path_.clear();
    recipients_.clear();
    co_return true;
  }
  awaitable<void> quit() override { co_return; }
  void abort() override {}
  std::string peer_name() const override { return (per_recipient_ ? "standalone:" : "outbox:") + maildir_; }

 private:
  std::string maildir_;
  boost::asio::any_io_executor blocking_;
  bool per_recipient_;
  std::string return_path_;
  std::vector<std::string> recipients_;
};

class OutboxFactory final : public UpstreamFactory {
 public:
  OutboxFactory(std::string maildir, boost::asio::any_io_executor blocking, bool per_recipient)
      : maildir_(std::move(maildir)), blocking_(std::move(blocking)), per_recipient_(per_recipient) {}
  std::unique_ptr<Upstream> create(boost::asio::any_io_executor) override {
    return std::make_unique<OutboxUpstream>(maildir_, blocking_, per_recipient_);
  }

 private:
  std::string maildir_;
  boost::asio::any_io_executor blocking_;
  bool per_recipient_;
};

}  // namespace

std::unique_ptr<UpstreamFactory> make_outbox_upstream_factory(std::string maildir,
                                                              boost::asio::any_io_executor blocking) {
  return std::make_unique<OutboxFactory>(std::move(maildir), std::move(blocking), false);
}

std::unique_ptr<UpstreamFactory> make_replay_journal_factory(std::string maildir, boost::asio::any_io_executor blocking) {
  return std::make_unique<OutboxFactory>(std::move(maildir), std::move(blocking), true);
}

}  // namespace mk::delivery
