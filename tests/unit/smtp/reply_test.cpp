// reply_test.cpp — reply formatting and parsing of upstream replies.
#include "smtp/reply.h"

#include <gtest/gtest.h>

namespace mk::smtp {
namespace {

TEST(Reply, WireFormat) {
  EXPECT_EQ(Reply(250, "2.1.0", "Ok").wire(), "250 2.1.0 Ok\r\n");
  EXPECT_EQ(Reply(220, "", "mx ESMTP").wire(), "220 mx ESMTP\r\n");
  Reply multi{250, "", "mx"};
  multi.lines.push_back("PIPELINING");
  multi.lines.push_back("SIZE 10");
  EXPECT_EQ(multi.wire(), "250-mx\r\n250-PIPELINING\r\n250 SIZE 10\r\n");
  EXPECT_EQ(Reply(550, "5.7.1", "denied").summary(), "550 5.7.1 denied");
}

TEST(Reply, OutcomeFollowsCodeClass) {
  EXPECT_EQ(Reply(250, "2.0.0", "").outcome(), Outcome::Ok);
  EXPECT_EQ(Reply(354, "", "").outcome(), Outcome::Ok);
  EXPECT_EQ(Reply(451, "4.4.1", "").outcome(), Outcome::TempFail);
  EXPECT_EQ(Reply(550, "5.1.1", "").outcome(), Outcome::PermFail);
}

TEST(Reply, ParsesUpstreamRepliesTable) {
  struct Case {
    std::vector<std::string> lines;
    int code;
    const char* status;
    size_t nlines;
    const char* first;
  } cases[] = {
      {{"250 2.0.0 Ok: queued as ABC"}, 250, "2.0.0", 1, "Ok: queued as ABC"},
      {{"550 5.1.1 <x@y>: Recipient address rejected"}, 550, "5.1.1", 1, "<x@y>: Recipient address rejected"},
      {{"250-mx.example", "250-PIPELINING", "250 8BITMIME"}, 250, "", 3, "mx.example"},
      {{"451 Try later"}, 451, "", 1, "Try later"},
      {{"250 5.0.0 mismatched class"}, 250, "", 1, "5.0.0 mismatched class"},
      {{"354"}, 354, "", 1, ""},
      {{"25x oops"}, 0, "", 0, ""},
      {{"250-a", "251 b"}, 0, "", 0, ""},
      {{"700 nope"}, 0, "", 0, ""},
  };
  for (auto& c : cases) {
    auto r = parse_reply_lines(c.lines);
    EXPECT_EQ(r.code, c.code) << c.lines[0];
    if (c.code == 0) continue;
    EXPECT_EQ(r.status, c.status) << c.lines[0];
    ASSERT_EQ(r.lines.size(), c.nlines) << c.lines[0];
    EXPECT_EQ(r.lines[0], c.first) << c.lines[0];
  }
}

}  // namespace
}  // namespace mk::smtp
