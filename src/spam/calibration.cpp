// calibration.cpp — see calibration.h.
#include "spam/calibration.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "spam/model.h"

namespace mk::spam {
namespace {

double logit(double p) {
  p = std::clamp(p, 1e-12, 1 - 1e-12);
  return std::log(p / (1 - p));
}

// Halfway between two scores in log-odds: scores crowd near 0 and 1, where a
// plain average would sit on top of the higher one.
double between(double low, double high) {
  if (!(high > low)) return high;
  double mid = 1 / (1 + std::exp(-(logit(low) + logit(high)) / 2));
  // Rounding must not put the cutoff on or below `low`, or above `high`.
  if (!(mid > low)) mid = std::nextafter(low, 2.0);
  return std::min(mid, high);
}

}  // namespace

Call call_of(double score, const Cutoffs& c) {
  if (score >= c.spam) return Call::Spam;
  if (score >= c.unsure) return Call::Unsure;
  return Call::Ham;
}

const char* call_name(Call c) { return c == Call::Spam ? "spam" : c == Call::Unsure ? "unsure" : "ham"; }
const char* status_word(Call c) { return c == Call::Spam ? "Yes" : c == Call::Unsure ? "Unsure" : "No"; }

std::optional<Calibration> choose_cutoffs(std::vector<Scored> scored, double max_fp_rate, double max_fn_rate) {
  std::vector<double> ham, spam, all;
  for (auto& s : scored) {
    (s.spam ? spam : ham).push_back(s.score);
    all.push_back(s.score);
  }
  if (ham.empty() || spam.empty()) return std::nullopt;
  std::sort(ham.begin(), ham.end());
  std::sort(spam.begin(), spam.end());
  std::sort(all.begin(), all.end());
  Calibration c;
  c.max_fp_rate = max_fp_rate;
  c.max_fn_rate = max_fn_rate;
  c.ham = uint32_t(ham.size());
  c.spam = uint32_t(spam.size());

  // Spam: above every good score but the `allowed_fp` highest.
  const size_t allowed_fp = std::min(ham.size() - 1, size_t(std::floor(max_fp_rate * double(ham.size()))));
  const double stay_above = ham[ham.size() - 1 - allowed_fp];
  auto next = std::upper_bound(all.begin(), all.end(), stay_above);
  c.cutoffs.spam = next == all.end() ? std::nextafter(stay_above, 2.0) : between(stay_above, *next);

  // Unsure: at most `allowed_fn` spam scores below it.
  const size_t allowed_fn = std::min(spam.size() - 1, size_t(std::floor(max_fn_rate * double(spam.size()))));
  c.cutoffs.unsure = allowed_fn == 0 ? spam[0] : between(spam[allowed_fn - 1], spam[allowed_fn]);
  c.cutoffs.unsure = std::min(c.cutoffs.unsure, c.cutoffs.spam);

  for (double s : ham) {
    auto call = call_of(s, c.cutoffs);
    c.false_positives += call == Call::Spam;
    c.unsure_ham += call == Call::Unsure;
  }
  for (double s : spam) {
    auto call = call_of(s, c.cutoffs);
    c.missed += call != Call::Spam;
    c.unsure_spam += call == Call::Unsure;
  }
  return c;
}

Cutoffs effective_cutoffs(const Model* model, std::optional<double> tag_score, std::optional<double> reject_score) {
  Cutoffs c;
  if (model && model->calibration()) c = model->calibration()->cutoffs;
  if (tag_score) c.unsure = *tag_score;
  if (reject_score) c.spam = *reject_score;
  c.unsure = std::min(c.unsure, c.spam);
  return c;
}

Judgement judge(const Model& model, const std::vector<uint32_t>& features, std::optional<double> tag_score,
                std::optional<double> reject_score) {
  Judgement j;
  j.cutoffs = effective_cutoffs(&model, tag_score, reject_score);
  j.score = model.score(features);
  j.call = call_of(j.score, j.cutoffs);
  return j;
}

std::string header_fields(const Judgement& j, const std::string& signature) {
  return fmt::format("X-Spam-Status: {}, score={:.3f} tag={:.6g} reject={:.6g}\r\nX-Spam-Score: {:.3f}\r\n"
                     "X-Mailkeep-Signature: {}\r\n",
                     status_word(j.call), j.score, j.cutoffs.unsure, j.cutoffs.spam, j.score, signature);
}

}  // namespace mk::spam
