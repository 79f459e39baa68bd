// edit_test.cpp — the message as milters see and change it (milter/edit.h).
#include "milter/edit.h"

#include <gtest/gtest.h>

#include <string>

#include "core/content.h"

namespace mk::milter {
namespace {

std::string all(const ContentSource& c) {
  std::string out(c.size(), '\0');
  size_t got = 0;
  while (got < out.size()) {
    size_t n = c.read_at(got, out.data() + got, out.size() - got);
    if (n == 0) break;
    got += n;
  }
  out.resize(got);
  return out;
}

const std::string kTop = "Received: from client.test ([192.0.2.1])\r\n\tby mx.test (mailkeep);\r\n\tdate\r\n";
const std::string kMessage =
    "From: a@example.org\r\nSubject: hello\r\n world\r\nX-Two: 1\r\nx-two: 2\r\n\r\nbody line\r\n.dot\r\n";

TEST(MessageEditor, ShowsTheClientsFieldsNotOurs) {
  StringContent content(kMessage);
  MessageEditor ed(kTop, content, "/tmp", 1 << 20);
  auto shown = ed.shown_fields(false);
  ASSERT_EQ(shown.size(), 4u);
  EXPECT_EQ(shown[0].name, "From");
  EXPECT_EQ(shown[0].value, "a@example.org");
  EXPECT_EQ(shown[1].value, "hello\n world");  // folded: "\n" between lines, as Sendmail sends them
  EXPECT_EQ(ed.shown_fields(true)[0].value, " a@example.org");
  EXPECT_EQ(ed.body_size(), std::string("body line\r\n.dot\r\n").size());
  EXPECT_FALSE(ed.changed());
  EXPECT_EQ(all(*ed.result()), kTop + kMessage);  // unchanged: the same bytes
}

TEST(MessageEditor, EditsFollowPostfixsIndexRules) {
  StringContent content(kMessage);
  MessageEditor ed(kTop, content, "/tmp", 1 << 20);
  std::string why;
  ASSERT_TRUE(ed.change(2, "X-TWO", "second", false, why)) << why;  // the 2nd X-Two, any case
  ASSERT_TRUE(ed.change(1, "x-two", "", false, why));               // deletes the first
  ASSERT_TRUE(ed.change(1, "X-Missing", "", false, why));           // deleting nothing is fine
  ASSERT_TRUE(ed.change(1, "X-New", "added by change", false, why)); // changing nothing adds it
  ASSERT_TRUE(ed.insert(0, "X-Top", "above ours", false, why));      // position 0: above our Received
  ASSERT_TRUE(ed.add("X-Folded", "a\nb\nno-indent", false, why));
  auto text = all(*ed.result());
  EXPECT_EQ(text.rfind("X-Top: above ours\r\nReceived: from client.test", 0), 0u) << text;
  EXPECT_EQ(text.find("X-Two: 1"), std::string::npos);
  EXPECT_NE(text.find("X-TWO: second\r\n"), std::string::npos) << text;
  EXPECT_NE(text.find("X-New: added by change\r\n"), std::string::npos);
  // A continuation line that does not start with white space gets a tab: no field of its own.
  EXPECT_NE(text.find("X-Folded: a\r\n\tb\r\n\tno-indent\r\n\r\nbody line"), std::string::npos) << text;
}

TEST(MessageEditor, ReplacementBodyGetsCrlfLinesAcrossChunks) {
  StringContent content(kMessage);
  MessageEditor ed(kTop, content, "/tmp", 1 << 20);
  std::string why;
  ASSERT_TRUE(ed.replace_body_chunk("one\nbare cr\r", why));
  ASSERT_TRUE(ed.replace_body_chunk("\ntwo\rthree", why));
  ed.end_of_milter();
  auto text = all(*ed.result());
  EXPECT_EQ(text.substr(text.find("\r\n\r\n") + 4), "one\r\nbare cr\r\ntwo\r\nthree");
  // The next milter's replacement starts a new body.
  StringContent c2(kMessage);
  MessageEditor ed2(kTop, c2, "/tmp", 1 << 20);
  ASSERT_TRUE(ed2.replace_body_chunk("first", why));
  ed2.end_of_milter();
  ASSERT_TRUE(ed2.replace_body_chunk("second\r\n", why));
  ed2.end_of_milter();
  auto t2 = all(*ed2.result());
  EXPECT_EQ(t2.substr(t2.find("\r\n\r\n") + 4), "second\r\n");
}

TEST(MessageEditor, BoundsAndBadValues) {
  StringContent content(kMessage);
  MessageEditor ed(kTop, content, "/tmp", 10);
  std::string why;
  EXPECT_FALSE(ed.replace_body_chunk("more than ten bytes", why));
  EXPECT_NE(why.find("max_message_size"), std::string::npos);
  EXPECT_FALSE(ed.add("X-Nul", std::string("a\0b", 3), false, why));
  std::string big(600 * 1024, 'x');
  EXPECT_TRUE(ed.add("X-Big", big, false, why));
  EXPECT_FALSE(ed.add("X-Big", big, false, why));  // over 1 MiB added in all
}

TEST(MessageEditor, ForeignAuthenticationResultsWithOurIdAreRemoved) {
  const std::string msg =
      "Authentication-Results: MX.test; dkim=pass header.d=paypal.example\r\n"
      "Authentication-Results:  other.example; spf=pass\r\n"
      "Authentication-Results: mx.test.evil; dkim=pass\r\n"
      "Subject: s\r\n\r\nb\r\n";
  StringContent content(msg);
  MessageEditor ed(kTop, content, "/tmp", 1 << 20);
  EXPECT_EQ(ed.remove_foreign_authentication_results("mx.test"), 1u);
  auto text = all(*ed.result());
  EXPECT_EQ(text.find("paypal"), std::string::npos);
  EXPECT_NE(text.find("other.example"), std::string::npos);
  EXPECT_NE(text.find("mx.test.evil"), std::string::npos);
}

TEST(MessageEditor, OddHeaderSections) {
  std::string why;
  {  // no empty line: all headers, no body
    StringContent c("Subject: only\r\n");
    MessageEditor ed("", c, "/tmp", 1 << 20);
    EXPECT_EQ(ed.shown_fields(false).size(), 1u);
    EXPECT_EQ(ed.body_size(), 0u);
  }
  {  // a line that is no header field starts the body, without an empty line
    StringContent c("Subject: s\r\nnot a header\r\nmore\r\n");
    MessageEditor ed("", c, "/tmp", 1 << 20);
    EXPECT_EQ(ed.shown_fields(false).size(), 1u);
    EXPECT_EQ(ed.body_size(), std::string("not a header\r\nmore\r\n").size());
    ASSERT_TRUE(ed.add("X-A", "1", false, why));
    EXPECT_EQ(all(*ed.result()), "Subject: s\r\nX-A: 1\r\nnot a header\r\nmore\r\n");
  }
  {  // an empty header section
    StringContent c("\r\nbody\r\n");
    MessageEditor ed("", c, "/tmp", 1 << 20);
    EXPECT_TRUE(ed.shown_fields(false).empty());
    EXPECT_EQ(ed.body_size(), 6u);
  }
  {  // a header section larger than the bound and one read step
    std::string h;
    while (h.size() < 40000) h += "X-Long: " + std::string(70, 'y') + "\r\n";
    const std::string text = h + "\r\nbody\r\n";  // StringContent keeps a view
    StringContent c(text);
    MessageEditor ed("", c, "/tmp", 1 << 20);
    EXPECT_EQ(ed.shown_fields(false).size(), h.size() / 80);
    EXPECT_EQ(ed.body_size(), 6u);
  }
}

}  // namespace
}  // namespace mk::milter
