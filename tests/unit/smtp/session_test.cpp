// session_test.cpp — the SMTP session over Beast's in-memory test stream,
// against a fake upstream: scripted transcripts with expected replies, and a
// failure-injection sweep that fails the client stream at every step.
#include "smtp/session.h"
#include "smtp/sasl.h"

#include <gtest/gtest.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/_experimental/test/stream.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "archive/accounts.h"
#include "users/passwd_file.h"
#include "users/password.h"

namespace mk::smtp {
namespace {

namespace asio = boost::asio;
namespace test = boost::beast::test;

// Transport over Beast's test stream (no timeouts: the stream never stalls).
class TestTransport final : public Transport {
 public:
  explicit TestTransport(test::stream s) : s_(std::move(s)) {}
  awaitable<size_t> read_some(asio::mutable_buffer buf, error_code& ec) override {
    auto [e, n] = co_await s_.async_read_some(buf, asio::as_tuple(asio::use_awaitable));
    ec = e;
    co_return n;
  }
  awaitable<void> write_all(std::string_view bytes, error_code& ec) override {
    auto [e, n] = co_await asio::async_write(s_, asio::buffer(bytes.data(), bytes.size()),
                                             asio::as_tuple(asio::use_awaitable));
    ec = e;
  }
  void expires_at(std::chrono::steady_clock::time_point) override {}
  void cancel() override {}
  void close() override { s_.close(); }
  asio::any_io_executor get_executor() override { return s_.get_executor(); }
  test::stream& stream() { return s_; }

 private:
  test::stream s_;
};

// Records what reached the "next hop"; replies as scripted.
struct FakeUpstreamLog {
  std::vector<std::string> commands;
  std::vector<std::string> messages;  // prefix + content of each data()
  std::map<std::string, Reply> rcpt_replies;
  Reply mail_reply{250, "2.1.0", "Ok"};
  Reply data_reply{250, "2.0.0", "Ok: queued as FAKE1"};
};

class FakeUpstream final : public delivery::Upstream {
 public:
  explicit FakeUpstream(FakeUpstreamLog& log) : log_(log) {}
  awaitable<Reply> mail(const Mailbox& sender, const MailParams&) override {
    log_.commands.push_back("MAIL " + sender.address());
    co_return log_.mail_reply;
  }
  awaitable<Reply> rcpt(const Mailbox& r) override {
    log_.commands.push_back("RCPT " + r.address());
    auto it = log_.rcpt_replies.find(r.address());
    co_return it == log_.rcpt_replies.end() ? Reply{250, "2.1.5", "Ok"} : it->second;
  }
  awaitable<Reply> data(const delivery::MessageBody& body) override {
    std::string m = body.prefix;
    std::string buf(body.content->size(), '\0');
    body.content->read_at(0, buf.data(), buf.size());
    log_.messages.push_back(m + buf);
    log_.commands.push_back("DATA");
    co_return log_.data_reply;
  }
  awaitable<bool> reset() override {
    log_.commands.push_back("RSET");
    co_return true;
  }
  awaitable<void> quit() override {
    log_.commands.push_back("QUIT");
    co_return;
  }
  void abort() override {}
  std::string peer_name() const override { return "fake"; }

 private:
  FakeUpstreamLog& log_;
};

class FakeFactory final : public delivery::UpstreamFactory {
 public:
  explicit FakeFactory(FakeUpstreamLog& log) : log_(log) {}
  std::unique_ptr<delivery::Upstream> create(asio::any_io_executor) override {
    return std::make_unique<FakeUpstream>(log_);
  }

 private:
  FakeUpstreamLog& log_;
};

struct Harness {
  Settings settings;
  std::unique_ptr<route::Router> router;
  FakeUpstreamLog upstream;
  FakeFactory factory{upstream};
  SessionEnvironment env;

