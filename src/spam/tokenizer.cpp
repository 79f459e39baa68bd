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

// ASCII upper case to lower case in 8 bytes at once (bytes >= 0x80 untouched).
inline uint64_t lower8(uint64_t x) {
  uint64_t low7 = x & 0x7F7F7F7F7F7F7F7Full;
  uint64_t at_least_a = low7 + 0x3F3F3F3F3F3F3F3Full;  // bit 7 set where byte >= 'A'
  uint64_t above_z = low7 + 0x2525252525252525ull;     // bit 7 set where byte > 'Z'
  uint64_t upper = (at_least_a ^ above_z) & ~x & 0x8080808080808080ull;
  return x | (upper >> 2);  // + 0x20 on A..Z
}

// The feature hash of a token: case-insensitive (ASCII), 8 bytes per step.
// Hand-written because it runs for every word of every message and must
// fold the case on the fly; quality only needs to spread features over 2^20.
[[gnu::always_inline]] inline uint64_t hash_text(std::string_view s, uint64_t seed = 0x2F0E1EBA9EA36930ull) {
  constexpr uint64_t k1 = 0x9E3779B97F4A7C15ull, k2 = 0xBF58476D1CE4E5B9ull;
  const char* p = s.data();
  const size_t n = s.size();
  uint64_t h = seed ^ (n * k1);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t x;
    std::memcpy(&x, p + i, 8);
    h = (h ^ lower8(x)) * k1;
    h ^= h >> 29;
  }
  if (i < n) {  // the last 1..7 bytes (a byte loop: a variable-length memcpy is a library call)
    uint64_t x = 0;
    for (size_t k = 0; i + k < n; ++k) x |= uint64_t(static_cast<unsigned char>(p[i + k])) << (8 * k);
    h = (h ^ lower8(x)) * k1;
  }
  h ^= h >> 32;
  h *= k2;
  return h ^ (h >> 29);
}

[[gnu::always_inline]] inline uint64_t hash_token(std::string_view prefix, std::string_view text) {
  return prefix.empty() ? hash_text(text) : hash_text(text, hash_text(prefix));
}

[[gnu::always_inline]] inline uint64_t mix(uint64_t a, uint64_t b, uint64_t k) {
  uint64_t h = a * 0x9E3779B97F4A7C15ull ^ (b + 0x632BE59BD9B4E019ull + (a << 6) + (a >> 2));
  h ^= k * 0xC2B2AE3D27D4EB4Full;
  h ^= h >> 31;
  return h * 0x94D049BB133111EBull;
}

// A table, not std::isalnum: this is the tokenizer's innermost test, and the locale-aware call costs more.
struct WordChars {
  bool table[256] = {};
  constexpr WordChars() {
    for (int c = 0; c < 256; ++c)
      table[c] = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 0x80 || c == '$' ||
                 c == '!' || c == '\'';
  }
};
constexpr WordChars kWordChars;
inline bool word_char(unsigned char c) { return kWordChars.table[c]; }

inline unsigned char ascii_lower(unsigned char c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

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

// Quoted-printable (RFC 2045 6.7) of one line, or with `q_encoding` the Q
// encoding of RFC 2047 encoded words ('_' is a space, no soft breaks). A
// malformed escape stays as it is. Writes at most in.size() bytes at `out`;
// returns the end. `soft_break`: whether the line ended in a lone '='.
char* decode_quoted_printable(std::string_view in, char* out, bool q_encoding, bool* soft_break = nullptr) {
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (q_encoding && c == '_') {
      *out++ = ' ';
    } else if (c != '=') {
      *out++ = c;
    } else if (!q_encoding && i + 1 == in.size()) {
      if (soft_break) *soft_break = true;
    } else if (i + 2 < in.size() && hex_value(in[i + 1]) >= 0 && hex_value(in[i + 2]) >= 0) {
      *out++ = char(hex_value(in[i + 1]) * 16 + hex_value(in[i + 2]));
      i += 2;
    } else {
      *out++ = '=';
    }
  }
  return out;
}

// Base64 (RFC 2045 6.8) fed in pieces, for body lines and encoded words: a
// group cut between pieces is carried over, characters outside the alphabet
// are skipped, and '=' ends a short group.
struct Base64Decoder {
  uint32_t bits = 0;
  int count = 0;

