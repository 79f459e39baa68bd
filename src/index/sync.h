// sync.h — keeping an account's index in step with its Maildir, whoever
// changed it: mailkeep's archive copies, an IMAP client through Dovecot
// (flag renames, moves, deletions), files restored with rsync.
//
// As notmuch and mu do, a directory whose mtime is what the last scan saw
// is not read again; a directory changed within the last seconds is read
// again next time too (its mtime may hide a second change in the same tick).
// The mtimes are recorded after the directory's changes are committed, so an
// interrupted scan (even kill -9) is resumed by the next one without redoing
// or losing work. Threading: one sync per account at a time (Xapian's lock).
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "index/database.h"

namespace mk::index {

struct SyncStats {
  uint64_t added = 0, updated = 0, removed = 0, failed = 0, unchanged = 0;
  void operator+=(const SyncStats& o);
};

struct SyncProgress {
  uint64_t done = 0, total = 0;  // files to parse in this pass
};

struct SyncOptions {
  bool ignore_mtimes = false;  // read every directory
  size_t commit_every = 200;  // changes between commits (Xapian 1.4 inserts slow down as a batch grows)
  std::function<void(const SyncProgress&)> progress;  // called now and then
  const std::atomic<bool>* stop = nullptr;            // set: commit what is done and return
  std::function<void(const std::string& file, const std::string& note)> on_skip;  // unparseable file
};

// The account's folders: "INBOX" and every Maildir++ folder ("Sent", ...).
std::vector<std::string> maildir_folders(const std::string& maildir);

// Brings `db` in step with `maildir`.
SyncStats sync_maildir(Database& db, const std::string& maildir, const SyncOptions& opt);

// Indexes files just published in new/ (the archive's hook); files already
// indexed are left alone.
SyncStats index_published(Database& db, const std::string& maildir, const std::vector<MessageFile>& files,
                          const SyncOptions& opt);

}  // namespace mk::index
