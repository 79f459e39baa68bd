// api.cpp — see api.h.
#include "http/api.h"

#include <boost/beast/http/field.hpp>
#include <boost/json.hpp>
#include <ctime>
#include <map>

#include "aliases/alias_id.h"
#include "core/log.h"
#include "core/stats.h"
#include "core/strings.h"
#include "http/assets.h"

namespace mk::http {
namespace {

namespace bh = boost::beast::http;
namespace json = boost::json;


void add_cors(Response& res) {
  res.set(bh::field::access_control_allow_origin, "*");
  res.set(bh::field::access_control_expose_headers, "Retry-After");
}

}  // namespace

Response json_response(unsigned status, const json::value& body, unsigned version) {
  Response res{static_cast<bh::status>(status), version};
  res.set(bh::field::content_type, "application/json");
  res.set(bh::field::cache_control, "no-store");
  add_cors(res);
  res.body() = json::serialize(body);
  res.prepare_payload();
  return res;
}

namespace {


}  // namespace

std::map<std::string, std::string> parse_query(std::string_view q) {
  std::map<std::string, std::string> out;
  while (!q.empty()) {
    auto amp = q.find('&');
    auto pair = q.substr(0, amp);
    auto eq = pair.find('=');
    if (eq != std::string_view::npos) out[percent_decode(pair.substr(0, eq), true)] = percent_decode(pair.substr(eq + 1), true);
    else if (!pair.empty()) out[percent_decode(pair, true)] = "";
    if (amp == std::string_view::npos) break;
    q.remove_prefix(amp + 1);
  }
  return out;
}

namespace {

// An optional integer field: a JSON number, a numeric string (HTML forms and
// the tempalias clients send strings), null or absent. False on anything else.
bool optional_int(const json::object& o, std::string_view key, std::optional<int64_t>& out, std::string& error) {
  auto* v = o.if_contains(key);
  if (!v || v->is_null()) return true;
  if (v->is_int64()) out = v->as_int64();
  else if (v->is_uint64() && v->as_uint64() < (1ull << 62)) out = int64_t(v->as_uint64());
  else if (v->is_double() && v->as_double() == double(int64_t(v->as_double()))) out = int64_t(v->as_double());
  else if (v->is_string() && v->as_string().empty()) return true;
  else if (v->is_string()) {
    std::string s(v->as_string());
    char* end = nullptr;
    long long n = std::strtoll(s.c_str(), &end, 10);
    if (end == s.c_str() || *end) {
      error = std::string(key) + " must be a whole number";
      return false;
    }
    out = n;
  } else {
    error = std::string(key) + " must be a whole number";
    return false;
  }
  return true;
}

bool valid_callback(std::string_view cb) {
  if (cb.empty() || cb.size() > 64 || std::isdigit((unsigned char)cb[0])) return false;
  for (char c : cb)
    if (!std::isalnum((unsigned char)c) && c != '_' && c != '$' && c != '.') return false;
  return true;
}

}  // namespace

Response json_error(unsigned status, std::string_view code, std::string_view description, unsigned version) {
  return json_response(status, json::object{{"error", code}, {"description", description}}, version);
}

Api::Api(aliases::AliasService* aliases, ApiConfig config, std::vector<RouteHandler*> more_routes)
    : aliases_(aliases), config_(std::move(config)) {
  for (auto* r : more_routes)
    if (r) more_routes_.push_back(r);
}

bool Api::is_creation(const Request& req) {
  std::string_view target(req.target().data(), req.target().size());
  auto path = target.substr(0, target.find('?'));
  if (req.method() == bh::verb::post) return path == "/api/v1/aliases" || path == "/aliases";
  return req.method() == bh::verb::get && path == "/aliases" && path.size() < target.size();
}

IpAddress Api::client_address(const Request& req, const IpAddress& peer) const {
  auto trusted = [&](const IpAddress& a) {
    for (auto& c : config_.trusted_proxies)
      if (c.contains(a)) return true;
    return false;
  };
  if (!trusted(peer)) return peer;
  auto xff = req["X-Forwarded-For"];
  // Right to left: the nearest hop not ours is the client (each proxy appends).
  auto hops = split_list(std::string_view(xff.data(), xff.size()));
  for (auto it = hops.rbegin(); it != hops.rend(); ++it) {
    auto a = IpAddress::parse(*it);
    if (!a) return peer;  // garbage: trust nothing in it
    if (!trusted(*a)) return *a;
  }
  return peer;
}

Response Api::handle(const Request& req, const IpAddress& peer) {
  std::string_view target(req.target().data(), req.target().size());
  auto qpos = target.find('?');
  std::string_view path = target.substr(0, qpos);
  unsigned v = req.version();

  for (auto* r : more_routes_)
    if (r->handles(path)) return r->handle(req, client_address(req, peer));
  if (path == "/api/v1/aliases" || path == "/aliases" || path.starts_with("/api/v1/aliases/")) {
    if (!aliases_) return json_error(404, "not-found", "no alias domains are configured here", v);
    if (req.method() == bh::verb::options) {  // CORS preflight
      Response res{bh::status::no_content, v};
      add_cors(res);
      res.set(bh::field::access_control_allow_methods, "GET, POST, DELETE, OPTIONS");
      res.set(bh::field::access_control_allow_headers, "Content-Type, Authorization");
      res.set(bh::field::access_control_max_age, "86400");
      return res;
    }
    try {
      auto client = client_address(req, peer);
      if (path == "/api/v1/aliases") {
        if (req.method() != bh::verb::post) return json_error(405, "method-not-allowed", "use POST to create an alias", v);
        return create(req, client, false);
      }
      if (path == "/aliases") {
        if (req.method() == bh::verb::get && qpos != std::string_view::npos) return create_jsonp(req, client);
        if (req.method() != bh::verb::post) return json_error(405, "method-not-allowed", "/aliases takes POST (or GET with a JSONP callback)", v);
        return create(req, client, true);
      }
      return manage(req, path.substr(std::string_view("/api/v1/aliases/").size()));
    } catch (const aliases::StoreError& e) {
      spdlog::error("http: alias store failure: {}", e.what());
      auto res = json_error(503, "store-unavailable", "the alias store is unavailable; try again later", v);
      res.set(bh::field::retry_after, "30");
      return res;
    }
  }
  if (auto* asset = find_asset(path)) {
    if (req.method() != bh::verb::get && req.method() != bh::verb::head)
      return json_error(405, "method-not-allowed", "GET only", v);
    Response res{bh::status::ok, v};
    res.set(bh::field::content_type, asset->content_type);
    res.set(bh::field::cache_control, "no-cache");
    res.set("X-Content-Type-Options", "nosniff");
    if (asset->content_type.starts_with("text/html")) {
      res.set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'");
      res.set("Referrer-Policy", "no-referrer");
    }
    res.body() = std::string(asset->body);
    res.prepare_payload();
    if (req.method() == bh::verb::head) res.body().clear();
    return res;
  }
  return json_error(404, "not-found", "no such resource", v);
}

Response Api::create(const Request& req, const IpAddress& client, bool tempalias_shape) {
  unsigned v = req.version();
  auto ctype = to_lower(std::string_view(req[bh::field::content_type].data(), req[bh::field::content_type].size()));
  if (!ctype.starts_with("application/json"))
    return json_error(415, "invalid-request-type", "send the request as application/json", v);
  auto key = policy::client_key(client);
  // The limit lives in the alias store: with [store] url it holds across every gateway.
  const bool limited = config_.create_interval > 0;
  auto rate_limited = [&](int64_t wait) {
    stats::count(stats::Counter::http_reject_rate_limited);
    spdlog::info("http: reject: alias creation from {}: rate-limited for {}s", client.to_string(), wait);
    auto res = json_error(429, "rate-limited", "please wait " + std::to_string(wait) + " s before creating the next alias", v);
    res.set(bh::field::retry_after, std::to_string(wait));
    return res;
  };
  if (limited)
    if (auto wait = aliases_->creation_wait(key)) return rate_limited(*wait);
  boost::system::error_code ec;
  auto doc = json::parse(req.body(), ec);
  if (ec || !doc.is_object()) return json_error(400, "invalid-data", "the body must be a JSON object", v);
  auto& o = doc.as_object();
  if (!tempalias_shape) {
    // A field we do not know is a mistake we must not guess about: tempalias's
    // "max-usage" here would otherwise create an alias with no limit at all.
    for (auto& kv : o) {
      std::string_view k = kv.key();
      if (k != "target" && k != "days" && k != "max_usage") {
        std::string what = "unknown field \"" + printable_ascii(k, 64, "\"") + "\" (known: target, days, max_usage)";
        stats::count(stats::Counter::http_reject_invalid);
        spdlog::info("http: reject: alias creation from {}: invalid-data: {}", client.to_string(), what);
        return json_error(400, "invalid-data", what, v);
      }
    }
  }
  aliases::CreateRequest cr;
  cr.creator_ip = client.to_string();
  if (auto* t = o.if_contains("target"); t && t->is_string()) cr.target = std::string(t->as_string());
  std::string error;
  if (!optional_int(o, "days", cr.days, error) ||
      !optional_int(o, tempalias_shape ? "max-usage" : "max_usage", cr.max_usage, error))
    return json_error(400, "invalid-data", error, v);
  // Taken before the alias is made (one atomic step, so that racing requests on
  // two gateways cannot both pass), and given back when the request is refused:
  // only valid requests spend the allowance.
  if (limited && !aliases_->take_creation(key, config_.create_interval))
    return rate_limited(aliases_->creation_wait(key).value_or(config_.create_interval));
  aliases::CreateResult created;
  try {
    created = aliases_->create(cr);
  } catch (...) {
    if (limited) aliases_->give_back_creation(key);
    throw;
  }
  if (!created.alias) {
    if (limited) aliases_->give_back_creation(key);
    stats::count(stats::Counter::http_reject_invalid);
    spdlog::info("http: reject: alias creation from {}: invalid-data: {}", client.to_string(), created.error);
    return json_error(400, "invalid-data", created.error, v);
  }
  stats::count(stats::Counter::http_alias_created);
  auto& a = *created.alias;
  spdlog::info("http: alias {} created by {} for <{}>, valid until {}, max_usage {}", a.id, client.to_string(),
               a.target, iso8601_utc(*a.valid_until), a.max_usage ? std::to_string(*a.max_usage) : "none");
  json::value max_usage = a.max_usage ? json::value(*a.max_usage) : json::value(nullptr);
  if (tempalias_shape) {
    int64_t days = (*a.valid_until - a.created + 86399) / 86400;
    return json_response(200,
                         json::object{{"aid", a.id}, {"valid_from", iso8601_utc(a.created)},
                                      {"valid_until", iso8601_utc(*a.valid_until)}, {"max_usage", max_usage},
                                      {"target", a.target}, {"days", days}},
                         v);
  }
  return json_response(201,
                       json::object{{"alias", aliases_->address_of(a)}, {"aid", a.id}, {"target", a.target},
                                    {"valid_until", iso8601_utc(*a.valid_until)}, {"max_usage", max_usage},
                                    {"uses", a.uses}, {"manage_token", created.token}},
                       v);
}

// The original bookmarklet's JSONP call: GET /aliases?callback=f&target=..&days=..&max-usage=..
// JSONP cannot see HTTP statuses, so errors come back as 200 with an error body (as the original did).
Response Api::create_jsonp(const Request& req, const IpAddress& client) {
  std::string_view target(req.target().data(), req.target().size());
  auto q = parse_query(target.substr(target.find('?') + 1));
  auto cb = q["callback"];
  if (!valid_callback(cb)) return json_error(400, "invalid-data", "callback must be a JavaScript identifier", req.version());
  Request inner{bh::verb::post, "/aliases", req.version()};
  inner.set(bh::field::content_type, "application/json");
  json::object body{{"target", q["target"]}};
  if (q.count("days")) body["days"] = q["days"];
  if (q.count("max-usage")) body["max-usage"] = q["max-usage"];
  inner.body() = json::serialize(body);
  auto res = create(inner, client, true);
  Response out{bh::status::ok, req.version()};
  out.set(bh::field::content_type, "text/javascript");
  out.set(bh::field::cache_control, "no-store");
  out.set("X-Content-Type-Options", "nosniff");
  out.body() = cb + "(" + res.body() + ");";
  out.prepare_payload();
  return out;
}

Response Api::manage(const Request& req, std::string_view aid) {
  unsigned v = req.version();
  if (req.method() != bh::verb::get && req.method() != bh::verb::delete_)
    return json_error(405, "method-not-allowed", "use GET or DELETE", v);
  auto auth = std::string_view(req[bh::field::authorization].data(), req[bh::field::authorization].size());
  if (!istarts_with(auth, "Bearer ") || trim(auth.substr(7)).empty()) {
    auto res = json_error(401, "unauthorized", "send the alias's manage_token as 'Authorization: Bearer <token>'", v);
    res.set(bh::field::www_authenticate, "Bearer");
    return res;
  }
  auto token = trim(auth.substr(7));
  auto a = aliases_->find(aid);
  // An unknown id and a wrong token answer alike: the API is no oracle for guessing ids.
  if (!a || !aliases::token_matches(a->token_hash, token))
    return json_error(404, "not-found", "no alias with this id and token", v);
  if (req.method() == bh::verb::delete_) {
    aliases_->disable(a->id);
    spdlog::info("http: alias {} disabled by its owner", a->id);
    a->disabled = true;
  }
  auto state = aliases_->state(*a);
  json::value uses_left = a->max_usage ? json::value(int64_t(*a->max_usage) - int64_t(a->uses)) : json::value(nullptr);
  if (uses_left.is_int64() && uses_left.as_int64() < 0) uses_left = 0;
  return json_response(200,
                       json::object{{"aid", a->id},
                                    {"alias", aliases_->address_of(*a)},
                                    {"target", a->target},
                                    {"status", aliases::state_name(state)},
                                    {"created", iso8601_utc(a->created)},
                                    {"valid_until", a->valid_until ? json::value(iso8601_utc(*a->valid_until)) : json::value(nullptr)},
                                    {"max_usage", a->max_usage ? json::value(*a->max_usage) : json::value(nullptr)},
                                    {"uses", a->uses},
                                    {"uses_left", uses_left}},
                       v);
}

}  // namespace mk::http
