// sync.cpp — see sync.h.
#include "directory/sync.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <unordered_set>

#include "core/fd_io.h"
#include "core/log.h"
#include "core/strings.h"

namespace mk::directory {
namespace {

// Why `address` may not be one of an account's addresses, or "".
std::string refusal(const std::string& address, const std::vector<std::string>& domains) {
  auto at = address.rfind('@');
  if (at == std::string::npos || at == 0) return "not an address";
  auto domain = address.substr(at + 1);
  if (std::find(domains.begin(), domains.end(), domain) == domains.end()) return "not in [backup] domains";
  if (!archive::valid_account_name(address.substr(0, at)))
    return "local part not allowed (letters, digits, . _ + -, no leading dot, at most 64)";
  return "";
}

std::string shown(const std::string& s) { return printable_ascii(s, 100, "\""); }

std::string now_text() { return iso8601_utc(int64_t(::time(nullptr))); }

}  // namespace

std::shared_ptr<const archive::AccountList> build_list(std::vector<DirectoryEntry>&& entries,
                                                       const std::vector<std::string>& domains, size_t& refused) {
  // Sorted by primary address: the file and the diff come out stable.
  std::sort(entries.begin(), entries.end(), [](auto& a, auto& b) { return a.primary < b.primary; });
  auto list = std::make_shared<archive::AccountList>();
  // Every primary address, so that an alias cannot claim another account's.
  std::unordered_set<std::string_view> primaries;
  size_t addresses = 0;
  for (auto& e : entries) {
    primaries.insert(e.primary);
    addresses += 1 + e.aliases.size();
  }
  list->reserve(entries.size(), addresses);
  for (auto& e : entries) {
    if (auto why = refusal(e.primary, domains); !why.empty()) {
      spdlog::warn("directory: refused address \"{}\" ({}): {}; the account is left out", shown(e.primary),
                   e.group ? "group" : "user", why);
      ++refused;
      continue;
    }
    archive::AccountEntry a;
    a.name = e.primary;
    for (auto& alias : e.aliases) {
      if (alias == e.primary || std::find(a.aliases.begin(), a.aliases.end(), alias) != a.aliases.end()) continue;
      auto why = refusal(alias, domains);
      if (why.empty() && (primaries.count(alias) || list->find_address(alias)))
        why = "already an address of another account";
      if (!why.empty()) {
        // Another domain's aliases are common (a secondary domain not backed up): not worth a warning each.
        if (why == "not in [backup] domains")
          spdlog::debug("directory: refused address \"{}\" (account {}): {}", shown(alias), e.primary, why);
        else
          spdlog::warn("directory: refused address \"{}\" (account {}): {}", shown(alias), e.primary, why);
        ++refused;
        continue;
      }
      a.aliases.push_back(std::move(alias));
    }
    if (auto err = list->add(a); !err.empty()) {
      spdlog::warn("directory: refused account \"{}\": {}", shown(e.primary), err);
      ++refused;
    }
  }
  return list;
}

void write_list(const std::string& path, const archive::AccountList& list, const std::string& header, uid_t uid,
                gid_t gid) {
  auto slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  if (slash != std::string::npos && !dir.empty()) {
    // mkdir -p, each new level handed to the server's user when run as root.
    for (size_t pos = 1; pos <= dir.size(); ++pos) {
      if (pos != dir.size() && dir[pos] != '/') continue;
      auto part = dir.substr(0, pos);
      if (::mkdir(part.c_str(), 0755) == 0 && uid != uid_t(-1) && ::geteuid() == 0) {
        if (::chown(part.c_str(), uid, gid) != 0) { /* the write below reports what matters */ }
      }
    }
  }
  auto tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw SyncError("cannot write " + tmp + ": " + std::strerror(errno));
  // Written in 64 KB pieces rather than as one string of the whole list.
  std::string text = header;
  bool ok = true;
  auto flush = [&]() {
    ok = ok && write_fully(fd, text.data(), text.size());
    text.clear();
  };
  for (size_t i = 0; i < list.size(); ++i) {
    auto e = list.at(i);
    text += e.name;
    for (size_t j = 0; j < e.aliases.size(); ++j) text.append(j ? ", " : ": ").append(e.aliases[j]);
    text += '\n';
    if (text.size() > 65536) flush();
  }
  flush();
  int saved = errno;
  if (ok && uid != uid_t(-1) && ::geteuid() == 0 && ::fchown(fd, uid, gid) != 0) { /* readable anyway: 0644 */ }
  if (ok && ::fsync(fd) != 0) ok = false, saved = errno;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    if (ok) saved = errno;
    ::unlink(tmp.c_str());
    throw SyncError("cannot write " + path + ": " + std::strerror(saved));
  }
  fsync_dir(dir);
}