  // Writes at most in.size() + 2 bytes at `out`; returns the end.
  char* decode(std::string_view in, char* out) {
    for (unsigned char c : in) {
      if (c == '=' && count >= 2) {  // padding ends a short group: 1 or 2 bytes
        out = finish(out);
        continue;
      }
      int v = base64_value(c);
      if (v < 0) continue;
      bits = (bits << 6) | uint32_t(v);
      if (++count == 4) {
        *out++ = char((bits >> 16) & 0xff);
        *out++ = char((bits >> 8) & 0xff);
        *out++ = char(bits & 0xff);
        bits = 0;
        count = 0;
      }
    }
    return out;
  }
  // The bytes of a short group (2 or 3 characters), padded or not.
  char* finish(char* out) {
    if (count >= 2) {
      uint32_t tail = bits << (6 * (4 - count));
      *out++ = char((tail >> 16) & 0xff);
      if (count == 3) *out++ = char((tail >> 8) & 0xff);
    }
    bits = 0;
    count = 0;
    return out;
  }
};

}  // namespace

// Converts a part's text to UTF-8 chunk by chunk, carrying incomplete
// multibyte sequences over; undecodable bytes are skipped.
class Tokenizer::Utf8Converter {
 public:
  explicit Utf8Converter(const std::string& charset) {
    auto cs = to_lower(charset);
    if (cs.empty() || cs == "us-ascii" || cs == "utf-8" || cs == "utf8" || cs == "ascii") return;
    if (cs == "iso-8859-1" || cs == "latin1" || cs == "iso8859-1") {  // the commonest: done here, no iconv_open
      latin1_ = true;
      return;
    }
    cd_ = iconv_open("UTF-8", cs.c_str());
    if (cd_ == (iconv_t)-1) cd_ = nullptr;  // unknown charset: bytes pass as they are
  }
  ~Utf8Converter() {
    if (cd_) iconv_close(cd_);
  }
  // The text as UTF-8; valid until the next call.
  std::string_view convert(std::string_view in) {
    if (latin1_) {  // each byte is its code point
      if (out.size() < in.size() * 2) out.resize(in.size() * 2);
      char* o = out.data();
      for (unsigned char c : in) {
        if (c < 0x80) {
          *o++ = char(c);
        } else {
          *o++ = char(0xC0 | (c >> 6));
          *o++ = char(0x80 | (c & 0x3F));
        }
      }
      return std::string_view(out.data(), size_t(o - out.data()));
    }
    if (!cd_) return in;
    carry_.append(in);
    out.resize(carry_.size() * 4 + 16);
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
    carry_.erase(0, carry_.size() - src_left);
    if (carry_.size() > 16) carry_.clear();  // not a real multibyte tail
    return std::string_view(out.data(), out.size() - dst_left);
  }

 private:
  iconv_t cd_ = nullptr;
  bool latin1_ = false;
  std::string carry_;
  std::string out;
};

std::string Tokenizer::decode_encoded_words(std::string_view v) {
  std::string out;
  size_t i = 0;
  bool after_encoded = false;  // whitespace between two encoded words is not text (RFC 2047 6.2)
  while (i < v.size()) {
    auto start = v.find("=?", i);
    if (start == std::string_view::npos) {
      out.append(v.substr(i));
      break;
    }
    auto q = v.find('?', start + 2);
    auto end = q == std::string_view::npos || q + 3 > v.size() ? std::string_view::npos : v.find("?=", q + 3);
    char encoding = q != std::string_view::npos && q + 2 < v.size() && v[q + 2] == '?' ? char(v[q + 1] | 0x20) : 0;
    if (end == std::string_view::npos || (encoding != 'b' && encoding != 'q') || q - start > 64) {
      out.append(v.substr(i, start + 2 - i));  // not an encoded word: as it is
      i = start + 2;
      after_encoded = false;
      continue;
    }
    auto between = v.substr(i, start - i);
    if (!(after_encoded && trim(between).empty())) out.append(between);
    auto charset = v.substr(start + 2, q - start - 2);
    charset = charset.substr(0, charset.find('*'));  // RFC 2231 language suffix
    auto text = v.substr(q + 3, end - q - 3);
    std::string bytes;
    if (encoding == 'q') {
      bytes.resize(text.size());
      bytes.resize(size_t(decode_quoted_printable(text, bytes.data(), /*q_encoding=*/true) - bytes.data()));
    } else {
      bytes.resize(text.size() + 4);
      Base64Decoder decoder;
      bytes.resize(size_t(decoder.finish(decoder.decode(text, bytes.data())) - bytes.data()));
    }
    Utf8Converter converter{std::string(charset)};
    out.append(converter.convert(bytes));
    i = end + 2;
    after_encoded = true;
  }
  return out;
}

