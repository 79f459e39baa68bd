// trainer.cpp — see trainer.h.
#include "spam/trainer.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>

namespace mk::spam {

ModelLock::ModelLock(const std::string& model_path) : ModelLock(model_path, std::chrono::milliseconds::max()) {}

ModelLock::ModelLock(const std::string& model_path, std::chrono::milliseconds wait) {
  auto lock_path = model_path + ".lock";
  fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd_ < 0) {
    error_ = "cannot open " + lock_path + ": " + std::strerror(errno);
    return;
  }
  give_to_directory_owner(fd_, lock_path);
  // Without a limit, flock blocks; with one, it polls until the deadline.
  const bool forever = wait == std::chrono::milliseconds::max();
  const auto until = forever ? std::chrono::steady_clock::time_point::max() : std::chrono::steady_clock::now() + wait;
  while (::flock(fd_, forever ? LOCK_EX : LOCK_EX | LOCK_NB) != 0) {
    if (errno == EINTR) continue;
    if (errno == EWOULDBLOCK && std::chrono::steady_clock::now() < until) {
      ::usleep(5000);
      continue;
    }
    error_ = errno == EWOULDBLOCK ? "locked: another writer holds " + lock_path
                                  : "cannot lock " + lock_path + ": " + std::strerror(errno);
    ::close(fd_);
    fd_ = -1;
    return;
  }
}

ModelLock::~ModelLock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the flock
}

std::string load_or_new(const std::string& path, const TokenizerSettings& settings, Model& out) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    out = Model(settings);
    return "";
  }
  return Model::load(path, out, settings);
}

void train_batch(Model& model, const TrainingSet& set, const std::vector<size_t>& order, const BatchOptions& options,
                 const std::function<void(int pass, size_t updates)>& progress) {
  model.learning_rate = options.rate;
  model.margin = options.margin;
  model.ham_cost = options.ham_cost;
  std::vector<uint32_t> scratch;
  if (options.average) model.begin_average();
  for (int pass = 0; pass < std::max(1, options.passes); ++pass) {
    size_t updates = 0;
    for (auto i : order) {
      if (auto* f = set.features(i, scratch)) updates += model.train(*f, set.spam[i], options.mode, /*count=*/pass == 0);
      model.tick();
    }
    if (progress) progress(pass, updates);
    if (updates == 0) break;
  }
  model.end_average();
}

std::vector<Scored> cross_validate(const Model& start, const TrainingSet& set, const std::vector<size_t>& order,
                                   unsigned folds, const BatchOptions& options, std::vector<size_t>* which) {
  std::vector<unsigned> fold(order.size());
  size_t dealt[2] = {0, 0};
  for (size_t j = 0; j < order.size(); ++j) fold[j] = unsigned(dealt[set.spam[order[j]]]++ % folds);
  std::vector<Scored> out;
  out.reserve(order.size());
  if (which) which->clear();
  std::vector<uint32_t> scratch;
  for (unsigned k = 0; k < folds; ++k) {
    std::vector<size_t> rest, held;
    for (size_t j = 0; j < order.size(); ++j) (fold[j] == k ? held : rest).push_back(order[j]);
    Model m = start;
    train_batch(m, set, rest, options, {});
    for (auto i : held)
      if (auto* f = set.features(i, scratch)) {
        out.push_back({m.score(*f), bool(set.spam[i])});
        if (which) which->push_back(i);
      }
  }
  return out;
}

