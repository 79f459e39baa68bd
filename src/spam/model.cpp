// model.cpp — see model.h.
#include "spam/model.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/fd_io.h"

namespace mk::spam {
namespace {

constexpr char kMagic[8] = {'M', 'K', 'S', 'P', 'A', 'M', '\0', '\1'};
constexpr uint32_t kFormat = 2;  // 2: a CalibrationRecord follows the header

struct Header {
  char magic[8];
  uint32_t format;
  uint32_t tokenizer_version;
  uint32_t hash_bits;
  uint32_t osb_window;
  uint32_t max_features;
  uint32_t reserved;
  uint64_t trained_spam;
  uint64_t trained_ham;
  float bias;
  uint32_t reserved2;
};

// Format 2, after the header: the calibration (all zero: none).
struct CalibrationRecord {
  double unsure;
  double spam;
  double max_fp_rate;
  double max_fn_rate;
  uint32_t present;
  uint32_t folds;
  uint32_t ham, spam_count;
  uint32_t false_positives, missed;
  uint32_t unsure_ham, unsure_spam;
};

CalibrationRecord record_of(const std::optional<Calibration>& c) {
  CalibrationRecord r{};
  if (!c) return r;
  r = {c->cutoffs.unsure, c->cutoffs.spam, c->max_fp_rate, c->max_fn_rate, 1, c->folds, c->ham, c->spam,
       c->false_positives, c->missed, c->unsure_ham, c->unsure_spam};
  return r;
}

std::optional<Calibration> calibration_of(const CalibrationRecord& r) {
  if (!r.present) return std::nullopt;
  Calibration c;
  c.cutoffs = {r.unsure, r.spam};
  c.max_fp_rate = r.max_fp_rate;
  c.max_fn_rate = r.max_fn_rate;
  c.folds = r.folds;
  c.ham = r.ham;
  c.spam = r.spam_count;
  c.false_positives = r.false_positives;
  c.missed = r.missed;
  c.unsure_ham = r.unsure_ham;
  c.unsure_spam = r.unsure_spam;
  return c;
}

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

}  // namespace

Model::Model(TokenizerSettings settings) : settings_(settings), weights_(size_t(1) << settings.hash_bits, 0.0f) {}

double Model::score(const std::vector<uint32_t>& features) const {
  // Four sums: the additions of one message do not wait on each other.
  const float* w = weights_.data();
  const uint32_t* f = features.data();
  const size_t n = features.size();
  double s0 = bias_, s1 = 0, s2 = 0, s3 = 0;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += w[f[i]];
    s1 += w[f[i + 1]];
    s2 += w[f[i + 2]];
    s3 += w[f[i + 3]];
  }
  for (; i < n; ++i) s0 += w[f[i]];
  return sigmoid((s0 + s1) + (s2 + s3));
}

bool Model::train(const std::vector<uint32_t>& features, bool is_spam, TrainMode mode, bool count) {
  double p = score(features);
  double y = is_spam ? 1.0 : 0.0;
  if (count) (is_spam ? trained_spam_ : trained_ham_)++;
  if (mode == TrainMode::OnError) {
    bool wrong_side = is_spam ? p < 0.5 : p >= 0.5;
    if (!wrong_side && std::fabs(p - 0.5) >= margin) return false;
  }
  float step = float(learning_rate * (y - p) * (is_spam ? 1.0 : ham_cost));
  for (auto f : features) weights_[f] += step;
  bias_ += step * 0.1f;
  if (!update_sum_.empty()) {
    for (auto f : features) update_sum_[f] += examples_ * step;
    bias_sum_ += examples_ * step * 0.1f;
  }
  return true;
}

void Model::begin_average() {
  update_sum_.assign(weights_.size(), 0.0);
  bias_sum_ = 0;
  examples_ = 1;
}

void Model::end_average() {
  if (update_sum_.empty()) return;
  for (size_t i = 0; i < weights_.size(); ++i) weights_[i] -= float(update_sum_[i] / examples_);
  bias_ -= float(bias_sum_ / examples_);
  std::vector<double>().swap(update_sum_);
}