struct Tokenizer::Part {
  bool in_headers = true;
  bool top = false;
  std::string type = "text/plain";
  std::string charset;
  std::string encoding;  // lower-case Content-Transfer-Encoding
  std::string boundary;  // for multipart/*
  bool closed = false;   // saw the closing boundary: epilogue follows
  Base64Decoder b64;  // a group may be cut between lines
  std::unique_ptr<Utf8Converter> utf8;
  // What the body lines are, decided once at the end of the part's header (not per line).
  enum class Body { Text, Html, Message, Skip } body = Body::Text;
  enum class Encoding { None, Base64, QuotedPrintable } cte = Encoding::None;
  bool text() const { return type.starts_with("text/") || type.empty(); }
  bool html() const { return type == "text/html"; }
  bool multipart() const { return type.starts_with("multipart/") && !boundary.empty(); }
};

// The thread's feature bitmap for synchronous tokenizers: one owner at a time.
struct ThreadBitmap {
  std::vector<uint64_t> bits;
  std::vector<uint32_t> found;  // the owner's features, max_features slots
  const void* owner = nullptr;
};
thread_local ThreadBitmap thread_bitmap;

// Inlined into its callers here (the only ones): it runs for every word and
// word pair, and a call per feature was a tenth of batch classification.
[[gnu::always_inline]] inline void Tokenizer::add(uint64_t hash) {
  uint32_t f = uint32_t(hash >> (64 - settings_.hash_bits));
  if (bitmap_) {  // 2^20 bits: 128 kB, stays in the cache
    if (found_count_ >= settings_.max_features) return;
    // Without a branch on "seen before?": to the branch predictor that is a coin toss.
    uint64_t& word = bitmap_[f >> 6];
    const uint64_t bit = uint64_t(1) << (f & 63);
    found_[found_count_] = f;
    found_count_ += (word & bit) == 0;
    word |= bit;
    return;
  }
  insert(f);
}

Tokenizer::Tokenizer(TokenizerSettings settings, bool synchronous) : settings_(settings) {
  part_ = std::make_unique<Part>();
  part_->top = true;
  if (synchronous && !thread_bitmap.owner) {
    thread_bitmap.bits.resize((size_t(1) << settings_.hash_bits) / 64);
    thread_bitmap.found.resize(settings_.max_features);
    thread_bitmap.owner = this;
    bitmap_ = thread_bitmap.bits.data();
    found_ = thread_bitmap.found.data();
  } else {
    features_.reserve(2048);  // a typical message's features: no regrowth on the way
  }
}

Tokenizer::~Tokenizer() { release_bitmap(); }

void Tokenizer::clear_found() {
  for (size_t i = 0; i < found_count_; ++i) bitmap_[found_[i] >> 6] = 0;  // every bit this message set
  found_count_ = 0;
}

void Tokenizer::release_bitmap() {
  if (!bitmap_) return;
  clear_found();
  bitmap_ = nullptr;
  found_ = nullptr;
  thread_bitmap.owner = nullptr;
}

