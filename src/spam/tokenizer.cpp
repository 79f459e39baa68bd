// tokenizer.cpp — see tokenizer.h.
#include "spam/tokenizer.h"

#include <iconv.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/strings.h"

namespace mk::spam {
namespace {

constexpr size_t kMaxHeader = 16 * 1024;
constexpr size_t kMaxLine = 64 * 1024;  // longer lines are tokenized in pieces
constexpr size_t kMaxDepth = 16;        // nested multiparts

// FNV-1a, 64 bit: fast and good enough for feature hashing.
uint64_t fnv(std::string_view s, uint64_t h = 1469598103934665603ull) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

uint64_t mix(uint64_t a, uint64_t b, uint64_t k) {
  uint64_t h = a * 0x9E3779B97F4A7C15ull ^ (b + 0x632BE59BD9B4E019ull + (a << 6) + (a >> 2));
  h ^= k * 0xC2B2AE3D27D4EB4Full;
  h ^= h >> 31;
  return h * 0x94D049BB133111EBull;
}

bool word_char(unsigned char c) { return std::isalnum(c) || c >= 0x80 || c == '$' || c == '!' || c == '\''; }

// "text/html; charset="utf-8"" → value of `param` (lower-cased for charset/boundary names only by caller).
std::string header_param(std::string_view value, std::string_view param) {
  std::string lower = to_lower(value);
  size_t pos = 0;
  while ((pos = lower.find(param, pos)) != std::string::npos) {
    bool start_ok = pos == 0 || lower[pos - 1] == ';' || lower[pos - 1] == ' ' || lower[pos - 1] == '\t';
    size_t eq = pos + param.size();
    while (eq < lower.size() && (lower[eq] == ' ' || lower[eq] == '\t')) ++eq;
    if (start_ok && eq < lower.size() && lower[eq] == '=') {
      size_t v = eq + 1;
      while (v < value.size() && (value[v] == ' ' || value[v] == '\t')) ++v;
      if (v < value.size() && value[v] == '"') {
        auto end = value.find('"', v + 1);
        return std::string(value.substr(v + 1, end == std::string_view::npos ? std::string_view::npos : end - v - 1));
      }
      auto end = value.find_first_of("; \t", v);
      return std::string(value.substr(v, end == std::string_view::npos ? std::string_view::npos : end - v));
    }
    pos += param.size();
  }
  return "";
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

int base64_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

}  // namespace

// Converts a part's text to UTF-8 chunk by chunk, carrying incomplete
// multibyte sequences over; undecodable bytes are skipped.
class Tokenizer::Utf8Converter {
 public:
  explicit Utf8Converter(const std::string& charset) {
    auto cs = to_lower(charset);
    if (cs.empty() || cs == "us-ascii" || cs == "utf-8" || cs == "utf8" || cs == "ascii") return;
    cd_ = iconv_open("UTF-8", cs.c_str());
    if (cd_ == (iconv_t)-1) cd_ = nullptr;  // unknown charset: bytes pass as they are
  }
  ~Utf8Converter() {
    if (cd_) iconv_close(cd_);
  }
  std::string convert(std::string_view in) {
    if (!cd_) return std::string(in);
    carry_.append(in);
    std::string out(carry_.size() * 4 + 16, '\0');
    char* src = carry_.data();
    size_t src_left = carry_.size();
    char* dst = out.data();
    size_t dst_left = out.size();
    while (src_left > 0) {
      size_t r = iconv(cd_, &src, &src_left, &dst, &dst_left);
      if (r != (size_t)-1) break;
      if (errno == EILSEQ) {  // skip one bad byte
        ++src;
        --src_left;
      } else {
        break;  // EINVAL: incomplete sequence, kept for the next chunk; E2BIG cannot happen (x4)
      }
    }
    out.resize(out.size() - dst_left);
    carry_.erase(0, carry_.size() - src_left);
    if (carry_.size() > 16) carry_.clear();  // not a real multibyte tail
    return out;
  }

