// spam_page.cpp — see spam_page.h.
#include "http/spam_page.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <boost/beast/http/field.hpp>
#include <boost/json.hpp>
#include <ctime>

#include "core/log.h"
#include "core/strings.h"
#include "http/api.h"
#include "spam/trainer.h"

namespace mk::http {
namespace {

namespace bh = boost::beast::http;
namespace json = boost::json;

constexpr size_t kDefaultRows = 100;
constexpr size_t kMaxRows = 1000;

bool same_secret(std::string_view given, const std::string& token) {
  return given.size() == token.size() && CRYPTO_memcmp(given.data(), token.data(), token.size()) == 0;
}

std::string base64_decode(std::string_view in) {
  if (in.empty() || in.size() % 4 != 0 || in.size() > 4096) return {};
  std::string out(in.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(in.data()),
                          int(in.size()));
  if (n < 0) return {};
  size_t padding = (in.back() == '=') + (in.size() > 1 && in[in.size() - 2] == '=');
  out.resize(size_t(n) - padding);
  return out;
}

std::string html_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += (static_cast<unsigned char>(c) < 32 || c == 127) ? '?' : c;
    }
  }
  return out;
}

std::string date_of(int64_t t) { return format_utc(t, "%Y-%m-%d"); }

Response html_response(std::string body, unsigned version) {
  Response res{bh::status::ok, version};
  res.set(bh::field::content_type, "text/html; charset=utf-8");
  res.set(bh::field::cache_control, "no-store");
  res.set("X-Content-Type-Options", "nosniff");
  res.set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'");
  res.set("Referrer-Policy", "no-referrer");
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

// The operator's routes answer without CORS headers: no other site may read them.
Response private_json(unsigned status, const json::value& body, unsigned version) {
  auto res = json_response(status, body, version);
  res.erase(bh::field::access_control_allow_origin);
  res.erase(bh::field::access_control_expose_headers);
  return res;
}

Response private_error(unsigned status, std::string_view code, std::string_view description, unsigned version) {
  return private_json(status, json::object{{"error", code}, {"description", description}}, version);
}

}  // namespace

SpamPage::SpamPage(spam::History& history, spam::Classifier* classifier, SpamPageConfig config)
    : history_(history), classifier_(classifier), config_(std::move(config)) {}

bool SpamPage::handles(std::string_view path) const { return path == "/spam" || path.starts_with("/spam/"); }

bool SpamPage::authorized(std::string_view auth, const std::string& token) {
  if (token.empty()) return false;
  if (istarts_with(auth, "Bearer ")) return same_secret(trim(auth.substr(7)), token);
  if (istarts_with(auth, "Basic ")) {
    auto decoded = base64_decode(trim(auth.substr(6)));
    auto colon = decoded.find(':');
    return colon != std::string::npos && same_secret(std::string_view(decoded).substr(colon + 1), token);
  }
  return false;
}

Response SpamPage::handle(const Request& req, const IpAddress& client) {
  unsigned v = req.version();
  std::string_view target(req.target().data(), req.target().size());
  auto path = target.substr(0, target.find('?'));
  if (config_.admin_token.empty()) return private_error(404, "not-found", "no such resource", v);
  const auto key = policy::client_key(client);
  const int64_t now = config_.clock ? config_.clock() : static_cast<int64_t>(std::time(nullptr));
  if (failures_.exhausted(key, now)) {
    spdlog::info("http: reject: {} {} from {}: too-many-attempts ({} wrong operator tokens this minute)",
                 std::string(req.method_string()), std::string(path), client.to_string(), kMaxFailures);
    auto res = private_error(429, "too-many-attempts", "too many wrong tokens; try again in a minute", v);
    res.set(bh::field::retry_after, std::to_string(60 - now % 60));
    return res;
  }
  auto auth = req[bh::field::authorization];
  if (!authorized(std::string_view(auth.data(), auth.size()), config_.admin_token)) {
    // Logged without the header: it may hold a mistyped secret. A request without
    // credentials is how a browser starts Basic auth: only wrong ones count.
    if (!auth.empty()) failures_.allow(key, now);
    spdlog::info("http: reject: {} {} from {}: unauthorized (operator token missing or wrong)",
                 std::string(req.method_string()), std::string(path), client.to_string());
    auto res = private_error(401, "unauthorized", "the operator's [http] admin_token is required", v);
    res.set(bh::field::www_authenticate, "Basic realm=\"mailkeep operator\", charset=\"UTF-8\"");
    return res;
  }
  try {
    if (path == "/spam") {
      if (req.method() != bh::verb::get && req.method() != bh::verb::head)
        return private_error(405, "method-not-allowed", "GET only", v);
      return page(req);
    }
    if (path == "/spam/reclassify") {
      if (req.method() != bh::verb::post) return private_error(405, "method-not-allowed", "use POST", v);
      return reclassify(req);
    }
  } catch (const db::Error& e) {
    spdlog::error("http: spam history failure: {}", e.what());
    return private_error(503, "history-unavailable", "the spam history is unavailable; try again later", v);
  }
  return private_error(404, "not-found", "no such resource", v);
}

