// tls_context.h — OpenSSL contexts for mailkeep: the server side (STARTTLS,
// HTTPS) from [tls] cert/key, re-read on SIGHUP without dropping sessions,
// and the client side towards upstreams ([delivery] tls, ca_file).
// TLS 1.2 and 1.3 only.
// Threading: current() and reload() from any thread; a session keeps the
// context it started with (shared_ptr), so a reload never pulls a context
// from under a handshake.
#pragma once
#include <atomic>
#include <memory>
#include <string>

namespace boost::asio::ssl {
class context;
}

namespace mk::tls {

using ContextPtr = std::shared_ptr<boost::asio::ssl::context>;

// A server context from PEM files (the cert file may hold the chain). Throws
// std::runtime_error naming the file on failure.
ContextPtr make_server_context(const std::string& cert_file, const std::string& key_file);

// A client context. With `verify`, peers are checked against `ca_file` (or the
// system store when empty); without, encryption is opportunistic.
ContextPtr make_client_context(bool verify, const std::string& ca_file);

// The server context in force, swapped by reload().
class ServerContext {
 public:
  ServerContext(std::string cert_file, std::string key_file);  // throws on a bad cert/key
  ContextPtr current() const { return ctx_.load(); }
  // Re-reads the files; on error keeps the old context and returns the reason.
  std::string reload();

 private:
  std::string cert_, key_;
  std::atomic<ContextPtr> ctx_;
};

}  // namespace mk::tls