 private:
  iconv_t cd_ = nullptr;
  std::string carry_;
};

struct Tokenizer::Part {
  bool in_headers = true;
  bool top = false;
  std::string type = "text/plain";
  std::string charset;
  std::string encoding;  // lower-case Content-Transfer-Encoding
  std::string boundary;  // for multipart/*
  bool closed = false;   // saw the closing boundary: epilogue follows
  // Base64 state.
  uint32_t b64_bits = 0;
  int b64_count = 0;
  std::unique_ptr<Utf8Converter> utf8;
  bool text() const { return type.starts_with("text/") || type.empty(); }
  bool html() const { return type == "text/html"; }
  bool multipart() const { return type.starts_with("multipart/") && !boundary.empty(); }
};

Tokenizer::Tokenizer(TokenizerSettings settings) : settings_(settings) {
  part_ = std::make_unique<Part>();
  part_->top = true;
}

Tokenizer::~Tokenizer() = default;

void Tokenizer::feed(std::string_view bytes) {
  while (!bytes.empty()) {
    auto nl = bytes.find('\n');
    if (nl == std::string_view::npos) {
      partial_.append(bytes);
      if (partial_.size() > kMaxLine) {
        line(partial_);
        partial_.clear();
      }
      return;
    }
    if (partial_.empty()) {
      line(bytes.substr(0, nl));
    } else {
      partial_.append(bytes.substr(0, nl));
      line(partial_);
      partial_.clear();
    }
    bytes.remove_prefix(nl + 1);
  }
}

const std::vector<uint32_t>& Tokenizer::finish() {
  if (finished_) return features_;
  if (!partial_.empty()) line(partial_);
  partial_.clear();
  if (part_ && part_->in_headers) end_of_headers();
  if (part_ && !part_->in_headers && part_->text()) decoded_text("", true);
  finished_ = true;
  std::sort(features_.begin(), features_.end());
  features_.erase(std::unique(features_.begin(), features_.end()), features_.end());
  return features_;
}

void Tokenizer::line(std::string_view l) {
  if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
  if (!part_) {  // preamble or epilogue of a multipart: only boundaries matter
    body_line(l);
    return;
  }
  if (part_->in_headers) header_line(l);
  else body_line(l);
}

void Tokenizer::header_line(std::string_view l) {
  if (l.empty()) {
    end_of_headers();
    return;
  }
  if ((l.front() == ' ' || l.front() == '\t') && !header_.empty()) {  // folded (RFC 5322 2.2.3)
    if (header_.size() < kMaxHeader) header_.append(" ").append(trim(l));
    return;
  }
  finish_header();
  header_.assign(l.substr(0, kMaxHeader));
}

void Tokenizer::finish_header() {
  if (header_.empty()) return;
  auto colon = header_.find(':');
  if (colon == std::string::npos || colon == 0) {
    words(header_, "hdrjunk:", false);
    header_.clear();
    return;
  }
  auto name = to_lower(trim(std::string_view(header_).substr(0, colon)));
  auto value = std::string(trim(std::string_view(header_).substr(colon + 1)));
  header_.clear();
  // Another filter's verdict must not teach ours (the corpus carries SpamAssassin's).
  if (name.starts_with("x-spam") || name.starts_with("x-mailkeep")) return;
  token("hdr:" + name);
  if (name == "content-type") {
    auto semi = value.find(';');
    part_->type = to_lower(trim(std::string_view(value).substr(0, semi)));
    part_->charset = header_param(value, "charset");
    part_->boundary = header_param(value, "boundary");
    token("ct:" + part_->type);
    if (!part_->charset.empty()) token("charset:" + to_lower(part_->charset));
  } else if (name == "content-transfer-encoding") {
    part_->encoding = to_lower(value);
    token("cte:" + part_->encoding);
  } else if (name == "content-disposition") {
    auto filename = header_param(value, "filename");
    if (auto dot = filename.rfind('.'); dot != std::string::npos) token("fileext:" + to_lower(filename.substr(dot + 1)));
  }
  if (!part_->top) return;
  if (name == "subject") {
    subject_ = value.substr(0, 200);
    words(value, "subj:", true);
  } else if (name == "from" || name == "to" || name == "cc" || name == "reply-to" || name == "return-path" ||
             name == "sender") {
    words(value, name == "from" ? "from:" : name == "return-path" ? "rpath:" : "to:", false);
  } else if (name == "received") {
    // IPs (and their /24) and host words of the relay chain.
    size_t i = 0;
    while (i < value.size()) {
      if (std::isdigit((unsigned char)value[i])) {
        size_t j = i;
        int dots = 0;
        while (j < value.size() && (std::isdigit((unsigned char)value[j]) || value[j] == '.')) dots += value[j++] == '.';
        if (dots == 3) {
          auto ip = value.substr(i, j - i);
          token("ip:" + ip);
          token("ip24:" + ip.substr(0, ip.rfind('.')));
        }
        i = j;
      } else {
        ++i;
      }
    }
    words(value, "rcvd:", false);
  } else if (name == "x-mailer" || name == "user-agent" || name == "message-id" || name == "organization" ||
             name == "list-id" || name == "precedence" || name == "importance" || name == "x-priority") {
    words(value, name + ":", false);
  }
}

void Tokenizer::end_of_headers() {
  finish_header();
  part_->in_headers = false;
  if (part_->multipart() && stack_.size() < kMaxDepth) {
    stack_.push_back(std::move(part_));  // the preamble follows: nothing to tokenize until a boundary
    return;
  }
  if (part_->multipart()) part_->type = "text/plain";  // too deep: tokenize the rest as text
  if (!part_->text() && part_->type != "message/rfc822") token("part:" + part_->type);
  if (part_->text()) part_->utf8 = std::make_unique<Utf8Converter>(part_->charset);
}

void Tokenizer::body_line(std::string_view l) {
  // A boundary of any enclosing multipart (RFC 2046 5.1.1): "--" boundary ["--"].
  if (l.size() > 2 && l[0] == '-' && l[1] == '-') {
    for (size_t depth = stack_.size(); depth-- > 0;) {
      auto& b = stack_[depth]->boundary;
      auto rest = l.substr(2);
      if (!rest.starts_with(b)) continue;
      auto after = trim(rest.substr(b.size()));
      if (part_ && !part_->in_headers && part_->text()) decoded_text("", true);
      stack_.resize(depth + 1);  // leave any inner multiparts
      if (after.starts_with("--")) {
        part_.reset();  // epilogue: ignored
        stack_[depth]->closed = true;
      } else {
        part_ = std::make_unique<Part>();
        if (stack_[depth]->type == "multipart/digest") part_->type = "message/rfc822";
      }
      return;
    }
  }
  if (!part_) return;
  if (part_->type == "message/rfc822") {
    words(l, "", true);
    return;
  }
  if (!part_->text()) return;  // images, attachments: the part token says enough
  auto& enc = part_->encoding;
  if (enc == "base64") {
    std::string out;
    for (unsigned char c : l) {
      int v = base64_value(c);
      if (c == '=' && part_->b64_count >= 2) {  // padding ends a short group: 1 or 2 bytes
        uint32_t bits = part_->b64_bits << (6 * (4 - part_->b64_count));
        out += char((bits >> 16) & 0xff);
        if (part_->b64_count == 3) out += char((bits >> 8) & 0xff);
        part_->b64_bits = 0;
        part_->b64_count = 0;
        continue;
      }
      if (v < 0) continue;
      part_->b64_bits = (part_->b64_bits << 6) | uint32_t(v);
      if (++part_->b64_count == 4) {
        out += char((part_->b64_bits >> 16) & 0xff);
        out += char((part_->b64_bits >> 8) & 0xff);
        out += char(part_->b64_bits & 0xff);
        part_->b64_bits = 0;
        part_->b64_count = 0;
      }
    }
    decoded_text(out, false);
  } else if (enc == "quoted-printable") {
    std::string out;
    bool soft = false;
    for (size_t i = 0; i < l.size(); ++i) {
      if (l[i] != '=') {
        out += l[i];
        continue;
      }
      if (i + 1 == l.size()) {
        soft = true;  // soft line break
      } else if (i + 2 < l.size() && hex_value(l[i + 1]) >= 0 && hex_value(l[i + 2]) >= 0) {
        out += char(hex_value(l[i + 1]) * 16 + hex_value(l[i + 2]));
        i += 2;
      } else {
        out += '=';  // malformed: keep as it is
      }
    }
    if (!soft) out += '\n';
    decoded_text(out, false);
  } else {
    std::string out(l);
    out += '\n';
    decoded_text(out, false);
  }
}

void Tokenizer::decoded_text(std::string_view bytes, bool final_chunk) {
  if (!part_ || !part_->utf8) return;
  auto utf8 = part_->utf8->convert(bytes);
  if (part_->html()) html(utf8, final_chunk);
  else text(utf8, final_chunk);
  if (final_chunk) recent_.clear();
}

// Decoded text arrives in pieces (base64 lines, QP soft breaks): a word cut
// at the end of a piece waits for the next one, so chunking never changes
// the tokens.
void Tokenizer::body_words(std::string_view s, bool final_chunk) {
  carry_.append(s);
  size_t cut = carry_.size();
  if (!final_chunk) {
    while (cut > 0 && word_char((unsigned char)carry_[cut - 1])) --cut;
    if (carry_.size() - cut > 256) cut = carry_.size();  // no word is that long
  }
  words(std::string_view(carry_).substr(0, cut), "", true);
  carry_.erase(0, cut);
}

void Tokenizer::text(std::string_view s, bool final_chunk) {
  // URLs in plain text.
  for (size_t pos = 0; (pos = s.find("http", pos)) != std::string_view::npos;) {
    auto end = s.find_first_of(" \t\n\"'<>)", pos);
    auto u = s.substr(pos, end == std::string_view::npos ? std::string_view::npos : end - pos);
    if (u.starts_with("http://") || u.starts_with("https://")) url(u);
    pos += 4;
  }
  body_words(s, final_chunk);
}

void Tokenizer::html(std::string_view s, bool final_chunk) {
  std::string plain;
  for (char c : s) {
    if (in_tag_) {
      if (c == '>') {
        in_tag_ = false;
        html_tag(tag_);
        tag_.clear();
        plain += ' ';
      } else if (tag_.size() < 2048) {
        tag_ += c;
      }
    } else if (c == '<') {
      in_tag_ = true;
    } else if (!in_script_) {
      plain += c;
    }
  }
  // Entities that matter for words; others become spaces.
  std::string text;
  for (size_t i = 0; i < plain.size(); ++i) {
    if (plain[i] != '&') {
      text += plain[i];
      continue;
    }
    auto semi = plain.find(';', i);
    if (semi == std::string::npos || semi - i > 8) {
      text += ' ';
      continue;
    }
    auto ent = std::string_view(plain).substr(i + 1, semi - i - 1);
    if (ent == "amp") text += '&';
    else if (ent == "lt") text += '<';
    else if (ent == "gt") text += '>';
    else if (ent == "quot") text += '"';
    else text += ' ';
    i = semi;
  }
  body_words(text, final_chunk);
}

void Tokenizer::html_tag(std::string_view tag) {
  bool closing = !tag.empty() && tag.front() == '/';
  if (closing) tag.remove_prefix(1);
  size_t n = 0;
  while (n < tag.size() && (std::isalnum((unsigned char)tag[n]) || tag[n] == '!')) ++n;
  auto name = to_lower(tag.substr(0, n));
  if (name.empty()) return;
  if (name == "script" || name == "style") in_script_ = !closing;
  if (closing) return;
  token("tag:" + name);
  // Attributes that carry links, and a few that spammers like.
  auto lower = to_lower(tag);
  for (std::string_view attr : {"href", "src", "action"}) {
    auto pos = lower.find(std::string(attr) + "=");
    if (pos == std::string::npos) continue;
    size_t v = pos + attr.size() + 1;
    char quote = v < tag.size() && (tag[v] == '"' || tag[v] == '\'') ? tag[v] : 0;
    if (quote) ++v;
    auto end = quote ? tag.find(quote, v) : tag.find_first_of(" \t>", v);
    url(tag.substr(v, end == std::string_view::npos ? std::string_view::npos : end - v));
  }
  for (std::string_view attr : {"color", "size", "face", "width", "height"})
    if (lower.find(std::string(attr) + "=") != std::string::npos) token("attr:" + name + ":" + std::string(attr));
}

void Tokenizer::url(std::string_view u) {
  auto scheme = u.find("://");
  if (scheme == std::string_view::npos) {
    if (istarts_with(u, "mailto:")) token("url:mailto");
    return;
  }
  token("url:scheme:" + to_lower(u.substr(0, scheme)));
  auto rest = u.substr(scheme + 3);
  auto host_end = rest.find_first_of("/?#:");
  auto host = to_lower(rest.substr(0, host_end));
  token("url:" + host);
  // The registrable-ish tail: last two labels.
  auto dot = host.rfind('.');
  if (dot != std::string::npos && dot > 0) {
    auto dot2 = host.rfind('.', dot - 1);
    token("url:" + host.substr(dot2 == std::string::npos ? 0 : dot2 + 1));
  }
  if (!host.empty() && std::isdigit((unsigned char)host.back())) token("url:numeric-host");
  if (host_end != std::string_view::npos) words(rest.substr(host_end), "urlpath:", false);
}

void Tokenizer::words(std::string_view s, std::string_view prefix, bool pairs) {
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && !word_char((unsigned char)s[i])) ++i;
    size_t j = i;
    while (j < s.size() && word_char((unsigned char)s[j])) ++j;
    if (j > i) word(s.substr(i, j - i), prefix, pairs);
    i = j;
  }
}

