// fd_io.h — whole reads and writes on file descriptors (POSIX read/write
// return short counts and EINTR; every caller wants all bytes or an error).
#pragma once
#include <cstddef>
#include <string>

namespace mk {

// Writes all `n` bytes; false on error (errno set).
bool write_fully(int fd, const void* data, size_t n);
// Reads exactly `n` bytes; false on error or end of file before that.
bool read_fully(int fd, void* data, size_t n);
// fsync of a directory, so that a rename into it survives a crash.
bool fsync_dir(const std::string& dir);

}  // namespace mk
