// filters.h — Gmail's filters: criteria in the search language, and actions
// (add a label, skip the Inbox, mark read, star, never send to spam, send to
// spam, trash) applied to each new message of the account as it is indexed.
//
// One file per account, <[index] path>/<domain>/<localpart>/filters.xml, in
// the format Gmail exports (Settings → Filters → Export: mailFilters.xml, an
// Atom feed of <entry> elements with <apps:property name=... value=...>), so
// that people bring theirs along and take ours away unchanged. Criteria
// properties: from, to, subject, hasTheWord, doesNotHaveTheWord,
// hasAttachment; actions: label, shouldArchive, shouldMarkAsRead, shouldStar,
// shouldNeverSpam, shouldSpam, shouldTrash. Other properties are kept as
// they are and ignored. Parsed with GLib's GMarkup (already linked through
// GMime), written by hand (it is a fixed, flat format).
// The server's indexer calls apply_to_new() after indexing published files
// (index/indexer.h's after_index hook): a message a filter keeps out of the
// Inbox is moved before anyone reads the index.
// Threading: functions are independent; apply_* need the account's index writer.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "index/database.h"

namespace mk::filters {

struct Filter {
  std::string id;  // unique within the account
  // Criteria, as Gmail names them.
  std::string from, to, subject, has_words, not_words;
  bool has_attachment = false;
  // Actions.
  std::string label;
  bool skip_inbox = false, mark_read = false, star = false, never_spam = false, spam = false, trash = false;
  std::vector<std::pair<std::string, std::string>> other;  // properties we do not act on

  std::string query() const;    // the criteria as one query of the search language
  std::string actions() const;  // "label=Builds skip-inbox mark-read", for list
};

struct FilterList {
  std::vector<Filter> filters;
  std::string error;  // parse error ("line N: ...") — the list is then empty
};

FilterList parse_filters(std::string_view xml);
std::string format_filters(const std::vector<Filter>& filters);

// The account's file (missing = no filters).
std::string filters_path(const std::string& index_dir);
FilterList load_filters(const std::string& index_dir);
// Writes atomically; returns an error text or "".
std::string save_filters(const std::string& index_dir, const std::vector<Filter>& filters);
// A fresh id for a new filter.
std::string new_filter_id(const std::vector<Filter>& existing);

struct ApplyStats {
  size_t matched = 0, moved = 0, changed = 0;
  std::vector<std::string> errors;
};

// Applies every filter to the messages `ids` (base names) just indexed.
ApplyStats apply_to_new(index::Database& db, const std::string& maildir, const std::vector<Filter>& filters,
                        const std::vector<std::string>& ids, int64_t now);
// Applies one filter to all existing mail that matches it.
ApplyStats apply_to_existing(index::Database& db, const std::string& maildir, const Filter& filter, int64_t now);

}  // namespace mk::filters