namespace {

// Under `lock` (held): loads the model, learns `features` once whatever the
// score (a person confirmed the label), then again while its verdict is not
// yet the label (spam: at the spam cutoff; ham: below the unsure one) — each
// step moves the score a long way, so this ends in a few steps — and saves
// it. Returns "" or the error (the file is then as it was); `before`/`after`:
// the message's score; `was`: its verdict before. With `share`, in its turn
// (the file brought up to date first) and published after.
std::string retrain_and_save(const std::string& model_path, const TokenizerSettings& settings,
                             const std::vector<uint32_t>& features, bool as_spam, const CutoffOverrides& overrides,
                             double& before, double& after, Call& was, SharedFile* share) {
  std::unique_ptr<SharedFile::Turn> turn;
  try {
    if (share) turn = share->begin(model_path);
  } catch (const db::Error& e) {
    return std::string("the shared model: ") + e.what();
  }
  Model model(settings);
  if (auto err = load_or_new(model_path, settings, model); !err.empty()) return err;
  const Cutoffs cut = effective_cutoffs(&model, overrides.tag_score, overrides.reject_score);
  const Call want = as_spam ? Call::Spam : Call::Ham;
  before = model.score(features);
  was = call_of(before, cut);
  model.train(features, as_spam, TrainMode::Everything);
  for (int i = 0; i < 50 && call_of(model.score(features), cut) != want; ++i)
    model.train(features, as_spam, TrainMode::Everything, /*count=*/false);
  after = model.score(features);
  if (auto err = model.save(model_path); !err.empty()) return err;
  try {
    if (turn) turn->publish();
  } catch (const db::Error& e) {
    return std::string("saved, but not shared with the other gateways: ") + e.what();
  }
  return "";
}

// The results' fail(): sets outcome, code and detail, returns the result.
template <class Result>
auto failer(Result& r) {
  return [&r](Outcome o, const char* code, std::string detail) {
    r.outcome = o;
    r.code = code;
    r.detail = std::move(detail);
    return r;
  };
}

}  // namespace

ReclassifyResult reclassify(History& history, const std::string& model_path, const TokenizerSettings& settings,
                            const std::string& signature, bool as_spam, const CutoffOverrides& overrides,
                            SharedFile* share) {
  ReclassifyResult r;
  auto fail = failer(r);
  std::vector<uint32_t> features;
  std::optional<Verdict> verdict;
  try {
    verdict = history.find(signature, &features);
  } catch (const db::Error& e) {
    return fail(Outcome::TempFail, "history-unavailable", e.what());
  }
  if (!verdict) return fail(Outcome::PermFail, "not-found", "no verdict with signature " + signature);
  r.verdict = *verdict;
  if (features.empty())
    return fail(Outcome::PermFail, "expired", "the features of " + signature + " are no longer kept ([spam] signature_days)");

  ModelLock lock(model_path);
  if (!lock.error().empty()) return fail(Outcome::TempFail, "model-unavailable", lock.error());
  if (auto err = retrain_and_save(model_path, settings, features, as_spam, overrides, r.before, r.after, r.was, share);
      !err.empty())
    return fail(Outcome::TempFail, "model-unavailable", err);
  try {
    history.set_reclassified(signature, as_spam);
  } catch (const db::Error& e) {
    // The model learned it; only the label in the history is missing.
    return fail(Outcome::TempFail, "history-unavailable", std::string("model retrained, but: ") + e.what());
  }
  return r;
}

LearnResult learn(History* history, const std::string& model_path, const TokenizerSettings& settings,
                  const std::string& signature, const std::vector<uint32_t>& tokenized, bool as_spam,
                  const CutoffOverrides& overrides, const Verdict& fallback, std::chrono::milliseconds lock_wait,
                  SharedFile* share) {
  LearnResult r;
  auto fail = failer(r);
  std::vector<uint32_t> stored;
  std::optional<Verdict> verdict;
  if (history && !signature.empty()) {
    try {
      verdict = history->find(signature, &stored);
    } catch (const db::Error& e) {
      return fail(Outcome::TempFail, "history-unavailable", e.what());
    }
  }
  r.stored = verdict && !stored.empty();
  const std::vector<uint32_t>& features = r.stored ? stored : tokenized;
  {
    ModelLock lock(model_path, lock_wait);
    if (!lock.error().empty())
      return fail(Outcome::TempFail, lock.error().starts_with("locked") ? "locked" : "model-unavailable", lock.error());
    if (auto err = retrain_and_save(model_path, settings, features, as_spam, overrides, r.before, r.after, r.was, share);
        !err.empty())
      return fail(Outcome::TempFail, "model-unavailable", err);
  }
  if (!history) return r;
  try {
    if (verdict) {
      r.signature = signature;
    } else {
      // No verdict to correct: one of its own, as scored before learning, so
      // that `spam stats` counts the correction like any other.
      Verdict v = fallback;
      v.signature = make_signature(std::time(nullptr));
      v.time = std::time(nullptr);
      v.score = r.before;
      v.call = r.was;
      v.action = "learned";
      history->record(v, tokenized);
      r.signature = v.signature;
    }
    history->set_reclassified(r.signature, as_spam);
  } catch (const db::Error& e) {
    return fail(Outcome::TempFail, "history-unavailable", std::string("model retrained, but: ") + e.what());
  }
  return r;
}

}  // namespace mk::spam
