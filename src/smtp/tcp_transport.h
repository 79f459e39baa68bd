// tcp_transport.h — Transport over a TCP socket, and over TLS after STARTTLS.
// Deadlines cancel the pending operation (timed_out) without closing the
// socket, so a session can still answer 421 4.4.2 before it hangs up.
#pragma once
#include <boost/asio/ip/tcp.hpp>

#include "smtp/transport.h"

namespace mk::smtp {

std::unique_ptr<Transport> make_tcp_transport(boost::asio::ip::tcp::socket socket);

// Connects to `endpoint` within `timeout`; on failure returns nullptr and sets ec.
awaitable<std::unique_ptr<Transport>> connect_tcp(boost::asio::any_io_executor ex,
                                                  boost::asio::ip::tcp::endpoint endpoint,
                                                  std::chrono::steady_clock::duration timeout, error_code& ec);

}  // namespace mk::smtp
