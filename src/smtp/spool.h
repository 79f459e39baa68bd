// spool.h — where one message's content waits between the client's final dot
// and the upstream's reply. Small messages stay in memory; past a threshold
// the content moves to an unlinked temporary file, so memory per session is
// bounded whatever the message size (a 100 MB message costs the threshold).
//
// Threading: one session owns one Spool; no locking.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include "core/content.h"

namespace mk::smtp {

class Spool final : public ContentSource {
 public:
  // `dir`: where the temporary file is created (O_TMPFILE, never visible).
  Spool(std::string dir, size_t memory_limit);
  ~Spool() override;
  Spool(const Spool&) = delete;
  Spool& operator=(const Spool&) = delete;

  // Appends content; returns false (and sets error()) when the file write fails.
  bool append(std::string_view bytes);
  uint64_t size() const override { return size_; }
  // Copies up to `n` bytes at `offset` into `buf`; returns the count, 0 at the end.
  size_t read_at(uint64_t offset, char* buf, size_t n) const override;
  // Forgets the content and releases memory and the file.
  void clear();
  const std::string& error() const { return error_; }
  bool in_memory() const { return fd_ < 0; }

 private:
  bool spill();
  std::string dir_;
  size_t memory_limit_;
  std::string memory_;
  int fd_ = -1;
  uint64_t size_ = 0;
  std::string error_;
};

}  // namespace mk::smtp
