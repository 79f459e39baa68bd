// smtp_upstream.cpp — see smtp_upstream.h.
//
// Two things make the relay cheap without changing what the client sees:
//  - Connection reuse (as Postfix's scache): after a finished transaction the
//    connection goes back to a small pool of idle connections instead of QUIT,
//    and the next session's MAIL skips connect, banner and EHLO. A pooled
//    connection the upstream has meanwhile closed is detected on its first
//    reply and replaced by a fresh one, once. There is one pool per worker
//    (io_context), so a connection never changes threads.
//  - PIPELINING (RFC 2920) where the upstream offers it: MAIL is held back
//    and sent in one packet with the first RCPT. The client still gets both
//    verdicts live: MAIL's failure is returned as the RCPT reply.
#include "delivery/smtp_upstream.h"

#include <openssl/crypto.h>

#include "smtp/sasl.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "core/log.h"
#include "core/strings.h"
#include "smtp/dot_stuff.h"
#include "smtp/tcp_transport.h"

namespace mk::delivery {
namespace {

namespace asio = boost::asio;
using smtp::error_code;
using Clock = std::chrono::steady_clock;

constexpr size_t kMaxReplyLine = 4096;  // longer upstream lines are a protocol error
constexpr size_t kMaxReplyLines = 100;
constexpr size_t kBodyChunk = 64 * 1024;
constexpr size_t kMaxIdleConnections = 64;
constexpr auto kMaxIdleTime = std::chrono::seconds(5);  // below common server idle timeouts

struct Capabilities {
  bool size = false, eight_bit = false, smtputf8 = false, pipelining = false, starttls = false;
};

struct IdleConnection {
  std::unique_ptr<smtp::Transport> conn;
  Capabilities caps;
  std::string peer;
  std::string tls;
  Clock::time_point since;
};

// Idle upstream connections shared by the sessions of one worker.
// Threading: used from that worker's thread only.
class ConnectionPool {
 public:
  std::optional<IdleConnection> take() {
    while (!idle_.empty()) {
      auto c = std::move(idle_.back());
      idle_.pop_back();
      if (Clock::now() - c.since < kMaxIdleTime) return c;
      c.conn->close();
    }
    return std::nullopt;
  }
  bool put(IdleConnection c) {
    // Drop the oldest ones past their time first.
    while (!idle_.empty() && Clock::now() - idle_.front().since >= kMaxIdleTime) {
      idle_.front().conn->close();
      idle_.erase(idle_.begin());
    }
    if (idle_.size() >= kMaxIdleConnections) return false;
    c.since = Clock::now();
    idle_.push_back(std::move(c));
    return true;
  }

 private:
  std::vector<IdleConnection> idle_;
};

class SmtpUpstream final : public Upstream {
 public:
  SmtpUpstream(asio::any_io_executor ex, const SmtpUpstreamConfig& cfg, std::shared_ptr<ConnectionPool> pool)
      : ex_(std::move(ex)), cfg_(cfg), pool_(std::move(pool)) {}

  awaitable<Reply> mail(const smtp::Mailbox& sender, const smtp::MailParams& params) override {
    mail_failure_.reset();
    if (!conn_) {
      auto r = co_await open();
      if (!r.positive()) co_return r;
    }
    if (params.smtputf8 && !caps_.smtputf8)
      co_return failed(Reply{553, "5.6.7", "Error: the upstream does not support SMTPUTF8"}, "MAIL",
                       "no SMTPUTF8 in its EHLO reply");
    std::string cmd = "MAIL FROM:<" + sender.address() + ">";
    if (params.size && caps_.size) cmd += " SIZE=" + std::to_string(*params.size);
    if (params.body == smtp::BodyType::EightBitMime && caps_.eight_bit) cmd += " BODY=8BITMIME";
    if (params.smtputf8) cmd += " SMTPUTF8";
    cmd += "\r\n";
    if (caps_.pipelining) {
      pending_mail_ = std::move(cmd);  // goes out with the first RCPT
      co_return Reply{250, "2.1.0", "Ok"};
    }
    auto replies = co_await exchange_with_retry(cmd, 1);
    in_transaction_ = replies[0].positive();
    co_return replies[0];
  }

