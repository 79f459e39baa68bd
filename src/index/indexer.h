// indexer.h — the server's indexing service: one thread that keeps every
// account's index in step with the archive, off the SMTP path.
//
// Three sources of work, one queue:
//  - published(): the archive's "copy is in new/" hook (archive.h). It only
//    queues the file name and wakes the thread; the 250 never waits for the
//    index, and an index failure never changes an SMTP answer (it is logged,
//    counted, and the account retried a second later).
//  - inotify on every folder's cur/ (all changes) and new/ (files leaving
//    it), so that an IMAP client's flag renames, moves and deletions through
//    Dovecot reach the index within a second or two. Files that others
//    deliver into new/ are found by the timer.
//  - a timer: every scan_interval seconds, every account is synced
//    (directory mtimes, sync.h), and at start-up.
// The thread runs at nice 19: the SMTP workers come first, and the index
// catches up when they leave CPU time.
// Threading: published() and counters from any thread; start()/stop() from one.
#pragma once
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "index/database.h"

namespace mk::index {

struct IndexerConfig {
  std::string archive_root;  // [backup] archive
  std::string index_root;    // [index] path
  std::vector<std::string> domains;  // [backup] domains
  IndexOptions options;
  std::chrono::seconds scan_interval{60};
  // After-delivery work on the new messages of one account, run on the
  // indexer's thread with its writer (the filters, filters/filters.h): the
  // account ("example.org/alice"), its Maildir, and the base names of the
  // published files just indexed. Must not throw.
  std::function<void(Database&, const std::string& account, const std::string& maildir,
                     const std::vector<std::string>& ids)>
      after_index;
};

struct IndexerCounters {
  std::atomic<uint64_t> indexed{0}, failed{0}, errors{0}, scans{0};
  std::atomic<int64_t> last_scan{0};  // unix time of the last completed full scan
  // Published copies not indexed yet, and since when (steady clock, ns; 0 = none
  // waiting): the index lag the metrics endpoint shows.
  std::atomic<uint64_t> pending{0};
  std::atomic<int64_t> pending_since_ns{0};
};

class Indexer {
 public:
  explicit Indexer(IndexerConfig cfg);
  ~Indexer();
  Indexer(const Indexer&) = delete;
  Indexer& operator=(const Indexer&) = delete;

  void start();
  void stop();  // finishes the batch at hand, commits, joins
  // A copy was renamed into `folder`/new/`name` (folder = the Maildir path
  // the archive wrote to). Never blocks on I/O.
  void published(const std::string& folder, const std::string& name);
  const IndexerCounters& counters() const;

  struct State;

 private:
  std::unique_ptr<State> state_;
};

// "example.org/alice" and the folder ("INBOX", "Sent") of a Maildir folder
// path under `archive_root`; false when it is not an account folder.
bool account_of_folder(const std::string& archive_root, const std::string& folder, std::string& account,
                       std::string& folder_name);

// Every account directory <archive>/<domain>/<local> of the given domains.
std::vector<std::string> archive_accounts(const std::string& archive_root, const std::vector<std::string>& domains);

}  // namespace mk::index
