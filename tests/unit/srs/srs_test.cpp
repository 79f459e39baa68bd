// SRS0/SRS1 rewriting: the format postsrsd and Exim speak (srs/srs.h).
#include "srs/srs.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

using mk::srs::Error;
using mk::srs::Rewriter;

namespace {

constexpr int64_t kDay = 86400;
// 2025-12-05 00:00 UTC: day 20428, 20428 % 1024 = 972 = "6L" in base 32.
constexpr int64_t kNow = 1764892800;

TEST(Srs, Srs0MatchesAnIndependentHmac) {
  Rewriter srs("fwd.example.org", {"s3cret"});
  // Computed with Python's hmac/base64 over "6l" "shop.example" "bob" (lower-cased fields).
  auto out = srs.forward("Bob", "shop.example", kNow);
  ASSERT_TRUE(out);
  EXPECT_EQ(*out, "SRS0=KwFW=6L=shop.example=Bob");
  auto back = srs.reverse(*out, kNow);
  EXPECT_EQ(back.error, Error::None);
  EXPECT_EQ(back.local, "Bob");
  EXPECT_EQ(back.domain, "shop.example");
}

TEST(Srs, NullOwnDomainAndEmptyAreLeftAlone) {
  Rewriter srs("Fwd.Example.org", {"k"});
  EXPECT_EQ(srs.domain(), "fwd.example.org");
  EXPECT_FALSE(srs.forward("", "shop.example", kNow));
  EXPECT_FALSE(srs.forward("bob", "", kNow));
  EXPECT_FALSE(srs.forward("anyone", "FWD.example.ORG", kNow));
  EXPECT_FALSE(srs.forward("SRS0=abcd=6L=x.example=y", "fwd.example.org", kNow));
}

TEST(Srs, CaseChangesOnTheWayBackStillVerify) {
  Rewriter srs("fwd.example.org", {"k"});
  auto out = *srs.forward("Alice.Smith", "Shop.Example", kNow);
  std::string lower, upper;
  for (char c : out) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (char c : out) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  for (auto& variant : {lower, upper}) {
    auto back = srs.reverse(variant, kNow);
    EXPECT_EQ(back.error, Error::None) << variant;
  }
}

TEST(Srs, ForgedHashAndOtherSecretFail) {
  Rewriter srs("fwd.example.org", {"k"});
  auto out = *srs.forward("bob", "shop.example", kNow);
  std::string forged = out;
  forged[5] = forged[5] == 'A' ? 'B' : 'A';
  EXPECT_EQ(srs.reverse(forged, kNow).error, Error::BadHash);
  // The same address for another recipient domain: the hash covers the domain.
  std::string moved = out;
  moved.replace(moved.find("shop.example"), 12, "evil.example");
  EXPECT_EQ(srs.reverse(moved, kNow).error, Error::BadHash);
  Rewriter other("fwd.example.org", {"not-k"});
  EXPECT_EQ(other.reverse(out, kNow).error, Error::BadHash);
}

TEST(Srs, AgeLimitAndDayCounterWrap) {
  Rewriter srs("fwd.example.org", {"k"}, 21);
  auto out = *srs.forward("bob", "shop.example", kNow);
  EXPECT_EQ(srs.reverse(out, kNow + 21 * kDay).error, Error::None);
  EXPECT_EQ(srs.reverse(out, kNow + 22 * kDay).error, Error::Expired);
  // Made on day 1020 of the 1024-day cycle, read on day 3 of the next one: 7 days old.
  int64_t late = (kNow / kDay / 1024 * 1024 + 1020) * kDay;
  auto wrapped = *srs.forward("bob", "shop.example", late);
  EXPECT_EQ(srs.reverse(wrapped, late + 7 * kDay).error, Error::None);
  EXPECT_EQ(srs.reverse(wrapped, late + 30 * kDay).error, Error::Expired);
  // A timestamp from tomorrow is a whole cycle old.
  auto tomorrow = *srs.forward("bob", "shop.example", kNow + kDay);
  EXPECT_EQ(srs.reverse(tomorrow, kNow).error, Error::Expired);
}

TEST(Srs, RotationSignsWithTheFirstAndVerifiesWithEvery) {
  Rewriter old_srs("fwd.example.org", {"old"});
  Rewriter rotated("fwd.example.org", {"new", "old"});
  auto from_old = *old_srs.forward("bob", "shop.example", kNow);
  EXPECT_EQ(rotated.reverse(from_old, kNow).error, Error::None);
  auto from_new = *rotated.forward("bob", "shop.example", kNow);
  EXPECT_NE(from_new, from_old);
  EXPECT_EQ(old_srs.reverse(from_new, kNow).error, Error::BadHash);
}

TEST(Srs, OriginalLocalPartsWithSeparatorsSurvive) {
  Rewriter srs("fwd.example.org", {"k"});
  for (std::string local : {"a=b", "x+tag", "first.last", "=lead", "trail="}) {
    auto out = *srs.forward(local, "shop.example", kNow);
    auto back = srs.reverse(out, kNow);
    EXPECT_EQ(back.error, Error::None) << out;
    EXPECT_EQ(back.local, local);
    EXPECT_EQ(back.domain, "shop.example");
  }
}

TEST(Srs, SecondForwarderMakesSrs1AndItsBounceGoesBackThroughTheFirst) {
  Rewriter first("first.example", {"k1"});
  Rewriter second("fwd.example.org", {"k2"});
  auto srs0 = *first.forward("bob", "shop.example", kNow);
  auto srs1 = *second.forward(srs0, "first.example", kNow);
  EXPECT_EQ(srs1.rfind("SRS1=", 0), 0u) << srs1;
  EXPECT_NE(srs1.find("=first.example=="), std::string::npos) << srs1;
  // A third forwarder re-signs the SRS1 and keeps the first forwarder.
  Rewriter third("third.example", {"k3"});
  auto again = *third.forward(srs1, "fwd.example.org", kNow);
  EXPECT_EQ(again.rfind("SRS1=", 0), 0u);
  auto back3 = third.reverse(again, kNow);
  ASSERT_EQ(back3.error, Error::None);
  EXPECT_EQ(back3.domain, "first.example");
  // The bounce at the second forwarder goes to the first forwarder's SRS0 address…
  auto back = second.reverse(srs1, kNow);
  ASSERT_EQ(back.error, Error::None);
  EXPECT_EQ(back.domain, "first.example");
  EXPECT_EQ(back.local, srs0);
  // … which the first forwarder decodes to the original sender.
  auto orig = first.reverse(back.local, kNow);
  ASSERT_EQ(orig.error, Error::None);
  EXPECT_EQ(orig.local + "@" + orig.domain, "bob@shop.example");
  // A forged SRS1 hash fails.
  std::string forged = srs1;
  forged[5] = forged[5] == 'A' ? 'B' : 'A';
  EXPECT_EQ(second.reverse(forged, kNow).error, Error::BadHash);
}

TEST(Srs, MalformedAndForeignAddresses) {
  Rewriter srs("fwd.example.org", {"k"});
  EXPECT_EQ(srs.reverse("bob", kNow).error, Error::NotSrs);
  EXPECT_EQ(srs.reverse("SRS0", kNow).error, Error::NotSrs);
  EXPECT_EQ(srs.reverse("SRS2=abcd=6L=x=y", kNow).error, Error::NotSrs);
  for (const char* bad : {"SRS0=", "SRS0=abcd", "SRS0=abcd=6L", "SRS0=abcd=6L=x", "SRS0=abcd=6L==y",
                          "SRS0=abcd=6L=x=", "SRS0=abcd=!!=x=y", "SRS0=abcd=ABC=x=y", "SRS1=", "SRS1=abcd",
                          "SRS1=abcd=host", "SRS1=abcd==x", "SRS1=abcd=host="})
    EXPECT_EQ(srs.reverse(bad, kNow).error, Error::Malformed) << bad;
  EXPECT_EQ(srs.reverse("SRS0=ab=6L=x.example=y", kNow).error, Error::BadHash);  // a short hash never verifies
  EXPECT_TRUE(Rewriter::looks_like_srs("srs0+abc"));
  EXPECT_TRUE(Rewriter::looks_like_srs("SRS1-abc"));
  EXPECT_FALSE(Rewriter::looks_like_srs("SRS0"));
  EXPECT_FALSE(Rewriter::looks_like_srs("srs0.x"));
}

TEST(Srs, SecretFileIsReadAsPostsrsdReadsIt) {
  std::string path = ::testing::TempDir() + "srs_secrets";
  {
    std::ofstream f(path, std::ios::binary);
    f << "first secret\r\n\nsecond\n";
  }
  auto secrets = Rewriter::read_secrets(path);
  ASSERT_EQ(secrets.size(), 2u);
  EXPECT_EQ(secrets[0], "first secret");
  EXPECT_EQ(secrets[1], "second");
  {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f << "\n\r\n";
  }
  EXPECT_THROW(Rewriter::read_secrets(path), std::runtime_error);
  EXPECT_THROW(Rewriter::read_secrets(path + ".missing"), std::runtime_error);
  EXPECT_THROW(Rewriter("fwd.example.org", {}), std::invalid_argument);
  std::remove(path.c_str());
}

}  // namespace
