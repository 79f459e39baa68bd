// server.cpp — see server.h.
#include "http/server.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>

#include "core/blocking.h"
#include "core/listeners.h"
#include "core/log.h"
#include "core/stats.h"

namespace mk::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bh = boost::beast::http;
using asio::ip::tcp;

namespace {
constexpr auto kTimeout = std::chrono::seconds(30);
constexpr size_t kHeaderLimit = 8 * 1024;
}  // namespace

struct Server::Impl {
  std::vector<asio::io_context*> workers;
  const Settings& settings;
  Api& api;
  asio::any_io_executor blocking;
  policy::DnsblChecker* dnsbl;
  tls::ServerContext* https;  // null: plain HTTP
  Listeners listeners{"http"};
  std::atomic<bool> stopping{false};

  asio::awaitable<void> accept_loop(tcp::acceptor& acceptor) {
    while (!stopping) {
      auto [ec, socket] = co_await acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
      if (ec) {
        if (ec == asio::error::operation_aborted || stopping) break;
        spdlog::error("http accept failed: {}", ec.message());
        continue;
      }
      if (https)
        asio::co_spawn(socket.get_executor(), secure_session(beast::tcp_stream(std::move(socket))), asio::detached);
      else
        asio::co_spawn(socket.get_executor(), session(beast::tcp_stream(std::move(socket))), asio::detached);
    }
  }

  // Alias creation from a client listed in [dnsbl] http_zones: 403 rbl-check-failed.
  asio::awaitable<std::optional<Response>> check_dnsbl(const Request& req, const IpAddress& peer) {
    auto client = api.client_address(req, peer);
    // The same exemptions as at SMTP connect: [dnsbl] allow and our own relay networks.
    for (auto* nets : {&settings.dnsbl.allow, &settings.relay.relay_from, &settings.backup.relay_from})
      for (auto& c : *nets)
        if (c.contains(client)) co_return std::nullopt;
    auto verdict = co_await dnsbl->check(client, settings.dnsbl.http_zones);
    if (verdict.kind == policy::DnsblVerdict::Listed) {
      stats::count(stats::Counter::http_reject_dnsbl_listed);
      spdlog::info("http: reject: alias creation from {}: rbl-check-failed; reason=dnsbl {}={}", client.to_string(),
                   verdict.zone, verdict.answer);
      co_return json_error(403, "rbl-check-failed",
                           "refused to create an alias for your IP address (listed by " + verdict.zone + ")",
                           req.version());
    }
    if (verdict.kind == policy::DnsblVerdict::Error && settings.dnsbl.on_error == "tempfail") {
      spdlog::info("http: reject: alias creation from {}: dnsbl {} failed ({}); on_error = tempfail",
                   client.to_string(), verdict.zone, verdict.detail);
      auto res = json_error(503, "dnsbl-unavailable", "the blocklist check failed; try again later", req.version());
      res.set(bh::field::retry_after, "60");
      co_return res;
    }
    co_return std::nullopt;
  }

  // HTTPS: the TLS handshake, then the same request loop.
  asio::awaitable<void> secure_session(beast::tcp_stream tcp) {
    auto ctx = https->current();  // kept alive for this connection
    beast::ssl_stream<beast::tcp_stream> stream(std::move(tcp), *ctx);
    beast::get_lowest_layer(stream).expires_after(kTimeout);
    auto [ec] = co_await stream.async_handshake(asio::ssl::stream_base::server, asio::as_tuple(asio::use_awaitable));
    if (ec) co_return;
    co_await session(std::move(stream));
  }

  template <class Stream>
  asio::awaitable<void> session(Stream stream) {
    boost::system::error_code ec;
    auto remote = beast::get_lowest_layer(stream).socket().remote_endpoint(ec);
    if (ec) co_return;
    auto address = remote.address();
    if (address.is_v6() && address.to_v6().is_v4_mapped())
      address = asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6());
    auto peer = IpAddress::parse(address.to_string()).value_or(IpAddress{});
    beast::flat_buffer buffer;
    while (!stopping) {
      bh::request_parser<bh::string_body> parser;
      parser.header_limit(kHeaderLimit);
      parser.body_limit(settings.http.max_body);
      beast::get_lowest_layer(stream).expires_after(kTimeout);
      auto [rec, n] = co_await bh::async_read(stream, buffer, parser, asio::as_tuple(asio::use_awaitable));
      if (rec == bh::error::end_of_stream || rec == asio::error::eof) break;
      if (rec == bh::error::body_limit) {
        auto res = json_error(413, "too-much-data",
                              "request body larger than " + std::to_string(settings.http.max_body) + " bytes");
        res.keep_alive(false);
        beast::get_lowest_layer(stream).expires_after(kTimeout);
        co_await bh::async_write(stream, res, asio::as_tuple(asio::use_awaitable));
        break;
      }
      if (rec) {
        if (rec != beast::error::timeout && parser.got_some()) {
          auto res = json_error(400, "invalid-data", "malformed HTTP request: " + rec.message());
          res.keep_alive(false);
          co_await bh::async_write(stream, res, asio::as_tuple(asio::use_awaitable));
        }
        break;
      }
      auto& req = parser.get();
      std::optional<Response> refusal;
      if (dnsbl && !settings.dnsbl.http_zones.empty() && Api::is_creation(req)) {
        auto verdict = co_await check_dnsbl(req, peer);
        refusal = std::move(verdict);
      }
      // The alias store may block (SQLite), so requests are handled on the blocking pool.
      Response res;
      if (refusal) res = std::move(*refusal);
      else res = co_await run_blocking(blocking, [&] { return api.handle(req, peer); });  // no co_await in ?: (GCC 12)
      res.keep_alive(req.keep_alive() && !stopping);
      beast::get_lowest_layer(stream).expires_after(kTimeout);
      auto [wec, wn] = co_await bh::async_write(stream, res, asio::as_tuple(asio::use_awaitable));
      if (wec || !res.keep_alive()) break;
    }
    beast::get_lowest_layer(stream).socket().shutdown(tcp::socket::shutdown_send, ec);
  }
};

Server::Server(std::vector<asio::io_context*> workers, const Settings& settings, Api& api,
               asio::any_io_executor blocking, policy::DnsblChecker* dnsbl, tls::ServerContext* https)
    : impl_(new Impl{std::move(workers), settings, api, std::move(blocking), dnsbl, https}) {}

Server::~Server() = default;

// TCP_NODELAY: a response is written whole; Nagle would hold its last segment
// for the client's delayed ACK.
void Server::bind() { impl_->listeners.bind(impl_->settings.http.listen, impl_->workers, /*no_delay=*/true); }

void Server::start() {
  impl_->listeners.listen(impl_->https ? "https" : "http");
  for (auto& a : impl_->listeners.acceptors()) asio::co_spawn(a->get_executor(), impl_->accept_loop(*a), asio::detached);
}

void Server::stop() {
  impl_->stopping = true;
  impl_->listeners.close_all();
}

}  // namespace mk::http
