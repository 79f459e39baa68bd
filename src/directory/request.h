// request.h — what both providers do with HTTPS (internal to directory/):
// a JSON request retried on 429, 5xx and network errors with exponential
// backoff (1 s, 2 s, 4 s ...) or the server's Retry-After, capped at 60 s.
#pragma once
#include <boost/json/value.hpp>
#include <string>
#include <utility>
#include <vector>

#include "directory/https_client.h"
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

// A string member, or "" when absent or not a string.
std::string json_string(const boost::json::value& v, const char* key);

}  // namespace mk::directory
