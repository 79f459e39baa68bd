// indexer.cpp — see indexer.h.
#include "index/indexer.h"

#include <dirent.h>
#include <poll.h>
#include <sys/resource.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "index/sync.h"

namespace mk::index {

bool account_of_folder(const std::string& root, const std::string& folder, std::string& account,
                       std::string& folder_name) {
  if (folder.size() <= root.size() + 1 || folder.compare(0, root.size(), root) != 0 || folder[root.size()] != '/')
    return false;
  std::string rel = folder.substr(root.size() + 1);
  auto s1 = rel.find('/');
  if (s1 == std::string::npos) return false;
  auto s2 = rel.find('/', s1 + 1);
  account = rel.substr(0, s2);
  if (s2 == std::string::npos) {
    folder_name = "INBOX";
    return true;
  }
  auto sub = rel.substr(s2 + 1);
  if (sub.size() < 2 || sub[0] != '.' || sub.find('/') != std::string::npos) return false;
  folder_name = sub.substr(1);
  return true;
}

std::vector<std::string> archive_accounts(const std::string& root, const std::vector<std::string>& domains) {
  std::vector<std::string> out;
  for (auto& domain : domains) {
    DIR* d = ::opendir((root + "/" + domain).c_str());
    if (!d) continue;
    while (auto* e = ::readdir(d)) {
      if (e->d_name[0] == '.') continue;
      if (e->d_type != DT_DIR && e->d_type != DT_UNKNOWN) continue;
      out.push_back(domain + "/" + e->d_name);
    }
    ::closedir(d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

struct Indexer::State {
  IndexerConfig cfg;
  IndexerCounters counters;
  std::mutex mu;
  std::map<std::string, std::vector<MessageFile>> queued;  // account → published files
  std::set<std::string> dirty;                             // accounts to sync
  std::atomic<bool> stopping{false};
  int wake_fd = -1, inotify_fd = -1;
  std::map<int, std::string> watches;  // wd → account ("" = a domain directory)
  std::map<int, std::string> watch_paths;  // wd → directory
  std::set<std::string> watched_paths;
  std::thread thread;

  void wake() {
    uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_fd, &one, sizeof one);
  }

  std::string maildir(const std::string& account) const { return cfg.archive_root + "/" + account; }
  std::string index_dir(const std::string& account) const { return cfg.index_root + "/" + account; }

  void watch(const std::string& path, uint32_t mask, const std::string& account) {
    if (inotify_fd < 0 || watched_paths.count(path)) return;
    int wd = ::inotify_add_watch(inotify_fd, path.c_str(), mask | IN_ONLYDIR);
    if (wd < 0) return;
    watches[wd] = account;
    watch_paths[wd] = path;
    watched_paths.insert(path);
  }

  void watch_account(const std::string& account) {
    auto md = maildir(account);
    watch(md, IN_CREATE | IN_MOVED_TO, account);  // new folders
    for (auto& folder : maildir_folders(md)) {
      auto base = folder == "INBOX" ? md : md + "/." + folder;
      watch(base + "/cur", IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE, account);
      watch(base + "/new", IN_MOVED_FROM | IN_DELETE, account);
    }
  }

  SyncOptions sync_options(const std::string& account) {
    SyncOptions opt;
    opt.stop = &stopping;
    opt.on_skip = [account](const std::string& file, const std::string& note) {
      spdlog::warn("index {}: {}: {}", account, file, note);
    };
    return opt;
  }

  // One account: the queued files, then (if dirty) a sync. False to retry later.
  bool work(const std::string& account, std::vector<MessageFile> files, bool sync) {
    try {
      auto db = Database::open_writable(index_dir(account), cfg.options);
      auto opt = sync_options(account);
      SyncStats st;
      if (!files.empty()) {
        st += index_published(*db, maildir(account), files, opt);
        if (cfg.after_index) {
          std::vector<std::string> ids;
          for (auto& f : files) ids.push_back(f.base());
          cfg.after_index(*db, account, maildir(account), ids);
        }
      }
      if (sync) st += sync_maildir(*db, maildir(account), opt);
      counters.indexed += st.added;
      counters.failed += st.failed;
      if (st.added + st.updated + st.removed > 0 && sync)
        spdlog::debug("index {}: {} added, {} updated, {} removed", account, st.added, st.updated, st.removed);
      if (sync) watch_account(account);
      return true;
    } catch (const IndexLocked& e) {
      spdlog::debug("index {}: {}; retrying", account, e.what());
    } catch (const std::exception& e) {
      ++counters.errors;
      spdlog::error("index {}: {}; retrying in a second", account, e.what());
    }
    // Give the files back for the retry.
    std::lock_guard lock(mu);
    auto& q = queued[account];
    q.insert(q.begin(), files.begin(), files.end());
    counters.pending += files.size();  // the caller subtracts what it handed over
    if (sync) dirty.insert(account);
    return false;
  }

  void full_scan() {
    for (auto& domain : cfg.domains) watch(cfg.archive_root + "/" + domain, IN_CREATE | IN_MOVED_TO, "");
    for (auto& account : archive_accounts(cfg.archive_root, cfg.domains)) {
      if (stopping) return;
      work(account, {}, true);
    }
    ++counters.scans;
    counters.last_scan = static_cast<int64_t>(std::time(nullptr));
  }

  void drain_inotify() {
    alignas(inotify_event) char buf[16384];
    for (;;) {
      ssize_t n = ::read(inotify_fd, buf, sizeof buf);
      if (n <= 0) return;
      std::lock_guard lock(mu);
      for (char* p = buf; p < buf + n;) {
        auto* ev = reinterpret_cast<inotify_event*>(p);
        p += sizeof(inotify_event) + ev->len;
        if (ev->mask & IN_IGNORED) {
          watches.erase(ev->wd);  // the directory went away; a scan re-adds it
          watched_paths.erase(watch_paths[ev->wd]);
          watch_paths.erase(ev->wd);
          continue;
        }
        auto it = watches.find(ev->wd);
        if (it == watches.end()) continue;
        if (it->second.empty()) {  // a new account under a domain directory
          rescan_all = true;
          continue;
        }
        dirty.insert(it->second);
      }
    }
  }
  bool rescan_all = false;

  void run() {
    using clock = std::chrono::steady_clock;
    auto next_scan = clock::now();
    while (!stopping) {
      if (clock::now() >= next_scan || rescan_all) {
        rescan_all = false;
        full_scan();
        next_scan = clock::now() + cfg.scan_interval;
      }
      std::map<std::string, std::vector<MessageFile>> batch;
      std::set<std::string> syncs;
      {
        std::lock_guard lock(mu);
        batch.swap(queued);
        syncs.swap(dirty);
      }
      bool failed = false;
      for (auto& [account, files] : batch) {
        bool sync = syncs.erase(account) > 0;
        const size_t n = files.size();
        if (!work(account, std::move(files), sync)) failed = true;
        counters.pending -= n;  // a failed account's files are queued again (and counted again)
      }
      {
        std::lock_guard lock(mu);
        counters.pending_since_ns = queued.empty() ? 0 : std::chrono::steady_clock::now().time_since_epoch().count();
      }
      for (auto& account : syncs)
        if (!work(account, {}, true)) failed = true;
      if (stopping) break;
      {
        std::lock_guard lock(mu);
        if (!queued.empty() || !dirty.empty()) {
          if (!failed) continue;
        }
      }
      auto wait_ms = failed ? 1000
                            : static_cast<int>(std::clamp<int64_t>(
                                  std::chrono::duration_cast<std::chrono::milliseconds>(next_scan - clock::now()).count(),
                                  0, 1000));
      pollfd fds[2] = {{wake_fd, POLLIN, 0}, {inotify_fd, POLLIN, 0}};
      int n = ::poll(fds, inotify_fd >= 0 ? 2 : 1, wait_ms);
      if (n > 0 && (fds[0].revents & POLLIN)) {
        uint64_t v;
        [[maybe_unused]] auto r = ::read(wake_fd, &v, sizeof v);
      }
      if (n > 0 && inotify_fd >= 0 && (fds[1].revents & POLLIN)) {
        // Let a burst of renames (an IMAP client's STORE over many messages) settle.
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        drain_inotify();
      }
    }
  }
};

Indexer::Indexer(IndexerConfig cfg) : state_(std::make_unique<State>()) { state_->cfg = std::move(cfg); }

Indexer::~Indexer() { stop(); }

void Indexer::start() {
  auto& s = *state_;
  init_mime();
  s.wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  s.inotify_fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (s.inotify_fd < 0) spdlog::warn("index: inotify unavailable; outside changes are seen every scan_interval");
  s.thread = std::thread([&s] {
    // Mail first: this thread runs at nice 19, so the SMTP workers get the
    // CPU when they want it, and the index still makes progress on a machine
    // that is never idle (SCHED_IDLE would starve it there). Under a
    // sustained full load the lag grows and is caught up as the load eases;
    // the 250s never wait.
    if (::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 19) != 0)
      spdlog::debug("index: cannot lower the indexer's priority; indexing at normal priority");
    s.run();
  });
}

void Indexer::stop() {
  auto& s = *state_;
  if (!s.thread.joinable()) return;
  s.stopping = true;
  s.wake();
  s.thread.join();
  if (s.wake_fd >= 0) ::close(s.wake_fd);
  if (s.inotify_fd >= 0) ::close(s.inotify_fd);
  s.wake_fd = s.inotify_fd = -1;
}

void Indexer::published(const std::string& folder, const std::string& name) {
  auto& s = *state_;
  std::string account, folder_name;
  if (!account_of_folder(s.cfg.archive_root, folder, account, folder_name)) return;
  {
    std::lock_guard lock(s.mu);
    if (s.queued.empty() && s.counters.pending_since_ns.load() == 0)
      s.counters.pending_since_ns = std::chrono::steady_clock::now().time_since_epoch().count();
    s.queued[account].push_back(MessageFile{folder_name, "new", name});
    ++s.counters.pending;
  }
  s.wake();
}

const IndexerCounters& Indexer::counters() const { return state_->counters; }

}  // namespace mk::index
