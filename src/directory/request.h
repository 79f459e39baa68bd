// request.h — what both providers do with HTTPS (internal to directory/):
// a JSON request retried on 429, 5xx and network errors with exponential
// backoff (1 s, 2 s, 4 s ...) or the server's Retry-After, capped at 60 s.
#pragma once
#include <boost/json/value.hpp>
#include <string>
#include <utility>
#include <vector>

#include "directory/https_client.h"
#include "config/settings.h"
#include "directory/provider.h"

namespace mk::directory {

struct JsonRequest {
  std::string method = "GET";
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body, content_type;
  std::string what;  // "users page 3", for errors and logs
};

// The parsed JSON body of a 2xx answer. Throws SyncError for anything else,
// with the status and the API's own error text (never a request header or body).
boost::json::value fetch_json(HttpsClient& client, const JsonRequest& req, unsigned retries, size_t& requests,
                              const Sleeper& sleep);

// What both providers do with OAuth: a token from `token_request()`, reused
// until a minute before its expires_in, and API pages fetched with it; a 401
// from the API (the token revoked before it expired) takes a new one, once.
class BearerSession {
 public:
  BearerSession(const Settings& s, Sleeper sleep);
  virtual ~BearerSession() = default;
  boost::json::value get(JsonRequest req, size_t& requests);

 protected:
  virtual JsonRequest token_request() const = 0;  // its body carries the grant: never logged
  HttpsClient client_;
  unsigned retries_;
  Sleeper sleep_;

 private:
  const std::string& token(size_t& requests);
  std::string token_;
  std::chrono::steady_clock::time_point token_expiry_{};
};

// A string member, or "" when absent or not a string.
std::string json_string(const boost::json::value& v, const char* key);

}  // namespace mk::directory
