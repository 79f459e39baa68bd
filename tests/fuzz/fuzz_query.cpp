// fuzz_query.cpp — libFuzzer target: the Gmail query parser on arbitrary
// text. Invariants: never crashes, never throws; an error names a position
// inside the text (1 … characters + 1) and what was expected; a success
// gives a tree whose And/Or nodes have children and whose Not nodes one.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "index/query.h"

namespace {

void check(const mk::index::QueryNode& n, int depth) {
  using K = mk::index::QueryNode::Kind;
  if (depth > 1000) std::abort();
  if ((n.kind == K::And || n.kind == K::Or) && n.children.empty()) std::abort();
  if (n.kind == K::Not && n.children.size() != 1) std::abort();
  for (auto& c : n.children) check(c, depth + 1);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  auto p = mk::index::parse_query(text, 1700000000);
  if (!p.ok()) {
    size_t chars = 0;
    for (unsigned char c : text)
      if ((c & 0xC0) != 0x80) ++chars;
    if (p.error.position < 1 || p.error.position > chars + 1) std::abort();
    if (p.error.expected.empty() || p.error_text.empty()) std::abort();
    return 0;
  }
  check(p.root, 0);
  mk::index::names_junk_or_trash(p.root);
  return 0;
}