void Tokenizer::word(std::string_view w, std::string_view prefix, bool pairs) {
  while (!w.empty() && (w.back() == '\'' || w.back() == '!')) w.remove_suffix(1);
  while (!w.empty() && w.front() == '\'') w.remove_prefix(1);
  if (w.size() < 2) return;
  if (w.size() > 40) {
    token(std::string(prefix) + "long:" + std::to_string(w.size() / 10));
    return;
  }
  std::string t(prefix);
  t += to_lower(w);
  uint64_t h = fnv(t);
  if (keep_tokens_) tokens_.push_back(t);
  add(h);
  if (!pairs) return;
  // OSB: this word with each of the previous window-1 words, at its distance.
  for (size_t k = 0; k < recent_.size(); ++k) add(mix(recent_[recent_.size() - 1 - k], h, k + 1));
  recent_.push_back(h);
  if (recent_.size() >= settings_.osb_window) recent_.erase(recent_.begin());
}

void Tokenizer::token(std::string_view t) {
  if (keep_tokens_) tokens_.emplace_back(t);
  add(fnv(t));
}

void Tokenizer::add(uint64_t hash) {
  if (features_.size() >= settings_.max_features) return;
  features_.push_back(uint32_t(hash >> (64 - settings_.hash_bits)));
}

}  // namespace mk::spam
