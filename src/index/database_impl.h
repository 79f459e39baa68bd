// database_impl.h — the Xapian side of Database, shared by the index's own
// .cpp files only (Xapian's headers stay out of everything else).
#pragma once
#include <xapian.h>

#include <cstdint>
#include <optional>
#include <utility>

#include "index/database.h"

namespace mk::index {

struct Database::Impl {
  std::optional<Xapian::WritableDatabase> wdb;
  Xapian::Database db;  // == *wdb when writable
  Xapian::Stem stemmer;
  Xapian::TermGenerator tg;
  bool writable = false;
  std::string dir;
  std::string read_dir;                    // read-only: the account's index directory
  std::pair<uint64_t, uint64_t> opened{};  // read-only: device and inode of <dir>/xapian when opened

  explicit Impl(const IndexOptions& opt);
};

// The text of one term list element, when it starts with `prefix` and the
// next character is not an upper-case letter (another prefix's).
bool term_has_prefix(const std::string& term, std::string_view prefix);

// Field values kept in a document's data.
std::string encode_data(const StoredMessage& m);
void decode_data(const std::string& data, StoredMessage& m);
// Database::stored from a document already read (one read of its data);
// `conversation` when the caller knows it (each value read is a B-tree lookup).
StoredMessage stored_of(const Xapian::Document& doc, uint32_t docid, const std::string* conversation = nullptr);

}  // namespace mk::index
