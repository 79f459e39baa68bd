// transport.h — the byte stream an SMTP session or upstream client talks over.
//
// An interface so that the session code runs unchanged over TCP, (later) TLS,
// and Beast's in-memory test stream with its fail counter. Expected endings
// (EOF, timeout, cancellation) come back as error codes, never exceptions.
// Threading: a Transport belongs to one worker's io_context (one thread) and
// is used from that thread only; cancel() and close() too.
#pragma once
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/system/error_code.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <string_view>

namespace boost::asio::ssl {
class context;
}

namespace mk::smtp {

using boost::system::error_code;
template <class T>
using awaitable = boost::asio::awaitable<T>;

class Transport {
 public:
  virtual ~Transport() = default;
  virtual awaitable<size_t> read_some(boost::asio::mutable_buffer buf, error_code& ec) = 0;
  virtual awaitable<void> write_all(std::string_view bytes, error_code& ec) = 0;
  // Deadline for the following reads and writes (RFC 5321 4.5.3.2 timeouts).
  // An operation past it fails with asio::error::timed_out and the connection
  // stays open, so that the server can still say 421.
  virtual void expires_after(std::chrono::steady_clock::duration d) { expires_at(std::chrono::steady_clock::now() + d); }
  virtual void expires_at(std::chrono::steady_clock::time_point t) = 0;
  // Aborts a pending read or write (graceful shutdown); the operation returns operation_aborted.
  virtual void cancel() = 0;
  virtual void close() = 0;
  virtual boost::asio::any_io_executor get_executor() = 0;
  // Whether the peer has sent bytes not read yet (RFC 2920 3.1: a client must
  // wait for 354 before the message text; the server checks before it sends 354).
  virtual bool input_pending() { return false; }

  enum class TlsRole { Server, Client };
  // STARTTLS (RFC 3207): runs the TLS handshake over this connection and
  // returns the encrypted transport; this object is unusable afterwards.
  // `server_name`: for a client, SNI and (if the context verifies) the name
  // the certificate must carry. Returns nullptr and sets ec on failure.
  virtual awaitable<std::unique_ptr<Transport>> start_tls(boost::asio::ssl::context& ctx, TlsRole role,
                                                          const std::string& server_name, error_code& ec) {
    ec = boost::system::errc::make_error_code(boost::system::errc::operation_not_supported);
    co_return nullptr;
  }
  // "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"; empty when not encrypted.
  virtual std::string tls_description() const { return ""; }
};

}  // namespace mk::smtp
