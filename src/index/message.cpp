// message.cpp — see message.h. GMime does the MIME work; this file decides
// what of it the index and the reader keep, and bounds it.
#include "index/message.h"

#include <fcntl.h>
#include <gmime/gmime.h>
#include <gumbo.h>
#include <unistd.h>

#include <algorithm>
#include <openssl/evp.h>
#include <optional>
#include <vector>
#include <cstring>
#include <memory>
#include <mutex>
#include <set>

#include "core/strings.h"

namespace mk::index {
namespace {

template <class T>
struct GUnref {
  void operator()(T* p) const {
    if (p) g_object_unref(p);
  }
};
template <class T>
using GPtr = std::unique_ptr<T, GUnref<T>>;

struct GFree {
  void operator()(void* p) const { g_free(p); }
};
using GString_ = std::unique_ptr<char, GFree>;

std::string cut(const char* s, size_t max = kMaxHeader) {
  if (!s) return {};
  return clean_utf8(s, max);
}

void add_addresses(InternetAddressList* list, std::vector<Address>& out, int depth = 0) {
  if (!list || depth > 3) return;
  int n = internet_address_list_length(list);
  for (int i = 0; i < n && out.size() < 1000; ++i) {
    InternetAddress* ia = internet_address_list_get_address(list, i);
    if (INTERNET_ADDRESS_IS_GROUP(ia)) {
      add_addresses(internet_address_group_get_members(INTERNET_ADDRESS_GROUP(ia)), out, depth + 1);
      continue;
    }
    if (!INTERNET_ADDRESS_IS_MAILBOX(ia)) continue;
    Address a;
    a.name = cut(internet_address_get_name(ia), 1024);
    a.address = to_lower(cut(internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(ia)), 1024));
    if (!a.address.empty() || !a.name.empty()) out.push_back(std::move(a));
  }
}

// Every occurrence of the header (Delivered-To is added once per hop).
void add_header_addresses(GMimeObject* obj, const char* header, std::vector<Address>& out) {
  GMimeHeaderList* headers = g_mime_object_get_header_list(obj);
  if (!headers) return;
  int n = g_mime_header_list_get_count(headers);
  for (int i = 0; i < n && out.size() < 100; ++i) {
    GMimeHeader* h = g_mime_header_list_get_header_at(headers, i);
    if (!h || g_ascii_strcasecmp(g_mime_header_get_name(h), header) != 0) continue;
    const char* v = g_mime_header_get_value(h);
    if (!v) continue;
    GPtr<InternetAddressList> list(internet_address_list_parse(nullptr, v));
    add_addresses(list.get(), out);
  }
}

void add_references(const char* text, std::vector<std::string>& out) {
  if (!text) return;
  GMimeReferences* refs = g_mime_references_parse(nullptr, text);
  if (!refs) return;
  int n = g_mime_references_length(refs);
  for (int i = 0; i < n && out.size() < 20000; ++i) {
    const char* id = g_mime_references_get_message_id(refs, i);
    if (id && *id && std::strlen(id) < 1000) out.emplace_back(id);
  }
  g_mime_references_free(refs);
}

struct Walker {
  ParsedMessage& out;
  const ParseOptions& opt;
  size_t parts = 0;
  bool first_html = true;

  void append_text(const std::string& text) {
    if (out.body_text.size() >= kMaxBodyText) return;
    if (!out.body_text.empty()) out.body_text += "\n";
    out.body_text += clean_utf8(text, kMaxBodyText - out.body_text.size());
    if (out.body_text.size() >= kMaxBodyText) out.notes.push_back("body text cut at 1 MB");
  }

  // Decoded, UTF-8 text of a text part, or nullopt when too large to decode.
  std::optional<std::string> text_of(GMimePart* part) {
    GMimeDataWrapper* content = g_mime_part_get_content(part);
    if (!content) return std::string();
    gint64 len = g_mime_stream_length(g_mime_data_wrapper_get_stream(content));
    if (len > static_cast<gint64>(kMaxTextPart)) {
      out.notes.push_back("text part of " + std::to_string(len) + " bytes not decoded");
      return std::nullopt;
    }
    GString_ text(g_mime_text_part_get_text(GMIME_TEXT_PART(part)));
    if (!text) return std::string();
    return std::string(text.get());
  }