  awaitable<Reply> rcpt(const smtp::Mailbox& recipient) override {
    if (mail_failure_) co_return *mail_failure_;
    if (!conn_) co_return lost();
    std::string cmd = "RCPT TO:<" + recipient.address() + ">\r\n";
    if (!pending_mail_.empty()) {
      auto replies = co_await exchange_with_retry(std::exchange(pending_mail_, {}) + cmd, 2);
      in_transaction_ = replies[0].positive();
      if (!in_transaction_) {
        mail_failure_ = replies[0];
        spdlog::warn("upstream {} refused MAIL: {}", peer_name(), replies[0].summary());
        co_return replies[0];
      }
      co_return replies[1];
    }
    co_return co_await command(cmd);
  }

  awaitable<Reply> data(const MessageBody& body) override {
    if (!conn_) co_return lost();
    auto r = co_await command("DATA\r\n");
    if (r.code != 354) {
      if (r.positive()) r = failed(Reply{451, "4.5.0", "Error: unexpected upstream reply; try again later"}, "DATA",
                                   "answered DATA with " + r.summary());
      co_return r;
    }
    std::string out;
    out.reserve(std::min<uint64_t>(body.size() + 64, kBodyChunk + 1024));
    bool line_start = true;
    smtp::dot_stuff(body.prefix, line_start, out);
    uint64_t total = body.content ? body.content->size() : 0;
    std::vector<char> buf(total > 0 ? std::min<uint64_t>(total, kBodyChunk) : 0);
    for (uint64_t off = 0; off < total;) {
      size_t n = body.content->read_at(off, buf.data(), buf.size());
      if (n == 0) {
        drop();
        co_return Reply{451, "4.3.0", "Local error reading the spooled message"};
      }
      off += n;
      smtp::dot_stuff(std::string_view(buf.data(), n), line_start, out);
      if (out.size() >= kBodyChunk) {
        bool sent = co_await send(out);
        if (!sent) co_return lost();
        out.clear();
      }
    }
    if (!line_start) out += "\r\n";  // DataDecoder output always ends in CRLF; never send a broken end
    out += ".\r\n";
    bool sent = co_await send(out);
    if (!sent) co_return lost();
    auto final_reply = co_await read_reply();
    in_transaction_ = false;  // whatever the verdict, the upstream's transaction is over
    co_return final_reply;
  }

  awaitable<bool> reset() override {
    pending_mail_.clear();
    mail_failure_.reset();
    if (!conn_) co_return false;
    if (!in_transaction_) co_return true;
    auto r = co_await command("RSET\r\n");
    in_transaction_ = false;
    if (r.code != 250) drop();
    co_return conn_ != nullptr;
  }

  awaitable<void> quit() override {
    if (!conn_) co_return;
    pending_mail_.clear();
    if (cfg_.pool && !in_transaction_ && inbuf_.empty() &&
        pool_->put(IdleConnection{std::move(conn_), caps_, peer_, tls_, {}})) {
      co_return;
    }
    error_code ec;
    conn_->expires_after(std::chrono::seconds(10));
    co_await conn_->write_all("QUIT\r\n", ec);
    if (!ec) co_await read_reply();
    drop();
  }

  // Closing (not destroying) the transport makes a pending read or write fail;
  // the coroutine using it then drops the connection itself.
  void abort() override {
    if (conn_) conn_->close();
  }

  std::string peer_name() const override {
    if (peer_.empty()) return "none";
    return tls_.empty() ? peer_ : peer_ + " (TLS)";
  }

 private:
  // Clients hear that the upstream failed; the log hears which host, at which
  // step (connect, MAIL, RCPT, DATA) and why (Reply::log_detail).
  Reply failed(Reply r, std::string_view step, std::string_view why) const {
    r.log_detail = fmt::format("upstream {}: {}: {}", peer_name(), step, why);
    return r;
  }
  Reply lost() const {
    return failed(Reply{451, "4.4.2", "Error: lost connection with the upstream; try again later"}, last_step_,
                  last_error_.empty() ? "connection closed" : last_error_);
  }

  void drop() {
    if (conn_) conn_->close();
    conn_.reset();
    inbuf_.clear();
    in_transaction_ = false;
  }

  // An idle pooled connection if there is one, else a new one.
  awaitable<Reply> open() {
    if (auto idle = pool_->take()) {
      conn_ = std::move(idle->conn);
      caps_ = idle->caps;
      peer_ = idle->peer;
      tls_ = idle->tls;
      reused_ = true;
      co_return Reply{250, "", "reused"};
    }
    reused_ = false;
    co_return co_await connect();
  }

