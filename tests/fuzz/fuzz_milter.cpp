// fuzz_milter.cpp — libFuzzer target: the milter reply decoder, fed what a
// hostile milter writes, in chunks whose size comes from the input itself.
// Invariants: no crash, no sanitizer report, no exception from the parse
// functions; chunking never changes the packets or the error; no packet
// above kMaxPacket; a parsed reply code is 400-599 and its text starts with
// it; a header reply has a non-empty name; an optneg's symbol lists name
// known stages.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "milter/protocol.h"

namespace {

struct Framed {
  std::vector<mk::milter::Packet> packets;
  bool ok = true;
};

Framed frame(std::string_view in, size_t chunk) {
  mk::milter::ReplyReader reader;
  Framed out;
  for (size_t pos = 0; pos < in.size(); pos += chunk) {
    if (!reader.feed(in.substr(pos, chunk))) {
      if (reader.error().empty()) abort();
      out.ok = false;
    }
    while (auto p = reader.next()) out.packets.push_back(std::move(*p));
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  size_t chunk = 1 + data[0] % 23;
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);

  auto whole = frame(in, in.size() + 1);
  auto pieces = frame(in, chunk);
  // A failing stream may have yielded its earlier packets before the bad
  // length arrived in one chunking and not in the other: compare only the
  // packets both saw, and the verdict.
  if (whole.ok != pieces.ok) abort();
  if (whole.ok && whole.packets.size() != pieces.packets.size()) abort();
  size_t common = std::min(whole.packets.size(), pieces.packets.size());
  for (size_t i = 0; i < common; ++i)
    if (whole.packets[i].code != pieces.packets[i].code || whole.packets[i].payload != pieces.packets[i].payload)
      abort();

  for (auto& p : pieces.packets) {
    if (p.payload.size() + 1 > mk::milter::kMaxPacket) abort();
    std::string error;
    if (auto r = mk::milter::parse_reply(p, error)) {
      using mk::milter::Action;
      if (r->action == Action::ReplyCode) {
        if (r->code < 400 || r->code > 599) abort();
        if (r->text.compare(0, 3, std::to_string(r->code)) != 0) abort();
      }
      if ((r->action == Action::AddHeader || r->action == Action::ChangeHeader || r->action == Action::InsertHeader) &&
          r->name.empty())
        abort();
      (void)mk::milter::undouble_percent(r->text);
    } else if (error.empty()) {
      abort();
    }
    error.clear();
    if (auto o = mk::milter::parse_optneg(p, error)) {
      mk::milter::OptNeg offer{mk::milter::kVersion, mk::milter::smfif::ALL, mk::milter::smfip::ALL, {}};
      std::string why;
      for (auto& list : o->symbol_lists)
        if (std::string_view("CHMRTEN").find(static_cast<char>(list.stage)) == std::string_view::npos) abort();
      (void)mk::milter::negotiate(offer, *o, why);
    } else if (error.empty()) {
      abort();
    }
  }
  return 0;
}
