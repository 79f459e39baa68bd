// compose.cpp — see compose.h.
#include "webreader/compose.h"

#include <gmime/gmime.h>
#include <openssl/rand.h>

#include <ctime>

#include "core/strings.h"

namespace mk::webreader {
namespace {

// An address as the envelope will use it: one mailbox, no display name
// tricks, no CR/LF, no spaces.
bool plain_address(const std::string& a) {
  auto at = a.rfind('@');
  if (at == std::string::npos || at == 0 || at + 1 == a.size() || a.size() > 254) return false;
  for (unsigned char c : a)
    if (c <= 32 || c == 127 || c == '<' || c == '>' || c == ',' || c == ';' || c == '"' || c == '(' || c == ')') return false;
  return true;
}

std::string random_hex(int bytes) {
  unsigned char b[32];
  RAND_bytes(b, bytes);
  return to_hex(b, size_t(bytes));
}

}  // namespace

Composed compose(const Draft& d, int64_t now) {
  Composed out;
  for (auto* list : {&d.to, &d.cc, &d.bcc})
    for (auto& a : *list)
      if (!plain_address(a)) {
        out.error = "not an address: " + a.substr(0, 100);
        return out;
      }
  if (d.to.empty() && d.cc.empty() && d.bcc.empty()) {
    out.error = "no recipients";
    return out;
  }
  GMimeMessage* msg = g_mime_message_new(TRUE);
  g_mime_message_add_mailbox(msg, GMIME_ADDRESS_TYPE_FROM, nullptr, d.from.c_str());
  for (auto& a : d.to) g_mime_message_add_mailbox(msg, GMIME_ADDRESS_TYPE_TO, nullptr, a.c_str());
  for (auto& a : d.cc) g_mime_message_add_mailbox(msg, GMIME_ADDRESS_TYPE_CC, nullptr, a.c_str());
  g_mime_message_set_subject(msg, d.subject.c_str(), "utf-8");
  GDateTime* date = g_date_time_new_from_unix_utc(now);
  g_mime_message_set_date(msg, date);
  g_date_time_unref(date);
  out.message_id = random_hex(16) + "@" + (d.hostname.empty() ? "mailkeep" : d.hostname);
  g_mime_message_set_message_id(msg, out.message_id.c_str());
  if (!d.in_reply_to.empty()) {
    g_mime_object_set_header(GMIME_OBJECT(msg), "In-Reply-To", ("<" + d.in_reply_to + ">").c_str(), nullptr);
    std::string refs;
    for (auto& r : d.references) refs += (refs.empty() ? "<" : " <") + r + ">";
    refs += (refs.empty() ? "<" : " <") + d.in_reply_to + ">";
    g_mime_object_set_header(GMIME_OBJECT(msg), "References", refs.c_str(), nullptr);
  }
  g_mime_object_set_header(GMIME_OBJECT(msg), "User-Agent", "mailkeep", nullptr);
  GMimeTextPart* part = g_mime_text_part_new_with_subtype("plain");
  g_mime_text_part_set_text(part, d.text.c_str());
  g_mime_part_set_content_encoding(GMIME_PART(part), GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE);
  g_mime_message_set_mime_part(msg, GMIME_OBJECT(part));
  g_object_unref(part);
  GMimeFormatOptions* fmt = g_mime_format_options_new();
  g_mime_format_options_set_newline_format(fmt, GMIME_NEWLINE_FORMAT_DOS);
  char* text = g_mime_object_to_string(GMIME_OBJECT(msg), fmt);
  out.message = text;
  g_free(text);
  g_mime_format_options_free(fmt);
  g_object_unref(msg);
  if (!out.message.ends_with("\r\n")) out.message += "\r\n";
  return out;
}

}  // namespace mk::webreader
