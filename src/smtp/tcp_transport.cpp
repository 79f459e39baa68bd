// tcp_transport.cpp — see tcp_transport.h.
#include "smtp/tcp_transport.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/tcp_stream.hpp>

namespace mk::smtp {
namespace {

namespace asio = boost::asio;
constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);

// Callers see one timeout code whatever the stream implementation.
error_code normalise(error_code ec) {
  if (ec == boost::beast::error::timeout) return asio::error::timed_out;
  return ec;
}

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
