// accounts.h — the archived accounts of the backup domains, and the
// addresses that belong to each: who a backup-domain recipient is.
//
// The list comes from the [backup] accounts file, or, with [directory]
// provider = google | microsoft, from the synced copy that directory/ writes
// in the same format. Lines:
//   alice                                   alice@ every backup domain
//   alice: sales, info                      sales@D and info@D are alice@D, for each backup domain D
//   alice@example.org: sales@example.com    exact addresses (what a directory sync writes)
//   alice@example.org: sales                sales@ of every backup domain is alice@example.org
// An alias never has a Maildir of its own: its mail lands in its account's.
// The file is re-read when it changes (checked every [backup] reload_interval),
// without restart and without disturbing sessions: readers get an immutable
// snapshot. A broken file (unreadable, or any invalid line) keeps the last
// good list; the log says which line and why.
// A local part listed here becomes a directory name, so the file's content is
// validated as strictly as a path component (see valid_account_name), and an
// account's domain as strictly as a domain name.
// Threading: all from any thread (reload and replace take a mutex).
#pragma once
#include <sys/types.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace mk::archive {

// Letters, digits and . _ + - only; no leading dot; 1..64 octets; lower-cased
// by the caller. Anything else never reaches the file system.
bool valid_account_name(std::string_view name);
// A domain that may name an archive directory: letters, digits, '-', non-empty labels.
bool valid_account_domain(std::string_view domain);

// Who gets a recipient's mail: the archive folder <domain>/<local>.
struct Account {
  std::string local, domain;
  bool every_domain = false;  // from a line without '@': the same person in every backup domain
  std::string address() const { return local + "@" + domain; }
  bool operator==(const Account& o) const { return local == o.local && domain == o.domain; }
};

// One line of the list: an account and its other addresses. A name without
// '@' stands for that local part in every backup domain.
struct AccountEntry {
  std::string name;                  // "alice" or "alice@example.org", lower-case
  std::vector<std::string> aliases;  // "sales" or "sales@example.com", lower-case
  bool operator==(const AccountEntry&) const = default;
};

// An entry as the list holds it: views into the list's own storage, valid
// while the list lives (lists are not changed once built and shared).
struct EntryView {
  std::string_view name;
  std::span<const std::string_view> aliases;
};

class AccountList {
 public:
  // Adds an entry; "" or why not (an invalid name, an address already taken).
  // A refused entry leaves the list unchanged.
  std::string add(const AccountEntry& entry);
  // Room for this many accounts and addresses (a directory sync knows them).
  void reserve(size_t accounts, size_t addresses);
  // The account receiving mail for local@domain (both lower-case, domain one
  // of the backup domains: the caller checks). Exact addresses win over
  // domain-wide local parts.
  std::optional<Account> find(std::string_view local, std::string_view domain) const;
  // True if `address` (exact, "local@domain") is a name or alias already.
  bool find_address(std::string_view address) const { return exact_.count(address) > 0; }
  // The entry whose name is exactly `name` ("alice" or "alice@example.org").
  std::optional<EntryView> entry(std::string_view name) const;
  size_t size() const { return entries_.size(); }
  EntryView at(size_t i) const {
    auto& e = entries_[i];
    return {e.name, std::span<const std::string_view>(aliases_.data() + e.first, e.count)};
  }
  // Copies of every entry, in the order added (tests, small lists).
  std::vector<AccountEntry> to_entries() const;
  // The list in the file format, one line per account, in the order added.
  std::string format() const;

 private:
  std::optional<Account> account_of(size_t index, std::string_view domain) const;
  std::string_view intern(std::string_view s);
  // Every name lives once, in 64 KB chunks that never move; the entries and
  // maps view them. A directory of 50,000 accounts costs ~90 bytes an address
  // (a std::string and a map node each would cost ~130).
  std::vector<std::unique_ptr<char[]>> chunks_;
  size_t chunk_used_ = 0, chunk_size_ = 0;
  struct Stored {
    std::string_view name;
    uint32_t first = 0, count = 0;  // its aliases in aliases_
  };
  std::vector<Stored> entries_;
  std::vector<std::string_view> aliases_;
  std::unordered_map<std::string_view, uint32_t> exact_;  // "local@domain" → entry
  std::unordered_map<std::string_view, uint32_t> local_;  // "local" (every backup domain) → entry
};

struct AccountsParse {
  std::shared_ptr<const AccountList> accounts;  // null on error
  std::string error;                            // "FILE:LINE: reason"
};
AccountsParse parse_accounts(std::string_view text, const std::string& name);

class AccountDirectory {
 public:
  // `until_loaded`: until a list has been read or replaced, pending() is true
  // (a directory sync's first list: recipients get 4xx, not 550, meanwhile).
  explicit AccountDirectory(std::string path, bool until_loaded = false);
  // Re-reads the file if it changed since the last look (or `force`). Returns
  // false when the file is broken (the last good list stays); logs either way.
  bool reload(bool force = false);
  // Installs a list the caller has just written to the file (a directory
  // sync), without reading it back.
  void replace(std::shared_ptr<const AccountList> list);
  std::shared_ptr<const AccountList> snapshot() const { return accounts_.load(); }
  std::optional<Account> find(std::string_view local_lower, std::string_view domain_lower) const {
    return snapshot()->find(local_lower, domain_lower);
  }
  const std::string& path() const { return path_; }
  bool pending() const { return until_loaded_ && !loaded_.load(); }

 private:
  bool until_loaded_;
  std::atomic<bool> loaded_{false};
  std::string path_;
  std::mutex reload_mutex_;
  std::atomic<std::shared_ptr<const AccountList>> accounts_;
  // What the file looked like when last read: reload only on change.
  ino_t inode_ = 0;
  off_t size_ = -1;
  int64_t mtime_ns_ = -1;
};

}  // namespace mk::archive
