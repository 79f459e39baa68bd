// spam_page.h — the operator's spam history (issue: DSPAM's history view):
//
//   GET  /spam[?since=YYYY-MM-DD&limit=N]  HTML: counts since the date, and
//        the recent verdicts (time, client, sender, recipients, subject,
//        score, verdict, signature), spam rows red, a reclassify button each;
//        with "Accept: application/json" the same as {"since", "counts",
//        "learned", "verdicts": [...]}
//   POST /spam/reclassify  {"signature": S, "as": "spam"|"ham"} → JSON
//
// Operator only: HTTP Basic with [http] admin_token as the password (any
// user name), or "Authorization: Bearer <admin_token>"; 401 otherwise. With
// no admin_token configured the routes do not exist (404).
// CSRF: the POST takes only application/json and /spam sends no CORS headers,
// so another site's page cannot make the operator's browser reclassify.
// Errors: {"error": CODE, "description": TEXT}: invalid-data 400,
// unauthorized 401, not-found 404, method-not-allowed 405, invalid-request-type
// 415, expired 410 (features purged), too-many-attempts 429 (ten wrong tokens
// from one client within a minute; Retry-After), history-unavailable/
// model-unavailable 503.
#pragma once
#include <string>

#include "http/message.h"
#include "policy/rate_limit.h"
#include "spam/calibration.h"
#include "spam/classifier.h"
#include "spam/history.h"
#include "core/shared_file.h"

namespace mk::http {

struct SpamPageConfig {
  std::string admin_token;
  std::string model_path;
  spam::CutoffOverrides cutoffs;  // [spam] tag_score, reject_score
  int64_t (*clock)() = nullptr;  // Unix seconds; null: the system clock (tests set their own)
  SharedFile* share = nullptr;  // several gateways: the shared model (core/shared_file.h)
};

class SpamPage final : public RouteHandler {
 public:
  // `classifier` may be null (then a retrained model is only picked up by the file watch).
  SpamPage(spam::History& history, spam::Classifier* classifier, SpamPageConfig config);
  bool handles(std::string_view path) const override;
  Response handle(const Request& request, const IpAddress& client) override;

  // True when the Authorization header carries the admin token (Basic password or Bearer).
  static bool authorized(std::string_view authorization, const std::string& token);

 private:
  Response page(const Request& req);
  Response reclassify(const Request& req);

  spam::History& history_;
  spam::Classifier* classifier_;
  SpamPageConfig config_;
  // Wrong tokens per client and minute; past kMaxFailures the client gets 429 until the
  // minute is over, right token or not, so guessing costs a minute per ten tries.
  static constexpr uint32_t kMaxFailures = 10;
  policy::WindowLimiter failures_{kMaxFailures};
};

}  // namespace mk::http
