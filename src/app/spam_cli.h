// spam_cli.h — `mailkeep spam train | classify | reclassify | learn | stats | explain`.
#pragma once
#include <string>
#include <vector>

#include "config/settings.h"

namespace mk::app {

struct SpamCommand {
  std::string action;  // train | classify | reclassify | stats | explain
  std::vector<std::string> spam, ham, files;
  std::string files_from;
  std::string labelled;  // train: "spam<TAB>PATH" / "ham<TAB>PATH" lines, in this order
  std::string mode = "on-error";
  int passes = 3;
  unsigned memory_mb = 256;  // features kept between passes; beyond, files are read again
  double rate = 0.02, margin = 0.35, ham_cost = 2.0;
  bool online = false;     // train: classify each message before learning it (TREC style)
  bool fresh = false;      // train: start from an empty model, replacing the file
  bool no_average = false; // train: keep the last weights instead of their mean over the training
  int folds = 5;           // train: cross-validation folds that choose the cutoffs; < 2: not chosen
  double max_fp_rate = 0;  // train: share of the folds' good mail the spam cutoff may leave at or above it
  double max_fn_rate = 0.05;  // train: share of the folds' spam the unsure cutoff may leave below it
  std::string cv_scores;   // train: write the out-of-fold scores here ("spam|ham<TAB>SCORE<TAB>PATH")
  std::string signature;   // reclassify
  std::string as;          // reclassify, learn: spam | ham
  int lock_wait_ms = 2000; // learn: how long to wait for the model's lock
  std::string since;       // stats: YYYY-MM-DD (UTC)
  int top = 20;            // explain: how many features
};

// Returns the process exit status; messages go to stdout/stderr.
int spam_command(const Settings& settings, const SpamCommand& cmd);

}  // namespace mk::app