void Tokenizer::forget_features() {
  if (bitmap_) clear_found();
  if (!seen_.empty()) std::fill(seen_.begin(), seen_.end(), kEmpty);
  features_.clear();
  tokens_.clear();
  token_features_.clear();
  recent_count_ = 0;
  first_received_.clear();
}

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
  if (bitmap_) features_.assign(found_, found_ + found_count_);
  release_bitmap();
  seen_ = {};  // a finished tokenizer may be kept (the SMTP session): free the set
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
  // Views into header_, which is cleared on the way out.
  struct Clear {
    std::string& s;
    ~Clear() { s.clear(); }
  } clear{header_};
  auto raw_name = trim(std::string_view(header_).substr(0, colon));
  char name_buf[64];
  if (raw_name.size() > sizeof name_buf - 1) raw_name = raw_name.substr(0, sizeof name_buf - 1);
  for (size_t i = 0; i < raw_name.size(); ++i) name_buf[i] = char(ascii_lower((unsigned char)raw_name[i]));
  name_buf[raw_name.size()] = ':';
  std::string_view name(name_buf, raw_name.size());
  std::string_view name_colon(name_buf, raw_name.size() + 1);  // the prefix of its words: "x-mailer:"
  std::string_view value = trim(std::string_view(header_).substr(colon + 1));
  // Another filter's verdict must not teach ours (the corpus carries SpamAssassin's).
  if (name.starts_with("x-spam") || name.starts_with("x-mailkeep")) return;
  prefixed_token("hdr:", name);
  if (name == "content-type") {
    auto semi = value.find(';');
    part_->type = to_lower(trim(value.substr(0, semi)));
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
    std::string decoded = value.find("=?") == std::string_view::npos ? std::string(value) : decode_encoded_words(value);
    size_t cut = std::min<size_t>(decoded.size(), 200);
    while (cut < decoded.size() && cut > 0 && (static_cast<unsigned char>(decoded[cut]) & 0xC0) == 0x80) --cut;
    subject_ = decoded.substr(0, cut);  // whole UTF-8 characters
    words(decoded, "subj:", true);
  } else if (name == "from" || name == "to" || name == "cc" || name == "reply-to" || name == "return-path" ||
             name == "sender") {
    std::string decoded = value.find("=?") == std::string_view::npos ? std::string(value) : decode_encoded_words(value);
    words(decoded, name == "from" ? "from:" : name == "return-path" ? "rpath:" : "to:", false);
  } else if (name == "received") {
    // This gateway's own field, the top-most one that says "(mailkeep)", names the client
    // that handed the message to us. The SMTP path feeds that field before the message
    // (smtp/session.cpp), so mail scored as it arrives and the same mail trained from the
    // archive, where the field is on top, have the same features. What stands above it
    // (Return-Path, Delivered-To of the archive's delivery) came after the verdict: forgotten.
    if (!client_seen_ && value.find("(mailkeep)") != std::string_view::npos) {
      client_seen_ = true;
      forget_features();
      client_hop(value);
    }
    // Only the bottom-most field counts (tokenized at the end of the header):
    // it is where the message entered the mail system. The hops above it
    // are added by whoever carried and stored it — our own Received: in the
    // archive, the provider, a fetchmail — so they differ between the mail
    // we score (as it arrives) and the mail we train from (as it was kept).
    first_received_.assign(value.substr(0, 2048));
  } else if (name == "x-mailer" || name == "user-agent" || name == "message-id" || name == "organization" ||
             name == "list-id" || name == "precedence" || name == "importance" || name == "x-priority") {
    words(value, name_colon, false);
  }
}

// A Received field: its IPs (and their /24) and host names.
void Tokenizer::received_hop(std::string_view value) {
  size_t i = 0;
  while (i < value.size()) {
    if (std::isdigit((unsigned char)value[i])) {
      size_t j = i;
      int dots = 0;
      while (j < value.size() && (std::isdigit((unsigned char)value[j]) || value[j] == '.')) dots += value[j++] == '.';
      if (dots == 3) {
        auto ip = value.substr(i, j - i);
        prefixed_token("ip:", ip);
        prefixed_token("ip24:", ip.substr(0, ip.rfind('.')));
      }
      i = j;
    } else {
      ++i;
    }
  }
  received_words(value);
}

// "from HELO ([IP])" of our own Received field: the client's address, its
// network (/24, or /48 for IPv6) and the name it gave in HELO.
void Tokenizer::client_hop(std::string_view value) {
  auto by = value.find("by ");
  auto from = value.substr(0, by);
  if (!istarts_with(from, "from ")) return;
  from.remove_prefix(5);
  auto open = from.find("([");
  auto close = from.find("])");
  if (open == std::string_view::npos || close == std::string_view::npos || close < open) return;
  words(from.substr(0, open), "clienthelo:", false);
  auto ip = from.substr(open + 2, close - open - 2);
  if (ip.size() > 64) return;
  prefixed_token("clientip:", ip);
  if (ip.find(':') != std::string_view::npos) {
    size_t end = std::string_view::npos, from_pos = 0;
    for (int colons = 0; colons < 3; ++colons, from_pos = end + 1)
      if ((end = ip.find(':', from_pos)) == std::string_view::npos) break;
    prefixed_token("clientnet:", ip.substr(0, end));  // the first three groups (or all of a short form)
  } else if (auto dot = ip.rfind('.'); dot != std::string_view::npos) {
    prefixed_token("clientnet:", ip.substr(0, dot));
  }
}

