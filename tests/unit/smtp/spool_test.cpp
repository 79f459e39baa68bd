// spool_test.cpp — memory first, then an unlinked file; content unchanged.
#include "smtp/spool.h"

#include <gtest/gtest.h>

namespace mk::smtp {
namespace {

std::string read_all(const Spool& s, size_t chunk) {
  std::string out;
  std::string buf(chunk, '\0');
  for (uint64_t off = 0;;) {
    size_t n = s.read_at(off, buf.data(), buf.size());
    if (n == 0) break;
    out.append(buf.data(), n);
    off += n;
  }
  return out;
}

TEST(Spool, SpillsToFilePastTheMemoryLimit) {
  Spool s(::testing::TempDir(), 1000);
  std::string expected;
  for (int i = 0; i < 100; ++i) {
    std::string piece = "line " + std::to_string(i) + " " + std::string(i, 'x') + "\r\n";
    ASSERT_TRUE(s.append(piece)) << s.error();
    expected += piece;
    EXPECT_EQ(s.in_memory(), expected.size() <= 1000) << i;
  }
  EXPECT_EQ(s.size(), expected.size());
  EXPECT_EQ(read_all(s, 7), expected);
  EXPECT_EQ(read_all(s, 65536), expected);
  s.clear();
  EXPECT_EQ(s.size(), 0u);
  EXPECT_TRUE(s.in_memory());
}

TEST(Spool, UnwritableDirectoryIsAnErrorNotACrash) {
  Spool s("/nonexistent-dir", 4);
  EXPECT_TRUE(s.append("abc"));
  EXPECT_FALSE(s.append("defgh"));
  EXPECT_NE(s.error().find("/nonexistent-dir"), std::string::npos);
}

}  // namespace
}  // namespace mk::smtp
