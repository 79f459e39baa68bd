// spool.cpp — see spool.h.
#include "smtp/spool.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>

namespace mk::smtp {

Spool::Spool(std::string dir, size_t memory_limit) : dir_(std::move(dir)), memory_limit_(memory_limit) {}

Spool::~Spool() { clear(); }

bool Spool::spill() {
  fd_ = ::open(dir_.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd_ < 0) {
    error_ = "cannot create spool file in " + dir_ + ": " + std::strerror(errno);
    return false;
  }
  std::string_view pending = memory_;
  while (!pending.empty()) {
    ssize_t n = ::write(fd_, pending.data(), pending.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      error_ = std::string("spool write failed: ") + std::strerror(errno);
      return false;
    }
    pending.remove_prefix(n);
  }
  std::string().swap(memory_);
  return true;
}

bool Spool::append(std::string_view bytes) {
  if (!error_.empty()) return false;
  size_ += bytes.size();
  if (fd_ < 0) {
    if (memory_.size() + bytes.size() <= memory_limit_) {
      if (memory_.capacity() == 0) memory_.reserve(std::min<size_t>(memory_limit_, 16 * 1024));
      memory_.append(bytes);
      return true;
    }
    if (!spill()) return false;
  }
  while (!bytes.empty()) {
    ssize_t n = ::write(fd_, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      error_ = std::string("spool write failed: ") + std::strerror(errno);
      return false;
    }
    bytes.remove_prefix(n);
  }
  return true;
}

size_t Spool::read_at(uint64_t offset, char* buf, size_t n) const {
  if (offset >= size_) return 0;
  n = static_cast<size_t>(std::min<uint64_t>(n, size_ - offset));
  if (fd_ < 0) {
    std::memcpy(buf, memory_.data() + offset, n);
    return n;
  }
  size_t done = 0;
  while (done < n) {
    ssize_t got = ::pread(fd_, buf + done, n - done, static_cast<off_t>(offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    done += static_cast<size_t>(got);
  }
  return done;
}

void Spool::clear() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  size_ = 0;
  error_.clear();
  memory_.clear();
  if (memory_.capacity() > 64 * 1024) std::string().swap(memory_);
}

}  // namespace mk::smtp