Response SpamPage::page(const Request& req) {
  unsigned v = req.version();
  std::string_view target(req.target().data(), req.target().size());
  auto qpos = target.find('?');
  auto query = parse_query(qpos == std::string_view::npos ? std::string_view() : target.substr(qpos + 1));
  int64_t since = 0;
  if (auto it = query.find("since"); it != query.end() && !it->second.empty()) {
    auto parsed = parse_date_utc(it->second);
    if (!parsed) return private_error(400, "invalid-data", "since must be a date YYYY-MM-DD", v);
    since = *parsed;
  }
  size_t limit = kDefaultRows;
  if (auto it = query.find("limit"); it != query.end() && !it->second.empty()) {
    char* end = nullptr;
    long n = std::strtol(it->second.c_str(), &end, 10);
    if (*end || n < 1) return private_error(400, "invalid-data", "limit must be a positive whole number", v);
    limit = std::min(size_t(n), kMaxRows);
  }
  auto counts = history_.counts(since);
  auto rows = history_.recent(limit);
  auto model = classifier_ ? classifier_->model() : nullptr;

  // For scripts: the same data as JSON when asked for it.
  auto accept = req[bh::field::accept];
  if (std::string_view(accept.data(), accept.size()).find("application/json") != std::string_view::npos) {
    json::array verdicts;
    for (auto& r : rows) {
      verdicts.push_back(json::object{
          {"signature", r.signature}, {"time", iso8601_utc(r.time)}, {"client", r.client}, {"sender", r.sender},
          {"recipients", r.recipients}, {"subject", r.subject}, {"score", r.score},
          {"verdict", spam::call_name(r.call)}, {"action", r.action},
          {"reclassified_as", r.reclassified_as ? json::value(*r.reclassified_as ? "spam" : "ham") : json::value(nullptr)}});
    }
    return private_json(
        200,
        json::object{{"since", since ? json::value(date_of(since)) : json::value(nullptr)},
                     {"counts", json::object{{"spam", counts.spam},
                                             {"unsure", counts.unsure},
                                             {"ham", counts.ham},
                                             {"errors_corrected", counts.missed_spam + counts.false_positives},
                                             {"missed_spam", counts.missed_spam},
                                             {"false_positives", counts.false_positives}}},
                     {"learned", json::object{{"spam", model ? model->trained_spam() : 0},
                                              {"ham", model ? model->trained_ham() : 0}}},
                     {"verdicts", std::move(verdicts)}},
        v);
  }

  std::string h;
  h.reserve(4096 + rows.size() * 600);
  h += "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
       "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
       "<title>mailkeep: spam history</title><link rel=\"stylesheet\" href=\"/style.css\">"
       "<script src=\"/spam.js\" defer></script></head>\n<body class=\"wide\"><main>\n<h1>Spam history</h1>\n";
  h += "<form method=\"get\" action=\"/spam\" class=\"since\"><label for=\"since\">Counts since</label> "
       "<input type=\"date\" id=\"since\" name=\"since\" value=\"" + (since ? date_of(since) : std::string()) +
       "\"> <button type=\"submit\">Show</button></form>\n";
  h += fmt::format(
      "<p id=\"counts\">Since <strong>{}</strong>: <span id=\"count-spam\">{}</span> spam, "
      "<span id=\"count-unsure\">{}</span> unsure, <span id=\"count-ham\">{}</span> ham; errors corrected: <span id=\"count-corrected\">{}</span> "
      "({} missed spam, {} false positives). Learned: <span id=\"learned-spam\">{}</span> spam, "
      "<span id=\"learned-ham\">{}</span> ham.</p>\n",
      since ? date_of(since) : std::string("the start of the history"), counts.spam, counts.unsure, counts.ham,
      counts.missed_spam + counts.false_positives, counts.missed_spam, counts.false_positives,
      model ? model->trained_spam() : 0, model ? model->trained_ham() : 0);
  h += "<p id=\"status\" role=\"status\"></p>\n";
  h += "<table id=\"history\"><thead><tr><th>Time (UTC)</th><th>Client</th><th>From</th><th>To</th><th>Subject</th>"
       "<th>Score</th><th>Verdict</th><th>Signature</th><th></th></tr></thead>\n<tbody>\n";
  for (auto& r : rows) {
    // The operator's label, once given, stays what the row shows.
    std::string shown = r.reclassified_as ? (*r.reclassified_as ? "spam" : "ham") : spam::call_name(r.call);
    std::string verdict = shown;
    if (r.reclassified_as) verdict += " (reclassified)";
    else if (r.action != "relayed") verdict += " (" + r.action + ")";
    // Spam gets "Not spam", ham "Spam", unsure both.
    std::string buttons;
    if (shown != "spam") buttons += "<button type=\"button\" class=\"reclassify\" data-as=\"spam\">Spam</button>";
    if (shown != "ham") buttons += "<button type=\"button\" class=\"reclassify\" data-as=\"ham\">Not spam</button>";
    auto sig = html_escape(r.signature);
    h += fmt::format(
        "<tr class=\"{}\" data-signature=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
        "<td class=\"score\">{:.3f}</td><td class=\"verdict\">{}</td><td><code>{}</code></td>"
        "<td>{}</td></tr>\n",
        shown, sig, format_utc(r.time, "%Y-%m-%d %H:%M:%S"), html_escape(r.client), html_escape(r.sender),
        html_escape(r.recipients), html_escape(r.subject), r.score, verdict, sig, buttons);
  }
  if (rows.empty()) h += "<tr><td colspan=\"9\">No verdicts yet.</td></tr>\n";
  h += "</tbody></table>\n</main></body></html>\n";
  auto res = html_response(std::move(h), v);
  if (req.method() == bh::verb::head) res.body().clear();
  return res;
}

