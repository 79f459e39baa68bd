// sync.h — one directory sync: fetch every user and group from the provider,
// turn them into the account list, compare it with the current one, and
// replace the list atomically ([directory] cache, then the running server's
// snapshot). THE place a directory entry becomes an account.
//
// Safety: nothing is replaced when the fetch fails or is partial (the last
// good list stays; an empty list would turn every inbound message into a
// 550), and a sync that would remove more than [directory] max_removal of the
// accounts is held until `mailkeep accounts sync --force`. Addresses that may
// not become archive paths or lie outside [backup] domains are refused one by
// one and logged; the rest is kept.
#pragma once
#include <sys/types.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "archive/accounts.h"
#include "config/settings.h"
#include "directory/provider.h"

namespace mk::directory {

struct SyncOptions {
  bool dry_run = false;  // compute and report, write nothing
  bool force = false;    // apply even a held removal
  // When the cache is written as root (the CLI), its owner becomes this (the server's user).
  uid_t owner_uid = uid_t(-1);
  gid_t owner_gid = gid_t(-1);
};

struct SyncReport {
  bool ok = false;    // fetched, and applied (or, dry run, would be)
  bool held = false;  // too many removals: not applied
  std::string error;
  std::vector<std::string> diff;  // "+ alice@example.org", "- bob@…", "~ carol@…"
  size_t accounts = 0, addresses = 0, added = 0, removed = 0, changed = 0, refused = 0;
  size_t pages = 0, requests = 0;
  double seconds = 0;
  std::shared_ptr<const archive::AccountList> list;  // the new list when ok
};

// Figures for /metrics, updated by every sync.
struct SyncCounters {
  std::atomic<int64_t> last_success{0}, last_error{0};  // unix seconds
  std::atomic<uint64_t> syncs{0}, failures{0}, held{0}, accounts{0};
};

// The account list from a provider's entries (refusals logged and counted).
// Consumes `entries` (their strings move into the list).
std::shared_ptr<const archive::AccountList> build_list(std::vector<DirectoryEntry>&& entries,
                                                       const std::vector<std::string>& domains, size_t& refused);

// Writes `list` to `path` atomically: a temporary file, fsync, rename, fsync
// of the directory (created when missing). Throws SyncError.
void write_list(const std::string& path, const archive::AccountList& list, const std::string& header,
                uid_t uid, gid_t gid);

class Syncer {
 public:
  Syncer(const Settings& s, std::unique_ptr<Provider> provider);
  // Fetches and compares with `current`; writes the cache unless dry_run or held.
  // Logs its one line; never throws.
  SyncReport run(const archive::AccountList& current, const SyncOptions& options);
  SyncCounters& counters() { return counters_; }

 private:
  std::string provider_name_;
  std::vector<std::string> domains_;
  std::string cache_;
  unsigned max_removal_percent_;
  std::unique_ptr<Provider> provider_;
  SyncCounters counters_;
};

}  // namespace mk::directory
