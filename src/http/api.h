// api.h — the HTTP routes: the alias API (JSON), the tempalias-compatible
// route, and the web page with its assets.
//
//   POST   /api/v1/aliases          {"target","days","max_usage"} → 201 alias + manage_token
//   GET    /api/v1/aliases/{aid}    Authorization: Bearer <manage_token> → status, uses left, expiry
//   DELETE /api/v1/aliases/{aid}    Authorization: Bearer <manage_token> → disables it
//   POST   /aliases                 tempalias body (target, days, max-usage) → its reply shape
//   GET    /aliases?callback=f&...  tempalias JSONP, as the original bookmarklet used it
//   GET    /, /app.js, /style.css   the web page
//   /spam, /spam/...                the operator's spam history (http/spam_page.h), when configured
//   /api/v1/mail/...                the web view's API (webreader/api.h), when configured
// Errors: {"error": CODE, "description": TEXT} with a stable CODE and status
// (invalid-data 400, unauthorized 401, not-found 404, method-not-allowed 405,
// too-much-data 413, invalid-request-type 415, rate-limited 429 + Retry-After,
// store-unavailable 503). CORS on the API so that the bookmarklet works from any site.
// handle() is a pure function of the request, the client address and the
// alias service, so it is unit-tested without sockets.
// Threading: safe from any thread.
#pragma once
#include <boost/json/fwd.hpp>
#include <map>
#include <string>

#include "aliases/service.h"
#include "core/net.h"
#include "http/message.h"
#include "policy/rate_limit.h"

namespace mk::http {

struct ApiConfig {
  std::vector<Cidr> trusted_proxies;
  int64_t create_interval = 30;
};

class Api {
 public:
  // `aliases` null: no alias domains (the alias routes answer 404). `more_routes`
  // (nulls ignored): the /spam history (http/spam_page.h), the web view's API
  // (webreader/api.h); the first that handles a path gets it.
  Api(aliases::AliasService* aliases, ApiConfig config, std::vector<RouteHandler*> more_routes = {});
  // `peer`: the socket's remote address. The body was already bounded by the server.
  Response handle(const Request& request, const IpAddress& peer);
  // True for the requests that create an alias (and so are DNSBL-checked).
  static bool is_creation(const Request& request);
  // The client address: the socket's, or X-Forwarded-For's when `peer` is a trusted proxy.
  IpAddress client_address(const Request& request, const IpAddress& peer) const;

 private:
  Response create(const Request& req, const IpAddress& client, bool tempalias_shape);
  Response create_jsonp(const Request& req, const IpAddress& client);
  Response manage(const Request& req, std::string_view aid);

  aliases::AliasService* aliases_;
  std::vector<RouteHandler*> more_routes_;
  ApiConfig config_;
};

// A JSON response (no-store, CORS headers).
Response json_response(unsigned status, const boost::json::value& body, unsigned version = 11);
// "a=1&b=%20" → {a: "1", b: " "}.
std::map<std::string, std::string> parse_query(std::string_view query);
// A JSON error response with CORS headers.
Response json_error(unsigned status, std::string_view code, std::string_view description, unsigned version = 11);

}  // namespace mk::http
