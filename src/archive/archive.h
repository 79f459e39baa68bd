// archive.h — the archive copies of one message: one per archived recipient
// (their INBOX) and one for an archived sender (their .Sent folder).
//
// Two phases around the upstream's verdict (the acknowledgement order):
// prepare() writes every copy into its folder's tmp/ and fsyncs it; only
// then does the message go upstream; after the upstream's 250, commit()
// renames each copy into new/ and fsyncs the directory; otherwise abort()
// removes them. Sent copies are deduplicated: the provider sends one copy of
// an outgoing message per in-domain recipient, and a message with the same
// Message-ID and the same body digest is kept once per folder.
// Threading: blocking file I/O; run it on the blocking pool (core/blocking.h).
#pragma once
#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "archive/maildir.h"

namespace mk::archive {

struct ArchiveTarget {
  std::string folder;        // Maildir path, e.g. data/archive/example.org/alice/.Sent
  std::string label;         // for logs: "example.org/alice/Sent"
  std::string delivered_to;  // Delivered-To header value; empty = none
  std::string dedupe_dir;    // where seen-markers live; empty = no deduplication
  bool operator==(const ArchiveTarget&) const = default;
};

// Called after each copy is published in its folder's new/ (the step
// after-delivery work hangs off: the index's queue). Set once at start-up,
// before any session; the listener must not block (it runs on the blocking
// pool, inside the session's acknowledgement path).
using PublishListener = std::function<void(const std::string& folder, const std::string& file_name)>;
void set_publish_listener(PublishListener listener);

// "Message-ID\0sha256(body)" hex digest, or nullopt when the message has no
// Message-ID (then it cannot be recognised as a duplicate).
std::optional<std::string> message_fingerprint(const ContentSource& content);

class ArchiveCopies {
 public:
  ArchiveCopies() = default;
  ArchiveCopies(ArchiveCopies&&) = default;
  ~ArchiveCopies() { abort(); }
  // Writes and fsyncs every copy in tmp/. On any failure, removes what it
  // wrote and returns TempFail with the reason.
  MaildirResult prepare(const std::vector<ArchiveTarget>& targets, const std::string& return_path,
                        const std::string& prefix, const ContentSource& content);
  // Publishes every copy (new/ + directory fsync); a duplicate Sent copy is
  // dropped instead. Returns TempFail if any rename or fsync failed.
  MaildirResult commit();
  void abort();
  size_t published() const { return published_; }
  size_t duplicates() const { return duplicates_; }

 private:
  struct Copy {
    ArchiveTarget target;
    PendingMaildirFile file;
  };
  std::vector<Copy> copies_;
  std::optional<std::string> fingerprint_;
  size_t published_ = 0, duplicates_ = 0;
  std::chrono::steady_clock::duration write_time_{};  // prepare()'s, observed with commit()'s
};

// Housekeeping: removes files left in tmp/ by a crash, older than
// `tmp_max_age_s` (36 h, as the Maildir spec suggests), and Sent dedupe
// markers older than `marker_max_age_s`. Returns how many files went.
size_t clean_archive(const std::string& archive_root, int64_t now, int64_t tmp_max_age_s, int64_t marker_max_age_s);

// Folder statistics for `mailkeep archive stats`.
struct FolderStats {
  std::string user;    // "example.org/alice"
  std::string folder;  // "INBOX", "Sent", ...
  uint64_t messages = 0, bytes = 0;
};
std::vector<FolderStats> archive_stats(const std::string& archive_root);

}  // namespace mk::archive
