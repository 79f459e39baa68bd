// content.h — read access to a message's content, wherever it is kept
// (memory or a spool file). Lets the archive and delivery code read a message
// without knowing the SMTP session's spool.
#pragma once
#include <cstddef>
#include <cstdint>

namespace mk {

class ContentSource {
 public:
  virtual ~ContentSource() = default;
  virtual uint64_t size() const = 0;
  // Copies up to `n` bytes at `offset`; returns the count, 0 at the end or on error.
  virtual size_t read_at(uint64_t offset, char* buf, size_t n) const = 0;
};

}  // namespace mk
