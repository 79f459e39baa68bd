// rate_limit_test.cpp — interval limits and client keys (IPv6 by /64).
#include "policy/rate_limit.h"

#include <gtest/gtest.h>

namespace mk::policy {
namespace {

TEST(RateLimit, ClientKeyGroupsIpv6By64) {
  EXPECT_EQ(client_key(*IpAddress::parse("192.0.2.1")), "192.0.2.1");
  EXPECT_EQ(client_key(*IpAddress::parse("2001:db8:1:2:aaaa::1")), client_key(*IpAddress::parse("2001:db8:1:2::ffff")));
  EXPECT_NE(client_key(*IpAddress::parse("2001:db8:1:2::1")), client_key(*IpAddress::parse("2001:db8:1:3::1")));
}

TEST(RateLimit, IntervalLimiter) {
  IntervalLimiter l(30);
  EXPECT_FALSE(l.retry_after("a", 100));
  EXPECT_FALSE(l.retry_after("a", 100));  // asking spends nothing
  l.spend("a", 100);
  EXPECT_EQ(l.retry_after("a", 100), 30);
  EXPECT_EQ(l.retry_after("a", 129), 1);
  EXPECT_FALSE(l.retry_after("a", 130));
  EXPECT_FALSE(l.retry_after("b", 100));
  IntervalLimiter off(0);
  off.spend("a", 100);
  EXPECT_FALSE(off.retry_after("a", 100));
}

TEST(RateLimit, WindowLimiterPerMinute) {
  WindowLimiter l(3);
  int64_t t = 600;  // start of a minute
  EXPECT_TRUE(l.allow("a", t));
  EXPECT_TRUE(l.allow("a", t + 10));
  EXPECT_TRUE(l.allow("a", t + 20));
  EXPECT_FALSE(l.allow("a", t + 30));
  EXPECT_TRUE(l.allow("b", t + 30));
  EXPECT_TRUE(l.allow("a", t + 60));  // next minute
  WindowLimiter off(0);
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(off.allow("a", t));
}

TEST(RateLimit, ConcurrencyLimiter) {
  ConcurrencyLimiter l(2);
  EXPECT_TRUE(l.acquire("a"));
  EXPECT_TRUE(l.acquire("a"));
  EXPECT_FALSE(l.acquire("a"));
  EXPECT_TRUE(l.acquire("b"));
  l.release("a");
  EXPECT_TRUE(l.acquire("a"));
}

}  // namespace
}  // namespace mk::policy

namespace mk::policy {
namespace {

TEST(FailureLimiter, LocksAfterMaxFailuresForTheWindow) {
  FailureLimiter l(3, 100);
  EXPECT_FALSE(l.failed("a", 0));
  EXPECT_FALSE(l.failed("a", 10));
  EXPECT_FALSE(l.locked("a", 10));
  EXPECT_TRUE(l.failed("a", 20)) << "the third failure starts the lockout";
  EXPECT_TRUE(l.locked("a", 20));
  EXPECT_TRUE(l.locked("a", 119));
  EXPECT_FALSE(l.locked("a", 120));
  EXPECT_FALSE(l.locked("b", 20));
  // Failures spread wider than the window never lock.
  FailureLimiter slow(2, 10);
  EXPECT_FALSE(slow.failed("k", 0));
  EXPECT_FALSE(slow.failed("k", 20));
  EXPECT_FALSE(slow.locked("k", 20));
  EXPECT_TRUE(slow.failed("k", 25));
  slow.clear("k");
  EXPECT_FALSE(slow.locked("k", 25));
}

}  // namespace
}  // namespace mk::policy