  // Sends `commands` (pipelined) and reads `count` replies. A reused
  // connection that turns out to be dead, or answers 421, is replaced by a
  // fresh one and the commands sent again, once.
  awaitable<std::vector<Reply>> exchange_with_retry(const std::string& commands, size_t count) {
    for (int attempt = 0;; ++attempt) {
      std::vector<Reply> replies;
      bool sent = co_await send(commands);
      for (size_t i = 0; i < count; ++i) {
        Reply r = lost();
        if (sent && conn_) r = co_await read_reply();
        replies.push_back(std::move(r));
      }
      bool stale = reused_ && (replies[0].code == 421 || !conn_);  // lost() always drops conn_
      reused_ = false;
      if (!stale || attempt > 0) co_return replies;
      spdlog::debug("upstream {}: pooled connection was closed; reconnecting", peer_name());
      drop();
      auto r = co_await connect();
      if (!r.positive()) co_return std::vector<Reply>(count, r);
    }
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
        auto [rec, results] =
            co_await resolver.async_resolve(hp.host, std::to_string(hp.port), asio::as_tuple(asio::use_awaitable));
        if (rec) {
          failures += " " + hp.to_string() + ": resolve: " + rec.message() + ";";
          continue;
        }
        for (auto& e : results) endpoints.push_back(e.endpoint());
      }
      for (auto& ep : endpoints) {
        peer_ = hp.host == ep.address().to_string()
                    ? hp.to_string()
                    : hp.host + "[" + ep.address().to_string() + "]:" + std::to_string(ep.port());
        // Opportunistic TLS that fails in the handshake is retried once in plaintext.
        bool use_tls = cfg_.tls != UpstreamTls::Off;
        for (int attempt = 0; attempt < 2; ++attempt) {
          std::string why;
          auto hello = co_await connect_one(ep, hp, use_tls, why);
          if (hello.code == 250 && cfg_.auth_user.empty()) co_return hello;
          if (hello.code == 250) {
            std::string plain = std::string(1, '\0') + cfg_.auth_user + std::string(1, '\0') + cfg_.auth_password;
            auto r = co_await command("AUTH PLAIN " + smtp::encode_base64(plain) + "\r\n");
            OPENSSL_cleanse(plain.data(), plain.size());
            if (r.code == 235) co_return hello;
            drop();
            co_return r.code >= 500 ? r : smtp::replies::upstream_unavailable("upstream " + peer_ + ": AUTH: " + r.summary());
          }
          failures += " " + peer_ + ": " + why + ";";
          bool retry_plain = use_tls && cfg_.tls == UpstreamTls::Opportunistic && why.starts_with("TLS");
          if (!retry_plain) break;
          spdlog::warn("upstream {}: {}; retrying without TLS", peer_, why);
          use_tls = false;
        }
      }
    }
    if (!failures.empty()) failures.pop_back();
    co_return smtp::replies::upstream_unavailable(failures.empty() ? "no upstream hosts"
                                                                   : "upstream " + std::string(trim(failures)));
  }

