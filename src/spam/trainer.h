// trainer.h — changing the model file: every writer (`mailkeep spam train`,
// `mailkeep spam reclassify`, the /spam page's reclassify button) holds an
// exclusive flock on MODEL.lock while it loads, trains and saves, so that two
// writers never lose each other's updates. Readers (the SMTP path) never
// take the lock: they keep scoring with the snapshot they have and pick up
// the new file when it appears (Classifier::reload_if_changed).
// Threading: blocking calls; run them off the I/O threads.
#pragma once
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "core/outcome.h"
#include "spam/history.h"
#include "spam/model.h"

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

struct ReclassifyResult {
  Outcome outcome = Outcome::Ok;
  std::string code;    // not-found, expired, model-unavailable, history-unavailable ("" when Ok)
  std::string detail;  // for people
  double before = 0, after = 0;  // the message's score with the old and the new model
  Verdict verdict;     // as stored (before this reclassification)
};

// Retrains the model from the features stored under `signature` until that
// message lands on the `as_spam` side of `tag_score` (DSPAM's "retrain until
// corrected"), saves the model atomically and records the operator's label.
ReclassifyResult reclassify(History& history, const std::string& model_path, const TokenizerSettings& settings,
                            const std::string& signature, bool as_spam, double tag_score);

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
  bool stored = false;  // the history's features were used
  std::string signature;  // the verdict the correction was recorded on
};
LearnResult learn(History* history, const std::string& model_path, const TokenizerSettings& settings,
                  const std::string& signature, const std::vector<uint32_t>& tokenized, bool as_spam,
                  double tag_score, const Verdict& fallback, std::chrono::milliseconds lock_wait);

}  // namespace mk::spam
