// command_test.cpp — command lines, paths and MAIL parameters, table-driven.
#include "smtp/command.h"

#include <gtest/gtest.h>

namespace mk::smtp {
namespace {

TEST(Command, VerbsAreCaseInsensitive) {
  struct Case {
    const char* line;
    Verb verb;
    const char* arg;
  } cases[] = {
      {"EHLO client.example", Verb::Ehlo, "client.example"},
      {"ehlo  client.example ", Verb::Ehlo, "client.example"},
      {"MAIL FROM:<a@b>", Verb::Mail, "FROM:<a@b>"},
      {"data", Verb::Data, ""},
      {"QUIT", Verb::Quit, ""},
      {"STARTTLS", Verb::Starttls, ""},
      {"XYZZY foo", Verb::Unknown, "foo"},
      {"", Verb::Unknown, ""},
      {"MAILFROM:<a@b>", Verb::Unknown, ""},
  };
  for (auto& c : cases) {
    auto cmd = parse_command(c.line);
    EXPECT_EQ(cmd.verb, c.verb) << c.line;
    EXPECT_EQ(cmd.arg, c.arg) << c.line;
  }
}

TEST(Command, PathArgumentTable) {
  struct Case {
    const char* arg;
    const char* keyword;
    bool ok;
    const char* local;   // or expected status on failure
    const char* domain;
    const char* params;
  } cases[] = {
      {"FROM:<a@b.example>", "FROM", true, "a", "b.example", ""},
      {"from:<a@b.example>", "FROM", true, "a", "b.example", ""},
      {"FROM: <a@b.example>", "FROM", true, "a", "b.example", ""},
      {"FROM:<a@b.example> SIZE=100 BODY=8BITMIME", "FROM", true, "a", "b.example", "SIZE=100 BODY=8BITMIME"},
      {"FROM:<>", "FROM", true, "", "", ""},
      {"TO:<first.last+tag@Example.ORG>", "TO", true, "first.last+tag", "Example.ORG", ""},
      {"TO:<\"quoted @ local\"@example.org>", "TO", true, "\"quoted @ local\"", "example.org", ""},
      {"TO:<\"a\\\"b\"@example.org>", "TO", true, "\"a\\\"b\"", "example.org", ""},
      {"TO:<@relay.example,@r2.example:user@example.org>", "TO", true, "user", "example.org", ""},
      {"TO:<user@[192.0.2.1]>", "TO", true, "user", "[192.0.2.1]", ""},
      {"TO:<用户@例子.测试>", "TO", true, "用户", "例子.测试", ""},
      {"TO:<>", "TO", false, "5.1.3", "", ""},
      {"TO:a@b", "TO", false, "5.5.4", "", ""},
      {"TO:<a@b", "TO", false, "5.5.4", "", ""},
      {"TO:<a@b>x", "TO", false, "5.5.4", "", ""},
      {"FROM:<a@b>", "TO", false, "5.5.4", "", ""},
      {"TO:<ab>", "TO", false, "5.1.3", "", ""},
      {"TO:<a..b@c>", "TO", false, "5.1.3", "", ""},
      {"TO:<.a@c>", "TO", false, "5.1.3", "", ""},
      {"TO:<a b@c>", "TO", false, "5.1.3", "", ""},
      {"TO:<a@-bad.example>", "TO", false, "5.1.2", "", ""},
      {"TO:<a@exa_mple.org>", "TO", false, "5.1.2", "", ""},
      {"TO:<a@>", "TO", false, "5.1.2", "", ""},
      {"TO:<@x:>", "TO", false, "5.1.3", "", ""},
      {"TO:<\"unterminated@example.org>", "TO", false, "5.5.4", "", ""},
  };
  for (auto& c : cases) {
    auto p = parse_path_argument(c.arg, c.keyword, std::string_view(c.keyword) == "FROM");
    EXPECT_EQ(p.ok(), c.ok) << c.arg << " error=" << p.error;
    if (!p.ok()) {
      if (!c.ok) EXPECT_EQ(p.status, c.local) << c.arg << " error=" << p.error;
      continue;
    }
    EXPECT_EQ(p.mailbox.local, c.local) << c.arg;
    EXPECT_EQ(p.mailbox.domain, c.domain) << c.arg;
    EXPECT_EQ(p.params, c.params) << c.arg;
  }
  EXPECT_TRUE(parse_path_argument("FROM:<>", "FROM", true).mailbox.null);
  EXPECT_EQ(parse_path_argument("TO:<\"a@b\"@c.example>", "TO", false).mailbox.local_unquoted(), "a@b");
  EXPECT_TRUE(parse_path_argument("TO:<用户@example.org>", "TO", false).mailbox.non_ascii);
  EXPECT_EQ(parse_path_argument("TO:<A@Example.ORG>", "TO", false).mailbox.domain_lower, "example.org");
  // RFC 5321 4.5.3.1.3: a path is at most 256 octets.
  auto long_path = "TO:<" + std::string(250, 'a') + "@example.org>";
  EXPECT_EQ(parse_path_argument(long_path, "TO", false).status, "5.1.3");
}

TEST(Command, MailParamsTable) {
  struct Case {
    const char* params;
    bool ok;
    long long size;
    BodyType body;
    bool utf8;
  } cases[] = {
      {"", true, -1, BodyType::Unspecified, false},
      {"SIZE=5120", true, 5120, BodyType::Unspecified, false},
      {"size=1 body=8bitmime smtputf8", true, 1, BodyType::EightBitMime, true},
      {"BODY=7BIT", true, -1, BodyType::SevenBit, false},
      {"BODY=BINARYMIME", false, -1, BodyType::Unspecified, false},
      {"SIZE=", false, -1, BodyType::Unspecified, false},
      {"SIZE=12x", false, -1, BodyType::Unspecified, false},
      {"SIZE=99999999999999999999999", false, -1, BodyType::Unspecified, false},
      {"RET=HDRS", false, -1, BodyType::Unspecified, false},
      {"SMTPUTF8=yes", false, -1, BodyType::Unspecified, false},
  };
  for (auto& c : cases) {
    MailParams p;
    std::string err;
    EXPECT_EQ(parse_mail_params(c.params, p, err), c.ok) << c.params << " " << err;
    if (!c.ok) continue;
    EXPECT_EQ(p.size ? static_cast<long long>(*p.size) : -1, c.size) << c.params;
    EXPECT_EQ(p.body, c.body) << c.params;
    EXPECT_EQ(p.smtputf8, c.utf8) << c.params;
  }
}

}  // namespace
}  // namespace mk::smtp
