// classifier.h — the spam verdict in the SMTP path: an immutable model
// snapshot that sessions score with, swapped when the model file changes
// (after `mailkeep spam train`), so classification never waits for training.
// Threading: all calls from any thread.
#pragma once
#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include "spam/model.h"

namespace mk::spam {

class Classifier {
 public:
  explicit Classifier(std::string model_path, TokenizerSettings settings = {});
  // Loads the file if it changed since the last look; returns false (keeping
  // the old model) when it is missing or broken, with the reason in `error`.
  bool reload_if_changed(std::string& error);
  // nullptr until a model was loaded.
  std::shared_ptr<const Model> model() const { return model_.load(); }
  const TokenizerSettings& settings() const { return settings_; }

 private:
  std::string path_;
  TokenizerSettings settings_;
  std::atomic<std::shared_ptr<const Model>> model_;
  std::mutex reload_mutex_;  // guards the file identity below
  int64_t mtime_ns_ = -1;
  int64_t size_ = -1;
  int64_t inode_ = -1;
};

}  // namespace mk::spam
