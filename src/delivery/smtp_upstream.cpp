// smtp_upstream.cpp — see smtp_upstream.h.
#include "delivery/smtp_upstream.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "core/log.h"
#include "core/strings.h"
#include "smtp/tcp_transport.h"

namespace mk::delivery {
namespace {

namespace asio = boost::asio;
using smtp::error_code;

constexpr size_t kMaxReplyLine = 4096;   // longer upstream lines are a protocol error
constexpr size_t kMaxReplyLines = 100;
constexpr size_t kBodyChunk = 64 * 1024;

struct Capabilities {
  bool size = false, eight_bit = false, smtputf8 = false, pipelining = false;
};

class SmtpUpstream final : public Upstream {
 public:
  SmtpUpstream(asio::any_io_executor ex, const SmtpUpstreamConfig& cfg) : ex_(std::move(ex)), cfg_(cfg) {}

  awaitable<Reply> mail(const smtp::Mailbox& sender, const smtp::MailParams& params) override {
    if (!conn_) {
      auto r = co_await connect();
      if (!r.positive()) co_return r;
    }
    if (params.smtputf8 && !caps_.smtputf8)
      co_return Reply{553, "5.6.7", "Upstream " + peer_ + " does not support SMTPUTF8"};
    std::string cmd = "MAIL FROM:<" + sender.address() + ">";
    if (params.size && caps_.size) cmd += " SIZE=" + std::to_string(*params.size);
    if (params.body == smtp::BodyType::EightBitMime && caps_.eight_bit) cmd += " BODY=8BITMIME";
    if (params.smtputf8) cmd += " SMTPUTF8";
    co_return co_await command(cmd + "\r\n");
  }

  awaitable<Reply> rcpt(const smtp::Mailbox& recipient) override {
    if (!conn_) co_return lost();
    co_return co_await command("RCPT TO:<" + recipient.address() + ">\r\n");
  }

  awaitable<Reply> data(const MessageBody& body) override {
    if (!conn_) co_return lost();
    auto r = co_await command("DATA\r\n");
    if (r.code != 354) {
      if (r.positive()) co_return Reply{451, "4.5.0", "Upstream " + peer_ + " answered DATA with " + r.summary()};
      co_return r;
    }
    // Dot-stuff the content on its way out (RFC 5321 4.5.2); the content is
    // canonical CRLF text, so a line starts after every LF.
    std::string out;
    out.reserve(std::min<uint64_t>(body.size() + 64, kBodyChunk + 1024));
    bool line_start = true;
    auto stuff = [&](std::string_view in) {
      for (char c : in) {
        if (line_start && c == '.') out += '.';
        out += c;
        line_start = c == '\n';
      }
    };
    stuff(body.prefix);
    std::vector<char> buf(body.content && body.content->size() > 0 ? kBodyChunk : 0);
    uint64_t total = body.content ? body.content->size() : 0;
    for (uint64_t off = 0; off < total;) {
      size_t n = body.content->read_at(off, buf.data(), buf.size());
      if (n == 0) {
        drop();
        co_return Reply{451, "4.3.0", "Local error reading the spooled message"};
      }
      off += n;
      stuff(std::string_view(buf.data(), n));
      if (out.size() >= kBodyChunk) {
        bool sent = co_await send(out);
        if (!sent) co_return lost();
        out.clear();
      }
    }
    if (!line_start) out += "\r\n";  // cannot happen with DataDecoder output, but never send a broken end
    out += ".\r\n";
    bool sent = co_await send(out);
    if (!sent) co_return lost();
    co_return co_await read_reply();
  }

  awaitable<bool> reset() override {
    if (!conn_) co_return false;
    auto r = co_await command("RSET\r\n");
    if (r.code != 250) drop();
    co_return conn_ != nullptr;
  }

  awaitable<void> quit() override {
    if (!conn_) co_return;
    error_code ec;
    conn_->expires_after(std::chrono::seconds(10));
    co_await conn_->write_all("QUIT\r\n", ec);
    if (!ec) co_await read_reply();
    drop();
  }

  std::string peer_name() const override { return peer_.empty() ? "none" : peer_; }

  // Closing (not destroying) the transport makes a pending read or write fail;
  // the coroutine using it then drops the connection itself.
  void abort() override {
    if (conn_) conn_->close();
  }

 private:
  Reply lost() const {
    return Reply{451, "4.4.2", "Lost connection with upstream " + peer_name() + (last_error_.empty() ? "" : ": " + last_error_)};
  }

  void drop() {
    if (conn_) conn_->close();
    conn_.reset();
  }

