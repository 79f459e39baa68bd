// accounts.cpp — see accounts.h.
#include "archive/accounts.h"

#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "core/log.h"
#include "core/strings.h"

namespace mk::archive {

bool valid_account_name(std::string_view name) {
  if (name.empty() || name.size() > 64 || name.front() == '.') return false;
  for (unsigned char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '+' || c == '-';
    if (!ok) return false;
  }
  return name.find("..") == std::string_view::npos;
}

AccountsParse parse_accounts(std::string_view text, const std::string& name) {
  auto set = std::make_shared<AccountSet>();
  int line_no = 0;
  while (!text.empty()) {
    ++line_no;
    auto eol = text.find('\n');
    auto line = text.substr(0, eol);
    text.remove_prefix(eol == std::string_view::npos ? text.size() : eol + 1);
    if (auto hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
    line = trim(line);
    if (line.empty()) continue;
    auto lower = to_lower(line);
    if (!valid_account_name(lower))
      return {nullptr, name + ":" + std::to_string(line_no) +
                           ": invalid local part (allowed: letters, digits, . _ + -, no leading dot, at most 64)"};
    set->insert(std::move(lower));
  }
  return {std::move(set), ""};
}

AccountDirectory::AccountDirectory(std::string path) : path_(std::move(path)) {
  accounts_.store(std::make_shared<const AccountSet>());
}

bool AccountDirectory::reload(bool force) {
  struct stat st {};
  if (::stat(path_.c_str(), &st) != 0) {
    if (force || size_ != -2) spdlog::error("accounts file {}: cannot read ({}); keeping {} accounts", path_,
                                            std::strerror(errno), snapshot()->size());
    size_ = -2;  // log a missing file once, not every interval
    return false;
  }
  int64_t mtime_ns = int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  if (!force && st.st_ino == inode_ && st.st_size == size_ && mtime_ns == mtime_ns_) return true;
  inode_ = st.st_ino;
  size_ = st.st_size;
  mtime_ns_ = mtime_ns;

  std::ifstream in(path_, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) {
    spdlog::error("accounts file {}: cannot read; keeping {} accounts", path_, snapshot()->size());
    return false;
  }
  auto parsed = parse_accounts(text.str(), path_);
  if (!parsed.accounts) {
    spdlog::error("accounts file broken: {}; keeping the last good list ({} accounts)", parsed.error,
                  snapshot()->size());
    return false;
  }
  spdlog::info("accounts file {}: {} accounts", path_, parsed.accounts->size());
  accounts_.store(std::move(parsed.accounts));
  return true;
}

bool AccountDirectory::contains(std::string_view local_part) const {
  auto set = snapshot();
  return set->count(to_lower(local_part)) > 0;
}

}  // namespace mk::archive
