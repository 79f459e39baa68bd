// server.cpp — see server.h.
#include "smtp/server.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "core/log.h"
#include "smtp/tcp_transport.h"

namespace mk::smtp {

namespace asio = boost::asio;
using asio::ip::tcp;

Server::Server(std::vector<asio::io_context*> workers, SessionEnvironment env)
    : workers_(std::move(workers)),
      env_(std::move(env)),
      listeners_(env_.label),
      per_ip_(env_.settings->limits.smtp_connections_per_ip) {}

Server::~Server() = default;

void Server::bind() {
  // Accepted sockets inherit TCP_NODELAY from the listener: one setsockopt here instead
  // of one per connection.
  listeners_.bind(env_.listen.empty() ? env_.settings->smtp.listen : env_.listen, workers_, /*no_delay=*/true);
}

void Server::start() {
  listeners_.listen(env_.label);
  for (auto& a : listeners_.acceptors())
    asio::co_spawn(a->get_executor(), accept_loop(*a), [](std::exception_ptr e) {
      if (e) {
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          spdlog::critical("accept loop failed: {}", ex.what());
        }
      }
    });
}

awaitable<void> Server::accept_loop(tcp::acceptor& acceptor) {
  while (!stopping_) {
    // accept(2) reports the peer: no getpeername() per connection.
    tcp::endpoint remote;
    auto [ec, socket] = co_await acceptor.async_accept(remote, asio::as_tuple(asio::use_awaitable));
    if (ec) {
      if (ec == asio::error::operation_aborted || stopping_) break;
      // EMFILE and friends: log, pause briefly, go on (Postfix does the same).
      spdlog::error("accept failed: {}", ec.message());
      asio::steady_timer pause(acceptor.get_executor(), std::chrono::milliseconds(100));
      co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
      continue;
    }
    auto address = remote.address().is_v6() && remote.address().to_v6().is_v4_mapped()
                       ? asio::ip::make_address_v4(asio::ip::v4_mapped, remote.address().to_v6()).to_string()
                       : remote.address().to_string();

    if (sessions_active_.load() >= env_.settings->smtp.max_connections) {
      stats::count(stats::Counter::reject_too_many_connections);
      spdlog::warn("reject: connect from [{}]:{}: 421 4.7.0 too many connections ({}); reason=max_connections", address,
                   remote.port(), env_.settings->smtp.max_connections);
      refuse(std::move(socket), replies::too_many_connections(env_.settings->smtp.hostname));
      continue;
    }

    stats::count(stats::Counter::connections);
    // Per-IP concurrency, except for trusted clients (our networks, the provider's relays).
    std::string limit_key;
    if (per_ip_.enabled()) {
      auto ip = IpAddress::parse(address);
      if (ip && !env_.router->classify_client(*ip).trusted) {
        limit_key = policy::client_key(*ip);
        if (!per_ip_.acquire(limit_key)) {
          stats::count(stats::Counter::reject_connections_per_ip);
          spdlog::info("reject: connect from [{}]:{}: 421 4.7.0 too many connections from this address ({}); "
                       "reason=smtp_connections_per_ip",
                       address, remote.port(), env_.settings->limits.smtp_connections_per_ip);
          refuse(std::move(socket), Reply{421, "4.7.0", env_.settings->smtp.hostname +
                                                            " Error: too many connections from your address"});
          continue;
        }
      }
    }

    auto ex = socket.get_executor();
    auto session = std::make_shared<Session>(env_, make_tcp_transport(std::move(socket)), address, remote.port());
    uint64_t key;
    {
      std::lock_guard lock(mutex_);
      key = next_key_++;
      sessions_[key] = session;
      ++sessions_active_;
    }
    asio::co_spawn(ex, session->run(), [this, key, session, limit_key](std::exception_ptr e) {
      if (!limit_key.empty()) per_ip_.release(limit_key);
      if (e) {
        // "Can't happen": a bug in a session must not take the server down.
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          spdlog::error("{}: session failed: {}", session->id(), ex.what());
        }
      }
      on_session_end(key);
    });
  }
}

void Server::refuse(tcp::socket socket, const Reply& reply) {
  auto ex = socket.get_executor();
  asio::co_spawn(
      ex,
      [s = std::move(socket), text = reply.wire()]() mutable -> awaitable<void> {
        co_await asio::async_write(s, asio::buffer(text), asio::as_tuple(asio::use_awaitable));
        error_code e;
        s.shutdown(tcp::socket::shutdown_both, e);
      },
      asio::detached);
}

void Server::on_session_end(uint64_t key) {
  std::function<void()> done;
  {
    std::lock_guard lock(mutex_);
    sessions_.erase(key);
    --sessions_active_;
    if (stopping_ && sessions_.empty()) done = std::move(on_idle_);
  }
  if (done) done();
}

void Server::stop(std::function<void()> done) {
  stopping_ = true;
  listeners_.close_all();
  std::vector<std::shared_ptr<Session>> live;
  {
    std::lock_guard lock(mutex_);
    for (auto& [k, w] : sessions_)
      if (auto s = w.lock()) live.push_back(std::move(s));
    if (sessions_.empty()) {
      asio::post(*workers_.front(), std::move(done));
      return;
    }
    on_idle_ = std::move(done);
  }
  spdlog::info("shutting down: {} sessions open, transfers get {}s", live.size(),
               env_.settings->smtp.shutdown_timeout);
  // Each session is told on its own worker. Session::shutdown answers 421 to
  // idle sessions; transfers in flight finish.
  for (auto& s : live) asio::post(s->executor(), [s] { s->shutdown(); });
  hard_stop_timer_ = std::make_unique<asio::steady_timer>(*workers_.front(),
                                                         std::chrono::seconds(env_.settings->smtp.shutdown_timeout));
  hard_stop_timer_->async_wait([this](error_code ec) {
    if (ec) return;
    std::vector<std::shared_ptr<Session>> left;
    {
      std::lock_guard lock(mutex_);
      for (auto& [k, w] : sessions_)
        if (auto s = w.lock()) left.push_back(std::move(s));
    }
    if (!left.empty()) spdlog::warn("shutdown timeout: closing {} sessions", left.size());
    for (auto& s : left) asio::post(s->executor(), [s] { s->abort(); });
  });
}

}  // namespace mk::smtp
