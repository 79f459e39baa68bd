// trainer.h — changing the model file: every writer (`mailkeep spam train`,
// `mailkeep spam reclassify`, the /spam page's reclassify button) holds an
// exclusive flock on MODEL.lock while it loads, trains and saves, so that two
// writers never lose each other's updates. Readers (the SMTP path) never
// take the lock: they keep scoring with the snapshot they have and pick up
// the new file when it appears (Classifier::reload_if_changed).
// Threading: blocking calls; run them off the I/O threads.
#pragma once
#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/outcome.h"
#include "spam/calibration.h"
#include "spam/history.h"
#include "spam/model.h"
#include "core/shared_file.h"

namespace mk::spam {

class ModelLock {
 public:
  // Blocks until the lock is held or fails (see error()).
  explicit ModelLock(const std::string& model_path);
  // Waits at most `wait` for the lock (`mailkeep spam learn`: Dovecot waits
  // for it); error() says "locked" when another writer kept it that long.
  ModelLock(const std::string& model_path, std::chrono::milliseconds wait);
  ~ModelLock();
  ModelLock(const ModelLock&) = delete;
  ModelLock& operator=(const ModelLock&) = delete;
  const std::string& error() const { return error_; }  // "" when held

 private:
  int fd_ = -1;
  std::string error_;
};

// Loads the model, or an untrained one when the file does not exist yet.
// Returns "" or the error (a damaged file is never silently replaced).
std::string load_or_new(const std::string& path, const TokenizerSettings& settings, Model& out);

// Batch training (`mailkeep spam train`): labelled examples, each held in
// memory or read again when asked for (a training set larger than --memory).
struct TrainingSet {
  std::vector<bool> spam;  // the label of example i
  // Example i's features: a pointer to held ones, or read into `scratch`;
  // nullptr when the file is gone since it was listed.
  std::function<const std::vector<uint32_t>*(size_t i, std::vector<uint32_t>& scratch)> features;
};
struct BatchOptions {
  TrainMode mode = TrainMode::OnError;
  int passes = 3;  // at most; stops early after a pass without an update
  double rate = 0.02, margin = 0.35, ham_cost = 2.0;
  // The model ends as its weights' mean over the training (Model::begin_average):
  // on the benchmark split 847 spam missed at the cross-validated cutoff
  // instead of 1,036, both with no false positive.
  bool average = true;
};
// Trains `model` on the examples in `order`, pass after pass; `progress`
// (may be empty) hears each pass's number of updates.
void train_batch(Model& model, const TrainingSet& set, const std::vector<size_t>& order, const BatchOptions& options,
                 const std::function<void(int pass, size_t updates)>& progress);
// k-fold cross-validation: the examples in `order` go to `folds` folds,
// stratified (spam and good mail dealt out separately); each fold is scored
// by a copy of `start` trained on the other folds. Returns one out-of-fold
// score per example that could be read.
// `which` (may be null) receives the example index of each score.
std::vector<Scored> cross_validate(const Model& start, const TrainingSet& set, const std::vector<size_t>& order,
                                   unsigned folds, const BatchOptions& options, std::vector<size_t>* which = nullptr);

struct ReclassifyResult {
  Outcome outcome = Outcome::Ok;
  std::string code;    // not-found, expired, model-unavailable, history-unavailable ("" when Ok)
  std::string detail;  // for people
  double before = 0, after = 0;  // the message's score with the old and the new model
  Call was = Call::Ham;  // its verdict with the old model
  Verdict verdict;     // as stored (before this reclassification)
};

// Retrains the model from the features stored under `signature` until that
// message gets the verdict it was labelled with — spam at the spam cutoff,
// ham below the unsure one (DSPAM's "retrain until corrected") — saves the
// model atomically and records the operator's label. With `share` (several
// gateways, core/shared_file.h) it does so in its turn, on the newest shared
// model, and publishes the result; the store unreachable: model-unavailable.
ReclassifyResult reclassify(History& history, const std::string& model_path, const TokenizerSettings& settings,
                            const std::string& signature, bool as_spam, const CutoffOverrides& overrides,
                            SharedFile* share = nullptr);

// Learns one message the user labelled (`mailkeep spam learn`, fed by
// Dovecot's IMAPSieve when a message is moved into or out of Junk): its
// stored features when `signature` is in the history with them, else
// `tokenized` (the message as read). Trained like reclassify, under the
// lock (waiting at most `lock_wait`), and the correction goes into the
// history: on the stored verdict, or on a new row for a message that had
// none (`fallback` holds its sender and subject).
struct LearnResult {
  Outcome outcome = Outcome::Ok;
  std::string code;    // locked, model-unavailable, history-unavailable ("" when Ok)
  std::string detail;
  double before = 0, after = 0;
  Call was = Call::Ham;  // the verdict with the old model
  bool stored = false;  // the history's features were used
  std::string signature;  // the verdict the correction was recorded on
};
LearnResult learn(History* history, const std::string& model_path, const TokenizerSettings& settings,
                  const std::string& signature, const std::vector<uint32_t>& tokenized, bool as_spam,
                  const CutoffOverrides& overrides, const Verdict& fallback, std::chrono::milliseconds lock_wait,
                  SharedFile* share = nullptr);

}  // namespace mk::spam
