// server.cpp — see server.h.
#include "metrics/server.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <atomic>

#include "core/listeners.h"
#include "core/log.h"

namespace mk::metrics {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bh = boost::beast::http;
using tcp = asio::ip::tcp;

namespace {
constexpr auto kTimeout = std::chrono::seconds(30);
constexpr uint32_t kHeaderLimit = 8192;
}  // namespace

struct Server::Impl {
  asio::io_context& io;
  std::vector<HostPort> listen;
  std::function<std::string()> render;
  Listeners listeners{"metrics"};
  std::atomic<bool> stopping{false};

  asio::awaitable<void> accept_loop(tcp::acceptor& acceptor) {
    while (!stopping) {
      auto [ec, socket] = co_await acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
      if (ec) {
        if (ec == asio::error::operation_aborted || stopping) break;
        spdlog::error("metrics accept failed: {}", ec.message());
        continue;
      }
      asio::co_spawn(socket.get_executor(), session(beast::tcp_stream(std::move(socket))), asio::detached);
    }
  }

  bh::response<bh::string_body> answer(const bh::request<bh::empty_body>& req) {
    bh::response<bh::string_body> res{bh::status::ok, req.version()};
    res.set(bh::field::server, "mailkeep");
    auto target = std::string_view(req.target());
    target = target.substr(0, target.find('?'));
    if (target != "/metrics") {
      res.result(bh::status::not_found);
      res.set(bh::field::content_type, "text/plain; charset=utf-8");
      res.body() = "not found: the metrics are at /metrics\n";
    } else if (req.method() != bh::verb::get && req.method() != bh::verb::head) {
      res.result(bh::status::method_not_allowed);
      res.set(bh::field::allow, "GET, HEAD");
      res.set(bh::field::content_type, "text/plain; charset=utf-8");
      res.body() = "use GET\n";
    } else {
      res.set(bh::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
      res.body() = render();
    }
    res.prepare_payload();
    if (req.method() == bh::verb::head) res.body().clear();
    return res;
  }

  asio::awaitable<void> session(beast::tcp_stream stream) {
    beast::flat_buffer buffer;
    while (!stopping) {
      bh::request_parser<bh::empty_body> parser;
      parser.header_limit(kHeaderLimit);
      stream.expires_after(kTimeout);
      auto [rec, n] = co_await bh::async_read(stream, buffer, parser, asio::as_tuple(asio::use_awaitable));
      if (rec) {
        if (rec != bh::error::end_of_stream && rec != beast::error::timeout && parser.got_some()) {
          bh::response<bh::string_body> bad{bh::status::bad_request, 11};
          bad.set(bh::field::content_type, "text/plain; charset=utf-8");
          bad.body() = "malformed request: " + rec.message() + "\n";
          bad.keep_alive(false);
          bad.prepare_payload();
          co_await bh::async_write(stream, bad, asio::as_tuple(asio::use_awaitable));
        }
        break;
      }
      auto res = answer(parser.get());
      res.keep_alive(parser.get().keep_alive() && !stopping);
      stream.expires_after(kTimeout);
      auto [wec, wn] = co_await bh::async_write(stream, res, asio::as_tuple(asio::use_awaitable));
      if (wec || !res.keep_alive()) break;
    }
    boost::system::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
  }
};

Server::Server(asio::io_context& io, std::vector<HostPort> listen, std::function<std::string()> render)
    : impl_(new Impl{io, std::move(listen), std::move(render)}) {}

Server::~Server() = default;

void Server::bind() { impl_->listeners.bind(impl_->listen, {&impl_->io}, /*no_delay=*/true); }

void Server::start() {
  impl_->listeners.listen("metrics");
  for (auto& a : impl_->listeners.acceptors()) asio::co_spawn(a->get_executor(), impl_->accept_loop(*a), asio::detached);
}

void Server::stop() {
  impl_->stopping = true;
  impl_->listeners.close_all();
}

}  // namespace mk::metrics
