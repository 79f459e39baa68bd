// message.h — the HTTP request/response types of the http component (Beast).
#pragma once
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <string_view>

namespace mk::http {

using Request = boost::beast::http::request<boost::beast::http::string_body>;
using Response = boost::beast::http::response<boost::beast::http::string_body>;

// A set of routes served next to the alias API (the operator's pages).
// handle() may block: the server calls it on the blocking pool.
class RouteHandler {
 public:
  virtual ~RouteHandler() = default;
  virtual bool handles(std::string_view path) const = 0;
  virtual Response handle(const Request& request) = 0;
};

}  // namespace mk::http
