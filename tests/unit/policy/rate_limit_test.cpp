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

}  // namespace
}  // namespace mk::policy
