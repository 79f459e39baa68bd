// data_reader_test.cpp — DATA decoding: dot-unstuffing, the only real end
// marker, smuggling variants, and independence from how input is chunked.
#include "smtp/data_reader.h"

#include <gtest/gtest.h>

#include "smtp/dot_stuff.h"

namespace mk::smtp {
namespace {

using Defect = DataDecoder::Defect;

struct Decoded {
  std::string content;
  Defect defect;
  bool finished;
  size_t consumed;
  uint64_t counted;  // the decoder's own content_size()
};

// Feeds `in` split into pieces at the given cut points.
Decoded decode(std::string_view in, std::vector<size_t> cuts = {}) {
  DataDecoder d;
  Decoded r;
  size_t pos = 0;
  cuts.push_back(in.size());
  for (size_t cut : cuts) {
    if (d.finished()) break;
    auto piece = in.substr(pos, cut - pos);
    size_t used = d.feed(piece, [&](std::string_view s) { r.content.append(s); });
    pos += used;
    if (used != piece.size()) break;
  }
  r.defect = d.defect();
  r.finished = d.finished();
  r.consumed = pos;
  r.counted = d.content_size();
  return r;
}

TEST(DataDecoder, Table) {
  struct Case {
    const char* name;
    std::string in;
    std::string content;
    Defect defect;
    bool finished;
    size_t tail;  // bytes left after the end marker (the next command)
  } cases[] = {
      {"simple", "Subject: x\r\n\r\nbody\r\n.\r\n", "Subject: x\r\n\r\nbody\r\n", Defect::None, true, 0},
      {"empty message", ".\r\n", "", Defect::None, true, 0},
      {"dot unstuffing", "..leading\r\n.\r\n", ".leading\r\n", Defect::None, true, 0},
      {"double dot line", "..\r\n.\r\n", ".\r\n", Defect::None, true, 0},
      {"dot inside line", "a.b\r\n.\r\n", "a.b\r\n", Defect::None, true, 0},
      {"pipelined tail stays", "x\r\n.\r\nQUIT\r\n", "x\r\n", Defect::None, true, 6},
      {"unfinished", "x\r\ny", "x\r\ny", Defect::None, false, 0},
      {"bare LF dot LF (smuggling)", "a\n.\nMAIL FROM:<x>\r\n.\r\n", "a\n.\nMAIL FROM:<x>\r\n", Defect::BareLineFeed, true, 0},
      {"bare LF dot CRLF (smuggling)", "a\n.\r\nRCPT\r\n.\r\n", "a\n.\r\nRCPT\r\n", Defect::BareLineFeed, true, 0},
      {"CR dot CR (smuggling)", "a\r.\rb\r\n.\r\n", "a\r.\rb\r\n", Defect::BareCarriageReturn, true, 0},
      {"CRLF dot LF (smuggling)", "a\r\n.\nb\r\n.\r\n", "a\r\n\nb\r\n", Defect::BareLineFeed, true, 0},
      {"CRLF dot CR x", "a\r\n.\rx\r\n.\r\n", "a\r\n\rx\r\n", Defect::BareCarriageReturn, true, 0},
      {"bare CR in line", "a\rb\r\n.\r\n", "a\rb\r\n", Defect::BareCarriageReturn, true, 0},
      {"NUL", std::string("a\0b\r\n.\r\n", 8), std::string("a\0b\r\n", 5), Defect::Nul, true, 0},
      {"CR CR LF", "a\r\r\n.\r\n", "a\r\r\n", Defect::BareCarriageReturn, true, 0},
      {"long line", std::string(50000, 'x') + "\r\n.\r\n", std::string(50000, 'x') + "\r\n", Defect::None, true, 0},
  };
  for (auto& c : cases) {
    auto whole = decode(c.in);
    EXPECT_EQ(whole.content, c.content) << c.name;
    EXPECT_EQ(whole.defect, c.defect) << c.name;
    EXPECT_EQ(whole.finished, c.finished) << c.name;
    const size_t consumed = c.in.size() - c.tail;
    EXPECT_EQ(whole.consumed, consumed) << c.name;
    EXPECT_EQ(whole.counted, c.content.size()) << c.name;
    // Any split into two or three chunks gives the same result.
    if (c.in.size() > 100) continue;
    for (size_t i = 0; i <= c.in.size(); ++i) {
      for (size_t j = i; j <= c.in.size(); ++j) {
        auto split = decode(c.in, {i, j});
        ASSERT_EQ(split.content, c.content) << c.name << " cut at " << i << "," << j;
        ASSERT_EQ(split.defect, c.defect) << c.name << " cut at " << i << "," << j;
        ASSERT_EQ(split.finished, c.finished) << c.name << " cut at " << i << "," << j;
        ASSERT_EQ(split.consumed, consumed) << c.name << " cut at " << i << "," << j;
        ASSERT_EQ(split.counted, c.content.size()) << c.name << " cut at " << i << "," << j;
      }
    }
  }
}

TEST(DotStuff, RoundTripsThroughDecoder) {
  const std::string messages[] = {
      "", "plain\r\n", ".\r\n", "..\r\n", ".x\r\n.y\r\n", "a\r\n.\r\nb\r\n", std::string(70000, '.') + "\r\n",
  };
  for (auto& m : messages) {
    for (size_t cut : {size_t(0), m.size() / 2, m.size()}) {
      std::string wire;
      bool line_start = true;
      dot_stuff(std::string_view(m).substr(0, cut), line_start, wire);
      dot_stuff(std::string_view(m).substr(cut), line_start, wire);
      wire += ".\r\n";
      auto back = decode(wire);
      EXPECT_TRUE(back.finished) << m.substr(0, 20);
      EXPECT_EQ(back.content, m) << m.substr(0, 20);
      EXPECT_EQ(back.consumed, wire.size());
    }
  }
}

}  // namespace
}  // namespace mk::smtp
