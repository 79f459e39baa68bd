// listeners.h — a server's listening sockets, shared by the SMTP and HTTP
// servers: one socket per worker io_context and address (SO_REUSEPORT lets
// the kernel spread connections over the workers), bound first, as root for
// port 25, and listening only later, after the privilege drop and the rest of
// start-up: until then a client's connection is refused, not left waiting on
// a server that may still fail to start.
#pragma once
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/net.h"

namespace mk {

class Listeners {
 public:
  // `label` names the listener in errors and logs: "" for SMTP ("cannot listen on
  // 127.0.0.1:25"), "http" for the HTTP side ("cannot listen on 127.0.0.1:8080 (http)").
  explicit Listeners(std::string label) : label_(std::move(label)) {}

  // Binds every address on every worker; throws std::runtime_error naming the address.
  // `no_delay`: accepted sockets inherit TCP_NODELAY from the listener (Linux).
  void bind(const std::vector<HostPort>& addresses, const std::vector<boost::asio::io_context*>& workers,
            bool no_delay);
  // listen() on every socket; logs "<what> listening on <address>" once per address.
  // Throws std::runtime_error naming the address.
  void listen(std::string_view what);

  std::vector<std::unique_ptr<boost::asio::ip::tcp::acceptor>>& acceptors() { return acceptors_; }
  // Closes every socket on its own io_context (a pending accept ends with
  // operation_aborted); callable from any thread.
  void close_all();

 private:
  std::string label_;
  std::vector<std::unique_ptr<boost::asio::ip::tcp::acceptor>> acceptors_;
  std::vector<std::string> names_;  // each socket's address, as configured
};

}  // namespace mk
