// sync.cpp — see sync.h.
#include "index/sync.h"

#include <dirent.h>
#include <sys/stat.h>

#include <condition_variable>
#include <ctime>
#include <deque>
#include <mutex>
#include <thread>
#include <algorithm>
#include <map>
#include <unordered_map>

namespace mk::index {
namespace {

struct DirState {
  std::string key;   // "INBOX/cur"
  std::string path;  // on disk
  std::string mtime;  // "sec.nsec", empty when the directory is missing
  bool recent = false;  // changed within the last seconds: do not trust its mtime yet
};

std::string mtime_of(const std::string& path, bool& recent, int64_t now) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return {};
  recent = st.st_mtim.tv_sec >= now - 2;
  return std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec);
}

std::vector<std::string> list_files(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (auto* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    if (e->d_type != DT_REG && e->d_type != DT_UNKNOWN) continue;
    out.emplace_back(e->d_name);
  }
  ::closedir(d);
  return out;
}

}  // namespace

void SyncStats::operator+=(const SyncStats& o) {
  added += o.added;
  updated += o.updated;
  removed += o.removed;
  failed += o.failed;
  unchanged += o.unchanged;
}

std::vector<std::string> maildir_folders(const std::string& maildir) {
  std::vector<std::string> out{"INBOX"};
  DIR* d = ::opendir(maildir.c_str());
  if (!d) return out;
  while (auto* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.size() < 2 || name[0] != '.' || name == "..") continue;
    struct stat st {};
    if (::stat((maildir + "/" + name + "/cur").c_str(), &st) != 0 &&
        ::stat((maildir + "/" + name + "/new").c_str(), &st) != 0)
      continue;  // not a Maildir++ folder
    out.push_back(name.substr(1));
  }
  ::closedir(d);
  return out;
}

