// fuzz_sasl.cpp — libFuzzer target: the AUTH exchange (RFC 4954 PLAIN and
// LOGIN) fed arbitrary lines, as a hostile submission client sends them.
// Invariants: no crash, no sanitizer report; every step is a challenge
// (334), credentials, or a 5xx; base64 round-trips.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "smtp/sasl.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  mk::smtp::SaslExchange sasl;
  size_t nl = input.find('\n');
  auto step = sasl.start(input.substr(0, nl));
  while (nl != std::string_view::npos) {
    input.remove_prefix(nl + 1);
    nl = input.find('\n');
    auto line = input.substr(0, nl);
    using Kind = mk::smtp::SaslStep::Kind;
    if (step.kind == Kind::Challenge && step.reply.code != 334) abort();
    if (step.kind == Kind::Failed && step.reply.code < 500) abort();
    if (step.kind != Kind::Challenge) break;
    step = sasl.next(line);
  }
  std::string decoded;
  auto encoded = mk::smtp::encode_base64(input.substr(0, 3000));
  if (!mk::smtp::decode_base64(encoded, decoded) || decoded != input.substr(0, 3000)) abort();
  return 0;
}