  // The content of the attachment just listed, when it is the one asked for.
  void maybe_extract(GMimeObject* obj) {
    if (opt.extract < 0 || out.attachments.empty() || size_t(opt.extract) != out.attachments.size() - 1) return;
    GPtr<GMimeStream> mem(g_mime_stream_mem_new());
    if (GMIME_IS_PART(obj)) {
      if (GMimeDataWrapper* c = g_mime_part_get_content(GMIME_PART(obj))) g_mime_data_wrapper_write_to_stream(c, mem.get());
    } else if (GMIME_IS_MESSAGE_PART(obj)) {
      if (GMimeMessage* inner = g_mime_message_part_get_message(GMIME_MESSAGE_PART(obj)))
        g_mime_object_write_to_stream(GMIME_OBJECT(inner), nullptr, mem.get());
    }
    GByteArray* bytes = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(mem.get()));
    if (!bytes) return;
    out.extracted_whole = bytes->len <= opt.max_extract;
    out.extracted.assign(reinterpret_cast<const char*>(bytes->data), std::min<size_t>(bytes->len, opt.max_extract));
  }

  void leaf(GMimePart* part) {
    GMimeObject* obj = GMIME_OBJECT(part);
    GMimeContentType* ct = g_mime_object_get_content_type(obj);
    const char* disp = g_mime_object_get_disposition(obj);
    const char* filename = g_mime_part_get_filename(part);
    bool attachment = (disp && g_ascii_strcasecmp(disp, "attachment") == 0) || filename;
    if (attachment) {
      out.has_attachment = true;
      Attachment a;
      a.filename = cut(filename, 1024);
      GString_ type(ct ? g_mime_content_type_get_mime_type(ct) : nullptr);
      a.type = to_lower(type ? type.get() : "application/octet-stream");
      if (GMimeDataWrapper* c = g_mime_part_get_content(part))
        a.size = static_cast<uint64_t>(std::max<gint64>(0, g_mime_stream_length(g_mime_data_wrapper_get_stream(c))));
      a.content_id = cut(g_mime_part_get_content_id(part), 1024);
      if (out.attachments.size() < 500) {
        out.attachments.push_back(std::move(a));
        maybe_extract(obj);
      }
      return;
    }
    if (!ct || !GMIME_IS_TEXT_PART(part)) {
      // Inline non-text parts (images referenced by cid:) are listed too.
      if (ct && g_mime_content_type_is_type(ct, "image", "*")) {
        Attachment a;
        GString_ type(g_mime_content_type_get_mime_type(ct));
        a.type = to_lower(type ? type.get() : "image/unknown");
        a.content_id = cut(g_mime_part_get_content_id(part), 1024);
        if (GMimeDataWrapper* c = g_mime_part_get_content(part))
          a.size = static_cast<uint64_t>(std::max<gint64>(0, g_mime_stream_length(g_mime_data_wrapper_get_stream(c))));
        if (out.attachments.size() < 500) {
          out.attachments.push_back(std::move(a));
          maybe_extract(obj);
        }
      }
      return;
    }
    if (g_mime_content_type_is_type(ct, "text", "html")) {
      auto html = text_of(part);
      if (!html) return;
      if (opt.keep_html && first_html) out.html = clean_utf8(*html, kMaxTextPart);
      first_html = false;
      append_text(html_to_text(*html, kMaxBodyText));
    } else if (g_mime_content_type_is_type(ct, "text", "plain") || g_mime_content_type_is_type(ct, "text", "*")) {
      if (auto t = text_of(part)) append_text(*t);
    }
  }

