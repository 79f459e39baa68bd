// tcp_transport.cpp — see tcp_transport.h.
//
// Why not Beast's tcp_stream here: its timeout closes the socket, and a
// server that timed a client out should still send "421 4.4.2" first
// (Postfix does). So each transport arms one steady_timer per operation that
// cancels — not closes — the socket when the deadline passes.
#include "smtp/tcp_transport.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

namespace mk::smtp {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);

// The deadline of one connection. The timer's handler only reaches the socket
// through `State`, which the owner detaches on destruction, so a handler that
// runs late never touches a dead socket.
class Deadline {
 public:
  explicit Deadline(const asio::any_io_executor& ex) : timer_(ex), state_(std::make_shared<State>()) {}
  ~Deadline() { state_->socket = nullptr; }
  void watch(tcp::socket* s) { state_->socket = s; }
  void set(Clock::time_point t) { at_ = t; }

  // Runs `op` (an awaitable yielding {error_code, T}) under the deadline.
  template <class Op>
  auto run(Op op) -> decltype(op()) {
    uint64_t generation = ++state_->generation;
    state_->fired = false;
    timer_.expires_at(at_);
    timer_.async_wait([state = state_, generation](error_code ec) {
      if (ec || generation != state->generation || !state->socket) return;
      state->fired = true;
      error_code ignored;
      state->socket->cancel(ignored);
    });
    auto result = co_await op();
    ++state_->generation;  // a late timer handler is now a no-op
    timer_.cancel();
    if (state_->fired) std::get<0>(result) = asio::error::timed_out;
    co_return result;
  }

 private:
  struct State {
    uint64_t generation = 0;
    bool fired = false;
    tcp::socket* socket = nullptr;
  };
  asio::steady_timer timer_;
  std::shared_ptr<State> state_;
  Clock::time_point at_ = Clock::time_point::max();
};

std::string describe_tls(SSL* ssl) {
  const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl);
  int alg_bits = 0;
  int bits = cipher ? SSL_CIPHER_get_bits(cipher, &alg_bits) : 0;
  return std::string(SSL_get_version(ssl)) + " with cipher " + (cipher ? SSL_CIPHER_get_name(cipher) : "?") + " (" +
         std::to_string(bits) + "/" + std::to_string(alg_bits) + " bits)";
}

// The connection after STARTTLS.
class TlsTransport final : public Transport {
 public:
  using Stream = asio::ssl::stream<tcp::socket>;
  TlsTransport(std::unique_ptr<Stream> s, Clock::time_point deadline)
      : stream_(std::move(s)), deadline_(stream_->get_executor()) {
    deadline_.watch(&stream_->next_layer());
    deadline_.set(deadline);
  }

  awaitable<size_t> read_some(asio::mutable_buffer buf, error_code& ec) override {
    auto [e, n] = co_await deadline_.run([&] { return stream_->async_read_some(buf, kUseTuple); });
    ec = e;
    co_return n;
  }
  awaitable<void> write_all(std::string_view bytes, error_code& ec) override {
    auto [e, n] = co_await deadline_.run(
        [&] { return asio::async_write(*stream_, asio::buffer(bytes.data(), bytes.size()), kUseTuple); });
    ec = e;
  }
  void expires_at(Clock::time_point t) override { deadline_.set(t); }
  void cancel() override {
    error_code ignored;
    stream_->next_layer().cancel(ignored);
  }
  void close() override {
    error_code ignored;
    stream_->next_layer().close(ignored);
  }
  asio::any_io_executor get_executor() override { return stream_->get_executor(); }
  bool input_pending() override {
    error_code ignored;
    return SSL_pending(stream_->native_handle()) > 0 || stream_->next_layer().available(ignored) > 0;
  }
  std::string tls_description() const override { return describe_tls(stream_->native_handle()); }

 private:
  std::unique_ptr<Stream> stream_;
  Deadline deadline_;
};

class TcpTransport final : public Transport {
 public:
  explicit TcpTransport(tcp::socket socket) : socket_(std::move(socket)), deadline_(socket_.get_executor()) {
    deadline_.watch(&socket_);
  }

  awaitable<size_t> read_some(asio::mutable_buffer buf, error_code& ec) override {
    auto [e, n] = co_await deadline_.run([&] { return socket_.async_read_some(buf, kUseTuple); });
    ec = e;
    co_return n;
  }
  awaitable<void> write_all(std::string_view bytes, error_code& ec) override {
    auto [e, n] = co_await deadline_.run(
        [&] { return asio::async_write(socket_, asio::buffer(bytes.data(), bytes.size()), kUseTuple); });
    ec = e;
  }
  void expires_at(Clock::time_point t) override {
    at_ = t;
    deadline_.set(t);
  }
  void cancel() override {
    error_code ignored;
    if (handshaking_) handshaking_->cancel(ignored);
    else socket_.cancel(ignored);
  }
  void close() override {
    error_code ignored;
    // During STARTTLS the socket lives in the TLS stream: close that one.
    if (handshaking_) handshaking_->close(ignored);
    else socket_.close(ignored);
  }
  asio::any_io_executor get_executor() override { return socket_.get_executor(); }
  bool input_pending() override {
    error_code ignored;
    return socket_.available(ignored) > 0;
  }

  awaitable<std::unique_ptr<Transport>> start_tls(asio::ssl::context& ctx, TlsRole role, const std::string& server_name,
                                                  error_code& ec) override {
    auto tls = std::make_unique<TlsTransport::Stream>(std::move(socket_), ctx);
    if (role == TlsRole::Client && !server_name.empty()) {
      SSL_set_tlsext_host_name(tls->native_handle(), server_name.c_str());  // SNI
      // Checked only when the context verifies peers ([delivery] tls = required).
      tls->set_verify_callback(asio::ssl::host_name_verification(server_name));
    }
    handshaking_ = &tls->next_layer();
    deadline_.watch(handshaking_);
    auto [e] = co_await deadline_.run([&] {
      return tls->async_handshake(role == TlsRole::Server ? asio::ssl::stream_base::server : asio::ssl::stream_base::client,
                                  kUseTuple);
    });
    handshaking_ = nullptr;
    deadline_.watch(nullptr);
    ec = e;
    if (ec) {
      error_code ignored;
      tls->next_layer().close(ignored);
      co_return nullptr;
    }
    co_return std::make_unique<TlsTransport>(std::move(tls), at_);
  }

 private:
  tcp::socket socket_;
  Deadline deadline_;
  Clock::time_point at_ = Clock::time_point::max();
  tcp::socket* handshaking_ = nullptr;  // the socket inside the TLS stream during start_tls
};

}  // namespace

std::unique_ptr<Transport> make_tcp_transport(tcp::socket socket) {
  return std::make_unique<TcpTransport>(std::move(socket));
}

awaitable<std::unique_ptr<Transport>> connect_tcp(asio::any_io_executor ex, tcp::endpoint endpoint,
                                                  Clock::duration timeout, error_code& ec) {
  tcp::socket socket(ex);
  Deadline deadline(ex);
  socket.open(endpoint.protocol(), ec);
  if (ec) co_return nullptr;
  deadline.watch(&socket);
  deadline.set(Clock::now() + timeout);
  auto [e] = co_await deadline.run([&] { return socket.async_connect(endpoint, kUseTuple); });
  ec = e;
  if (ec) co_return nullptr;
  socket.set_option(tcp::no_delay(true), ec);
  ec = {};
  co_return std::make_unique<TcpTransport>(std::move(socket));
}

}  // namespace mk::smtp
