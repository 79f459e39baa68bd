// message.h — the HTTP request/response types of the http component (Beast).
#pragma once
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <string_view>

#include "core/net.h"

namespace mk::http {

using Request = boost::beast::http::request<boost::beast::http::string_body>;
using Response = boost::beast::http::response<boost::beast::http::string_body>;

// A set of routes served next to the alias API (the operator's pages).
// handle() may block: the server calls it on the blocking pool.
class RouteHandler {
 public:
  virtual ~RouteHandler() = default;
  virtual bool handles(std::string_view path) const = 0;
  // `client`: the peer, or the client a trusted proxy names (X-Forwarded-For).
  virtual Response handle(const Request& request, const IpAddress& client) = 0;
};

}  // namespace mk::http
