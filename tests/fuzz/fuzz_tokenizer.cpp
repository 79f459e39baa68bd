// fuzz_tokenizer.cpp — libFuzzer target: the spam tokenizer (streaming MIME,
// base64/QP, charsets, HTML, RFC 2047, Received fields) on arbitrary bytes.
// Invariants: it never crashes or throws on malformed mail; the features do
// not depend on how the bytes are chunked nor on which de-duplication the
// tokenizer uses (the thread's bitmap or its own set); they are unique, in
// range and at most max_features; decode_encoded_words never fails.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "spam/tokenizer.h"

namespace {

std::vector<uint32_t> features(std::string_view in, size_t chunk, bool synchronous) {
  mk::spam::Tokenizer t({}, synchronous);
  for (size_t pos = 0; pos < in.size(); pos += chunk) t.feed(in.substr(pos, chunk));
  auto f = t.finish();
  return {f.begin(), f.end()};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  size_t chunk = 1 + data[0] % 23;
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  mk::spam::TokenizerSettings settings;
  auto whole = features(in, in.size() + 1, /*synchronous=*/false);
  auto pieces = features(in, chunk, /*synchronous=*/false);
  auto batch = features(in, in.size() + 1, /*synchronous=*/true);
  if (whole != pieces) abort();  // the same order, even: first seen first
  if (whole.size() > settings.max_features) abort();
  auto sorted = whole;
  std::sort(sorted.begin(), sorted.end());
  if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) abort();
  if (!sorted.empty() && sorted.back() >= (uint32_t(1) << settings.hash_bits)) abort();
  std::sort(batch.begin(), batch.end());
  if (batch != sorted) abort();
  (void)mk::spam::Tokenizer::decode_encoded_words(in.substr(0, 512));
  return 0;
}
