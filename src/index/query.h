// query.h — Gmail's search language, parsed into a small tree.
//
// The operators are spelled as Gmail spells them (support.google.com/mail/
// answer/7190): bare words, "phrases", from: to: cc: bcc: subject: label:
// in: is: has:attachment filename: list: rfc822msgid: after: before:
// older_than: newer_than: larger: smaller:, OR, {a b}, -negation and
// parentheses; `field:(a b)` applies the field to every term inside.
// Juxtaposition is AND; `OR` binds tighter than it, as in Gmail
// (`a b OR c` = a AND (b OR c)).
//
// Written by hand: Xapian's QueryParser has no Gmail dialect (no `{}`, no
// `in:`/`is:` semantics, no positioned errors), and no library parses
// Gmail's. The tree is compiled to Xapian terms in query_compile.cpp;
// prefix.h says which terms each operator reaches.
// Threading: pure functions.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace mk::index {

enum class Field {
  Text,  // bare word or phrase
  From, To, Cc, Bcc, Subject, Label, In, Is, Has, Filename, List, MessageId,
  After, Before, OlderThan, NewerThan, Larger, Smaller,
};

struct QueryNode {
  enum class Kind { And, Or, Not, Term, All } kind = Kind::All;
  std::vector<QueryNode> children;  // And/Or: 1+; Not: exactly 1
  Field field = Field::Text;
  std::string value;   // Term: the word or phrase as written (unquoted)
  bool phrase = false;  // Term: written in quotes
  int64_t number = 0;  // dates: a Unix time (UTC midnight, or the cut-off); sizes: bytes
};

struct QueryError {
  size_t position = 0;  // 1-based character (code point) position
  std::string expected;
  std::string message() const;  // "query error at position P: expected X"
};

struct ParsedQuery {
  QueryNode root;
  std::string error_text;  // empty on success
  QueryError error;
  bool ok() const { return error_text.empty(); }
};

// Parses `text`. `now` is the reference time for older_than:/newer_than:.
ParsedQuery parse_query(std::string_view text, int64_t now);

// True when the query names Junk or Trash (in:junk, in:spam, in:trash,
// in:anywhere): otherwise, as in Gmail, those folders are left out.
bool names_junk_or_trash(const QueryNode& node);

// Field name as written ("from"), for diagnostics and tests.
std::string_view field_name(Field f);

// A day `YYYY/MM/DD` or `YYYY-MM-DD` as the Unix time of its UTC midnight.
bool parse_day(std::string_view s, int64_t& out);
// `500`, `500K`, `10M` (1024-based) → bytes.
bool parse_size(std::string_view s, int64_t& out);
// `7d`, `2m` (30 days), `1y` (365 days) → seconds.
bool parse_age(std::string_view s, int64_t& out);

}  // namespace mk::index
