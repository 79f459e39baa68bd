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

// Reads a server context's PEM files. Before the privilege drop mailkeep reads them itself;
// afterwards a helper that kept root does (app/privileges.h), so that a SIGHUP after a
// certificate renewal can re-read a key that only root may read.
class PemReader {
 public:
  virtual ~PemReader() = default;
  // Fills `contents` with the file; returns "" or why it cannot be read.
  virtual std::string read(const std::string& path, std::string& contents) = 0;
};

// Reads with this process's own rights; files over kMaxPemFile are refused.
PemReader& direct_pem_reader();
constexpr size_t kMaxPemFile = 1 << 20;

// A server context from PEM files (the cert file may hold the chain). Throws
// std::runtime_error naming `section` ("[tls]", "[http]") and the file on failure.
ContextPtr make_server_context(const std::string& cert_file, const std::string& key_file,
                               PemReader& reader = direct_pem_reader(), const std::string& section = "[tls]");

// A client context. With `verify`, peers are checked against `ca_file` (or the
// system store when empty); without, encryption is opportunistic.
ContextPtr make_client_context(bool verify, const std::string& ca_file);

// The server context in force, swapped by reload().
class ServerContext {
 public:
  // Reads the files now, with this process's rights; throws on a bad cert/key.
  ServerContext(std::string cert_file, std::string key_file, std::string section = "[tls]");
  ContextPtr current() const { return ctx_.load(); }
  // Later reloads read the files through `reader` (null: directly); it must outlive this.
  void read_through(PemReader* reader) { reader_ = reader; }
  // Re-reads the files; on error keeps the old context and returns the reason.
  std::string reload();
  const std::string& cert_file() const { return cert_; }
  const std::string& key_file() const { return key_; }

 private:
  std::string cert_, key_, section_;
  PemReader* reader_ = nullptr;
  std::atomic<ContextPtr> ctx_;
};

}  // namespace mk::tls