  void walk(GMimeObject* obj, int depth) {
    if (!obj) return;
    if (++parts > kMaxParts) {
      if (parts == kMaxParts + 1) out.notes.push_back("more than 2000 MIME parts: the rest not indexed");
      return;
    }
    if (depth > 50) return;
    if (GMIME_IS_MULTIPART(obj)) {
      auto* mp = GMIME_MULTIPART(obj);
      int n = g_mime_multipart_get_count(mp);
      GMimeContentType* ct = g_mime_object_get_content_type(obj);
      if (ct && g_mime_content_type_is_type(ct, "multipart", "alternative") && n > 0) {
        // One rendering of the same text: the plain one when there is one.
        GMimeObject* pick = nullptr;
        for (int i = 0; i < n; ++i) {
          GMimeObject* p = g_mime_multipart_get_part(mp, i);
          GMimeContentType* pct = g_mime_object_get_content_type(p);
          if (pct && g_mime_content_type_is_type(pct, "text", "plain")) pick = p;
        }
        if (opt.keep_html) {  // the reader wants the HTML rendering as well
          for (int i = 0; i < n; ++i) {
            GMimeObject* p = g_mime_multipart_get_part(mp, i);
            GMimeContentType* pct = g_mime_object_get_content_type(p);
            if (p != pick && pct && g_mime_content_type_is_type(pct, "text", "html") && GMIME_IS_PART(p) && first_html) {
              if (GMIME_IS_TEXT_PART(p))
                if (auto h = text_of(GMIME_PART(p))) out.html = clean_utf8(*h, kMaxTextPart);
              first_html = false;
            }
          }
        }
        if (!pick) pick = g_mime_multipart_get_part(mp, n - 1);
        for (int i = 0; i < n; ++i) {
          GMimeObject* p = g_mime_multipart_get_part(mp, i);
          if (p == pick || !GMIME_IS_PART(p) || !GMIME_IS_TEXT_PART(p)) walk(p, depth + 1);
        }
        return;
      }
      for (int i = 0; i < n; ++i) walk(g_mime_multipart_get_part(mp, i), depth + 1);
    } else if (GMIME_IS_MESSAGE_PART(obj)) {
      const char* disp = g_mime_object_get_disposition(obj);
      if (disp && g_ascii_strcasecmp(disp, "attachment") == 0) {
        out.has_attachment = true;
        Attachment a;
        a.type = "message/rfc822";
        if (out.attachments.size() < 500) {
          out.attachments.push_back(std::move(a));
          maybe_extract(obj);
        }
      }
      GMimeMessage* inner = g_mime_message_part_get_message(GMIME_MESSAGE_PART(obj));
      if (inner) walk(g_mime_message_get_mime_part(inner), depth + 1);
    } else if (GMIME_IS_PART(obj)) {
      leaf(GMIME_PART(obj));
    }
  }
};

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

bool is_block(GumboTag tag) {
  switch (tag) {
    case GUMBO_TAG_P: case GUMBO_TAG_DIV: case GUMBO_TAG_BR: case GUMBO_TAG_LI: case GUMBO_TAG_TR:
    case GUMBO_TAG_H1: case GUMBO_TAG_H2: case GUMBO_TAG_H3: case GUMBO_TAG_H4: case GUMBO_TAG_H5:
    case GUMBO_TAG_H6: case GUMBO_TAG_TABLE: case GUMBO_TAG_BLOCKQUOTE: case GUMBO_TAG_PRE: case GUMBO_TAG_HR:
    case GUMBO_TAG_TD: case GUMBO_TAG_UL: case GUMBO_TAG_OL:
      return true;
    default:
      return false;
  }
}

void html_text(const GumboNode* node, std::string& out, size_t max, int depth) {
  if (out.size() >= max || depth > 200) return;
  if (node->type == GUMBO_NODE_TEXT || node->type == GUMBO_NODE_CDATA || node->type == GUMBO_NODE_WHITESPACE) {
    out += node->v.text.text;
    return;
  }
  if (node->type != GUMBO_NODE_ELEMENT && node->type != GUMBO_NODE_DOCUMENT && node->type != GUMBO_NODE_TEMPLATE)
    return;
  if (node->type == GUMBO_NODE_ELEMENT) {
    auto tag = node->v.element.tag;
    if (tag == GUMBO_TAG_SCRIPT || tag == GUMBO_TAG_STYLE || tag == GUMBO_TAG_HEAD || tag == GUMBO_TAG_TITLE)
      return;
  }
  const GumboVector& children =
      node->type == GUMBO_NODE_DOCUMENT ? node->v.document.children : node->v.element.children;
  bool block = node->type == GUMBO_NODE_ELEMENT && is_block(node->v.element.tag);
  if (block && !out.empty() && out.back() != '\n') out += '\n';
  for (unsigned i = 0; i < children.length; ++i)
    html_text(static_cast<const GumboNode*>(children.data[i]), out, max, depth + 1);
  if (block && !out.empty() && out.back() != '\n') out += '\n';
}

