// database.h — one account's index: a Xapian database under
// `[index] path`/<domain>/<localpart>/xapian (never inside the Maildir: Dovecot
// would take a dot-folder there for a mailbox).
//
// A message's identity is its Maildir base name (the file name before
// ":2,"): a flag rename or a move to another folder keeps the document, its
// conversation and its labels (notmuch keeps identity by Message-ID; the base
// name is what Dovecot and mailkeep keep across renames, and two copies of
// one Message-ID, INBOX and Sent, are two files).
//
// Conversations, the notmuch way: a message joins the conversation of every
// Message-ID in its References/In-Reply-To (merging them when they differ);
// ids not seen yet become ghost documents that hold their conversation until
// the message arrives; a message never references itself.
//
// Writes are batched: changes become durable at commit() (Xapian's commit is
// atomic, so kill -9 at any moment leaves the last committed state, which
// the next catch-up completes). One writer per database at a time
// (Xapian's lock); readers never wait.
// Threading: one object per thread.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "index/message.h"

namespace mk::index {

// One file of an account's Maildir.
struct MessageFile {
  std::string folder;  // "INBOX", or the Maildir++ folder without its dot ("Sent", "Archive", "a.b")
  std::string subdir;  // "new" or "cur"
  std::string name;    // the file name
  std::string base() const;   // before ":2,"
  std::string flags() const;  // the info's flag letters, sorted, uppercase only
  std::string rel_path() const;  // "cur/NAME" for INBOX, ".Sent/new/NAME" otherwise
  std::string dir_key() const;   // "INBOX/cur", "Sent/new": the directory it lives in
  int64_t arrival() const;       // the leading seconds of the name, 0 if none
};

// Parses "cur/NAME" or ".Sent/new/NAME"; nullopt when it is not such a path.
std::optional<MessageFile> message_file_from_rel(const std::string& rel);

// What the index keeps of a message for lists and display (no reparse).
struct StoredMessage {
  uint32_t docid = 0;
  std::string id;  // base name
  std::string conversation;
  MessageFile file;
  std::string from, from_address, from_name;
  std::vector<std::string> to, cc;
  std::string subject, message_id, snippet, list_id, digest;
  int64_t date = 0;
  uint64_t size = 0;
  std::vector<Attachment> attachments;
  std::vector<std::string> labels;
};

struct LabelCount {
  std::string name;
  uint64_t messages = 0;
};

struct IndexOptions {
  std::string language = "english";  // stemmer; "none" = no stemming
};

// A message parsed and turned into its index document, ready to insert:
// built on any thread (DocumentBuilder), inserted on the writer's.
struct PreparedMessage {
  MessageFile file;
  std::string message_id, digest;
  std::vector<std::string> references;
  std::string note;  // what was skipped or cut, or why it failed
  struct Doc;
  std::unique_ptr<Doc> doc;
  PreparedMessage();
  ~PreparedMessage();
  PreparedMessage(PreparedMessage&&) noexcept;
  PreparedMessage& operator=(PreparedMessage&&) noexcept;
};

// Parses files into documents; one per thread.
class DocumentBuilder {
 public:
  explicit DocumentBuilder(const IndexOptions& opt);
  ~DocumentBuilder();
  // False (with out.note) when the file cannot be parsed.
  bool build(const std::string& maildir, const MessageFile& file, PreparedMessage& out);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class Database {
 public:
  // Opens the account's index at `dir` (creating it) for writing. Throws
  // std::runtime_error naming the directory, or IndexLocked when another
  // writer holds it.
  static std::unique_ptr<Database> open_writable(const std::string& dir, const IndexOptions& opt);
  // open_writable, waiting up to `patience` while another writer (the
  // server's indexer, between batches) holds the lock; then IndexLocked.
  static std::unique_ptr<Database> open_writable_waiting(const std::string& dir, const IndexOptions& opt,
                                                         std::chrono::milliseconds patience,
                                                         const std::atomic<bool>* stop = nullptr);
  // Opens for reading; nullptr when there is no index yet.
  static std::unique_ptr<Database> open_readonly(const std::string& dir, const IndexOptions& opt);
  // A read-only database moves to the newest committed revision; false when
  // the index was replaced (rebuilt, compacted) or is gone: open it anew.
  bool refresh();
  ~Database();

  // Indexes `file` (under `maildir`) as a new message. False with `note` when
  // the file cannot be parsed (it is then left out, and logged by the caller).
  bool add(const std::string& maildir, const MessageFile& file, std::string& note);
  // Inserts a message built by a DocumentBuilder (threading happens here).
  void insert(PreparedMessage&& message);
  const IndexOptions& options() const { return options_; }
  // The document of this base name, if indexed.
  std::optional<uint32_t> find(const std::string& base) const;
  // The file of an indexed message moved or was renamed (flags): no reparse.
  void relocate(uint32_t docid, const MessageFile& file);
  // The message's file is gone.
  void remove(uint32_t docid);
  // Every indexed file in directory `dir_key` ("INBOX/cur"): base → (docid, name).
  std::vector<std::pair<uint32_t, MessageFile>> files_in(const std::string& dir_key) const;
  // All directory keys that hold documents.
  std::vector<std::string> dir_keys() const;

  // Labels: in the document, and in the label store (labels.h), which keeps
  // them across rebuilds and gives them back to a message that comes back.
  void set_labels(uint32_t docid, const std::vector<std::string>& labels);
  // Labels for a message not indexed yet (an import writes them first).
  void set_labels_for(const std::string& base, const std::string& digest, const std::vector<std::string>& labels);
  // Documents whose identity digest is `digest` (message.h).
  std::vector<uint32_t> find_digest(const std::string& digest) const;

  // Metadata: the directory mtimes the last scan saw.
  std::string metadata(const std::string& key) const;
  void set_metadata(const std::string& key, const std::string& value);

  void commit();
  // Rewrites the database compactly (after a bulk index: about half the size).
  void compact();
  uint64_t message_count() const;  // real messages (no ghosts)
  // Every label in use, with its number of messages (the web view's sidebar).
  std::vector<LabelCount> label_counts() const;
  uint64_t changes_since_commit() const { return pending_; }

  StoredMessage stored(uint32_t docid) const;

  struct Impl;
  Impl& impl() { return *impl_; }
  const Impl& impl() const { return *impl_; }

 private:
  Database(std::unique_ptr<Impl> impl, const IndexOptions& opt);
  std::unique_ptr<Impl> impl_;
  IndexOptions options_;
  std::string dir_;
  std::unique_ptr<DocumentBuilder> builder_;
  std::unique_ptr<class LabelStore> labels_;
  int labels_known_ = -1;  // -1 unknown, 0 the store is empty, 1 it has labels
  class LabelStore& label_store();
  uint64_t pending_ = 0;
};

struct IndexLocked : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Where an account's index lives: <index_root>/<domain>/<localpart>.
std::string account_index_dir(const std::string& index_root, const std::string& domain, const std::string& local);

}  // namespace mk::index
