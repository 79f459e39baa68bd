// edit.h — a message as milters see and change it: its header fields as a
// list, its body as a slice of the session's spool (or a new body), and the
// edited message as one ContentSource for the archive and the upstream.
//
// The conventions are Postfix's (cleanup_milter.c) and Sendmail's:
//   - our own fields on top (our Received, our X-Spam-*) are not shown to
//     milters; a change or delete index counts a name's occurrences among
//     the fields the milter saw, an insert position counts every field,
//     ours included (0 = the very top);
//   - a header value goes to the milter with line breaks as "\n" and,
//     without SMFIP_HDR_LEADSPC, without the one space after the colon;
//     values coming back get "\r\n" again, and a continuation line that
//     does not start with white space gets a tab, so that no milter can
//     start a field of its own inside a value;
//   - the body is the bytes after the empty line, CRLF lines as received; a
//     replacement body gets bare LFs and CRs turned into CRLF.
// Every size is bounded: the header section we read (kMaxHeaderBytes), what
// milters add to it, and a replacement body ([smtp] max_message_size).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/content.h"

namespace mk::smtp {
class Spool;
}

namespace mk::milter {

constexpr size_t kMaxHeaderBytes = 1 << 20;

class MessageEditor {
 public:
  // `top`: our own fields (CRLF lines); `content`: the message as the client
  // sent it, which must outlive the editor and every result().
  MessageEditor(std::string_view top, const ContentSource& content, std::string spool_dir, uint64_t max_body);
  ~MessageEditor();

  // The fields a milter sees: name, and value as sent (see above).
  struct Shown {
    std::string name, value;
  };
  std::vector<Shown> shown_fields(bool leading_space) const;

  // The body as it stands now (the original slice or the replacement).
  uint64_t body_size() const;
  size_t read_body(uint64_t offset, char* buf, size_t n) const;

  // Edits; false with `why` when one cannot be applied (too big, bad value).
  bool add(std::string_view name, std::string_view value, bool leading_space, std::string& why);
  bool insert(uint32_t index, std::string_view name, std::string_view value, bool leading_space, std::string& why);
  // `index` is 1-based among the visible fields called `name` (any case); an
  // empty value deletes. A change of a field that does not exist adds it
  // (Sendmail's smfi_chgheader), a delete of one is a no-op.
  bool change(uint32_t index, std::string_view name, std::string_view value, bool leading_space, std::string& why);
  // Removes the client's Authentication-Results fields that carry `authserv_id`
  // (RFC 8601 section 5: only we may claim our id); returns how many.
  size_t remove_foreign_authentication_results(std::string_view authserv_id);
  // The first chunk replaces the body; the next ones append to the new body.
  bool replace_body_chunk(std::string_view chunk, std::string& why);
  // Ends one milter's edits (the next ReplaceBody starts a new body).
  void end_of_milter();

  bool changed() const { return changed_; }
  // The whole message now: every field (ours included), then the body. Last call.
  std::unique_ptr<ContentSource> result();

 private:
  struct Field {
    std::string raw;  // "Name: value\r\n" with any continuation lines, exactly
    bool ours = false;
    std::string_view name() const;
  };
  std::string make_raw(std::string_view name, std::string_view value, bool leading_space, std::string& why);

  std::vector<Field> fields_;
  std::string separator_;  // "\r\n" before the body, or "" when the message had none
  const ContentSource& content_;
  uint64_t body_offset_ = 0;  // in content_
  std::unique_ptr<smtp::Spool> body_;  // the replacement, when there is one
  std::string spool_dir_;
  uint64_t max_body_;
  size_t added_bytes_ = 0;
  bool replacing_ = false;
  bool last_cr_ = false;  // the replacement's last byte was a CR (a CRLF split across chunks)
  bool changed_ = false;
};

}  // namespace mk::milter
