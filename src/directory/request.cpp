// request.cpp — see request.h.
#include "directory/request.h"

#include <boost/json/parse.hpp>
#include <thread>

#include "core/log.h"
#include "core/strings.h"
#include "directory/provider.h"

namespace mk::directory {
namespace json = boost::json;

std::string json_string(const json::value& v, const char* key) {
  auto* o = v.if_object();
  if (!o) return "";
  auto it = o->find(key);
  if (it == o->end() || !it->value().is_string()) return "";
  return std::string(it->value().as_string());
}

namespace {

// The API's own explanation: Google's {"error":{"message":..}} or
// {"error":"invalid_grant","error_description":..}; Graph's {"error":{"code","message"}}.
std::string api_error(const std::string& body) {
  json::error_code ec;
  auto v = json::parse(body, ec);
  if (ec || !v.is_object()) return "";
  auto& o = v.as_object();
  auto it = o.find("error");
  if (it == o.end()) return "";
  std::string out;
  if (it->value().is_string()) {
    out = std::string(it->value().as_string());
    auto d = json_string(v, "error_description");
    if (!d.empty()) out += ": " + d;
  } else if (it->value().is_object()) {
    auto code = json_string(it->value(), "code"), msg = json_string(it->value(), "message");
    out = code.empty() ? msg : code + (msg.empty() ? "" : ": " + msg);
  }
  return printable_ascii(out, 300);
}

}  // namespace

std::unique_ptr<Provider> make_provider(const Settings& s, Sleeper sleep) {
  try {
    if (s.directory.provider == "google") return make_google(s, std::move(sleep));
    if (s.directory.provider == "microsoft") return make_microsoft(s, std::move(sleep));
  } catch (const HttpsError& e) {  // the CA file
    throw SyncError(e.what());
  }
  throw SyncError("[directory] provider = " + s.directory.provider + " has nothing to sync");
}

bool plain_sleep(std::chrono::seconds s) {
  std::this_thread::sleep_for(s);
  return true;
}

json::value fetch_json(HttpsClient& client, const JsonRequest& req, unsigned retries, size_t& requests,
                       const Sleeper& sleep) {
  for (unsigned attempt = 0;; ++attempt) {
    std::string failure;
    std::optional<unsigned> retry_after;
    try {
      ++requests;
      auto res = client.request(req.method, req.url, req.headers, req.body, req.content_type);
      if (res.status >= 200 && res.status < 300) {
        json::error_code ec;
        auto v = json::parse(res.body, ec);
        if (ec) throw SyncError(req.what + ": malformed JSON (" + ec.message() + ")");
        return v;
      }
      auto detail = api_error(res.body);
      failure = req.what + ": HTTP " + std::to_string(res.status) + (detail.empty() ? "" : " " + detail);
      if (res.status != 429 && res.status < 500) throw SyncError(failure, res.status);  // 400, 401, 403: not transient
      retry_after = res.retry_after;
    } catch (const HttpsError& e) {
      failure = req.what + ": " + e.what();
      if (e.permanent) throw SyncError(failure);
    }
    if (attempt >= retries) throw SyncError(failure + (retries ? " (after " + std::to_string(retries) + " retries)" : ""));
    unsigned wait = retry_after ? std::min(*retry_after, 300u) : std::min(60u, 1u << std::min(attempt, 6u));
    spdlog::warn("directory: {}; retry {} of {} in {} s", failure, attempt + 1, retries, wait);
    if (!sleep(std::chrono::seconds(wait))) throw SyncError(failure + " (stopping)");
  }
}

BearerSession::BearerSession(const Settings& s, Sleeper sleep)
    : client_(s.directory.ca_file, std::chrono::seconds(s.directory.timeout)),
      retries_(s.directory.retries),
      sleep_(std::move(sleep)) {}

const std::string& BearerSession::token(size_t& requests) {
  auto now = std::chrono::steady_clock::now();
  if (!token_.empty() && now < token_expiry_) return token_;
  auto req = token_request();
  req.what = "token request";
  auto v = fetch_json(client_, req, retries_, requests, sleep_);
  auto t = json_string(v, "access_token");
  if (t.empty()) throw SyncError("token request: no access_token in the answer");
  int64_t expires = 3600;
  if (auto* o = v.if_object(); o && o->contains("expires_in") && o->at("expires_in").is_number())
    expires = o->at("expires_in").to_number<int64_t>();
  token_ = std::move(t);
  token_expiry_ = now + std::chrono::seconds(std::max<int64_t>(0, expires - 60));
  return token_;
}

json::value BearerSession::get(JsonRequest req, size_t& requests) {
  req.headers.emplace_back("Authorization", "Bearer " + token(requests));
  try {
    return fetch_json(client_, req, retries_, requests, sleep_);
  } catch (const SyncError& e) {
    if (e.status != 401) throw;
  }
  token_.clear();
  req.headers.back().second = "Bearer " + token(requests);
  return fetch_json(client_, req, retries_, requests, sleep_);
}

}  // namespace mk::directory
