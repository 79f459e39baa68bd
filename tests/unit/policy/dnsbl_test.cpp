// dnsbl_test.cpp — zone specs with Postfix return-code filters, query names
// (IPv4 and IPv6 nibble form, RFC 5782), and which answers are errors.
#include "policy/dnsbl.h"

#include <gtest/gtest.h>

namespace mk::policy {
namespace {

TEST(Dnsbl, QueryNames) {
  EXPECT_EQ(dnsbl_query_name(*IpAddress::parse("192.0.2.99"), "zen.spamhaus.org"), "99.2.0.192.zen.spamhaus.org");
  // RFC 5782 2.4: 2001:db8:1:2:3:4:567:89ab
  EXPECT_EQ(dnsbl_query_name(*IpAddress::parse("2001:db8:1:2:3:4:567:89ab"), "bl.test"),
            "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.test");
  std::string loopback = "1.";
  for (int i = 0; i < 31; ++i) loopback += "0.";
  EXPECT_EQ(dnsbl_query_name(*IpAddress::parse("::1"), "x"), loopback + "x");
}

TEST(Dnsbl, ZoneSpecTable) {
  struct Case {
    const char* spec;
    bool ok;
    const char* answer;
    bool matches;
  } cases[] = {
      {"zen.spamhaus.org", true, "127.0.0.2", true},
      {"zen.spamhaus.org", true, "127.0.0.200", true},
      {"zen.spamhaus.org=127.0.0.[2..11]", true, "127.0.0.2", true},
      {"zen.spamhaus.org=127.0.0.[2..11]", true, "127.0.0.11", true},
      {"zen.spamhaus.org=127.0.0.[2..11]", true, "127.0.0.12", false},
      {"zen.spamhaus.org=127.0.0.[2..11]", true, "127.0.1.2", false},
      {"list.test=127.0.0.[2;4;10..12]", true, "127.0.0.4", true},
      {"list.test=127.0.0.[2;4;10..12]", true, "127.0.0.3", false},
      {"list.test=127.0.0.[2;4;10..12]", true, "127.0.0.11", true},
      {"list.test=127.[0..1].0.2", true, "127.1.0.2", true},
      {"Upper.Test.=127.0.0.2", true, "127.0.0.2", true},
      {"list.test=127.0.0", false, "", false},
      {"list.test=127.0.0.[5..2]", false, "", false},
      {"list.test=127.0.0.[]", false, "", false},
      {"list.test=127.0.0.256", false, "", false},
      {"bad zone!=127.0.0.2", false, "", false},
      {"=127.0.0.2", false, "", false},
  };
  for (auto& c : cases) {
    std::string err;
    auto z = parse_dnsbl_zone(c.spec, &err);
    EXPECT_EQ(z.has_value(), c.ok) << c.spec << " " << err;
    if (!z) {
      EXPECT_FALSE(err.empty()) << c.spec;
      continue;
    }
    EXPECT_EQ(z->matches(*IpAddress::parse(c.answer)), c.matches) << c.spec << " vs " << c.answer;
  }
  EXPECT_EQ(parse_dnsbl_zone("Upper.Test.=127.0.0.2", nullptr)->name, "upper.test");
}

TEST(Dnsbl, ErrorAnswers) {
  EXPECT_FALSE(is_dnsbl_error_answer(*IpAddress::parse("127.0.0.2")));
  EXPECT_FALSE(is_dnsbl_error_answer(*IpAddress::parse("127.0.1.3")));
  EXPECT_TRUE(is_dnsbl_error_answer(*IpAddress::parse("127.255.255.254")));  // Spamhaus: public resolver refused
  EXPECT_TRUE(is_dnsbl_error_answer(*IpAddress::parse("127.255.255.252")));
  EXPECT_TRUE(is_dnsbl_error_answer(*IpAddress::parse("192.0.2.1")));        // wildcard/hijacked answers
  EXPECT_TRUE(is_dnsbl_error_answer(*IpAddress::parse("::1")));
}

}  // namespace
}  // namespace mk::policy
