// string_content.h — a ContentSource over a string, for unit tests of code
// that reads messages (archive, delivery).
#pragma once
#include <algorithm>
#include <string>

#include "core/content.h"

namespace mk::testing {

class StringContent : public ContentSource {
 public:
  explicit StringContent(std::string s) : s_(std::move(s)) {}
  uint64_t size() const override { return s_.size(); }
  size_t read_at(uint64_t off, char* buf, size_t n) const override {
    if (off >= s_.size()) return 0;
    n = std::min<size_t>(n, s_.size() - off);
    std::copy_n(s_.data() + off, n, buf);
    return n;
  }

 private:
  std::string s_;
};

}  // namespace mk::testing
