// corpus.cpp — see corpus.h.
#include "spam/corpus.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <memory>

namespace mk::spam {

constexpr size_t kReadBuffer = 128 * 1024;

namespace fs = std::filesystem;

std::string message_files(const std::vector<std::string>& paths, std::vector<std::string>& out) {
  for (auto& p : paths) {
    std::error_code ec;
    auto status = fs::status(p, ec);
    if (ec) return p + ": " + ec.message();
    if (fs::is_regular_file(status)) {
      out.push_back(p);
      continue;
    }
    if (!fs::is_directory(status)) return p + ": neither a message file nor a directory";
    std::vector<std::string> found;
    auto list = [&](const fs::path& dir, bool recursive) -> std::string {
      auto add = [&](const fs::directory_entry& f) {
        std::error_code fec;
        if (f.is_regular_file(fec)) found.push_back(f.path().string());
      };
      if (recursive) {
        for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) add(*it);
      } else {
        for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) add(*it);
      }
      return ec ? dir.string() + ": " + ec.message() : "";
    };
    std::string error;
    if (fs::is_directory(fs::path(p) / "cur", ec) || fs::is_directory(fs::path(p) / "new", ec)) {
      // A Maildir: its messages, not its subfolders (.Junk under INBOX is not INBOX).
      for (auto sub : {"cur", "new"})
        if (error.empty() && fs::is_directory(fs::path(p) / sub, ec)) error = list(fs::path(p) / sub, false);
    } else {
      error = list(p, true);
    }
    if (!error.empty()) return error;
    std::sort(found.begin(), found.end());
    out.insert(out.end(), found.begin(), found.end());
  }
  return "";
}

bool tokenize_file(const std::string& path, Tokenizer& tokenizer) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  struct stat st {};
  const bool regular = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  // One buffer per thread: batch classification opens thousands of files.
  thread_local std::unique_ptr<char[]> buf(new char[kReadBuffer]);
  bool first = true, ok = true;
  while (true) {
    ssize_t n = ::read(fd, buf.get(), kReadBuffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ok = n == 0;
      break;
    }
    std::string_view chunk(buf.get(), size_t(n));
    if (first && chunk.starts_with("From ")) {  // mbox separator, not part of the message
      auto nl = chunk.find('\n');
      chunk.remove_prefix(nl == std::string_view::npos ? chunk.size() : nl + 1);
    }
    first = false;
    tokenizer.feed(chunk);
    if (regular && size_t(n) < kReadBuffer) break;  // a short read of a regular file is its end: no read() for EOF
  }
  ::close(fd);
  tokenizer.finish();
  return ok;
}

}  // namespace mk::spam