  // One connection attempt: TCP, greeting, EHLO (or HELO), and STARTTLS with a
  // second EHLO when `use_tls`. Returns the final hello reply (250 = ready) or
  // a failure with `why` set.
  awaitable<Reply> connect_one(const asio::ip::tcp::endpoint& ep, const HostPort& hp, bool use_tls, std::string& why) {
    last_step_ = "connect";
    error_code ec;
    conn_ = co_await smtp::connect_tcp(ex_, ep, cfg_.connect_timeout, ec);
    if (!conn_) {
      why = "connect: " + ec.message();
      spdlog::warn("upstream {}: connect failed: {}", peer_, ec.message());
      co_return Reply{};
    }
    inbuf_.clear();
    tls_.clear();
    auto greeting = co_await read_reply(cfg_.connect_timeout);
    if (greeting.code != 220) {
      why = "greeting " + greeting.summary();
      spdlog::warn("upstream {}: bad greeting: {}", peer_, greeting.summary());
      drop();
      co_return Reply{};
    }
    auto hello = co_await command("EHLO " + cfg_.helo_name + "\r\n");
    if (hello.code == 250) {
      parse_capabilities(hello);
    } else if (conn_ && hello.code >= 500 && cfg_.tls != UpstreamTls::Required) {
      caps_ = {};
      hello = co_await command("HELO " + cfg_.helo_name + "\r\n");
    }
    if (hello.code != 250) {
      why = "EHLO " + hello.summary();
      drop();
      co_return Reply{};
    }
    if (!use_tls) co_return hello;
    if (!caps_.starttls) {
      if (cfg_.tls != UpstreamTls::Required) co_return hello;
      why = "TLS required but the upstream does not offer STARTTLS";
      spdlog::warn("upstream {}: {}", peer_, why);
      drop();
      co_return Reply{};
    }
    auto ready = co_await command("STARTTLS\r\n");
    if (ready.code != 220) {
      if (cfg_.tls != UpstreamTls::Required && conn_) co_return hello;  // refused: carry on in plaintext
      why = "TLS: STARTTLS answered " + ready.summary();
      drop();
      co_return Reply{};
    }
    auto name = cfg_.tls_name.empty() ? hp.host : cfg_.tls_name;
    conn_->expires_after(cfg_.connect_timeout);
    auto secured = co_await conn_->start_tls(*cfg_.tls_context, smtp::Transport::TlsRole::Client, name, ec);
    if (!secured) {
      why = "TLS handshake failed: " + ec.message();
      spdlog::warn("upstream {}: {}", peer_, why);
      conn_.reset();
      co_return Reply{};
    }
    conn_ = std::move(secured);
    tls_ = conn_->tls_description();
    hello = co_await command("EHLO " + cfg_.helo_name + "\r\n");  // RFC 3207 4.2: start over
    if (hello.code != 250) {
      why = "TLS: EHLO after STARTTLS " + hello.summary();
      drop();
      co_return Reply{};
    }
    parse_capabilities(hello);
    spdlog::debug("upstream {}: TLS {}", peer_, tls_);
    co_return hello;
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
      else if (iequals(kw, "STARTTLS")) caps_.starttls = true;
    }
  }

  awaitable<bool> send(std::string_view bytes) {
    if (!conn_) co_return false;
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
    last_step_ = line.substr(0, std::min(line.find_first_of(" :\r"), size_t{16}));
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
        if (inbuf_.size() > kMaxReplyLine) {
          last_error_ = "reply line too long";
          break;
        }
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
      if (lines.size() > kMaxReplyLines) {
        last_error_ = "reply too long";
        break;
      }
    }
    drop();
    co_return lost();
  }

  asio::any_io_executor ex_;
  const SmtpUpstreamConfig& cfg_;
  std::shared_ptr<ConnectionPool> pool_;
  std::unique_ptr<smtp::Transport> conn_;
  std::string inbuf_;
  std::string peer_;
  std::string last_error_;
  std::string last_step_ = "connect";  // the verb of the last command sent, for lost()
  std::string tls_;  // TLS description of conn_, empty when plaintext
  Capabilities caps_;
  bool reused_ = false;          // conn_ came from the pool and has not answered yet
  bool in_transaction_ = false;  // MAIL accepted, transaction not finished
  std::string pending_mail_;     // MAIL held back to go with the first RCPT
  std::optional<Reply> mail_failure_;
};

class SmtpUpstreamFactory final : public UpstreamFactory {
 public:
  explicit SmtpUpstreamFactory(SmtpUpstreamConfig cfg) : cfg_(std::move(cfg)) {}
  std::unique_ptr<Upstream> create(asio::any_io_executor ex) override {
    return std::make_unique<SmtpUpstream>(ex, cfg_, pool_for(ex));
  }

 private:
  // The pool of the worker whose executor this is.
  std::shared_ptr<ConnectionPool> pool_for(const asio::any_io_executor& ex) {
    void* worker = &asio::query(ex, asio::execution::context);
    std::lock_guard lock(mutex_);
    auto& pool = pools_[worker];
    if (!pool) pool = std::make_shared<ConnectionPool>();
    return pool;
  }

  SmtpUpstreamConfig cfg_;
  std::mutex mutex_;
  std::unordered_map<void*, std::shared_ptr<ConnectionPool>> pools_;
};

}  // namespace

std::unique_ptr<UpstreamFactory> make_smtp_upstream_factory(SmtpUpstreamConfig config) {
  return std::make_unique<SmtpUpstreamFactory>(std::move(config));
}

SmtpUpstreamConfig smtp_upstream_config(const Settings& s, const std::vector<HostPort>& hosts) {
  SmtpUpstreamConfig cfg;
  cfg.hosts = hosts;
  cfg.tls = s.delivery.tls == "required" ? UpstreamTls::Required
            : s.delivery.tls == "off"    ? UpstreamTls::Off
                                         : UpstreamTls::Opportunistic;
  cfg.tls_context = tls::make_client_context(cfg.tls == UpstreamTls::Required, s.delivery.ca_file);
  cfg.tls_name = s.delivery.tls_name;
  cfg.helo_name = s.delivery.helo_name;
  cfg.connect_timeout = std::chrono::seconds(s.delivery.connect_timeout);
  cfg.timeout = std::chrono::seconds(s.delivery.timeout);
  return cfg;
}

}  // namespace mk::delivery
