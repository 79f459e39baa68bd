// fuzz_message.cpp — libFuzzer target: the index's message parser (GMime,
// Gumbo) on arbitrary bytes written to a file, as an archived copy would
// be. Invariants: never crashes; every text it returns is valid UTF-8 and
// within its bound; the identity digest does not depend on CRLF vs LF.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>

#include "index/message.h"

namespace {

bool valid_utf8(const std::string& s) { return mk::index::clean_utf8(s, s.size() + 1) == s; }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/fuzz_message." + std::to_string(::getpid());
  std::string in(reinterpret_cast<const char*>(data), size);
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << in;
  }
  mk::index::ParsedMessage m;
  mk::index::ParseOptions opt;
  opt.arrival = 1700000000;
  opt.keep_html = true;
  std::string error;
  if (mk::index::parse_message_file(path, opt, m, error)) {
    if (!valid_utf8(m.subject) || !valid_utf8(m.body_text) || !valid_utf8(m.html)) std::abort();
    if (m.body_text.size() > mk::index::kMaxBodyText || m.subject.size() > mk::index::kMaxHeader) std::abort();
    for (auto& a : m.attachments)
      if (!valid_utf8(a.filename)) std::abort();
    for (auto& r : m.references)
      if (r == m.message_id) std::abort();  // never its own parent
  }
  // CRLF and LF spell the same message.
  std::string lf;
  for (size_t i = 0; i < in.size(); ++i)
    if (!(in[i] == '\r' && i + 1 < in.size() && in[i + 1] == '\n')) lf += in[i];
  if (mk::index::identity_digest(in, "x") != mk::index::identity_digest(lf, "x")) std::abort();
  auto text = mk::index::html_to_text(in, 4096);
  if (text.size() > 4096 || !valid_utf8(text)) std::abort();
  return 0;
}
