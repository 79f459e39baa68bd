// search.h — a query against one account's index: matching messages, or
// matching conversations (Gmail's view), newest first, one page at a time.
//
// A conversation's place in the list is its newest *matching* message; its
// date, subject (its oldest message's), senders and message count are the
// whole conversation's. Junk and Trash are left out unless the query names
// them (query.h). Threading: one Database per thread.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "index/database.h"
#include "index/query.h"

namespace mk::index {

struct SearchRequest {
  std::string query;
  size_t offset = 0;
  size_t limit = 50;
  bool messages = false;  // messages instead of conversations
  int64_t now = 0;        // for older_than:/newer_than:
  std::vector<std::string> only_ids;  // non-empty: among these messages (base names) only
};

struct Conversation {
  std::string id;
  int64_t date = 0;  // newest message
  std::string subject;
  std::vector<std::string> senders;  // display names (or the address), oldest first, unique
  size_t messages = 0, matched = 0;
  std::vector<std::string> labels;  // sorted
  bool unread = false;              // some matched message lacks \Seen
  bool flagged = false;             // some matched message is \Flagged (starred)
  std::string snippet;              // of the newest matching message
  std::vector<std::string> folders;  // sorted
};

struct SearchResult {
  std::string error_text;  // malformed query: the parser's message; empty on success
  QueryError error;
  uint64_t total = 0;       // matching conversations (or messages)
  bool total_exact = true;  // false: Xapian's estimate (the page did not reach every match)
  std::vector<Conversation> conversations;
  std::vector<StoredMessage> messages;
  bool ok() const { return error_text.empty(); }
};

SearchResult search(const Database& db, const SearchRequest& request);

// All messages of a conversation, oldest first (ghosts left out).
std::vector<StoredMessage> conversation_messages(const Database& db, const std::string& conversation);

// The message with this id (base name), if indexed.
std::optional<StoredMessage> message_by_id(const Database& db, const std::string& id);

}  // namespace mk::index
