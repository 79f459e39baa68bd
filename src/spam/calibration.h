// calibration.h — the three verdicts (ham, unsure, spam) and where their
// cutoffs come from. `mailkeep spam train` cross-validates (k folds): each
// training message is scored by a model that did not learn it, and the
// cutoffs are read off those out-of-fold scores, for an error target rather
// than by hand:
//   spam   at or above `spam`: above every good message the folds scored
//          (or all but --max-fp-rate of them);
//   unsure at or above `unsure`: at most --max-fn-rate of the folds' spam
//          scores below it (is called ham outright);
//   ham    below `unsure`.
// As bogofilter's ternary mode, with cutoffs the model's own evidence puts.
// The chosen cutoffs travel in the model file (model.h); [spam] tag_score and
// reject_score are `auto` (the model's) or a number that overrides them.
// Threading: pure functions.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace mk::spam {

class Model;

struct Cutoffs {
  double unsure = 0.5;  // [spam] tag_score: tagged Unsure at or above
  double spam = 0.99;   // [spam] reject_score: spam (Yes, .Junk, 550 to aliases) at or above
};

enum class Call { Ham, Unsure, Spam };
Call call_of(double score, const Cutoffs& c);
const char* call_name(Call c);    // ham, unsure, spam
const char* status_word(Call c);  // X-Spam-Status: No, Unsure, Yes

// What training chose, and the evidence it chose it on (`mailkeep spam stats`).
struct Calibration {
  Cutoffs cutoffs;
  uint32_t folds = 0;
  double max_fp_rate = 0, max_fn_rate = 0;
  uint32_t ham = 0, spam = 0;  // messages the folds scored
  // On the folds, at the chosen cutoffs:
  uint32_t false_positives = 0;  // good messages at or above cutoffs.spam
  uint32_t missed = 0;           // spam below cutoffs.spam (unsure or ham)
  uint32_t unsure_ham = 0, unsure_spam = 0;  // in the unsure band
};

struct Scored {
  double score;
  bool spam;
};

// Reads the cutoffs off out-of-fold scores. nullopt without at least one
// good message and one spam. The spam cutoff sits halfway (in log-odds)
// between the highest good score it must stay above and the next score
// above that one, so it does not ride on one message's score; the unsure
// cutoff likewise between the spam scores on either side of it. Never above
// the spam cutoff.
std::optional<Calibration> choose_cutoffs(std::vector<Scored> scored, double max_fp_rate, double max_fn_rate);

// [spam] tag_score and reject_score as configured: nullopt is `auto`.
struct CutoffOverrides {
  std::optional<double> tag_score, reject_score;
};

// The cutoffs in effect: a number in [spam] tag_score / reject_score wins;
// `auto` (nullopt) takes the model's calibration, or Cutoffs{} for a model
// trained without one (online, --folds 0, too few messages, an older file).
// The unsure cutoff is never above the spam cutoff.
Cutoffs effective_cutoffs(const Model* model, std::optional<double> tag_score, std::optional<double> reject_score);

// One message's verdict in the SMTP path.
struct Judgement {
  double score = 0;
  Call call = Call::Ham;
  Cutoffs cutoffs;
};
Judgement judge(const Model& model, const std::vector<uint32_t>& features, std::optional<double> tag_score,
                std::optional<double> reject_score);
// The header fields the relayed and archived copies carry:
// "X-Spam-Status: Unsure, score=0.734 tag=0.412 reject=0.98137", X-Spam-Score
// and X-Mailkeep-Signature (what `spam learn` and reclassify find it by).
std::string header_fields(const Judgement& j, const std::string& signature);

}  // namespace mk::spam
