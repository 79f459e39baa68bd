// corpus.cpp — see corpus.h.
#include "spam/corpus.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

namespace mk::spam {

namespace fs = std::filesystem;

std::vector<std::string> message_files(const std::vector<std::string>& paths) {
  std::vector<std::string> out;
  for (auto& p : paths) {
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) {
      out.push_back(p);
      continue;
    }
    if (!fs::is_directory(p, ec)) continue;
    std::vector<std::string> found;
    bool maildir = fs::is_directory(fs::path(p) / "cur", ec) || fs::is_directory(fs::path(p) / "new", ec);
    if (maildir) {
      for (auto sub : {"cur", "new"})
        for (auto& f : fs::directory_iterator(fs::path(p) / sub, ec))
          if (f.is_regular_file(ec)) found.push_back(f.path().string());
    } else {
      for (auto& f : fs::recursive_directory_iterator(p, fs::directory_options::skip_permission_denied, ec))
        if (f.is_regular_file(ec)) found.push_back(f.path().string());
    }
    std::sort(found.begin(), found.end());
    out.insert(out.end(), found.begin(), found.end());
  }
  return out;
}

bool tokenize_file(const std::string& path, Tokenizer& tokenizer) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::string buf(64 * 1024, '\0');
  bool first = true;
  while (in.read(buf.data(), std::streamsize(buf.size())) || in.gcount() > 0) {
    std::string_view chunk(buf.data(), size_t(in.gcount()));
    if (first && chunk.starts_with("From ")) {  // mbox separator, not part of the message
      auto nl = chunk.find('\n');
      chunk.remove_prefix(nl == std::string_view::npos ? chunk.size() : nl + 1);
    }
    first = false;
    tokenizer.feed(chunk);
  }
  tokenizer.finish();
  return true;
}

}  // namespace mk::spam
