// classifier.cpp — see classifier.h.
#include "spam/classifier.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>

namespace mk::spam {

Classifier::Classifier(std::string model_path, TokenizerSettings settings)
    : path_(std::move(model_path)), settings_(settings) {}

bool Classifier::reload_if_changed(std::string& error) {
  std::lock_guard lock(reload_mutex_);
  struct stat st {};
  if (::stat(path_.c_str(), &st) != 0) {
    error = "cannot read " + path_ + ": " + std::strerror(errno);
    return false;
  }
  int64_t mtime_ns = int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  if (mtime_ns == mtime_ns_ && st.st_size == size_ && int64_t(st.st_ino) == inode_ && model_.load()) return true;
  auto fresh = std::make_shared<Model>(settings_);
  error = Model::load(path_, *fresh, settings_);
  if (!error.empty()) return false;
  mtime_ns_ = mtime_ns;
  size_ = st.st_size;
  inode_ = int64_t(st.st_ino);  // every save is a rename: a new inode
  model_.store(std::move(fresh));
  return true;
}

}  // namespace mk::spam