void Tokenizer::end_of_headers() {
  finish_header();
  if (part_->top && !first_received_.empty()) {
    received_hop(first_received_);
    first_received_ = {};
  }
  part_->in_headers = false;
  if (part_->multipart() && stack_.size() < kMaxDepth) {
    stack_.push_back(std::move(part_));  // the preamble follows: nothing to tokenize until a boundary
    return;
  }
  if (part_->multipart()) part_->type = "text/plain";  // too deep: tokenize the rest as text
  if (!part_->text() && part_->type != "message/rfc822") token("part:" + part_->type);
  if (part_->text()) part_->utf8 = std::make_unique<Utf8Converter>(part_->charset);
  part_->body = part_->type == "message/rfc822" ? Part::Body::Message
                : !part_->text()                ? Part::Body::Skip
                : part_->html()                 ? Part::Body::Html
                                                : Part::Body::Text;
  part_->cte = part_->encoding == "base64"             ? Part::Encoding::Base64
               : part_->encoding == "quoted-printable" ? Part::Encoding::QuotedPrintable
                                                       : Part::Encoding::None;
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
  if (part_->body == Part::Body::Message) {
    words(l, "", true);
    return;
  }
  if (part_->body == Part::Body::Skip) return;  // images, attachments: the part token says enough
  // Decoders write through a pointer into a buffer sized for the worst case
  // (this runs for every line of every encoded part).
  std::string& buffer = decode_buffer_;
  if (buffer.size() < l.size() + 2) buffer.resize(l.size() + 2);
  char* out = buffer.data();
  if (part_->cte == Part::Encoding::Base64) {
    out = part_->b64.decode(l, out);
    decoded_text(std::string_view(buffer.data(), size_t(out - buffer.data())), false);
  } else if (part_->cte == Part::Encoding::QuotedPrintable) {
    bool soft = false;
    out = decode_quoted_printable(l, out, /*q_encoding=*/false, &soft);
    if (!soft) *out++ = '\n';
    decoded_text(std::string_view(buffer.data(), size_t(out - buffer.data())), false);
  } else {
    decoded_text(l, false);
    decoded_text("\n", false);
  }
}

void Tokenizer::decoded_text(std::string_view bytes, bool final_chunk) {
  if (!part_ || !part_->utf8) return;
  auto utf8 = part_->utf8->convert(bytes);
  if (part_->body == Part::Body::Html) html(utf8, final_chunk);
  else text(utf8, final_chunk);
  if (final_chunk) recent_count_ = 0;
}

// Decoded text arrives in pieces (base64 lines, QP soft breaks): a word cut
// at the end of a piece waits for the next one, so chunking never changes
// the tokens.
void Tokenizer::body_words(std::string_view s, bool final_chunk) {
  if (!carry_.empty()) {  // finish the word cut last time, then go on in place
    size_t end = 0;
    while (end < s.size() && word_char((unsigned char)s[end])) ++end;
    carry_.append(s.substr(0, end));
    s.remove_prefix(end);
    if (s.empty() && !final_chunk && carry_.size() <= 256) return;  // the word goes on
    words(carry_, "", true);
    carry_.clear();
  }
  size_t cut = s.size();
  if (!final_chunk) {
    while (cut > 0 && word_char((unsigned char)s[cut - 1])) --cut;
    if (s.size() - cut > 256) cut = s.size();  // no word is that long
  }
  words(s.substr(0, cut), "", true);
  carry_.assign(s.substr(cut));
}

void Tokenizer::text(std::string_view s, bool final_chunk) {
  urls_in_words_ = true;  // plain text: words() also picks out the http(s) URLs
  body_words(s, final_chunk);
  urls_in_words_ = false;
}