// Feeds message bytes; hashes the body with CRLF as LF.
class DigestFeed {
 public:
  explicit DigestFeed(const std::string& mid) : ctx_(EVP_MD_CTX_new()) {
    EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr);
    EVP_DigestUpdate(ctx_, mid.data(), mid.size());
    EVP_DigestUpdate(ctx_, "", 1);
  }
  ~DigestFeed() { EVP_MD_CTX_free(ctx_); }
  void feed(std::string_view chunk) {
    for (char c : chunk) {
      if (in_header_) {
        // The header ends at the first empty line: "\n\n" once CRs are dropped.
        if (c == '\r') continue;
        if (c == '\n' && last_ == '\n') in_header_ = false;
        last_ = c;
        continue;
      }
      if (c == '\r') {  // a run of CRs before LF is a line end (CR CR LF too, as an LF-only copy has it)
        ++pending_cr_;
        continue;
      }
      if (pending_cr_) {
        if (c != '\n') out_.append(pending_cr_, '\r');
        pending_cr_ = 0;
      }
      out_ += c;
      if (out_.size() >= 65536) flush();
    }
  }
  std::string finish() {
    out_.append(pending_cr_, '\r');
    flush();
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx_, md, &len);
    return to_hex(md, 16);
  }

 private:
  void flush() {
    EVP_DigestUpdate(ctx_, out_.data(), out_.size());
    out_.clear();
  }
  EVP_MD_CTX* ctx_;
  bool in_header_ = true;
  size_t pending_cr_ = 0;
  char last_ = '\n';  // an empty header section: the body starts after the first line break
  std::string out_;
};

}  // namespace

std::string identity_digest(std::string_view message, const std::string& message_id) {
  DigestFeed d(message_id);
  d.feed(message);
  return d.finish();
}

std::string identity_digest_of_file(const std::string& path, const std::string& message_id) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return {};
  DigestFeed d(message_id);
  std::vector<char> buf(64 * 1024);
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    d.feed(std::string_view(buf.data(), static_cast<size_t>(n)));
  }
  ::close(fd);
  return d.finish();
}

std::string decode_message_id(std::string_view raw) {
  init_mime();
  std::string in(raw.substr(0, 4096));
  if (in.empty()) return {};
  GString_ out(g_mime_utils_decode_message_id(in.c_str()));
  return out ? clean_utf8(out.get(), 1000) : std::string();
}

std::string decode_header_text(std::string_view raw) {
  init_mime();
  std::string in(raw.substr(0, kMaxHeader));
  GString_ out(g_mime_utils_header_decode_text(nullptr, in.c_str()));
  return out ? clean_utf8(out.get(), kMaxHeader) : clean_utf8(in, kMaxHeader);
}

std::string Address::display() const {
  if (name.empty()) return address;
  if (address.empty()) return name;
  return name + " <" + address + ">";
}

std::string Address::short_name() const {
  if (!name.empty()) return name;
  return address.substr(0, address.find('@'));
}

void init_mime() {
  static std::once_flag once;
  std::call_once(once, [] { g_mime_init(); });
}

int64_t effective_date(int64_t header_date, int64_t arrival) {
  constexpr int64_t k1971 = 31536000;
  if (header_date < k1971) return arrival;
  if (arrival > 0 && header_date > arrival + 86400) return arrival;
  return header_date;
}

