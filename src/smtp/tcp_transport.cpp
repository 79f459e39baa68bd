// tcp_transport.cpp — see tcp_transport.h.
#include "smtp/tcp_transport.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

namespace mk::smtp {
namespace {

namespace asio = boost::asio;
constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);

// Callers see one timeout code whatever the stream implementation.
error_code normalise(error_code ec) {
  if (ec == boost::beast::error::timeout) return asio::error::timed_out;
  return ec;
}

// The same connection after STARTTLS: Beast's ssl_stream over the tcp_stream
// keeps the per-operation deadlines.
class TlsTransport final : public Transport {
 public:
  using Stream = boost::beast::ssl_stream<boost::beast::tcp_stream>;
  explicit TlsTransport(std::unique_ptr<Stream> s) : stream_(std::move(s)) {}

  awaitable<size_t> read_some(asio::mutable_buffer buf, error_code& ec) override {
    auto [e, n] = co_await stream_->async_read_some(buf, kUseTuple);
    ec = normalise(e);
    co_return n;
  }
  awaitable<void> write_all(std::string_view bytes, error_code& ec) override {
    auto [e, n] = co_await asio::async_write(*stream_, asio::buffer(bytes.data(), bytes.size()), kUseTuple);
    ec = normalise(e);
  }
  void expires_after(std::chrono::steady_clock::duration d) override {
    boost::beast::get_lowest_layer(*stream_).expires_after(d);
  }
  void cancel() override { boost::beast::get_lowest_layer(*stream_).cancel(); }
  void close() override { boost::beast::get_lowest_layer(*stream_).close(); }
  asio::any_io_executor get_executor() override { return stream_->get_executor(); }
  std::string tls_description() const override {
    SSL* ssl = const_cast<Stream&>(*stream_).native_handle();
    const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl);
    int alg_bits = 0;
    int bits = cipher ? SSL_CIPHER_get_bits(cipher, &alg_bits) : 0;
    return std::string(SSL_get_version(ssl)) + " with cipher " + (cipher ? SSL_CIPHER_get_name(cipher) : "?") + " (" +
           std::to_string(bits) + "/" + std::to_string(alg_bits) + " bits)";
  }

 private:
  std::unique_ptr<Stream> stream_;
};

class TcpTransport final : public Transport {
 public:
  explicit TcpTransport(boost::beast::tcp_stream stream) : stream_(std::move(stream)) {}

  awaitable<size_t> read_some(asio::mutable_buffer buf, error_code& ec) override {
    auto [e, n] = co_await stream_.async_read_some(buf, kUseTuple);
    ec = normalise(e);
    co_return n;
  }
  awaitable<void> write_all(std::string_view bytes, error_code& ec) override {
    auto [e, n] = co_await asio::async_write(stream_, asio::buffer(bytes.data(), bytes.size()), kUseTuple);
    ec = normalise(e);
  }
  void expires_after(std::chrono::steady_clock::duration d) override { stream_.expires_after(d); }
  void cancel() override { stream_.cancel(); }
  void close() override { stream_.close(); }
  asio::any_io_executor get_executor() override { return stream_.get_executor(); }

  awaitable<std::unique_ptr<Transport>> start_tls(asio::ssl::context& ctx, TlsRole role, const std::string& server_name,
                                                  error_code& ec) override {
    auto tls = std::make_unique<TlsTransport::Stream>(std::move(stream_), ctx);
    if (role == TlsRole::Client && !server_name.empty()) {
      SSL_set_tlsext_host_name(tls->native_handle(), server_name.c_str());  // SNI
      // Checked only when the context verifies peers ([delivery] tls = required).
      tls->set_verify_callback(asio::ssl::host_name_verification(server_name));
    }
    auto [e] = co_await tls->async_handshake(
        role == TlsRole::Server ? asio::ssl::stream_base::server : asio::ssl::stream_base::client, kUseTuple);
    ec = normalise(e);
    if (ec) {
      boost::beast::get_lowest_layer(*tls).close();
      co_return nullptr;
    }
    co_return std::make_unique<TlsTransport>(std::move(tls));
  }

 private:
  boost::beast::tcp_stream stream_;
};

}  // namespace

std::unique_ptr<Transport> make_tcp_transport(asio::ip::tcp::socket socket) {
  return std::make_unique<TcpTransport>(boost::beast::tcp_stream(std::move(socket)));
}

awaitable<std::unique_ptr<Transport>> connect_tcp(asio::any_io_executor ex, asio::ip::tcp::endpoint endpoint,
                                                  std::chrono::steady_clock::duration timeout, error_code& ec) {
  boost::beast::tcp_stream stream(ex);
  stream.expires_after(timeout);
  auto [e] = co_await stream.async_connect(endpoint, kUseTuple);
  ec = normalise(e);
  if (e) co_return nullptr;
  stream.socket().set_option(asio::ip::tcp::no_delay(true), ec);
  ec = {};
  co_return std::make_unique<TcpTransport>(std::move(stream));
}

}  // namespace mk::smtp
