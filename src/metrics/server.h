// server.h — the [metrics] listener: GET /metrics answers the exposition
// (exposition.h) as text/plain; version=0.0.4; anything else gets 404 or 405.
// One acceptor per address on the main event loop (a scrape every few seconds
// needs no more); Beast HTTP/1.1 with keep-alive, bounded headers, no body, a
// deadline on every read and write. Bound with the other listeners (as root
// when the port needs it), listening after the start-up.
#pragma once
#include <boost/asio/io_context.hpp>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/net.h"

namespace mk::metrics {

class Server {
 public:
  Server(boost::asio::io_context& io, std::vector<HostPort> listen, std::function<std::string()> render);
  ~Server();
  void bind();   // throws std::runtime_error naming the address
  void start();  // listens; logs "metrics listening on ..."
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mk::metrics
