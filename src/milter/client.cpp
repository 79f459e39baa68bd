// client.cpp — see client.h.
#include "milter/client.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

namespace mk::milter {
namespace {

namespace asio = boost::asio;
using namespace asio::experimental::awaitable_operators;
using Clock = std::chrono::steady_clock;
using boost::system::error_code;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

// What we can leave out or go without replies for: everything the protocol
// lets a milter ask for except SMFIP_NOUNKNOWN's opposite (we never send
// unknown commands: the session answers them itself).
constexpr uint32_t kProtocolOffer = smfip::NOCONNECT | smfip::NOHELO | smfip::NOMAIL | smfip::NORCPT |
                                    smfip::NOBODY | smfip::NOHDRS | smfip::NOEOH | smfip::NR_HDR |
                                    smfip::NOUNKNOWN | smfip::NODATA | smfip::SKIP | smfip::NR_CONN |
                                    smfip::NR_HELO | smfip::NR_MAIL | smfip::NR_RCPT | smfip::NR_DATA |
                                    smfip::NR_UNKN | smfip::NR_EOH | smfip::NR_BODY;

}  // namespace

struct Connection::Impl {
  explicit Impl(asio::any_io_executor ex) : socket(ex), timer(ex) {}
  asio::generic::stream_protocol::socket socket;
  asio::steady_timer timer;
};

Connection::Connection(asio::any_io_executor ex, Endpoint endpoint, Timeouts timeouts)
    : impl_(std::make_unique<Impl>(ex)), endpoint_(std::move(endpoint)), timeouts_(timeouts) {}

Connection::~Connection() { close(); }

void Connection::close() {
  error_code ignored;
  impl_->socket.close(ignored);
}

void Connection::fail(std::string why) {
  if (!failed_) error_ = std::move(why);
  failed_ = true;
  close();
}

awaitable<bool> Connection::open(uint32_t actions) {
  auto& im = *impl_;
  auto deadline = Clock::now() + timeouts_.connect;
  im.timer.expires_at(deadline);
  error_code ec;
  if (!endpoint_.path.empty()) {
    const asio::generic::stream_protocol::endpoint ep{asio::local::stream_protocol::endpoint(endpoint_.path)};
    auto r = co_await (im.socket.async_connect(ep, kTuple) || im.timer.async_wait(kTuple));
    if (r.index() == 1) ec = asio::error::timed_out;
    else ec = std::get<0>(std::get<0>(r));
  } else {
    asio::ip::tcp::resolver resolver(im.socket.get_executor());
    const std::string service = std::to_string(endpoint_.port);
    auto rr = co_await (resolver.async_resolve(endpoint_.host, service, asio::ip::resolver_base::numeric_service,
                                               kTuple) ||
                        im.timer.async_wait(kTuple));
    if (rr.index() == 1) {
      ec = asio::error::timed_out;
    } else {
      auto& [rec, results] = std::get<0>(rr);
      ec = rec;
      if (!ec) {
        ec = asio::error::host_not_found;
        for (auto& entry : results) {
          error_code ignored;
          im.socket.close(ignored);
          const asio::generic::stream_protocol::endpoint ep{entry.endpoint()};
          auto r = co_await (im.socket.async_connect(ep, kTuple) || im.timer.async_wait(kTuple));
          if (r.index() == 1) {
            ec = asio::error::timed_out;
            break;
          }
          ec = std::get<0>(std::get<0>(r));
          if (!ec) break;
        }
      }
    }
  }
  if (ec) {
    fail("connect: " + ec.message());
    co_return false;
  }
  if (endpoint_.path.empty()) {
    // Our packets go out at once (a command is one write; nothing to coalesce).
    int one = 1;
    ::setsockopt(im.socket.native_handle(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  OptNeg offer{kVersion, actions, kProtocolOffer, {}};
  const std::string optneg = encode_optneg(kVersion, actions, kProtocolOffer);
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  if (!co_await write(optneg, left)) co_return false;
  auto packet = co_await read_packet(deadline);
  if (!packet) co_return false;
  std::string error;
  if (packet->code != static_cast<char>(Response::OptNeg)) {
    fail(std::string("negotiation: expected SMFIC_OPTNEG, got ") + std::string(response_name(packet->code)));
    co_return false;
  }
  auto reply = parse_optneg(*packet, error);
  std::optional<OptNeg> agreed;
  if (reply) agreed = negotiate(offer, *reply, error);
  if (!agreed) {
    fail("negotiation: " + error);
    co_return false;
  }
  agreed_ = *agreed;
  co_return true;
}

awaitable<bool> Connection::write(const std::string& bytes, std::chrono::milliseconds limit) {
  if (failed_) co_return false;
  auto& im = *impl_;
  im.timer.expires_after(limit);
  auto r = co_await (asio::async_write(im.socket, asio::buffer(bytes), kTuple) || im.timer.async_wait(kTuple));
  if (r.index() == 1) {
    fail("timed out sending to the milter");
    co_return false;
  }
  auto [ec, n] = std::get<0>(r);
  if (ec) {
    fail("send: " + ec.message());
    co_return false;
  }
  co_return true;
}

awaitable<std::optional<Packet>> Connection::read_packet(Clock::time_point deadline) {
  auto& im = *impl_;
  for (;;) {
    if (failed_) co_return std::nullopt;
    if (auto p = reader_.next()) co_return p;
    if (reader_.failed()) {
      fail("framing: " + reader_.error());
      co_return std::nullopt;
    }
    char buf[16384];
    if (endpoint_.path.empty()) {
      // libmilter writes a reply of several packets (insert header, then
      // continue) one write each, with Nagle on: its second packet waits for
      // our ACK of the first, and a delayed ACK costs ~40 ms per message.
      // Asking the kernel to ACK at once (it forgets after a while, hence
      // before every read) removes the stall; Linux-only, as is the gateway.
      int one = 1;
      ::setsockopt(im.socket.native_handle(), IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
    }
    im.timer.expires_at(deadline);
    auto r = co_await (im.socket.async_read_some(asio::buffer(buf), kTuple) || im.timer.async_wait(kTuple));
    if (r.index() == 1) {
      fail("timed out waiting for the milter's reply");
      co_return std::nullopt;
    }
    auto [ec, n] = std::get<0>(r);
    if (ec) {
      fail(ec == asio::error::eof ? "the milter closed the connection" : "receive: " + ec.message());
      co_return std::nullopt;
    }
    if (!reader_.feed(std::string_view(buf, n))) {
      fail("framing: " + reader_.error());
      co_return std::nullopt;
    }
  }
}

awaitable<void> Connection::send(const std::string& packet) {
  reusable_ = false;
  co_await write(packet, timeouts_.command);
}

awaitable<std::optional<Connection::Idle>> Connection::release_idle() {
  if (!reusable()) co_return std::nullopt;
  reusable_ = false;
  if (!co_await write(encode_quit_nc(), timeouts_.command)) co_return std::nullopt;
  Idle idle;
  idle.family = endpoint_.path.empty() ? (impl_->socket.local_endpoint().protocol().family()) : AF_UNIX;
  idle.agreed = agreed_;
  idle.since = Clock::now();
  error_code ec;
  idle.fd = impl_->socket.release(ec);
  if (ec) {
    close();
    co_return std::nullopt;
  }
  co_return idle;
}

bool Connection::adopt(const Idle& idle) {
  // Anything to read now — EOF, an error, stray bytes — means the milter is
  // not waiting for our SMFIC_CONNECT: not reusable.
  char probe;
  const ssize_t n = ::recv(idle.fd, &probe, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
    ::close(idle.fd);
    return false;
  }
  error_code ec;
  const asio::generic::stream_protocol protocol(idle.family, idle.family == AF_UNIX ? 0 : IPPROTO_TCP);
  impl_->socket.assign(protocol, idle.fd, ec);
  if (ec) {
    ::close(idle.fd);
    return false;
  }
  agreed_ = idle.agreed;
  return true;
}

awaitable<Exchange> Connection::exchange(Command c, const std::string& macros, const std::string& packet,
                                         bool content, const ChangeSink& on_change) {
  Exchange x;
  auto limit = content ? timeouts_.content : timeouts_.command;
  reusable_ = false;
  std::string bytes = macros + packet;
  if (!co_await write(bytes, limit)) {
    x.failed = true;
    x.error = error_;
    co_return x;
  }
  if (!replies(c, agreed_.protocol)) co_return x;  // Continue
  auto deadline = Clock::now() + limit;
  for (;;) {
    auto p = co_await read_packet(deadline);
    if (!p) {
      x.failed = true;
      x.error = error_;
      co_return x;
    }
    std::string why;
    auto reply = parse_reply(*p, why);
    if (!reply) {
      fail(std::string("after ") + std::string(command_name(c)) + ": " + why);
      x.failed = true;
      x.error = error_;
      co_return x;
    }
    if (reply->action == Action::Progress) {
      deadline = Clock::now() + limit;  // still working: the clock starts again
      continue;
    }
    if (!permitted(reply->action, c, agreed_, why)) {
      fail(std::string("after ") + std::string(command_name(c)) + ": " + why);
      x.failed = true;
      x.error = error_;
      co_return x;
    }
    if (is_final(reply->action)) {
      x.final = std::move(*reply);
      reusable_ = c == Command::BodyEob && x.final.action == Action::Continue;
      co_return x;
    }
    // A modification at end of message: the sink applies (and bounds) it as it comes.
    if (!on_change || !on_change(std::move(*reply), why)) {
      fail(std::string("after ") + std::string(command_name(c)) + ": " + (why.empty() ? "unexpected change" : why));
      x.failed = true;
      x.error = error_;
      co_return x;
    }
  }
}

}  // namespace mk::milter