std::string clean_utf8(std::string_view s, size_t max) {
  std::string out;
  out.reserve(std::min(s.size(), max));
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    bool ok = len > 0 && i + len <= s.size();
    uint32_t cp = len == 1 ? c : len == 2 ? c & 0x1F : len == 3 ? c & 0x0F : c & 0x07;
    for (size_t k = 1; ok && k < len; ++k) {
      unsigned char d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) ok = false;
      cp = (cp << 6) | (d & 0x3F);
    }
    if (ok && ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
               (cp >= 0xD800 && cp <= 0xDFFF)))
      ok = false;
    if (ok && c == 0) ok = false;  // NUL never reaches a term or JSON
    size_t add = ok ? len : 3;
    if (out.size() + add > max) break;
    if (ok) out.append(s.substr(i, len));
    else append_utf8(out, 0xFFFD);
    i += ok ? len : 1;
  }
  return out;
}

std::string html_to_text(std::string_view html, size_t max) {
  // Gumbo builds the whole tree: bound its input (the text of a longer page is cut).
  auto input = html.substr(0, std::min<size_t>(html.size(), 4 * 1024 * 1024));
  GumboOutput* doc = gumbo_parse_with_options(&kGumboDefaultOptions, input.data(), input.size());
  std::string out;
  html_text(doc->document, out, max, 0);
  gumbo_destroy_output(&kGumboDefaultOptions, doc);
  return clean_utf8(out, max);
}

bool parse_message_file(const std::string& path, const ParseOptions& opt, ParsedMessage& out, std::string& error) {
  init_mime();
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    error = std::string("cannot open: ") + std::strerror(errno);
    return false;
  }
  GPtr<GMimeStream> stream(g_mime_stream_fs_new(fd));  // owns fd
  GPtr<GMimeParser> parser(g_mime_parser_new_with_stream(stream.get()));
  g_mime_parser_set_format(parser.get(), GMIME_FORMAT_MESSAGE);
  g_mime_parser_set_persist_stream(parser.get(), TRUE);  // contents stay in the file
  GPtr<GMimeMessage> msg(g_mime_parser_construct_message(parser.get(), nullptr));
  if (!msg) {
    error = "not a message";
    return false;
  }
  GMimeObject* obj = GMIME_OBJECT(msg.get());
  out.message_id = cut(g_mime_message_get_message_id(msg.get()), 1000);
  add_references(g_mime_object_get_header(obj, "References"), out.references);
  add_references(g_mime_object_get_header(obj, "In-Reply-To"), out.references);
  {  // unique, in order, never the message's own id; a bounded number, the
     // nearest ancestors (the last References and In-Reply-To) kept
    constexpr size_t kMaxRefs = 200;
    std::vector<std::string> unique;
    std::set<std::string> seen;
    for (auto it = out.references.rbegin(); it != out.references.rend() && unique.size() < kMaxRefs; ++it)
      if (*it != out.message_id && seen.insert(*it).second) unique.push_back(*it);
    std::reverse(unique.begin(), unique.end());
    out.references = std::move(unique);
  }
  add_addresses(g_mime_message_get_addresses(msg.get(), GMIME_ADDRESS_TYPE_FROM), out.from);
  add_addresses(g_mime_message_get_addresses(msg.get(), GMIME_ADDRESS_TYPE_TO), out.to);
  add_addresses(g_mime_message_get_addresses(msg.get(), GMIME_ADDRESS_TYPE_CC), out.cc);
  add_addresses(g_mime_message_get_addresses(msg.get(), GMIME_ADDRESS_TYPE_BCC), out.bcc);
  add_header_addresses(obj, "Delivered-To", out.delivered_to);
  out.subject = cut(g_mime_message_get_subject(msg.get()));
  int64_t header_date = 0;
  if (GDateTime* d = g_mime_message_get_date(msg.get())) header_date = g_date_time_to_unix(d);
  out.date = effective_date(header_date, opt.arrival);
  if (const char* list = g_mime_object_get_header(obj, "List-Id")) {
    std::string v = cut(list, 1024);
    auto lt = v.rfind('<'), gt = v.rfind('>');
    if (lt != std::string::npos && gt != std::string::npos && gt > lt) v = v.substr(lt + 1, gt - lt - 1);
    out.list_id = to_lower(trim(v));
  }
  Walker w{out, opt};
  w.walk(g_mime_message_get_mime_part(msg.get()), 0);
  return true;
}

}  // namespace mk::index