  explicit Harness(const std::string& ini = "") {
    auto r = load_settings_text("[smtp]\nhostname = mx.test\nmax_recipients = 3\nmax_message_size = 2000\n"
                                "max_errors = 5\n[relay]\ndomains = example.org\nrelay_from = 127.0.0.9/32\n" +
                                    ini,
                                "test");
    EXPECT_TRUE(r.ok()) << (r.errors.empty() ? "" : r.errors[0]);
    settings = r.settings;
    router = std::make_unique<route::Router>(settings, nullptr);
    env.settings = &settings;
    env.router = router.get();
    env.upstream_for = [this](route::Destination) { return &factory; };
    env.spool_dir = ::testing::TempDir();
    env.spool_memory_limit = 100;  // so that tests also cover the file spool
  }

  // Runs one session with `input` from a client that behaves like a real one:
  // its commands go out pipelined, but after DATA it waits for the reply and
  // sends the message text only after a 354 (RFC 2920 3.1). Returns everything
  // the server wrote.
  std::string run(const std::string& input, const std::string& client_ip = "127.0.0.1",
                  test::fail_count* fc = nullptr) {
    return run_session(input, client_ip, fc, /*wait_for_354=*/true);
  }
  // The whole input at once, as a client that does not wait for anything.
  std::string run_raw(const std::string& input, const std::string& client_ip = "127.0.0.1") {
    return run_session(input, client_ip, nullptr, /*wait_for_354=*/false);
  }

 private:
  std::string run_session(const std::string& input, const std::string& client_ip, test::fail_count* fc,
                          bool wait_for_354) {
    asio::io_context io;
    test::stream local = fc ? test::stream(io, *fc) : test::stream(io);
    test::stream remote(io);
    local.connect(remote);
    std::string out;
    if (!wait_for_354) {
      local.append(input);
      local.close_remote();  // EOF after the input
    }
    auto transport = std::make_unique<TestTransport>(std::move(local));
    if (wait_for_354) asio::co_spawn(io, client(remote, transport->stream(), input, out), asio::detached);
    auto session = std::make_shared<Session>(env, std::move(transport), client_ip, 4242);
    std::exception_ptr failure;
    asio::co_spawn(io, session->run(), [&](std::exception_ptr e) { failure = e; });
    io.run();
    if (failure) std::rethrow_exception(failure);
    return wait_for_354 ? out : std::string(remote.str());
  }

  // Final reply lines (not "250-" continuations) complete in `out`.
  static size_t final_replies(const std::string& out, std::string* last = nullptr) {
    size_t n = 0, pos = 0;
    for (size_t eol; (eol = out.find("\r\n", pos)) != std::string::npos; pos = eol + 2) {
      if (eol - pos >= 4 && out[pos + 3] == '-') continue;
      ++n;
      if (last) *last = out.substr(pos, eol - pos);
    }
    return n;
  }