SyncStats sync_maildir(Database& db, const std::string& maildir, const SyncOptions& opt) {
  SyncStats stats;
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  std::vector<DirState> dirs;
  std::map<std::string, bool> seen_keys;
  for (auto& folder : maildir_folders(maildir)) {
    for (const char* sub : {"new", "cur"}) {
      DirState d;
      d.key = folder + "/" + sub;
      d.path = maildir + "/" + (folder == "INBOX" ? std::string() : "." + folder + "/") + sub;
      d.mtime = mtime_of(d.path, d.recent, now);
      if (d.mtime.empty()) continue;
      seen_keys[d.key] = true;
      dirs.push_back(std::move(d));
    }
  }
  for (auto& key : db.dir_keys())  // folders that went away
    if (!seen_keys.count(key)) dirs.push_back({key, "", "", false});

  // Only the directories that changed since the last scan.
  std::vector<DirState*> changed;
  for (auto& d : dirs)
    if (opt.ignore_mtimes || d.mtime.empty() || d.recent || db.metadata("mtime:" + d.key) != d.mtime)
      changed.push_back(&d);
  if (changed.empty()) return stats;

  std::unordered_map<std::string, MessageFile> present;            // base → file on disk
  std::unordered_map<std::string, std::pair<uint32_t, MessageFile>> indexed;  // base → where the index has it
  for (auto* d : changed) {
    auto slash = d->key.find('/');
    std::string folder = d->key.substr(0, slash), sub = d->key.substr(slash + 1);
    if (!d->path.empty())
      for (auto& name : list_files(d->path)) {
        MessageFile f{folder, sub, name};
        present[f.base()] = std::move(f);
      }
    for (auto& [docid, f] : db.files_in(d->key)) indexed[f.base()] = {docid, f};
  }

  std::vector<const MessageFile*> to_add;
  for (auto& [base, f] : present) {
    auto it = indexed.find(base);
    if (it != indexed.end()) {
      if (it->second.second.rel_path() != f.rel_path()) {
        db.relocate(it->second.first, f);
        ++stats.updated;
      } else {
        ++stats.unchanged;
      }
      continue;
    }
    if (auto docid = db.find(base)) {  // indexed in a directory that did not change: moved here
      db.relocate(*docid, f);
      ++stats.updated;
      continue;
    }
    to_add.push_back(&f);
  }
  for (auto& [base, where] : indexed) {
    if (present.count(base)) continue;
    db.remove(where.first);
    ++stats.removed;
  }
  // Oldest first, so that conversations form as they did in time.
  std::sort(to_add.begin(), to_add.end(), [](auto* a, auto* b) { return a->name < b->name; });
  SyncProgress progress{0, to_add.size()};
  auto inserted = [&](PreparedMessage&& pm, bool ok) {
    if (ok) {
      ++stats.added;
      if (!pm.note.empty() && opt.on_skip) opt.on_skip(pm.file.rel_path(), "indexed in part: " + pm.note);
      db.insert(std::move(pm));
    } else {
      ++stats.failed;
      if (opt.on_skip) opt.on_skip(pm.file.rel_path(), pm.note);
    }
    ++progress.done;
    if (db.changes_since_commit() >= opt.commit_every) db.commit();
    if (opt.progress && (progress.done % 200 == 0)) opt.progress(progress);
  };
  if (to_add.size() < 32) {
    DocumentBuilder builder(db.options());
    for (auto* f : to_add) {
      if (opt.stop && opt.stop->load()) break;
      PreparedMessage pm;
      bool ok = builder.build(maildir, *f, pm);
      inserted(std::move(pm), ok);
    }
  } else {
    // Two cores: one thread parses and builds documents while this one
    // inserts them (Xapian has one writer per database).
    struct Item {
      PreparedMessage pm;
      bool ok;
    };
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Item> queue;
    bool done = false;
    std::atomic<bool> cancel{false};
    std::thread producer([&] {
      DocumentBuilder builder(db.options());
      for (auto* f : to_add) {
        if (cancel || (opt.stop && opt.stop->load())) break;
        Item item;
        item.ok = builder.build(maildir, *f, item.pm);
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return queue.size() < 64 || cancel; });
        queue.push_back(std::move(item));
        cv.notify_all();
      }
      std::lock_guard lock(mu);
      done = true;
      cv.notify_all();
    });
    try {
      for (;;) {
        Item item;
        {
          std::unique_lock lock(mu);
          cv.wait(lock, [&] { return !queue.empty() || done; });
          if (queue.empty()) break;
          item = std::move(queue.front());
          queue.pop_front();
          cv.notify_all();
        }
        inserted(std::move(item.pm), item.ok);
      }
    } catch (...) {
      cancel = true;
      cv.notify_all();
      producer.join();
      throw;
    }
    producer.join();
  }
  if (opt.progress) opt.progress(progress);
  db.commit();
  if (opt.stop && opt.stop->load()) return stats;  // mtimes unrecorded: the next scan finishes
  for (auto* d : changed) {
    if (d->mtime.empty() || d->recent) continue;
    db.set_metadata("mtime:" + d->key, d->mtime);
  }
  db.commit();
  return stats;
}

SyncStats index_published(Database& db, const std::string& maildir, const std::vector<MessageFile>& files,
                          const SyncOptions& opt) {
  SyncStats stats;
  for (auto& f : files) {
    if (db.find(f.base())) {
      ++stats.unchanged;
      continue;
    }
    struct stat st {};
    if (::stat((maildir + "/" + f.rel_path()).c_str(), &st) != 0) continue;  // already moved on: the scan finds it
    std::string note;
    if (db.add(maildir, f, note)) {
      ++stats.added;
      if (!note.empty() && opt.on_skip) opt.on_skip(f.rel_path(), "indexed in part: " + note);
    } else {
      ++stats.failed;
      if (opt.on_skip) opt.on_skip(f.rel_path(), note);
    }
  }
  db.commit();
  return stats;
}

}  // namespace mk::index
