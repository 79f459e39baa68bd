// client.h — one milter conversation on a socket (inet or unix), for one
// SMTP session: connect, negotiate, then one exchange per command, each
// under its deadline. The codec is protocol.h; what the answers mean for the
// session is chain.h.
//
// A milter that breaks the protocol, sends more than kMaxPacket, stalls past
// its deadline or disconnects is "failed": the exchange says so (with the
// reason), the socket is closed, and the conversation is over. Nothing here
// throws for what a milter does.
// Threading: one object per session, used on the session's strand.
#pragma once
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "milter/protocol.h"

namespace mk::milter {

template <class T>
using awaitable = boost::asio::awaitable<T>;

struct Endpoint {
  std::string spec;  // "inet:127.0.0.1:11332": the milter's name in logs
  std::string host;  // inet
  uint16_t port = 0;
  std::string path;  // unix
};

struct Timeouts {
  std::chrono::milliseconds connect{30000}, command{30000}, content{300000};
};

// The result of one exchange.
struct Exchange {
  bool failed = false;  // the milter is unusable: `error` says why
  std::string error;
  Reply final;  // the final reply (Continue when the command expects none)
};

// Takes one modification (or quarantine) as it arrives at end of message;
// false (with `why`) when it cannot be applied: the milter is then failed.
using ChangeSink = std::function<bool(Reply&& change, std::string& why)>;

class Connection {
 public:
  Connection(boost::asio::any_io_executor ex, Endpoint endpoint, Timeouts timeouts);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Connects and negotiates, offering `actions` (SMFIF_*) and the protocol
  // steps we can leave out. False: failed (see error()).
  awaitable<bool> open(uint32_t actions);
  const OptNeg& agreed() const { return agreed_; }
  const std::string& error() const { return error_; }
  const Endpoint& endpoint() const { return endpoint_; }
  bool failed() const { return failed_; }

  // Sends the macros (if any) and the command packet `packet` for command
  // `c`; if the agreement has the milter answer `c`, reads until its final
  // reply. `content`: the content deadline instead of the command one.
  awaitable<Exchange> exchange(Command c, const std::string& macros, const std::string& packet, bool content,
                               const ChangeSink& on_change = {});
  // Sends a packet that gets no reply (abort, quit); failures only mark the connection failed.
  awaitable<void> send(const std::string& packet);
  void close();

  // Connection reuse (SMFIC_QUIT_NC). libmilter takes QUIT_NC only right
  // after an end of message it answered with continue (its state table),
  // and a reused connection starts again at SMFIC_CONNECT, so only such a
  // connection may go idle: reusable() says whether this one is.
  bool reusable() const { return reusable_ && !failed_; }
  // An idle connection's socket and agreement, outside any io_context (the
  // idle list outlives them): see chain.cpp's pool.
  struct Idle {
    int fd = -1;
    int family = 0;
    OptNeg agreed;
    std::chrono::steady_clock::time_point since;
  };
  // Sends QUIT_NC and gives up the socket; nullopt (and closed) when it cannot.
  awaitable<std::optional<Idle>> release_idle();
  // Takes over an idle socket; false (and the fd closed) when the milter has
  // closed it or written to it meanwhile.
  bool adopt(const Idle& idle);

 private:
  struct Impl;
  awaitable<bool> write(const std::string& bytes, std::chrono::milliseconds limit);
  awaitable<std::optional<Packet>> read_packet(std::chrono::steady_clock::time_point deadline);
  void fail(std::string why);

  std::unique_ptr<Impl> impl_;
  Endpoint endpoint_;
  Timeouts timeouts_;
  ReplyReader reader_;
  OptNeg agreed_;
  bool failed_ = false;
  bool reusable_ = false;  // the last exchange was an end of message answered with continue
  std::string error_;
};

}  // namespace mk::milter
