// fuzz_data_reader.cpp — libFuzzer target: the DATA decoder, fed the input
// in chunks whose sizes come from the input itself.
// Invariants: chunking never changes the result; the end is only <CRLF>.<CRLF>;
// clean content survives dot-stuffing and decoding unchanged.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "smtp/data_reader.h"
#include "smtp/dot_stuff.h"

namespace {

struct Result {
  std::string content;
  mk::smtp::DataDecoder::Defect defect;
  bool finished;
  size_t consumed;
};

Result decode(std::string_view in, size_t chunk) {
  mk::smtp::DataDecoder d;
  Result r{};
  size_t pos = 0;
  while (pos < in.size() && !d.finished()) {
    auto piece = in.substr(pos, chunk);
    pos += d.feed(piece, [&](std::string_view s) { r.content.append(s); });
  }
  if (d.content_size() != r.content.size()) abort();
  r.defect = d.defect();
  r.finished = d.finished();
  r.consumed = pos;
  return r;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  size_t chunk = 1 + data[0] % 17;
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  auto whole = decode(in, in.size() + 1);
  auto pieces = decode(in, chunk);
  if (whole.content != pieces.content || whole.defect != pieces.defect || whole.finished != pieces.finished ||
      whole.consumed != pieces.consumed)
    abort();
  if (whole.finished) {
    auto end = in.substr(0, whole.consumed);
    bool proper = end == ".\r\n" || (end.size() >= 5 && end.substr(end.size() - 5) == "\r\n.\r\n");
    if (!proper) abort();  // only <CRLF>.<CRLF> (or "." on the first line) ends DATA
  }
  // Round trip: content without defects, dot-stuffed, decodes to itself.
  if (whole.defect == mk::smtp::DataDecoder::Defect::None && whole.finished) {
    std::string wire;
    bool line_start = true;
    mk::smtp::dot_stuff(whole.content, line_start, wire);
    wire += ".\r\n";
    auto back = decode(wire, chunk);
    if (!back.finished || back.content != whole.content || back.consumed != wire.size()) abort();
  }
  return 0;
}