void Tokenizer::html(std::string_view s, bool final_chunk) {
  // Text between tags, copied a span at a time; entities that matter for
  // words decoded, others become spaces. Reused buffer: this runs per line.
  std::string& text = html_text_;
  text.clear();
  size_t i = 0;
  while (i < s.size()) {
    if (in_tag_) {
      auto close = s.find('>', i);
      auto piece = s.substr(i, close == std::string_view::npos ? std::string_view::npos : close - i);
      if (tag_.size() < 2048) tag_.append(piece.substr(0, 2048 - tag_.size()));
      if (close == std::string_view::npos) break;
      in_tag_ = false;
      html_tag(tag_);
      tag_.clear();
      text += ' ';
      i = close + 1;
      continue;
    }
    size_t stop = i;
    while (stop < s.size() && s[stop] != '<' && s[stop] != '&') ++stop;
    if (!in_script_) text.append(s.substr(i, stop - i));
    i = stop;
    if (i == s.size()) break;
    if (s[i] == '<') {
      in_tag_ = true;
      ++i;
      continue;
    }
    // '&': an entity (an entity cut by the end of the piece becomes a space).
    auto semi = s.substr(i, 10).find(';');
    if (in_script_) {
      ++i;
      continue;
    }
    if (semi == std::string_view::npos || semi > 9) {
      text += ' ';
      ++i;
      continue;
    }
    auto ent = s.substr(i + 1, semi - 1);
    text += ent == "amp" ? '&' : ent == "lt" ? '<' : ent == "gt" ? '>' : ent == "quot" ? '"' : ' ';
    i += semi + 1;
  }
  body_words(text, final_chunk);
}

