// tokenizer.h — turns a message into hashed binary features for the spam
// classifier, in one pass while the bytes arrive (DATA), never holding the
// message: MIME-aware (multipart walk, base64 and quoted-printable decoded,
// charsets converted to UTF-8 with iconv, HTML reduced to text plus tag and
// URL tokens), header fields tagged (subj:, from:, rcvd:, ip:, url: ...; of
// the Received fields only the bottom-most, where the message entered mail),
// words combined as orthogonal sparse bigrams (OSB, window 4) and hashed.
//
// Hand-written because no library here parses MIME push-style, a chunk at a
// time (GMime and friends want the whole message or a seekable stream).
// Malformed MIME never throws: whatever cannot be decoded is tokenized raw.
// Standards: RFC 5322 (header folding), RFC 2045/2046 (MIME, base64, QP,
// multipart), RFC 2047 (encoded words in Subject and address fields).
// Threading: one tokenizer per message.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace mk::spam {

// Settings that change what a feature means. Stored in the model file and
// checked on load: a model trained with other settings is refused.
struct TokenizerSettings {
  // 3: only the bottom-most Received field, its IPs and host names (no dates or ids); hash of 2026-11
  uint32_t version = 3;
  uint32_t hash_bits = 20;   // feature space: 2^hash_bits weights
  uint32_t osb_window = 4;   // word pairs up to this distance
  uint32_t max_features = 30000;
};

class Tokenizer {
 public:
  // `synchronous`: fed and finished without another tokenizer working on the
  // same thread in between (batch classification and training); it may then
  // use the thread's 2^hash_bits-bit feature bitmap, which is faster than the
  // private set that SMTP sessions (interleaved on one thread) use.
  explicit Tokenizer(TokenizerSettings settings = {}, bool synchronous = false);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Raw message bytes, any chunking, CRLF or LF line ends.
  void feed(std::string_view bytes);
  // Ends the message; returns the unique feature indices, in the order first seen.
  const std::vector<uint32_t>& finish();

  // For tests and debugging: the token strings seen (before hashing), if enabled.
  void keep_tokens(bool keep) { keep_tokens_ = keep; }
  const std::vector<std::string>& tokens() const { return tokens_; }
  // The feature index of each of tokens() (`mailkeep spam explain`).
  const std::vector<uint32_t>& token_features() const { return token_features_; }
  // The Subject field, RFC 2047 encoded words decoded to UTF-8 (at most 200 bytes).
  std::string subject() const { return subject_; }

  // "=?UTF-8?Q?caf=C3=A9?= =?ISO-8859-1?B?Y3LobWU=?=" → "cafécrème" (RFC 2047:
  // B and Q encodings, any iconv charset, whitespace between encoded words dropped);
  // anything that is not an encoded word stays as it is.
  static std::string decode_encoded_words(std::string_view value);

 private:
  struct Part;
  class Utf8Converter;
  void line(std::string_view l);
  void header_line(std::string_view l);
  void end_of_headers();
  void finish_header();
  void body_line(std::string_view l);
  void decoded_text(std::string_view text, bool final_chunk);
  void text(std::string_view utf8, bool final_chunk);
  void html(std::string_view utf8, bool final_chunk);
  void body_words(std::string_view s, bool final_chunk);
  void html_tag(std::string_view tag);
  void url(std::string_view u);
  void words(std::string_view s, std::string_view prefix, bool pairs);
  void received_words(std::string_view value);
  void received_hop(std::string_view value);
  std::string first_received_;  // the bottom-most Received field seen so far (the last one read)
  void client_hop(std::string_view value);
  void forget_features();       // drops what the header fields read so far gave
  bool client_seen_ = false;    // our own Received field was read
  void word(std::string_view w, std::string_view prefix, bool pairs);
  void token(std::string_view t);
  void prefixed_token(std::string_view prefix, std::string_view t);  // token(prefix + t), without the string
  void add(uint64_t hash);
  void insert(uint32_t feature);
  void grow_seen();

  TokenizerSettings settings_;
  std::string partial_;  // an unfinished line
  std::vector<std::unique_ptr<Part>> stack_;  // enclosing multiparts, innermost last
  std::unique_ptr<Part> part_;                // the entity whose lines we are in
  std::string header_;   // the header field being unfolded
  static constexpr size_t kRecent = 8;  // ring of the last words' hashes, for OSB
  uint64_t recent_[kRecent] = {};
  size_t recent_next_ = 0, recent_count_ = 0;
  std::vector<uint32_t> features_;  // unique
  static constexpr uint32_t kEmpty = UINT32_MAX;  // not a feature: hash_bits <= 31
  std::vector<uint32_t> seen_;      // open-addressing set of features_
  uint64_t* bitmap_ = nullptr;      // or the thread's bitmap, while this tokenizer owns it,
  uint32_t* found_ = nullptr;       // and its list of the features found (features_ at finish)
  size_t found_count_ = 0;
  void clear_found();  // empties found_ and the bitmap bits it set
  void release_bitmap();
  std::vector<std::string> tokens_;
  std::vector<uint32_t> token_features_;
  std::string recent_words_[8];  // with keep_tokens: the words of recent_, to name the pairs
  void keep(std::string token, uint64_t hash);
  bool keep_tokens_ = false;
  bool finished_ = false;
  std::string subject_;
  // HTML state across lines.
  bool in_tag_ = false, in_script_ = false;
  bool urls_in_words_ = false;  // while tokenizing plain text
  std::string tag_;
  std::string carry_;  // a body word cut at the end of a decoded piece
  std::string html_text_, decode_buffer_;
};

}  // namespace mk::spam