Syncer::Syncer(const Settings& s, std::unique_ptr<Provider> provider)
    : provider_name_(s.directory.provider),
      domains_(s.backup.domains),
      cache_(s.directory.cache),
      max_removal_percent_(s.directory.max_removal_percent),
      provider_(std::move(provider)) {}

SyncReport Syncer::run(const archive::AccountList& current, const SyncOptions& options) {
  SyncReport r;
  auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  ++counters_.syncs;
  auto fail = [&](std::string why) {
    r.ok = false;
    r.error = std::move(why);
    r.seconds = elapsed();
    ++counters_.failures;
    counters_.last_error = int64_t(::time(nullptr));
    spdlog::error("directory sync failed: {}; keeping the last good list ({} accounts)", r.error, current.size());
    return r;
  };
  FetchResult fetched;
  try {
    fetched = provider_->fetch();
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  r.pages = fetched.pages;
  r.requests = fetched.requests;
  auto list = build_list(std::move(fetched.entries), domains_, r.refused);
  fetched.entries = {};
  if (list->size() == 0 && current.size() > 0) return fail("the directory listed no account we keep");

  // The diff, by account address, looked up in the two lists themselves (a
  // directory of 50,000 accounts is not copied again for it). A name without
  // '@' (a hand-written list's form) stands for the account in each backup domain.
  auto before_aliases = [&](std::string_view address) -> std::optional<archive::EntryView> {
    if (auto e = current.entry(address)) return e;
    return current.entry(address.substr(0, address.find('@')));
  };
  auto same = [](std::span<const std::string_view> a, std::span<const std::string_view> b) {
    return std::equal(a.begin(), a.end(), b.begin(), b.end());
  };
  size_t before_count = 0;
  for (size_t i = 0; i < list->size(); ++i) {
    auto e = list->at(i);
    r.addresses += 1 + e.aliases.size();
    auto old = before_aliases(e.name);
    if (!old) {
      r.diff.push_back("+ " + std::string(e.name));
      ++r.added;
    } else if (!same(old->aliases, e.aliases)) {
      r.diff.push_back("~ " + std::string(e.name));
      ++r.changed;
    }
  }
  auto removed = [&](const std::string& address) {
    ++before_count;
    if (list->entry(address)) return;
    r.diff.push_back("- " + address);
    ++r.removed;
  };
  for (size_t i = 0; i < current.size(); ++i) {
    auto e = current.at(i);
    if (e.name.find('@') != std::string_view::npos) removed(std::string(e.name));
    else
      for (auto& d : domains_) removed(std::string(e.name) + "@" + d);
  }
  std::sort(r.diff.begin(), r.diff.end(),
            [](auto& a, auto& b) { return std::string_view(a).substr(2) < std::string_view(b).substr(2); });
  r.accounts = list->size();
  counters_.accounts = before_count;

  auto line = [&](const char* what) {
    spdlog::info("directory sync{}: provider={} accounts={} addresses={} added={} removed={} changed={} refused={} "
                 "duration={:.2f}s pages={} requests={}",
                 what, provider_name_, r.accounts, r.addresses, r.added, r.removed, r.changed, r.refused, elapsed(),
                 r.pages, r.requests);
  };
  if (before_count && r.removed * 100 > before_count * max_removal_percent_ && !options.force) {
    r.held = true;
    r.seconds = elapsed();
    ++counters_.held;
    counters_.last_error = int64_t(::time(nullptr));
    spdlog::warn("directory sync held: would remove {} of {} accounts (more than max_removal {}%); the list stays "
                 "until mailkeep accounts sync --force",
                 r.removed, before_count, max_removal_percent_);
    return r;
  }
  if (!options.dry_run && (r.added || r.removed || r.changed || current.size() == 0)) {
    try {
      write_list(cache_, *list,
                 "# mailkeep accounts from the " + provider_name_ + " directory, " + now_text() +
                     "; rewritten by every sync\n",
                 options.owner_uid, options.owner_gid);
    } catch (const std::exception& e) {
      return fail(e.what());
    }
  }
  r.ok = true;
  r.list = std::move(list);
  r.seconds = elapsed();
  counters_.last_success = int64_t(::time(nullptr));
  counters_.accounts = r.accounts;
  line(options.dry_run ? " (dry run)" : "");
  return r;
}

}  // namespace mk::directory
