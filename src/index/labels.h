// labels.h — an account's labels, kept beside its index (labels.db, SQLite)
// and not only in it: `archive index --rebuild` recreates the Xapian
// database from the Maildirs, which know nothing of labels (IMAP keywords
// hold at most 26 per folder), so the labels must live where a rebuild
// cannot erase them.
//
// A label belongs to a message's identity: its Maildir base name, and its
// identity digest (message.h) for when the base name changes (a message
// copied by an IMAP client, a restore, a re-import).
// Threading: one object per thread; the SQLite file may be shared.
#pragma once
#include <memory>
#include <string>
#include <vector>

namespace mk::index {

class LabelStore {
 public:
  // Opens (creating) <index_dir>/labels.db. Throws std::runtime_error.
  explicit LabelStore(const std::string& index_dir);
  ~LabelStore();
  // The labels of this message: by base name, else by digest.
  std::vector<std::string> labels(const std::string& base, const std::string& digest);
  // Replaces the message's labels (an empty list removes them).
  void set(const std::string& base, const std::string& digest, const std::vector<std::string>& labels);
  bool empty();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mk::index
