// modify.cpp — see mailbox.h: `archive modify`, the one operation that
// changes a message's state in a way IMAP clients see.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <map>
#include <thread>

#include "core/fd_io.h"
#include "core/strings.h"
#include "index/search.h"
#include "index/sync.h"
#include "mailbox/mailbox.h"

namespace mk::mailbox {
namespace {

std::string folder_path(const std::string& maildir, const std::string& folder) {
  return folder == "INBOX" ? maildir : maildir + "/." + folder;
}

// A Maildir++ folder as Dovecot creates it (cur/ new/ tmp/ and the
// maildirfolder marker), for a move into a folder that is not there yet.
// Dovecot's IMAP sessions that are already open do not list it (their
// mailbox list index is not refreshed; SELECT works); new sessions do. The
// Dovecot configuration auto-creates the special folders, so this is rare.
bool ensure_folder(const std::string& path, bool subfolder) {
  ::mkdir(path.c_str(), 0700);
  for (auto sub : {"/cur", "/new", "/tmp"}) ::mkdir((path + sub).c_str(), 0700);
  if (subfolder) {
    int fd = ::open((path + "/maildirfolder").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0) ::close(fd);
  }
  struct stat st {};
  if (::stat((path + "/cur").c_str(), &st) != 0) return false;
  return true;
}

// The current name of the file with this base name in a folder (Dovecot may
// have renamed it for a flag change since the index looked).
std::optional<index::MessageFile> find_base(const std::string& maildir, const std::string& folder,
                                            const std::string& base) {
  for (const char* sub : {"cur", "new"}) {
    auto dir = folder_path(maildir, folder) + "/" + sub;
    DIR* d = ::opendir(dir.c_str());
    if (!d) continue;
    std::optional<index::MessageFile> found;
    while (auto* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name.compare(0, base.size(), base) == 0 && (name.size() == base.size() || name.compare(base.size(), 3, ":2,") == 0)) {
        found = index::MessageFile{folder, sub, name};
        break;
      }
    }
    ::closedir(d);
    if (found) return found;
  }
  return std::nullopt;
}

std::string with_flags(const std::string& flags, char f, std::optional<bool> on) {
  std::string out = flags;
  if (!on) return out;
  auto p = out.find(f);
  if (*on && p == std::string::npos) out += f;
  if (!*on && p != std::string::npos) out.erase(p, 1);
  std::sort(out.begin(), out.end());
  return out;
}

// Maildir flag letters kept as they were, other info (lower-case letters of
// other tools) kept after them.
std::string info_of(const std::string& name) {
  auto p = name.find(":2,");
  return p == std::string::npos ? std::string() : name.substr(p + 3);
}

std::string rebuild_info(const std::string& old_info, const std::string& flags) {
  std::string extra;
  for (char c : old_info)
    if (!(c >= 'A' && c <= 'Z')) extra += c;
  return flags + extra;
}

}  // namespace

