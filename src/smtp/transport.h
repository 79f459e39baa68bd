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

namespace mk::smtp {

using boost::system::error_code;
template <class T>
using awaitable = boost::asio::awaitable<T>;

class Transport {
 public:
  virtual ~Transport() = default;
  virtual awaitable<size_t> read_some(boost::asio::mutable_buffer buf, error_code& ec) = 0;
  virtual awaitable<void> write_all(std::string_view bytes, error_code& ec) = 0;
  // Deadline for the next read or write (RFC 5321 4.5.3.2 timeouts).
  virtual void expires_after(std::chrono::steady_clock::duration d) = 0;
  // Aborts a pending read or write (graceful shutdown); the operation returns operation_aborted.
  virtual void cancel() = 0;
  virtual void close() = 0;
  virtual boost::asio::any_io_executor get_executor() = 0;
};

}  // namespace mk::smtp
