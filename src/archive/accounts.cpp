// accounts.cpp — see accounts.h.
#include "archive/accounts.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <fstream>

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

bool valid_account_domain(std::string_view d) {
  if (d.empty() || d.size() > 253 || d.front() == '.' || d.back() == '.' || d.front() == '-' ||
      d.find("..") != std::string_view::npos)
    return false;
  for (unsigned char c : d)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.')) return false;
  return true;
}

namespace {

// "" when `name` is "local" or "local@domain" with both parts valid.
std::string check_name(std::string_view name) {
  auto at = name.find('@');
  auto local = name.substr(0, at);
  if (!valid_account_name(local))
    return "invalid local part (allowed: letters, digits, . _ + -, no leading dot, at most 64)";
  if (at != std::string_view::npos && !valid_account_domain(name.substr(at + 1))) return "invalid domain";
  return "";
}

}  // namespace

std::string_view AccountList::intern(std::string_view s) {
  if (chunk_used_ + s.size() > chunk_size_) {
    chunk_size_ = std::max<size_t>(64 * 1024, s.size());
    chunks_.push_back(std::make_unique<char[]>(chunk_size_));
    chunk_used_ = 0;
  }
  char* p = chunks_.back().get() + chunk_used_;
  std::copy(s.begin(), s.end(), p);
  chunk_used_ += s.size();
  return {p, s.size()};
}

void AccountList::reserve(size_t accounts, size_t addresses) {
  entries_.reserve(accounts);
  aliases_.reserve(addresses > accounts ? addresses - accounts : 0);
  exact_.reserve(addresses);
}

std::string AccountList::add(const AccountEntry& e) {
  if (auto err = check_name(e.name); !err.empty()) return "'" + printable_ascii(e.name, 80) + "': " + err;
  for (auto& a : e.aliases)
    if (auto err = check_name(a); !err.empty()) return "alias '" + printable_ascii(a, 80) + "': " + err;
  auto taken = [&](const std::string& key, size_t upto) {
    auto& map = key.find('@') == std::string::npos ? local_ : exact_;
    if (map.count(key)) return true;
    for (size_t j = 0; j < upto; ++j)
      if (e.aliases[j] == key) return true;
    return false;
  };
  if (taken(e.name, 0)) return "'" + e.name + "' is listed twice";
  for (size_t i = 0; i < e.aliases.size(); ++i)
    if (taken(e.aliases[i], i) || e.aliases[i] == e.name) return "'" + e.aliases[i] + "' is listed twice";
  auto index = uint32_t(entries_.size());
  auto key = [&](std::string_view k) { (k.find('@') == std::string_view::npos ? local_ : exact_)[k] = index; };
  Stored stored{intern(e.name), uint32_t(aliases_.size()), uint32_t(e.aliases.size())};
  key(stored.name);
  for (auto& a : e.aliases) {
    aliases_.push_back(intern(a));
    key(aliases_.back());
  }
  entries_.push_back(stored);
  return "";
}

std::optional<EntryView> AccountList::entry(std::string_view name) const {
  auto& map = name.find('@') == std::string_view::npos ? local_ : exact_;
  auto it = map.find(name);
  if (it == map.end() || entries_[it->second].name != name) return std::nullopt;
  return at(it->second);
}

std::vector<AccountEntry> AccountList::to_entries() const {
  std::vector<AccountEntry> out;
  for (size_t i = 0; i < size(); ++i) {
    auto v = at(i);
    out.push_back({std::string(v.name), {v.aliases.begin(), v.aliases.end()}});
  }
  return out;
}

std::optional<Account> AccountList::account_of(size_t index, std::string_view domain) const {
  auto name = entries_[index].name;
  auto at = name.find('@');
  if (at == std::string_view::npos) return Account{std::string(name), std::string(domain), true};
  return Account{std::string(name.substr(0, at)), std::string(name.substr(at + 1)), false};
}

std::optional<Account> AccountList::find(std::string_view local, std::string_view domain) const {
  std::string address;
  address.reserve(local.size() + 1 + domain.size());
  address.append(local).append("@").append(domain);
  if (auto it = exact_.find(address); it != exact_.end()) return account_of(it->second, domain);
  if (auto it = local_.find(local); it != local_.end()) return account_of(it->second, domain);
  return std::nullopt;
}

std::string AccountList::format() const {
  std::string out;
  for (size_t i = 0; i < size(); ++i) {
    auto e = at(i);
    out += e.name;
    for (size_t j = 0; j < e.aliases.size(); ++j) out.append(j ? ", " : ": ").append(e.aliases[j]);
    out += "\n";
  }
  return out;
}

AccountsParse parse_accounts(std::string_view text, const std::string& name) {
  auto list = std::make_shared<AccountList>();
  int line_no = 0;
  while (!text.empty()) {
    ++line_no;
    auto eol = text.find('\n');
    auto line = text.substr(0, eol);
    text.remove_prefix(eol == std::string_view::npos ? text.size() : eol + 1);
    if (auto hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
    line = trim(line);
    if (line.empty()) continue;
    AccountEntry e;
    auto colon = line.find(':');
    e.name = to_lower(trim(line.substr(0, colon)));
    if (colon != std::string_view::npos) {
      e.aliases = split_list(to_lower(line.substr(colon + 1)));
    }
    if (auto err = list->add(e); !err.empty())
      return {nullptr, name + ":" + std::to_string(line_no) + ": " + err};
  }
  return {std::move(list), ""};
}

AccountDirectory::AccountDirectory(std::string path, bool until_loaded)
    : until_loaded_(until_loaded), path_(std::move(path)) {
  accounts_.store(std::make_shared<const AccountList>());
}

bool AccountDirectory::reload(bool force) {
  std::lock_guard lock(reload_mutex_);
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
  std::string text(size_t(std::max<off_t>(st.st_size, 0)), '\0');  // read once, not copied again
  in.read(text.data(), std::streamsize(text.size()));
  if (!in || in.gcount() != std::streamsize(text.size())) {
    spdlog::error("accounts file {}: cannot read; keeping {} accounts", path_, snapshot()->size());
    return false;
  }
  auto parsed = parse_accounts(text, path_);
  if (!parsed.accounts) {
    spdlog::error("accounts file broken: {}; keeping the last good list ({} accounts)", parsed.error,
                  snapshot()->size());
    return false;
  }
  spdlog::info("accounts file {}: {} accounts", path_, parsed.accounts->size());
  accounts_.store(std::move(parsed.accounts));
  loaded_ = true;
  return true;
}

void AccountDirectory::replace(std::shared_ptr<const AccountList> list) {
  std::lock_guard lock(reload_mutex_);
  accounts_.store(std::move(list));
  loaded_ = true;
  // The file now holds this list: the next reload() need not read it again.
  struct stat st {};
  if (::stat(path_.c_str(), &st) == 0) {
    inode_ = st.st_ino;
    size_ = st.st_size;
    mtime_ns_ = int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  }
}

}  // namespace mk::archive
