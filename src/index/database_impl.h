// database_impl.h — the Xapian side of Database, shared by the index's own
// .cpp files only (Xapian's headers stay out of everything else).
#pragma once
#include <xapian.h>

#include <optional>

#include "index/database.h"

namespace mk::index {

struct Database::Impl {
  std::optional<Xapian::WritableDatabase> wdb;
  Xapian::Database db;  // == *wdb when writable
  Xapian::Stem stemmer;
  Xapian::TermGenerator tg;
  bool writable = false;
  std::string dir;

  explicit Impl(const IndexOptions& opt);
};

// The text of one term list element, when it starts with `prefix` and the
// next character is not an upper-case letter (another prefix's).
bool term_has_prefix(const std::string& term, std::string_view prefix);

// Field values kept in a document's data.
std::string encode_data(const StoredMessage& m);
void decode_data(const std::string& data, StoredMessage& m);

}  // namespace mk::index
