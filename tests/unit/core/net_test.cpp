// net_test.cpp — host:port and CIDR parsing and matching, table-driven.
#include "core/net.h"

#include <gtest/gtest.h>

namespace mk {
namespace {

TEST(HostPort, ParsesTable) {
  struct Case {
    const char* in;
    bool ok;
    const char* host;
    int port;
  } cases[] = {
      {"127.0.0.1:2525", true, "127.0.0.1", 2525},
      {"mx.example.org", true, "mx.example.org", 25},
      {"[::1]:2525", true, "::1", 2525},
      {"[::1]", true, "::1", 25},
      {"::1:25", false, "", 0},
      {"host:0", false, "", 0},
      {"host:65536", false, "", 0},
      {"host:abc", false, "", 0},
      {":25", false, "", 0},
      {"[::1", false, "", 0},
  };
  for (auto& c : cases) {
    std::string err;
    auto hp = parse_host_port(c.in, 25, &err);
    EXPECT_EQ(hp.has_value(), c.ok) << c.in << " err=" << err;
    if (hp && c.ok) {
      EXPECT_EQ(hp->host, c.host) << c.in;
      EXPECT_EQ(hp->port, c.port) << c.in;
    }
  }
  EXPECT_EQ(parse_host_port("[::1]:25", 0, nullptr)->to_string(), "[::1]:25");
}

TEST(Cidr, MatchesTable) {
  struct Case {
    const char* net;
    const char* addr;
    bool inside;
  } cases[] = {
      {"127.0.0.0/8", "127.1.2.3", true},     {"127.0.0.0/8", "128.0.0.1", false},
      {"127.0.0.9/32", "127.0.0.9", true},    {"127.0.0.9/32", "127.0.0.1", false},
      {"10.0.0.0/0", "192.0.2.1", true},      {"2001:db8::/32", "2001:db8:1::5", true},
      {"2001:db8::/32", "2001:db9::1", false}, {"127.0.0.0/8", "::1", false},
      {"192.0.2.128/25", "192.0.2.127", false}, {"192.0.2.128/25", "192.0.2.200", true},
  };
  for (auto& c : cases) {
    std::string err;
    auto net = Cidr::parse(c.net, &err);
    ASSERT_TRUE(net) << c.net << ": " << err;
    auto a = IpAddress::parse(c.addr);
    ASSERT_TRUE(a) << c.addr;
    EXPECT_EQ(net->contains(*a), c.inside) << c.net << " ∋ " << c.addr;
  }
}

TEST(Cidr, RejectsMalformed) {
  for (auto s : {"127.0.0.0/33", "1.2.3/8", "::/129", "abc", "10.0.0.0/x", ""}) {
    std::string err;
    EXPECT_FALSE(Cidr::parse(s, &err)) << s;
    EXPECT_FALSE(err.empty()) << s;
  }
  EXPECT_EQ(Cidr::parse("127.0.0.0/8", nullptr)->to_string(), "127.0.0.0/8");
}

}  // namespace
}  // namespace mk