  // `server_side`: the session's end, closed for reading after the input (EOF).
  static asio::awaitable<void> client(test::stream& remote, test::stream& server_side, std::string input,
                                      std::string& out) {
    char buf[4096];
    size_t expected = 1;  // the greeting
    auto read_until_replies = [&](size_t n) -> asio::awaitable<bool> {
      while (final_replies(out) < n) {
        auto [ec, got] = co_await remote.async_read_some(asio::buffer(buf), asio::as_tuple(asio::use_awaitable));
        if (ec) co_return false;
        out.append(buf, got);
      }
      co_return true;
    };
    auto send = [&](std::string_view bytes) -> asio::awaitable<bool> {
      auto [ec, n] = co_await asio::async_write(remote, asio::buffer(bytes.data(), bytes.size()),
                                                asio::as_tuple(asio::use_awaitable));
      co_return !ec;
    };
    size_t pos = 0;
    while (pos < input.size()) {
      size_t eol = input.find("\r\n", pos);
      size_t end = eol == std::string::npos ? input.size() : eol + 2;
      std::string line = input.substr(pos, end - pos);
      pos = end;
      ++expected;
      if (!co_await send(line)) break;
      if (line != "DATA\r\n" && line != "data\r\n") continue;
      if (!co_await read_until_replies(expected)) break;
      std::string last;
      final_replies(out, &last);
      if (!last.starts_with("354")) continue;  // refused: what follows are commands
      size_t dot = input.rfind(".\r\n", pos) == pos ? pos : input.find("\r\n.\r\n", pos);
      end = dot == std::string::npos ? input.size() : dot + (dot == pos ? 3 : 5);
      bool sent = co_await send(std::string_view(input).substr(pos, end - pos));
      pos = end;
      if (!sent) break;
    }
    server_side.close_remote();  // EOF after the input; the replies still arrive
    for (;;) {
      auto [ec, got] = co_await remote.async_read_some(asio::buffer(buf), asio::as_tuple(asio::use_awaitable));
      if (ec) break;
      out.append(buf, got);
    }
  }
};

// The reply codes in order, e.g. "220 250 250 250 354 250 221".
std::string codes(const std::string& transcript) {
  std::istringstream in(transcript);
  std::string line, out;
  while (std::getline(in, line)) {
    if (line.size() >= 4 && line[3] == '-') continue;  // multi-line continuation
    out += (out.empty() ? "" : " ") + line.substr(0, 3);
  }
  return out;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

const std::string kMessage = "Subject: test\r\n\r\nHello\r\n..dot line\r\n";
const std::string kMessageWire = "Subject: test\r\n\r\nHello\r\n..dot line\r\n.\r\n";

TEST(Session, RelaysOneMessage) {
  Harness h;
  auto out = h.run("EHLO client.test\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n" +
                   kMessageWire + "QUIT\r\n");
  EXPECT_EQ(codes(out), "220 250 250 250 354 250 221") << out;
  EXPECT_TRUE(contains(out, "220 mx.test ESMTP mailkeep\r\n"));
  EXPECT_TRUE(contains(out, "250-PIPELINING\r\n"));
  EXPECT_TRUE(contains(out, "250-SIZE 2000\r\n"));
  EXPECT_TRUE(contains(out, "250 2.0.0 Ok: queued as FAKE1\r\n"));
  ASSERT_EQ(h.upstream.messages.size(), 1u);
  auto& m = h.upstream.messages[0];
  EXPECT_EQ(m.rfind("Received: from client.test ([127.0.0.1])\r\n\tby mx.test (mailkeep) with ESMTP id ", 0), 0u) << m;
  EXPECT_TRUE(contains(m, "\tfor <bob@example.org>;"));
  // The content after our Received header is the client's, unstuffed.
  auto body_start = m.find("Subject:");
  EXPECT_EQ(m.substr(body_start), "Subject: test\r\n\r\nHello\r\n.dot line\r\n");
  EXPECT_EQ(h.upstream.commands, (std::vector<std::string>{"MAIL a@sender.test", "RCPT bob@example.org", "DATA", "QUIT"}));
}

TEST(Session, TranscriptTable) {
  struct Case {
    const char* name;
    std::string input;
    const char* expected_codes;
    const char* expected_text;  // must appear in the output
    size_t messages_upstream;
  } cases[] = {
      {"MAIL before EHLO", "MAIL FROM:<a@b.test>\r\nQUIT\r\n", "220 503 221", "503 5.5.1", 0},
      {"RCPT before MAIL", "EHLO c\r\nRCPT TO:<x@example.org>\r\nQUIT\r\n", "220 250 503 221", "503 5.5.1", 0},
      {"DATA without recipients", "EHLO c\r\nMAIL FROM:<a@b.test>\r\nDATA\r\nQUIT\r\n", "220 250 250 554 221", "554 5.5.1", 0},
      {"nested MAIL", "EHLO c\r\nMAIL FROM:<a@b.test>\r\nMAIL FROM:<a@b.test>\r\nQUIT\r\n", "220 250 250 503 221", "nested", 0},
      {"relay denied", "EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@other.test>\r\nQUIT\r\n", "220 250 250 550 221",
       "550 5.7.1 <x@other.test>: Relaying denied", 0},
      {"percent hack", "EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x%other.test@example.org>\r\nQUIT\r\n",
       "220 250 250 550 221", "550 5.7.1", 0},
      {"bang path", "EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<other.test!x@example.org>\r\nQUIT\r\n",
       "220 250 250 550 221", "550 5.7.1", 0},
      {"source route", "EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<@example.org:x@other.test>\r\nQUIT\r\n",
       "220 250 250 550 221", "550 5.7.1", 0},
      {"quoted at", "EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<\"x@other.test\"@example.org>\r\nQUIT\r\n",
       "220 250 250 550 221", "550 5.7.1", 0},
      {"SIZE too big at MAIL", "EHLO c\r\nMAIL FROM:<a@b.test> SIZE=999999\r\nQUIT\r\n", "220 250 552 221", "552 5.3.4", 0},
      {"unknown MAIL parameter", "EHLO c\r\nMAIL FROM:<a@b.test> RET=FULL\r\nQUIT\r\n", "220 250 555 221", "555 5.5.4", 0},
      {"parameters need EHLO", "HELO c\r\nMAIL FROM:<a@b.test> SIZE=10\r\nQUIT\r\n", "220 250 555 221", "555 5.5.4", 0},
      {"UTF-8 address without SMTPUTF8", "EHLO c\r\nMAIL FROM:<用户@b.test>\r\nQUIT\r\n", "220 250 553 221", "553 5.6.7", 0},
      {"too many recipients",
       "EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<1@example.org>\r\nRCPT TO:<2@example.org>\r\n"
       "RCPT TO:<3@example.org>\r\nRCPT TO:<4@example.org>\r\nQUIT\r\n",
       "220 250 250 250 250 250 452 221", "452 4.5.3", 0},
      {"message too big", "EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@example.org>\r\nDATA\r\n" +
       std::string(3000, 'x') + "\r\n.\r\nQUIT\r\n", "220 250 250 250 354 552 221", "552 5.3.4", 0},
      {"smuggling LF.LF", "EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@example.org>\r\nDATA\r\nhi\n.\nMAIL FROM:<evil@x>\r\n"
       "RCPT TO:<victim@example.org>\r\nDATA\r\nspoof\r\n.\r\nQUIT\r\n", "220 250 250 250 354 554 221", "554 5.6.0", 0},
      {"smuggling LF.CRLF", "EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@example.org>\r\nDATA\r\nhi\n.\r\nMAIL FROM:<evil@x>\r\n"
       ".\r\nQUIT\r\n", "220 250 250 250 354 554 221", "554 5.6.0", 0},
      {"NUL in data", "EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@example.org>\r\nDATA\r\n" + std::string("a\0b\r\n", 5) +
       ".\r\nQUIT\r\n", "220 250 250 250 354 554 221", "NUL", 0},
      {"unknown command", "EHLO c\r\nWIBBLE\r\nQUIT\r\n", "220 250 500 221", "500 5.5.2", 0},
      {"NUL in command", std::string("EHLO c\r\nNO\0OP\r\nQUIT\r\n", 22), "220 250 500 221", "NUL", 0},
      {"overlong command", "EHLO " + std::string(5000, 'a') + "\r\nNOOP\r\nQUIT\r\n", "220 500 250 221", "500 5.5.2", 0},
      {"too many errors", "A\r\nB\r\nC\r\nD\r\nE\r\nNOOP\r\n", "220 500 500 500 500 500 421", "421 4.7.0", 0},
      {"VRFY HELP NOOP RSET", "VRFY x\r\nHELP\r\nNOOP\r\nRSET\r\nEXPN x\r\nQUIT\r\n", "220 252 214 250 250 502 221", "252 2.5.2", 0},
      {"null sender accepted", "EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<x@example.org>\r\nDATA\r\n" + kMessageWire + "QUIT\r\n",
       "220 250 250 250 354 250 221", "queued", 1},
      {"pipelined two transactions", "EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@example.org>\r\nDATA\r\n" + kMessageWire +
       "MAIL FROM:<a@b.test>\r\nRCPT TO:<y@example.org>\r\nDATA\r\n" + kMessageWire + "QUIT\r\n",
       "220 250 250 250 354 250 250 250 354 250 221", "queued", 2},
      {"RSET between", "EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@example.org>\r\nRSET\r\nMAIL FROM:<a@b.test>\r\nQUIT\r\n",
       "220 250 250 250 250 250 221", "2.0.0", 0},
      {"disconnect in DATA", "EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@example.org>\r\nDATA\r\npartial", "220 250 250 250 354",
       "354", 0},
      {"LF-only commands accepted", "EHLO c\nMAIL FROM:<a@b.test>\nQUIT\n", "220 250 250 221", "221", 0},
  };
  for (auto& c : cases) {
    Harness h;
    auto out = h.run(c.input);
    EXPECT_EQ(codes(out), c.expected_codes) << c.name << "\n" << out;
    EXPECT_TRUE(contains(out, c.expected_text)) << c.name << "\n" << out;
    EXPECT_EQ(h.upstream.messages.size(), c.messages_upstream) << c.name;
    for (auto& cmd : h.upstream.commands) EXPECT_NE(cmd, "MAIL evil@x") << c.name << ": smuggled command executed";
  }
}

// RFC 2920 3.1; Postfix's smtpd_forbid_unauth_pipelining. The message text,
// sent before our 354, must neither be relayed nor be read as commands.
TEST(Session, MessageTextBeforeThe354IsRefused) {
  Harness h;
  auto out = h.run_raw("EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@example.org>\r\nDATA\r\n"
                       "MAIL FROM:<evil@x>\r\n" + kMessageWire + "QUIT\r\n");
  EXPECT_EQ(codes(out), "220 250 250 250 554") << out;
  EXPECT_TRUE(contains(out, "554 5.5.0 Error: SMTP protocol synchronization")) << out;
  EXPECT_TRUE(h.upstream.messages.empty());
  for (auto& cmd : h.upstream.commands) EXPECT_NE(cmd, "MAIL evil@x") << "text before 354 executed as a command";
  // The same session from a client that waits for the 354 relays the message.
  Harness ok;
  auto fine = ok.run("EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@example.org>\r\nDATA\r\n" + kMessageWire + "QUIT\r\n");
  EXPECT_EQ(codes(fine), "220 250 250 250 354 250 221") << fine;
  EXPECT_EQ(ok.upstream.messages.size(), 1u);
}

// The upstream's failure details (its address, the OS error) are for the log:
// the client hears a generic 451 4.4.1.
TEST(Session, UpstreamFailureDetailsStayInTheLog) {
  Harness h;
  h.upstream.mail_reply = replies::upstream_unavailable("upstream 10.1.2.3:25: connect: Connection refused");
  auto out = h.run("EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@example.org>\r\nQUIT\r\n");
  EXPECT_EQ(codes(out), "220 250 250 451 221") << out;
  EXPECT_TRUE(contains(out, "451 4.4.1 Upstream unavailable, try again later\r\n")) << out;
  EXPECT_FALSE(contains(out, "10.1.2.3")) << out;
  EXPECT_FALSE(contains(out, "refused")) << out;
  EXPECT_EQ(h.upstream.mail_reply.summary(),
            "451 4.4.1 Upstream unavailable, try again later (upstream 10.1.2.3:25: connect: Connection refused)");
}

TEST(Session, RelayClientMayRelayAnywhere) {
  Harness h;
  auto out = h.run("EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@other.test>\r\nQUIT\r\n", "127.0.0.9");
  EXPECT_EQ(codes(out), "220 250 250 250 221") << out;
}

TEST(Session, UpstreamVerdictsPassThrough) {
  Harness h;
  h.upstream.rcpt_replies["nobody@example.org"] = Reply{550, "5.1.1", "<nobody@example.org>: user unknown"};
  h.upstream.data_reply = Reply{451, "4.3.0", "upstream busy"};
  auto out = h.run("EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<nobody@example.org>\r\nRCPT TO:<x@example.org>\r\nDATA\r\n" +
                   kMessageWire + "QUIT\r\n");
  EXPECT_EQ(codes(out), "220 250 250 550 250 354 451 221") << out;
  EXPECT_TRUE(contains(out, "550 5.1.1 <nobody@example.org>: user unknown"));
  EXPECT_TRUE(contains(out, "451 4.3.0 upstream busy"));
}

TEST(Session, UpstreamMailFailureIsAnsweredAtRcpt) {
  Harness h;
  h.upstream.mail_reply = Reply{451, "4.4.1", "Upstream unavailable"};
  auto out = h.run("EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@example.org>\r\nRCPT TO:<y@example.org>\r\nDATA\r\nQUIT\r\n");
  EXPECT_EQ(codes(out), "220 250 250 451 451 554 221") << out;
  EXPECT_EQ(std::count(h.upstream.commands.begin(), h.upstream.commands.end(), "MAIL a@b.test"), 1);
}

// Failure injection: the client stream fails at step n = 0, 1, 2 ... The
// session must end cleanly every time, never throw, and never leave a "250"
// for DATA without the upstream having the message.
TEST(Session, FailureInjectionAtEveryStep) {
  const std::string input = "EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@example.org>\r\nDATA\r\n" + kMessageWire +
                            "MAIL FROM:<a@b.test>\r\nRCPT TO:<y@example.org>\r\nDATA\r\n" + kMessageWire + "QUIT\r\n";
  bool completed = false;
  for (size_t n = 0; n < 200 && !completed; ++n) {
    Harness h;
    test::fail_count fc(n);
    std::string out;
    ASSERT_NO_THROW(out = h.run(input, "127.0.0.1", &fc)) << "step " << n;
    size_t acked = 0;
    for (size_t pos = 0; (pos = out.find("250 2.0.0 Ok: queued", pos)) != std::string::npos; ++pos) ++acked;
    EXPECT_LE(acked, h.upstream.messages.size()) << "step " << n << ": acknowledged more than was relayed";
    completed = contains(out, "221 2.0.0");
  }
  EXPECT_TRUE(completed) << "the sweep never reached a clean run";
}

// ---- Submission: AUTH and the rules it adds (session_auth.cpp) ----------

struct SubmissionHarness : Harness {
  std::string dir;
  std::unique_ptr<archive::AccountDirectory> accounts;
  std::unique_ptr<users::Authenticator> auth;
  boost::asio::thread_pool pool{1};

  SubmissionHarness()
      : Harness("[backup]\ndomains = example.com, example.net\n[submission]\nmax_auth_failures = 2\n"),
        dir((std::filesystem::path(::testing::TempDir()) / ("sub" + std::to_string(::getpid()))).string()) {
    std::filesystem::create_directories(dir);
    std::ofstream(dir + "/accounts") << "alice\nbob\n";
    accounts = std::make_unique<archive::AccountDirectory>(dir + "/accounts");
    accounts->reload(true);
    settings.backup.archive = dir + "/archive";
    router = std::make_unique<route::Router>(settings, accounts.get());
    env.router = router.get();
    users::update_passwd(dir + "/passwd", "", "", [](users::PasswdFile& f) {
      f.put(users::PasswdEntry{"alice@example.com", users::hash_password("alice-pw", {1, 1024}), "/h", false});
      return std::string();
    });
    auth = std::make_unique<users::Authenticator>(users::AuthenticatorConfig{
        dir + "/passwd", [this](const std::string& a) { return router->is_account(a); }, 2, 60});
    env.auth = auth.get();
    env.blocking = pool.get_executor();
  }
  ~SubmissionHarness() { pool.join(); }
};

std::string plain(const std::string& user, const std::string& pw) {
  return encode_base64(std::string(1, '\0') + user + std::string(1, '\0') + pw);
}

TEST(Submission, AuthThenOwnSenderRelaysWithEsmtpa) {
  SubmissionHarness h;
  auto out = h.run("EHLO c\r\nAUTH PLAIN " + plain("alice@example.com", "alice-pw") +
                   "\r\nMAIL FROM:<Alice@example.net>\r\nRCPT TO:<x@remote.test>\r\nDATA\r\n" + kMessageWire + "QUIT\r\n");
  EXPECT_EQ(codes(out), "220 250 235 250 250 354 250 221") << out;
  EXPECT_TRUE(contains(out, "250-AUTH PLAIN LOGIN")) << "offered on loopback without TLS";
  ASSERT_EQ(h.upstream.messages.size(), 1u);
  EXPECT_TRUE(contains(h.upstream.messages[0], "with ESMTPA id")) << h.upstream.messages[0];
}

TEST(Submission, RefusesWhatRfc6409AndRfc4954Refuse) {
  SubmissionHarness h;
  // MAIL before AUTH; another user's address; AUTH twice; AUTH inside a transaction.
  auto out = h.run("EHLO c\r\nMAIL FROM:<alice@example.com>\r\nAUTH PLAIN " + plain("alice@example.com", "alice-pw") +
                   "\r\nAUTH PLAIN " + plain("alice@example.com", "alice-pw") +
                   "\r\nMAIL FROM:<bob@example.com>\r\nQUIT\r\n");
  EXPECT_EQ(codes(out), "220 250 530 235 503 553 221") << out;
  out = h.run("EHLO c\r\nAUTH PLAIN " + plain("alice@example.com", "alice-pw") +
              "\r\nMAIL FROM:<alice@outside.test>\r\nMAIL FROM:<>\r\nMAIL FROM:<alice@example.com>\r\n"
              "AUTH LOGIN\r\nQUIT\r\n");
  EXPECT_EQ(codes(out), "220 250 235 553 553 250 503 221") << out;
  EXPECT_TRUE(h.upstream.commands.empty());
}

TEST(Submission, WrongPasswordsThenLockout) {
  SubmissionHarness h;
  auto out = h.run("EHLO c\r\nAUTH PLAIN " + plain("alice@example.com", "bad") + "\r\nAUTH PLAIN " +
                   plain("nobody@example.com", "bad") + "\r\nAUTH PLAIN " + plain("alice@example.com", "alice-pw") +
                   "\r\nQUIT\r\n");
  EXPECT_EQ(codes(out), "220 250 535 535 454 221") << out;
  EXPECT_TRUE(contains(out, "454 4.7.0")) << out;
}

TEST(Submission, NoAuthWithoutTlsForOtherClients) {
  SubmissionHarness h;
  auto out = h.run("EHLO c\r\nAUTH PLAIN " + plain("alice@example.com", "alice-pw") + "\r\nQUIT\r\n", "192.0.2.1");
  EXPECT_EQ(codes(out), "220 250 538 221") << out;
  EXPECT_FALSE(contains(out, "AUTH PLAIN LOGIN"));
}

TEST(Submission, LoginExchangeCancelAndGarbage) {
  SubmissionHarness h;
  auto out = h.run("EHLO c\r\nAUTH LOGIN\r\n*\r\nAUTH PLAIN\r\n@@@@\r\nAUTH LOGIN\r\n" + encode_base64("alice@example.com") +
                   "\r\n" + encode_base64("alice-pw") + "\r\nQUIT\r\n");
  EXPECT_EQ(codes(out), "220 250 334 501 334 501 334 334 235 221") << out;
}

TEST(Submission, PortTwentyFiveHasNoAuth) {
  Harness h;
  auto out = h.run("EHLO c\r\nAUTH PLAIN " + plain("a", "b") + "\r\nQUIT\r\n");
  EXPECT_EQ(codes(out), "220 250 502 221") << out;
  EXPECT_FALSE(contains(out, "AUTH"));
}

}  // namespace
}  // namespace mk::smtp
