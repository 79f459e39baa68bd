// https_client.h — the directory's HTTPS client: one request at a time,
// blocking the calling (directory) thread, never a session's loop.
//
// Boost.Beast over OpenSSL; the peer's certificate is verified against the
// system CA store or `ca_file`, for the URL's host name (SNI sent) or IP
// address; every request has one deadline covering resolve, connect,
// handshake, write and read; bodies are bounded. Errors never carry request
// headers or bodies (tokens and secrets travel there).
// Boost.URL is not in Debian 12's Boost 1.81 packages, hence parse_url().
#pragma once
#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace mk::directory {

struct Url {
  std::string host;  // without brackets
  std::string port = "443";
  std::string target = "/";  // path and query, as written
};
// "https://host[:port][/path][?query]"; nullopt (and why) otherwise.
std::optional<Url> parse_url(const std::string& url, std::string* error);
// application/x-www-form-urlencoded and query-string escaping.
std::string url_encode(const std::string& s);

struct HttpsResponse {
  unsigned status = 0;
  std::string body;
  std::optional<unsigned> retry_after;  // seconds, from Retry-After (delta or HTTP date)
};

// A network, TLS or protocol failure (no HTTP status). `permanent`: retrying
// cannot help (a refused certificate, a malformed URL).
struct HttpsError : std::runtime_error {
  explicit HttpsError(const std::string& what, bool permanent = false)
      : std::runtime_error(what), permanent(permanent) {}
  bool permanent;
};

class HttpsClient {
 public:
  // Throws HttpsError when `ca_file` cannot be loaded.
  HttpsClient(const std::string& ca_file, std::chrono::seconds timeout, size_t body_limit = 64u << 20);
  ~HttpsClient();
  HttpsResponse request(const std::string& method, const std::string& url,
                        const std::vector<std::pair<std::string, std::string>>& headers, const std::string& body = {},
                        const std::string& content_type = {});

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mk::directory