void Tokenizer::html_tag(std::string_view tag) {
  bool closing = !tag.empty() && tag.front() == '/';
  if (closing) tag.remove_prefix(1);
  size_t n = 0;
  while (n < tag.size() && n < 16 && (word_char((unsigned char)tag[n]) && tag[n] != '$' && tag[n] != '\'')) ++n;
  if (n == 0 || n == 16) return;
  char name_buf[16];
  for (size_t i = 0; i < n; ++i) name_buf[i] = char(ascii_lower((unsigned char)tag[i]));
  std::string_view name(name_buf, n);
  if (name == "script" || name == "style") in_script_ = !closing;
  if (closing) return;
  prefixed_token("tag:", name);
  // Attributes: the links, and a few that spammers like. Scanned once, case-insensitively.
  size_t i = n;
  while (i < tag.size()) {
    while (i < tag.size() && !word_char((unsigned char)tag[i])) ++i;
    size_t a = i;
    while (i < tag.size() && (word_char((unsigned char)tag[i]) || tag[i] == '-')) ++i;
    auto attr = tag.substr(a, i - a);
    size_t v = i;
    while (v < tag.size() && tag[v] == ' ') ++v;
    if (attr.empty() || v >= tag.size() || tag[v] != '=') continue;
    ++v;
    while (v < tag.size() && tag[v] == ' ') ++v;
    char quote = v < tag.size() && (tag[v] == '"' || tag[v] == '\'') ? tag[v] : 0;
    if (quote) ++v;
    auto end = quote ? tag.find(quote, v) : tag.find_first_of(" \t>", v);
    if (end == std::string_view::npos) end = tag.size();
    if (iequals(attr, "href") || iequals(attr, "src") || iequals(attr, "action")) {
      url(tag.substr(v, end - v));
    } else {
      for (std::string_view styled : {"color", "size", "face", "width", "height"})
        if (iequals(attr, styled)) {
          char buf[64];
          auto len = std::min(sizeof buf, name.size() + 1 + styled.size());
          std::memcpy(buf, name.data(), name.size());
          buf[name.size()] = ':';
          std::memcpy(buf + name.size() + 1, styled.data(), len - name.size() - 1);
          prefixed_token("attr:", std::string_view(buf, len));
        }
    }
    i = end + (quote ? 1 : 0);
  }
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

// The host names of a Received field ("rcvd:" words), without its dates,
// times and queue ids: those change with every message and every month, so
// a model that learned them would learn when its training mail was sent.
void Tokenizer::received_words(std::string_view value) {
  size_t i = 0;
  while (i < value.size()) {
    while (i < value.size() && !word_char((unsigned char)value[i])) ++i;
    size_t j = i;
    bool digit = false;
    while (j < value.size() && (word_char((unsigned char)value[j]) || value[j] == '.' || value[j] == '-')) {
      digit = digit || (value[j] >= '0' && value[j] <= '9');
      ++j;
    }
    auto w = value.substr(i, j - i);
    i = j;
    if (digit || w.size() < 2) continue;
    if (w.size() == 3) {  // month and day names
      char l[3] = {char(ascii_lower(w[0])), char(ascii_lower(w[1])), char(ascii_lower(w[2]))};
      std::string_view three(l, 3);
      auto at = std::string_view("janfebmaraprmayjunjulaugsepoctnovdecmontuewedthufrisatsun").find(three);
      if (at != std::string_view::npos && at % 3 == 0) continue;
    }
    word(w, "rcvd:", false);
  }
}

void Tokenizer::words(std::string_view s, std::string_view prefix, bool pairs) {
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && !word_char((unsigned char)s[i])) ++i;
    size_t j = i;
    while (j < s.size() && word_char((unsigned char)s[j])) ++j;
    if (j > i) {
      auto w = s.substr(i, j - i);
      if (urls_in_words_ && (w == "http" || w == "https") && s.substr(j, 3) == "://") {
        auto end = s.find_first_of(" \t\n\"'<>)", i);
        url(s.substr(i, end == std::string_view::npos ? std::string_view::npos : end - i));
      }
      word(w, prefix, pairs);
    }
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
  uint64_t h = hash_token(prefix, w);  // lower-cased on the fly: no string per word
  if (keep_tokens_) keep(std::string(prefix) + to_lower(w), h);
  add(h);
  if (!pairs) return;
  // OSB: this word with each of the previous window-1 words, at its distance.
  for (size_t k = 0; k < recent_count_; ++k) {
    size_t slot = (recent_next_ + kRecent - 1 - k) % kRecent;
    uint64_t pair = mix(recent_[slot], h, k + 1);
    if (keep_tokens_) keep(recent_words_[slot] + " ~" + std::to_string(k + 1) + "~ " + to_lower(w), pair);
    add(pair);
  }
  if (keep_tokens_) recent_words_[recent_next_] = std::string(prefix) + to_lower(w);
  recent_[recent_next_] = h;
  recent_next_ = (recent_next_ + 1) % kRecent;
  if (recent_count_ + 1 < settings_.osb_window && recent_count_ + 1 < kRecent) ++recent_count_;
}

void Tokenizer::prefixed_token(std::string_view prefix, std::string_view t) {
  uint64_t h = hash_token(prefix, t);
  if (keep_tokens_) keep(std::string(prefix) + std::string(t), h);
  add(h);
}

void Tokenizer::token(std::string_view t) {
  uint64_t h = hash_token("", t);
  if (keep_tokens_) keep(std::string(t), h);
  add(h);
}

void Tokenizer::keep(std::string token, uint64_t hash) {
  tokens_.push_back(std::move(token));
  token_features_.push_back(uint32_t(hash >> (64 - settings_.hash_bits)));
}

void Tokenizer::insert(uint32_t f) {
  if (features_.size() >= settings_.max_features) return;
  // Unique as they come: an open-addressing set (linear probing, at most half
  // full), cheaper than sorting the duplicates away at the end.
  if ((features_.size() + 1) * 2 > seen_.size()) grow_seen();
  size_t mask = seen_.size() - 1;
  for (size_t i = (f * 0x9E3779B1u) & mask;; i = (i + 1) & mask) {
    if (seen_[i] == kEmpty) {
      seen_[i] = f;
      features_.push_back(f);
      return;
    }
    if (seen_[i] == f) return;
  }
}

void Tokenizer::grow_seen() {
  size_t size = seen_.empty() ? 4096 : seen_.size() * 2;
  seen_.assign(size, kEmpty);
  size_t mask = size - 1;
  for (uint32_t f : features_) {
    size_t i = (f * 0x9E3779B1u) & mask;
    while (seen_[i] != kEmpty) i = (i + 1) & mask;
    seen_[i] = f;
  }
}

}  // namespace mk::spam
