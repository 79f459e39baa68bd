// record_test.cpp — the networks of an SPF record: includes, redirect, the
// 10-term limit, loops, and every way a record can be wrong (the whole
// expansion fails, so that the refresher keeps its last good set).
#include "spf/record.h"

#include <gtest/gtest.h>

#include <map>

namespace mk::spf {
namespace {

struct Zone {
  std::map<std::string, std::vector<std::string>> txt;
  std::map<std::string, uint32_t> ttl;
  std::vector<std::string> asked;
  TxtLookup lookup() {
    return [this](const std::string& name) {
      asked.push_back(name);
      TxtAnswer a;
      auto it = txt.find(name);
      if (name == "servfail.test") {
        a.status = TxtAnswer::Error;
        a.error = "Server failure";
        return a;
      }
      if (it == txt.end()) {
        a.status = TxtAnswer::NoRecord;
        return a;
      }
      a.status = TxtAnswer::Ok;
      a.texts = it->second;
      a.ttl = ttl.count(name) ? ttl[name] : 300;
      return a;
    };
  }
};

std::vector<std::string> nets(const Expansion& e) {
  std::vector<std::string> out;
  for (auto& n : e.networks) out.push_back(n.to_string());
  return out;
}

TEST(Spf, IncludesAndRedirectBecomeNetworks) {
  Zone z;
  z.txt["_spf.example.net"] = {"v=spf1 include:_n1.example.net include:_n2.example.net ~all"};
  z.txt["_n1.example.net"] = {"v=spf1 ip4:192.0.2.0/24 ip4:198.51.100.7 -all", "google-site-verification=x"};
  z.txt["_n2.example.net"] = {"v=spf1 ip6:2001:db8::/32 redirect=_n3.example.net"};
  z.txt["_n3.example.net"] = {"v=spf1 ip4:203.0.113.0/28 ip4:192.0.2.0/24 -ip4:10.0.0.0/8 ?all"};
  z.ttl["_n2.example.net"] = 60;
  auto e = expand("_SPF.example.net", z.lookup());
  ASSERT_TRUE(e.ok) << e.error;
  EXPECT_EQ(nets(e), (std::vector<std::string>{"192.0.2.0/24", "198.51.100.7/32", "2001:db8::/32", "203.0.113.0/28"}));
  EXPECT_EQ(e.ttl, 60u);
  EXPECT_EQ(e.lookups, 3);  // two includes and a redirect; the top record is free
}

TEST(Spf, RedirectIgnoredWhenAllIsPresent) {
  Zone z;
  z.txt["a.test"] = {"v=spf1 ip4:192.0.2.1 -all redirect=b.test"};
  auto e = expand("a.test", z.lookup());
  ASSERT_TRUE(e.ok) << e.error;
  EXPECT_EQ(nets(e), (std::vector<std::string>{"192.0.2.1/32"}));
  EXPECT_EQ(z.asked.size(), 1u);
}

TEST(Spf, TenTermsPassElevenFail) {
  Zone z;
  for (int i = 0; i < 11; ++i)
    z.txt["c" + std::to_string(i) + ".test"] = {"v=spf1 ip4:192.0.2." + std::to_string(i) + " include:c" +
                                                std::to_string(i + 1) + ".test"};
  z.txt["c11.test"] = {"v=spf1 ip4:192.0.2.11 -all"};
  auto eleven = expand("c0.test", z.lookup());
  EXPECT_FALSE(eleven.ok);
  EXPECT_NE(eleven.error.find("more than 10 DNS-querying terms"), std::string::npos) << eleven.error;
  EXPECT_TRUE(eleven.networks.empty()) << "a failed expansion yields nothing";
  auto ten = expand("c1.test", z.lookup());
  ASSERT_TRUE(ten.ok) << ten.error;
  EXPECT_EQ(ten.networks.size(), 11u);
  EXPECT_EQ(ten.lookups, 10);
  // a, mx, ptr and exists count too.
  z.txt["m.test"] = {"v=spf1 a mx a:x.test mx:y.test/24 ptr exists:%{i}.z.test -all"};
  EXPECT_FALSE(expand("m.test", z.lookup()).ok) << "macros are refused";
  z.txt["m.test"] = {"v=spf1 a a a a a a a a a a a -all"};
  EXPECT_FALSE(expand("m.test", z.lookup()).ok);
  z.txt["m.test"] = {"v=spf1 a a a a a a a a a a ip4:192.0.2.9 -all"};
  EXPECT_TRUE(expand("m.test", z.lookup()).ok);
}

TEST(Spf, LoopsAndBrokenRecordsFail) {
  Zone z;
  z.txt["loop-a.test"] = {"v=spf1 include:loop-b.test"};
  z.txt["loop-b.test"] = {"v=spf1 ip4:192.0.2.1 include:loop-a.test"};
  auto loop = expand("loop-a.test", z.lookup());
  EXPECT_FALSE(loop.ok);
  EXPECT_NE(loop.error.find("loop: loop-a.test -> loop-b.test -> loop-a.test"), std::string::npos) << loop.error;
  z.txt["self.test"] = {"v=spf1 redirect=self.test"};
  EXPECT_FALSE(expand("self.test", z.lookup()).ok);

  z.txt["two.test"] = {"v=spf1 ip4:192.0.2.1", "v=spf1 ip4:192.0.2.2"};
  EXPECT_NE(expand("two.test", z.lookup()).error.find("more than one SPF record"), std::string::npos);
  z.txt["none.test"] = {"hello"};
  EXPECT_NE(expand("none.test", z.lookup()).error.find("no SPF record"), std::string::npos);
  EXPECT_FALSE(expand("missing.test", z.lookup()).ok);
  EXPECT_NE(expand("servfail.test", z.lookup()).error.find("Server failure"), std::string::npos);
  z.txt["inc.test"] = {"v=spf1 include:missing.test ip4:192.0.2.1"};
  EXPECT_FALSE(expand("inc.test", z.lookup()).ok) << "a failing include fails the whole";
  for (auto bad : {"v=spf1 ip4:300.1.1.1", "v=spf1 ip4:2001:db8::1", "v=spf1 ip6:192.0.2.1", "v=spf1 ip4:192.0.2.0/33",
                   "v=spf1 bogus", "v=spf1 include:", "v=spf1 include:../x"}) {
    z.txt["bad.test"] = {bad};
    EXPECT_FALSE(expand("bad.test", z.lookup()).ok) << bad;
  }
  // v=spf10 is not v=spf1.
  z.txt["ver.test"] = {"v=spf10 ip4:192.0.2.1"};
  EXPECT_FALSE(expand("ver.test", z.lookup()).ok);
  EXPECT_FALSE(expand("no spaces allowed", z.lookup()).ok);
}

TEST(Spf, OnlyPassNetworksCount) {
  Zone z;
  z.txt["q.test"] = {"v=spf1 +ip4:192.0.2.1 -ip4:192.0.2.2 ~ip4:192.0.2.3 ?ip4:192.0.2.4 -include:r.test "
                     "exp=explain.test unknown-mod=x -all"};
  z.txt["r.test"] = {"v=spf1 ip4:198.51.100.0/24"};
  auto e = expand("q.test", z.lookup());
  ASSERT_TRUE(e.ok) << e.error;
  EXPECT_EQ(nets(e), (std::vector<std::string>{"192.0.2.1/32"}));
  EXPECT_EQ(e.lookups, 1);
}

}  // namespace
}  // namespace mk::spf