UidlistLock::UidlistLock(const std::string& folder, int timeout_s) : path_(folder + "/dovecot-uidlist.lock") {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  for (;;) {
    int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) {
      auto pid = std::to_string(::getpid()) + "\n";
      [[maybe_unused]] auto n = ::write(fd, pid.data(), pid.size());
      ::close(fd);
      locked_ = true;
      return;
    }
    if (errno != EEXIST) return;
    struct stat st {};
    if (::stat(path_.c_str(), &st) == 0 && std::time(nullptr) - st.st_mtime > 120) {
      ::unlink(path_.c_str());  // stale: its holder died
      continue;
    }
    if (std::chrono::steady_clock::now() >= deadline) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

UidlistLock::~UidlistLock() {
  if (locked_) ::unlink(path_.c_str());
}

ModifyResult modify(index::Database& db, const std::string& maildir, const ModifyRequest& req, int64_t now) {
  ModifyResult out;
  const bool filtered_ids = !req.ids.empty() && !req.query.empty() && req.conversations.empty();
  const bool by_id = !filtered_ids && (!req.ids.empty() || !req.conversations.empty());
  auto parsed = index::parse_query(by_id ? "" : req.query, now);
  if (!parsed.ok()) {
    out.error_text = parsed.error_text;
    out.query_error = true;
    return out;
  }
  // What the user sees is what the Maildir holds now.
  if (req.sync_first) index::sync_maildir(db, maildir, {});
  index::SearchResult found;
  if (by_id) {
    for (auto& id : req.ids)
      if (auto m = index::message_by_id(db, id)) found.messages.push_back(std::move(*m));
    for (auto& c : req.conversations)
      for (auto& m : index::conversation_messages(db, c)) found.messages.push_back(std::move(m));
    std::sort(found.messages.begin(), found.messages.end(), [](auto& a, auto& b) { return a.id < b.id; });
    found.messages.erase(std::unique(found.messages.begin(), found.messages.end(),
                                     [](auto& a, auto& b) { return a.id == b.id; }),
                         found.messages.end());
  } else {
    index::SearchRequest sreq{req.query, 0, static_cast<size_t>(db.message_count()) + 1, true, now};
    if (filtered_ids) sreq.only_ids = req.ids;
    found = index::search(db, sreq);
  }
  if (!found.ok()) {
    out.error_text = found.error_text;
    out.query_error = true;
    return out;
  }
  out.messages = found.messages.size();
  std::map<std::string, std::unique_ptr<UidlistLock>> locks;  // held for the whole operation
  auto lock = [&](const std::string& folder) -> bool {
    auto path = folder_path(maildir, folder);
    auto& l = locks[path];
    if (!l) l = std::make_unique<UidlistLock>(path);
    return l->locked();
  };
  std::vector<std::string> touched_dirs;
  for (auto& m : found.messages) {
    std::string target = m.file.folder;
    if (!req.move_to.empty() && (!req.only_from_inbox || m.file.folder == "INBOX")) target = req.move_to;
    std::string flags = with_flags(with_flags(m.file.flags(), 'S', req.seen), 'F', req.flagged);
    bool move = target != m.file.folder;
    bool reflag = flags != m.file.flags();
    if (move || reflag) {
      if (move && !ensure_folder(folder_path(maildir, target), target != "INBOX")) {
        out.error_text = "cannot create folder " + folder_path(maildir, target);
        break;
      }
      const std::string* unlockable = !lock(m.file.folder) ? &m.file.folder : (move && !lock(target)) ? &target : nullptr;
      if (unlockable) {
        out.error_text = "cannot lock " + folder_path(maildir, *unlockable) + "/dovecot-uidlist.lock (held for over 30 s)";
        break;
      }
      // Under the lock, the file's name is what it is now.
      auto current = m.file;
      struct stat st {};
      if (::stat((maildir + "/" + current.rel_path()).c_str(), &st) != 0) {
        auto again = find_base(maildir, m.file.folder, m.file.base());
        if (!again) continue;  // gone (expunged meanwhile): nothing to change
        current = *again;
        flags = with_flags(with_flags(current.flags(), 'S', req.seen), 'F', req.flagged);
      }
      index::MessageFile dest{target, "cur", current.base() + ":2," + rebuild_info(info_of(current.name), flags)};
      if (dest.rel_path() != current.rel_path()) {
        auto from = maildir + "/" + current.rel_path(), to = maildir + "/" + dest.rel_path();
        if (::rename(from.c_str(), to.c_str()) != 0) {
          out.error_text = "rename " + from + ": " + std::strerror(errno);
          break;
        }
        touched_dirs.push_back(folder_path(maildir, target) + "/cur");
        if (move) touched_dirs.push_back(folder_path(maildir, current.folder) + "/" + current.subdir);
        db.relocate(m.docid, dest);
        if (move) ++out.moved;
        if (reflag || current.flags() != flags) ++out.flag_changes;
      }
    }
    if (!req.add_labels.empty() || !req.remove_labels.empty()) {
      auto labels = m.labels;
      for (auto& l : req.add_labels)
        if (std::none_of(labels.begin(), labels.end(), [&](auto& x) { return iequals(x, l); })) labels.push_back(l);
      for (auto& l : req.remove_labels)
        labels.erase(std::remove_if(labels.begin(), labels.end(), [&](auto& x) { return iequals(x, l); }), labels.end());
      std::sort(labels.begin(), labels.end());
      auto old = m.labels;
      std::sort(old.begin(), old.end());
      if (labels != old) {
        db.set_labels(m.docid, labels);
        ++out.label_changes;
      }
    }
  }
  std::sort(touched_dirs.begin(), touched_dirs.end());
  touched_dirs.erase(std::unique(touched_dirs.begin(), touched_dirs.end()), touched_dirs.end());
  for (auto& d : touched_dirs) fsync_dir(d);
  locks.clear();
  db.commit();
  return out;
}

}  // namespace mk::mailbox