Response SpamPage::reclassify(const Request& req) {
  unsigned v = req.version();
  auto ctype = to_lower(std::string_view(req[bh::field::content_type].data(), req[bh::field::content_type].size()));
  if (!ctype.starts_with("application/json"))
    return private_error(415, "invalid-request-type", "send the request as application/json", v);
  boost::system::error_code ec;
  auto doc = json::parse(req.body(), ec);
  if (ec || !doc.is_object()) return private_error(400, "invalid-data", "the body must be a JSON object", v);
  auto& o = doc.as_object();
  auto* sig = o.if_contains("signature");
  auto* as = o.if_contains("as");
  if (!sig || !sig->is_string() || sig->as_string().empty() || sig->as_string().size() > 64)
    return private_error(400, "invalid-data", "signature must be a message's X-Mailkeep-Signature", v);
  if (!as || !as->is_string() || (as->as_string() != "spam" && as->as_string() != "ham"))
    return private_error(400, "invalid-data", "as must be \"spam\" or \"ham\"", v);
  std::string signature(sig->as_string());
  bool as_spam = as->as_string() == "spam";
  auto r = spam::reclassify(history_, config_.model_path, classifier_ ? classifier_->settings() : spam::TokenizerSettings{},
                            signature, as_spam, config_.cutoffs, config_.share);
  if (r.outcome != Outcome::Ok) {
    spdlog::warn("http: spam reclassify {} as {}: {}: {}", signature, as_spam ? "spam" : "ham", r.code, r.detail);
    unsigned status = r.code == "not-found" ? 404 : r.code == "expired" ? 410 : 503;
    return private_error(status, r.code, r.detail, v);
  }
  spdlog::info("http: spam: {} reclassified as {} by the operator (score {:.3f} -> {:.3f})", signature,
               as_spam ? "spam" : "ham", r.before, r.after);
  if (classifier_) {
    std::string err;
    if (!classifier_->reload_if_changed(err)) spdlog::warn("spam model: {}", err);
  }
  return private_json(200,
                      json::object{{"signature", signature},
                                   {"as", as_spam ? "spam" : "ham"},
                                   {"was", spam::call_name(r.verdict.call)},
                                   {"score_before", r.before},
                                   {"score_after", r.after}},
                      v);
}

}  // namespace mk::http
