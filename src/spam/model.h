// model.h — the spam classifier: online logistic regression over hashed
// binary features (the model of the TREC 2007 spam track's best simple
// filters: Goodman & Yih; Sculley & Wachman), and its file.
//
// Why this model: it is discriminative (learns which features separate the
// classes, instead of multiplying per-token probabilities as Graham/Robinson
// filters like bogofilter and DSPAM do, which over-trust correlated tokens),
// it updates in O(features) per message, classifies with one pass over the
// weights, and its output sigmoid(w·x) is a probability. Training modes:
// train-everything, and train-on-error/near-error ("thick threshold": learn
// when the score is on the wrong side of 0.5 or within `margin` of it), which
// keeps the weights from saturating on easy mail.
//
// File: a versioned header (magic, format version, tokenizer settings,
// counters), the calibration (format 2: the cutoffs `spam train` chose,
// calibration.h; format 1 files load without one), the weights, and a CRC32; written to a temp file, fsynced and
// renamed, so a crash leaves the old model or the new one, never a torn one.
// Threading: a Model is not synchronised; the SMTP side classifies with an
// immutable snapshot while training works on a copy (see the spam issue).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "spam/calibration.h"
#include "spam/tokenizer.h"

namespace mk::spam {

enum class TrainMode { Everything, OnError };

class Model {
 public:
  explicit Model(TokenizerSettings settings = {});

  // Probability that the message with these features is spam.
  double score(const std::vector<uint32_t>& features) const;
  // Learns one message; returns true if the weights changed. `count`: add it
  // to the learned counts (false for a message seen again in a later pass).
  bool train(const std::vector<uint32_t>& features, bool is_spam, TrainMode mode, bool count = true);

  const TokenizerSettings& settings() const { return settings_; }
  float weight(uint32_t feature) const { return weights_[feature]; }
  float bias() const { return bias_; }
  uint64_t trained_spam() const { return trained_spam_; }
  uint64_t trained_ham() const { return trained_ham_; }
  // The cutoffs training chose (nullopt: none; Cutoffs{} apply). Kept when
  // later corrections (reclassify, learn) change the weights.
  const std::optional<Calibration>& calibration() const { return calibration_; }
  void set_calibration(std::optional<Calibration> c) { calibration_ = c; }

  // Writes atomically (tmp + fsync + rename). Returns "" or the error.
  std::string save(const std::string& path) const;
  // Loads and checks magic, version, tokenizer settings and CRC. Returns "" or
  // the error; after an error `out` holds no usable model (load into a fresh one).
  static std::string load(const std::string& path, Model& out, const TokenizerSettings& expected);

  double learning_rate = 0.02;
  double margin = 0.35;  // near-error band for TrainMode::OnError (|p - 0.5| < margin)
  // Cost-sensitive learning: a good message is learned this many times as
  // hard as a spam, because losing good mail costs more than seeing a spam
  // (on the benchmark: 8 false positives instead of 16, 154 misses instead of 111).
  double ham_cost = 2.0;

  // Averaging (batch training): between begin_average() and end_average()
  // every update is also summed, weighted by how many examples came before
  // it, and end_average() leaves the weights as their mean over the states
  // the training went through (the start, and after each example: Collins'
  // averaged perceptron, applied to logistic regression, with the sum trick
  // of Daumé, w_avg = w - u/c), which steadies the last passes' swings.
  // tick() counts one example. Memory: 8 bytes a weight while it runs.
  void begin_average();
  void tick() { ++examples_; }
  void end_average();

 private:
  TokenizerSettings settings_;
  std::vector<float> weights_;
  float bias_ = 0;
  uint64_t trained_spam_ = 0, trained_ham_ = 0;
  std::optional<Calibration> calibration_;
  std::vector<double> update_sum_;  // while averaging: the sum of examples_ × update
  double bias_sum_ = 0;
  double examples_ = 1;
};

// When root (the operator's `mailkeep spam train`) writes a file in a
// directory that belongs to the server's [general] user, the file is given to
// that user, so that the server can read it and rewrite it (reclassify).
void give_to_directory_owner(int fd, const std::string& path);

}  // namespace mk::spam
