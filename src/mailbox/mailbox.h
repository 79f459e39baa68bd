// mailbox.h — an account's mail as Dovecot sees it, changed by mailkeep:
// flags, moves between folders, labels (`mailkeep archive modify`, and the
// web view next), and the import of a Google Takeout mbox.
//
// Every change is a Maildir rename that keeps the base name (a flag change is
// cur/BASE:2,FLAGS; a move is a rename into the other folder's cur/), done
// with the folder's dovecot-uidlist.lock held, as Dovecot asks of other
// writers (wiki.dovecot.org/MailboxFormat/Maildir, "Locking"): an IMAP client
// sees the change at its next sync, and no message is ever lost or doubled
// (rename is atomic; a file renamed meanwhile by Dovecot is looked up again
// under the lock). The index follows at once (relocate, labels).
// Threading: one call at a time per account (the index's write lock).
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "index/database.h"
#include "index/query.h"

namespace mk::mailbox {

struct ModifyRequest {
  std::string query;
  // Instead of the query (the web view's actions): these messages (base
  // names) and every message of these conversations. With a query too
  // (filters on new mail): the messages among `ids` that match it.
  std::vector<std::string> ids, conversations;
  std::string move_to;       // "", "INBOX", "Archive", "Trash", "Junk"
  bool only_from_inbox = false;  // --archive moves only what is in INBOX
  std::optional<bool> seen, flagged;
  std::vector<std::string> add_labels, remove_labels;
  // Bring the index up to date with the Maildir first. Off for filters on
  // mail the indexer has just indexed (each filter would sync again).
  bool sync_first = true;
};

struct ModifyResult {
  std::string error_text;  // malformed query (the parser's message) or a failure
  bool query_error = false;
  size_t messages = 0, moved = 0, flag_changes = 0, label_changes = 0;
  bool ok() const { return error_text.empty(); }
};

// Applies `req` to every message of the account that matches (after
// bringing the index up to date with `maildir`).
ModifyResult modify(index::Database& db, const std::string& maildir, const ModifyRequest& req, int64_t now);

// Dovecot's dotlock on a Maildir folder's dovecot-uidlist (O_EXCL create;
// a lock older than 2 minutes is stale, as Dovecot treats it).
class UidlistLock {
 public:
  // Waits up to `timeout_s`; locked() says whether it was taken.
  UidlistLock(const std::string& folder, int timeout_s = 30);
  ~UidlistLock();
  UidlistLock(const UidlistLock&) = delete;
  UidlistLock& operator=(const UidlistLock&) = delete;
  bool locked() const { return locked_; }

 private:
  std::string path_;
  bool locked_ = false;
};

// --- import ---

struct ImportStats {
  uint64_t imported = 0, duplicates = 0, errors = 0, files = 0;
};

struct ImportOptions {
  const std::atomic<bool>* stop = nullptr;
  std::function<void(uint64_t done_bytes, uint64_t total_bytes, const ImportStats&)> progress;
  std::function<void(const std::string& what)> on_error;
};

// An mbox file opened by the caller (before a privilege drop: the file may
// be readable by root only); import_mbox closes it.
struct MboxFile {
  std::string name;
  int fd = -1;
};

// Imports mbox files (mboxrd/mboxo, Google Takeout's X-Gmail-Labels) into
// the account's Maildir and index.
ImportStats import_mbox(index::Database& db, const std::string& maildir, const std::vector<MboxFile>& files,
                        const ImportOptions& opt);

// Gmail's labels of a Takeout message → folder ("INBOX", "Sent", "Junk",
// "Trash", "Archive"), Maildir flags and mailkeep labels.
struct GmailPlacement {
  std::string folder;
  std::string flags;  // sorted letters
  std::vector<std::string> labels;
};
GmailPlacement place_gmail_labels(const std::string& x_gmail_labels);

// Splits "a,b,\"c, d\"" the way Takeout writes X-Gmail-Labels.
std::vector<std::string> split_gmail_labels(const std::string& value);

}  // namespace mk::mailbox
