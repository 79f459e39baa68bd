// router_test.cpp — relay decisions, including the classic open-relay tricks.
#include "route/router.h"

#include <gtest/gtest.h>

namespace mk::route {
namespace {

smtp::Mailbox rcpt(const std::string& arg) {
  auto p = smtp::parse_path_argument("TO:<" + arg + ">", "TO", false);
  EXPECT_TRUE(p.ok()) << arg << ": " << p.error;
  return p.mailbox;
}

TEST(Router, RelayDecisionTable) {
  auto r = load_settings_text("[relay]\ndomains = example.org\nrelay_from = 127.0.0.9/32\n", "t");
  ASSERT_TRUE(r.ok());
  Router router(r.settings);
  auto outsider = router.classify_client(*IpAddress::parse("127.0.0.1"));
  auto trusted = router.classify_client(*IpAddress::parse("127.0.0.9"));
  EXPECT_FALSE(outsider.relay_allowed);
  EXPECT_TRUE(trusted.relay_allowed);

  struct Case {
    const char* address;
    bool outsider_ok;
    bool trusted_ok;
  } cases[] = {
      {"user@example.org", true, true},
      {"user@EXAMPLE.Org", true, true},
      {"user@other.com", false, true},
      {"user@sub.example.org", false, true},
      {"user%other.com@example.org", false, true},
      {"other.com!user@example.org", false, true},
      {"\"user@other.com\"@example.org", false, true},
      {"@example.org:user@other.com", false, true},  // source route dropped: other.com
  };
  for (auto& c : cases) {
    auto mb = rcpt(c.address);
    auto d1 = router.route(outsider, mb);
    EXPECT_EQ(d1.outcome == Outcome::Ok, c.outsider_ok) << c.address;
    if (!c.outsider_ok) {
      EXPECT_EQ(d1.reply.code, 550) << c.address;
      EXPECT_EQ(d1.reply.status, "5.7.1") << c.address;
    }
    EXPECT_EQ(router.route(trusted, mb).outcome == Outcome::Ok, c.trusted_ok) << c.address;
  }
}

}  // namespace
}  // namespace mk::route
