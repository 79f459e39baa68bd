// content.h — read access to a message's content, wherever it is kept
// (memory or a spool file). Lets the archive and delivery code read a message
// without knowing the SMTP session's spool.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace mk {

class ContentSource {
 public:
  virtual ~ContentSource() = default;
  virtual uint64_t size() const = 0;
  // Copies up to `n` bytes at `offset`; returns the count, 0 at the end or on error.
  virtual size_t read_at(uint64_t offset, char* buf, size_t n) const = 0;
};

// Content held in memory (an mbox message being imported).
class StringContent final : public ContentSource {
 public:
  explicit StringContent(std::string_view s) : s_(s) {}
  uint64_t size() const override { return s_.size(); }
  size_t read_at(uint64_t offset, char* buf, size_t n) const override {
    if (offset >= s_.size()) return 0;
    n = std::min<size_t>(n, s_.size() - offset);
    std::memcpy(buf, s_.data() + offset, n);
    return n;
  }

 private:
  std::string_view s_;
};

}  // namespace mk
