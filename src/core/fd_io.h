// fd_io.h — whole reads and writes on file descriptors (POSIX read/write
// return short counts and EINTR; every caller wants all bytes or an error).
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace mk {

// Writes all `n` bytes; false on error (errno set).
bool write_fully(int fd, const void* data, size_t n);
// Reads exactly `n` bytes; false on error or end of file before that.
bool read_fully(int fd, void* data, size_t n);
// fsync of a directory, so that a rename into it survives a crash.
bool fsync_dir(const std::string& dir);
// Replaces the file at `path` by `data` so that a reader or a crash sees the
// old file or the new one, never a part: a temporary file beside it (named
// with the pid), fsync, rename, fsync of the directory. Written by root (a
// CLI command), the file goes to the directory's owner, so that the service
// user who owns the directory can still read and replace it. Returns "" or the error.
std::string replace_file(const std::string& path, std::string_view data, unsigned mode = 0640);

}  // namespace mk
