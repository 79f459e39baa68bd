// sync.cpp — see sync.h.
#include "directory/sync.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <map>
#include <set>

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

std::shared_ptr<const archive::AccountList> build_list(const std::vector<DirectoryEntry>& entries,
                                                       const std::vector<std::string>& domains, size_t& refused) {
  // Sorted by primary address: the file and the diff come out stable.
  std::vector<const DirectoryEntry*> order;
  order.reserve(entries.size());
  for (auto& e : entries) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->primary < b->primary; });
  auto list = std::make_shared<archive::AccountList>();
  std::set<std::string> taken;
  for (auto& e : order) taken.insert(e->primary);
  for (auto* e : order) {
    if (auto why = refusal(e->primary, domains); !why.empty()) {
      spdlog::warn("directory: refused address \"{}\" ({}): {}; the account is left out", shown(e->primary),
                   e->group ? "group" : "user", why);
      ++refused;
      continue;
    }
    archive::AccountEntry a;
    a.name = e->primary;
    std::set<std::string> mine;
    for (auto& alias : e->aliases) {
      if (alias == e->primary || mine.count(alias)) continue;
      auto why = refusal(alias, domains);
      if (why.empty() && taken.count(alias)) why = "already an address of another account";
      if (!why.empty()) {
        // Another domain's aliases are common (a secondary domain not backed up): not worth a warning each.
        if (why == "not in [backup] domains")
          spdlog::debug("directory: refused address \"{}\" (account {}): {}", shown(alias), e->primary, why);
        else
          spdlog::warn("directory: refused address \"{}\" (account {}): {}", shown(alias), e->primary, why);
        ++refused;
        continue;
      }
      mine.insert(alias);
      a.aliases.push_back(alias);
    }
    for (auto& m : mine) taken.insert(m);
    if (auto err = list->add(std::move(a)); !err.empty()) {
      spdlog::warn("directory: refused account \"{}\": {}", shown(e->primary), err);
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
  auto text = header + list.format();
  const char* p = text.data();
  size_t left = text.size();
  bool ok = true;
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ok = false;
      break;
    }
    p += n;
    left -= size_t(n);
  }
  int saved = errno;
  if (ok && uid != uid_t(-1) && ::geteuid() == 0 && ::fchown(fd, uid, gid) != 0) { /* readable anyway: 0644 */ }
  if (ok && ::fsync(fd) != 0) ok = false, saved = errno;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    if (ok) saved = errno;
    ::unlink(tmp.c_str());
    throw SyncError("cannot write " + path + ": " + std::strerror(saved));
  }
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
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
  auto list = build_list(fetched.entries, domains_, r.refused);
  if (list->size() == 0 && current.size() > 0) return fail("the directory listed no account we keep");

  // The diff, by account address. A name without '@' (a hand-written list's
  // form) stands for the account in each backup domain.
  std::map<std::string, std::vector<std::string>> before, after;
  for (auto& e : current.entries()) {
    if (e.name.find('@') != std::string::npos) {
      before[e.name] = e.aliases;
    } else {
      for (auto& d : domains_) before[e.name + "@" + d] = e.aliases;
    }
  }
  for (auto& e : list->entries()) {
    after[e.name] = e.aliases;
    r.addresses += 1 + e.aliases.size();
  }
  for (auto& [name, aliases] : after) {
    auto it = before.find(name);
    if (it == before.end()) {
      r.diff.push_back("+ " + name);
      ++r.added;
    } else if (it->second != aliases) {
      r.diff.push_back("~ " + name);
      ++r.changed;
    }
  }
  for (auto& [name, aliases] : before)
    if (!after.count(name)) {
      r.diff.push_back("- " + name);
      ++r.removed;
    }
  std::sort(r.diff.begin(), r.diff.end(), [](auto& a, auto& b) { return a.substr(2) < b.substr(2); });
  r.accounts = list->size();
  counters_.accounts = before.size();

  auto line = [&](const char* what) {
    spdlog::info("directory sync{}: provider={} accounts={} addresses={} added={} removed={} changed={} refused={} "
                 "pages={} requests={} duration={:.2f}s",
                 what, provider_name_, r.accounts, r.addresses, r.added, r.removed, r.changed, r.refused, r.pages,
                 r.requests, elapsed());
  };
  if (!before.empty() && r.removed * 100 > before.size() * max_removal_percent_ && !options.force) {
    r.held = true;
    r.seconds = elapsed();
    ++counters_.held;
    counters_.last_error = int64_t(::time(nullptr));
    spdlog::warn("directory sync held: would remove {} of {} accounts (more than max_removal {}%); the list stays "
                 "until mailkeep accounts sync --force",
                 r.removed, before.size(), max_removal_percent_);
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