void give_to_directory_owner(int fd, const std::string& path) {
  if (::geteuid() != 0) return;
  auto dir = std::filesystem::path(path).parent_path();
  struct stat st {};
  if (::stat(dir.empty() ? "." : dir.c_str(), &st) == 0 && st.st_uid != 0)
    if (::fchown(fd, st.st_uid, st.st_gid) != 0) { /* best effort: the file stays root's */ }
}

std::string Model::save(const std::string& path) const {
  Header h{};
  std::memcpy(h.magic, kMagic, sizeof kMagic);
  h.format = kFormat;
  h.tokenizer_version = settings_.version;
  h.hash_bits = settings_.hash_bits;
  h.osb_window = settings_.osb_window;
  h.max_features = settings_.max_features;
  h.trained_spam = trained_spam_;
  h.trained_ham = trained_ham_;
  h.bias = bias_;
  CalibrationRecord cal = record_of(calibration_);
  uLong crc = crc32(0, reinterpret_cast<const Bytef*>(&h), sizeof h);
  crc = crc32(crc, reinterpret_cast<const Bytef*>(&cal), sizeof cal);
  crc = crc32(crc, reinterpret_cast<const Bytef*>(weights_.data()), uInt(weights_.size() * sizeof(float)));
  uint32_t crc32v = uint32_t(crc);

  auto tmp = path + ".tmp." + std::to_string(::getpid());  // writers never share a temp file
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) return "cannot create " + tmp + ": " + std::strerror(errno);
  give_to_directory_owner(fd, path);
  bool ok = write_fully(fd, &h, sizeof h) && write_fully(fd, &cal, sizeof cal) && write_fully(fd, weights_.data(), weights_.size() * sizeof(float)) &&
            write_fully(fd, &crc32v, sizeof crc32v) && ::fsync(fd) == 0;
  int saved = errno;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return "cannot write " + path + ": " + std::strerror(ok ? errno : saved);
  }
  // The rename is durable once the directory is synced.
  auto dir = std::filesystem::path(path).parent_path();
  int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return "";
}

std::string Model::load(const std::string& path, Model& out, const TokenizerSettings& expected) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "cannot read " + path;
  Header h{};
  if (!in.read(reinterpret_cast<char*>(&h), sizeof h) || std::memcmp(h.magic, kMagic, sizeof kMagic) != 0)
    return path + ": not a mailkeep spam model";
  if (h.format != 1 && h.format != kFormat)
    return path + ": model format " + std::to_string(h.format) + " not supported";
  if (h.tokenizer_version != expected.version || h.hash_bits != expected.hash_bits ||
      h.osb_window != expected.osb_window || h.max_features != expected.max_features)
    return path + ": trained with other tokenizer settings (version " + std::to_string(h.tokenizer_version) +
           ", this mailkeep uses " + std::to_string(expected.version) +
           "); train a new one from scratch with `mailkeep spam train --fresh`";
  CalibrationRecord cal{};
  if (h.format >= 2 && !in.read(reinterpret_cast<char*>(&cal), sizeof cal)) return path + ": truncated";
  // Read straight into `out` (one 16 MB buffer, not two: this is most of a
  // batch classification's start-up).
  Model& m = out;
  m.settings_ = expected;
  m.weights_.resize(size_t(1) << expected.hash_bits);
  if (!in.read(reinterpret_cast<char*>(m.weights_.data()), std::streamsize(m.weights_.size() * sizeof(float))))
    return path + ": truncated";
  uint32_t stored = 0;
  if (!in.read(reinterpret_cast<char*>(&stored), sizeof stored)) return path + ": truncated";
  uLong crc = crc32(0, reinterpret_cast<const Bytef*>(&h), sizeof h);
  if (h.format >= 2) crc = crc32(crc, reinterpret_cast<const Bytef*>(&cal), sizeof cal);
  crc = crc32(crc, reinterpret_cast<const Bytef*>(m.weights_.data()), uInt(m.weights_.size() * sizeof(float)));
  if (uint32_t(crc) != stored) return path + ": checksum mismatch (corrupt model)";
  m.bias_ = h.bias;
  m.trained_spam_ = h.trained_spam;
  m.trained_ham_ = h.trained_ham;
  m.calibration_ = calibration_of(cal);
  return "";
}

}  // namespace mk::spam
