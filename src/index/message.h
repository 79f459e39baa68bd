// message.h — one archived message, parsed for indexing and display with
// GMime 3 (notmuch's parser): decoded headers (RFC 2047, RFC 2231 file
// names, charsets converted to UTF-8), addresses, references, the body text
// (text/plain; text/html reduced to text with Gumbo) and the attachments.
//
// Bounded whatever the input (RFC 5322, 2045-2049): GMime keeps part
// contents in the file (a persistent stream), so a 50 MB attachment is never
// in memory; at most kMaxParts parts are walked, text parts larger than
// kMaxTextPart are not decoded, the body text is cut at kMaxBodyText, and
// header values at kMaxHeader. What was cut is said in `notes`.
// Threading: call init_mime() once before any thread parses; then parse
// from any thread, one message per call.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mk::index {

inline constexpr size_t kMaxParts = 2000;
inline constexpr size_t kMaxTextPart = 8 * 1024 * 1024;
inline constexpr size_t kMaxBodyText = 1024 * 1024;
inline constexpr size_t kMaxHeader = 64 * 1024;

struct Address {
  std::string name;
  std::string address;  // lower-cased
  std::string display() const;  // "Name <addr>", or the address alone
  std::string short_name() const;  // the name, or the address's local part
};

struct Attachment {
  std::string filename;  // may be empty (an attachment without a name)
  std::string type;      // "application/pdf", lower-cased
  uint64_t size = 0;     // encoded bytes in the file
  std::string content_id;  // for cid: images, without <>
};

struct ParsedMessage {
  std::string message_id;               // without <>; empty when none
  std::vector<std::string> references;  // References then In-Reply-To: unique, never the own id
  std::vector<Address> from, to, cc, bcc, delivered_to;
  std::string subject;
  int64_t date = 0;  // the Date header, or the arrival time (see index::effective_date)
  std::string list_id;  // the id inside <>, lower-cased
  std::string body_text;  // UTF-8
  std::string html;       // the first text/html body part, for display (when asked)
  std::vector<Attachment> attachments;
  bool has_attachment = false;
  std::vector<std::string> notes;  // what was skipped or cut, for the log
  std::string extracted;           // ParseOptions::extract's content, decoded
  bool extracted_whole = false;    // it was found and fit in max_extract
};

// Once per process, before threads parse.
void init_mime();

struct ParseOptions {
  int64_t arrival = 0;     // fallback date
  bool keep_html = false;  // fill ParsedMessage::html
  // Decode the content of attachments[extract] into ParsedMessage::extracted
  // (the web view's download, a cid: image), at most `max_extract` bytes.
  int extract = -1;
  size_t max_extract = 64 * 1024 * 1024;
};

// Parses the file at `path`. False (with `error`) when it cannot be read or
// is not a message at all; a broken but readable message parses as far as
// it goes.
bool parse_message_file(const std::string& path, const ParseOptions& opt, ParsedMessage& out, std::string& error);

// The date to index: `header_date` unless it is 0 (missing/unparseable),
// before 1971, or more than a day after `arrival`.
int64_t effective_date(int64_t header_date, int64_t arrival);

// Text of an HTML document (script/style dropped, blocks on lines), at most `max` bytes.
std::string html_to_text(std::string_view html, size_t max);

// A message's identity across folders, renames and re-imports: the first
// 32 hex digits of sha256(Message-ID, NUL, body), the body being the bytes
// after the first empty line with CRLF read as LF (an SMTP copy and the same
// message in a Takeout mbox agree). Empty when the file cannot be read.
std::string identity_digest_of_file(const std::string& path, const std::string& message_id);
std::string identity_digest(std::string_view message, const std::string& message_id);

// A Message-ID header value → the id without <>, as the index keeps it (GMime).
std::string decode_message_id(std::string_view raw);

// RFC 2047 words decoded to UTF-8 (GMime).
std::string decode_header_text(std::string_view raw);

// Replaces invalid UTF-8 with U+FFFD and cuts at `max` bytes on a character boundary.
std::string clean_utf8(std::string_view s, size_t max);

}  // namespace mk::index
