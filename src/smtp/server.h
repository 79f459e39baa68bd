// server.h — the SMTP listener: accepts connections on every [smtp] listen
// address, enforces max_connections (421 4.7.0), runs one Session coroutine
// per connection on its own strand, and shuts down gracefully (stop
// accepting, 421 to idle sessions, transfers in flight get
// shutdown_timeout, then everything is closed).
// Threading (Envoy's worker model): each worker is an io_context run by one
// thread, with its own acceptor on every listen address (SO_REUSEPORT lets
// the kernel spread connections). A session lives on the worker that
// accepted it, so session code needs no locks. start()/stop() from any thread.
#pragma once
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <atomic>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "core/listeners.h"
#include "smtp/session.h"

namespace mk::smtp {

class Server {
 public:
  Server(std::vector<boost::asio::io_context*> workers, SessionEnvironment env);
  ~Server();
  // Binds every listen address (as root, for port 25); throws std::runtime_error naming
  // the address on failure.
  void bind();
  // Listens and starts accepting; throws std::runtime_error naming the address on failure.
  void start();
  // Graceful shutdown; `done` is called (on some io thread) when the last session has ended.
  void stop(std::function<void()> done);
  size_t session_count() const { return sessions_active_.load(); }

 private:
  awaitable<void> accept_loop(boost::asio::ip::tcp::acceptor& acceptor);
  void on_session_end(uint64_t key);
  // Answers `reply` (421) and closes, without a session.
  void refuse(boost::asio::ip::tcp::socket socket, const Reply& reply);

  std::vector<boost::asio::io_context*> workers_;
  SessionEnvironment env_;
  Listeners listeners_;
  std::atomic<size_t> sessions_active_{0};
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;  // guards sessions_, on_idle_
  std::unordered_map<uint64_t, std::weak_ptr<Session>> sessions_;
  uint64_t next_key_ = 0;
  std::function<void()> on_idle_;
  std::unique_ptr<boost::asio::steady_timer> hard_stop_timer_;
  policy::ConcurrencyLimiter per_ip_;  // [limits] smtp_connections_per_ip
};

}  // namespace mk::smtp