  // Tries each host (and each of its addresses) in order until one greets with 220
  // and accepts EHLO (or HELO).
  awaitable<Reply> connect() {
    std::string failures;
    for (auto& hp : cfg_.hosts) {
      std::vector<asio::ip::tcp::endpoint> endpoints;
      error_code ec;
      auto literal = asio::ip::make_address(hp.host, ec);
      if (!ec) {
        endpoints.emplace_back(literal, hp.port);
      } else {
        asio::ip::tcp::resolver resolver(ex_);
        auto [rec, results] = co_await resolver.async_resolve(hp.host, std::to_string(hp.port),
                                                               asio::as_tuple(asio::use_awaitable));
        if (rec) {
          failures += " " + hp.to_string() + ": " + rec.message() + ";";
          continue;
        }
        for (auto& e : results) endpoints.push_back(e.endpoint());
      }
      for (auto& ep : endpoints) {
        peer_ = hp.host == ep.address().to_string() ? hp.to_string() : hp.host + "[" + ep.address().to_string() + "]:" + std::to_string(ep.port());
        conn_ = co_await smtp::connect_tcp(ex_, ep, cfg_.connect_timeout, ec);
        if (!conn_) {
          failures += " " + peer_ + ": " + ec.message() + ";";
          spdlog::warn("upstream {}: connect failed: {}", peer_, ec.message());
          continue;
        }
        inbuf_.clear();
        auto greeting = co_await read_reply(cfg_.connect_timeout);
        if (greeting.code != 220) {
          failures += " " + peer_ + ": greeting " + greeting.summary() + ";";
          spdlog::warn("upstream {}: bad greeting: {}", peer_, greeting.summary());
          drop();
          continue;
        }
        auto hello = co_await command("EHLO " + cfg_.helo_name + "\r\n");
        if (hello.code == 250) {
          parse_capabilities(hello);
          co_return hello;
        }
        if (conn_ && hello.code >= 500) {
          caps_ = {};
          hello = co_await command("HELO " + cfg_.helo_name + "\r\n");
          if (hello.code == 250) co_return hello;
        }
        failures += " " + peer_ + ": EHLO " + hello.summary() + ";";
        drop();
      }
    }
    if (!failures.empty()) failures.pop_back();
    co_return smtp::replies::upstream_unavailable(failures.empty() ? "no upstream hosts" : std::string(trim(failures)));
  }

  void parse_capabilities(const Reply& ehlo) {
    caps_ = {};
    for (size_t i = 1; i < ehlo.lines.size(); ++i) {
      auto words = split_list(ehlo.lines[i], ' ');
      if (words.empty()) continue;
      auto& kw = words[0];
      if (iequals(kw, "SIZE")) caps_.size = true;
      else if (iequals(kw, "8BITMIME")) caps_.eight_bit = true;
      else if (iequals(kw, "SMTPUTF8")) caps_.smtputf8 = true;
      else if (iequals(kw, "PIPELINING")) caps_.pipelining = true;
    }
  }

  awaitable<bool> send(std::string_view bytes) {
    error_code ec;
    conn_->expires_after(cfg_.timeout);
    co_await conn_->write_all(bytes, ec);
    if (ec) {
      last_error_ = ec.message();
      drop();
      co_return false;
    }
    co_return true;
  }

  awaitable<Reply> command(const std::string& line) {
    bool sent = co_await send(line);
    if (!sent) co_return lost();
    co_return co_await read_reply();
  }

  // Reads one complete reply; any error drops the connection and yields 451 4.4.2.
  awaitable<Reply> read_reply(std::optional<std::chrono::seconds> timeout = std::nullopt) {
    std::vector<std::string> lines;
    while (conn_) {
      auto eol = inbuf_.find('\n');
      if (eol == std::string::npos) {
        if (inbuf_.size() > kMaxReplyLine) break;
        char buf[4096];
        error_code ec;
        conn_->expires_after(timeout.value_or(cfg_.timeout));
        size_t n = co_await conn_->read_some(asio::buffer(buf), ec);
        if (ec) {
          last_error_ = ec.message();
          break;
        }
        inbuf_.append(buf, n);
        continue;
      }
      std::string line = inbuf_.substr(0, eol);
      inbuf_.erase(0, eol + 1);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      lines.push_back(line);
      bool last = line.size() < 4 || line[3] != '-';
      if (last) {
        auto r = smtp::parse_reply_lines(lines);
        if (r.code == 0) {
          last_error_ = "malformed reply";
          break;
        }
        co_return r;
      }
      if (lines.size() > kMaxReplyLines) break;
    }
    drop();
    co_return lost();
  }

  asio::any_io_executor ex_;
  const SmtpUpstreamConfig& cfg_;
  std::unique_ptr<smtp::Transport> conn_;
  std::string inbuf_;
  std::string peer_;
  std::string last_error_;
  Capabilities caps_;
};

class SmtpUpstreamFactory final : public UpstreamFactory {
 public:
  explicit SmtpUpstreamFactory(SmtpUpstreamConfig cfg) : cfg_(std::move(cfg)) {}
  std::unique_ptr<Upstream> create(asio::any_io_executor ex) override {
    return std::make_unique<SmtpUpstream>(std::move(ex), cfg_);
  }

 private:
  SmtpUpstreamConfig cfg_;
};

}  // namespace

std::unique_ptr<UpstreamFactory> make_smtp_upstream_factory(SmtpUpstreamConfig config) {
  return std::make_unique<SmtpUpstreamFactory>(std::move(config));
}

}  // namespace mk::delivery
