// server.h — the HTTP listener ([http] listen): Beast HTTP/1.1 sessions, one
// coroutine per connection, keep-alive, bounded headers and body (413
// too-much-data), a deadline on every read and write.
// Threading: like the SMTP server, one acceptor per worker io_context;
// request handling runs on the blocking pool (the alias store may block).
#pragma once
#include <boost/asio/io_context.hpp>
#include <memory>
#include <vector>

#include "config/settings.h"
#include "http/api.h"
#include "policy/dnsbl.h"
#include "tls/tls_context.h"

namespace mk::http {

class Server {
 public:
  // `dnsbl` (may be null) checks alias creators against [dnsbl] http_zones;
  // `https` (may be null) makes the listener speak HTTPS; each connection takes the
  // certificate in force when it arrives (SIGHUP reloads it).
  Server(std::vector<boost::asio::io_context*> workers, const Settings& settings, Api& api,
         boost::asio::any_io_executor blocking, policy::DnsblChecker* dnsbl, tls::ServerContext* https);
  ~Server();
  // Binds every [http] listen address; throws std::runtime_error naming it on failure.
  void bind();
  // Listens and starts accepting; throws std::runtime_error naming the address on failure.
  void start();
  // Stops accepting; open keep-alive connections end at their next read.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mk::http
