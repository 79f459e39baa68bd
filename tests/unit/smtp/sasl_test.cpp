// sasl_test.cpp — AUTH PLAIN / LOGIN exchanges (RFC 4954, RFC 4616).
#include "smtp/sasl.h"

#include <gtest/gtest.h>

namespace mk::smtp {
namespace {

using Kind = SaslStep::Kind;

TEST(Base64, StrictDecoding) {
  std::string out;
  EXPECT_TRUE(decode_base64("AGFsaWNlAHB3", out));
  EXPECT_EQ(out, std::string("\0alice\0pw", 9));
  EXPECT_TRUE(decode_base64("YQ==", out));
  EXPECT_EQ(out, "a");
  EXPECT_TRUE(decode_base64("YWI=", out));
  EXPECT_EQ(out, "ab");
  EXPECT_TRUE(decode_base64("", out));
  EXPECT_EQ(out, "");
  for (auto bad : {"YQ", "YQ=", "Y===", "YQ==YQ==", "Y Q==", "YQ=\n", "****", "YW=I"}) EXPECT_FALSE(decode_base64(bad, out)) << bad;
  EXPECT_FALSE(decode_base64(std::string(8000, 'A'), out)) << "bounded";
  EXPECT_EQ(encode_base64("Username:"), "VXNlcm5hbWU6");
}

TEST(Sasl, PlainWithInitialResponse) {
  SaslExchange s;
  auto step = s.start("PLAIN " + encode_base64(std::string("\0alice@example.org\0secret pass", 30)));
  ASSERT_EQ(step.kind, Kind::Credentials);
  EXPECT_EQ(step.user, "alice@example.org");
  EXPECT_EQ(step.password, "secret pass");
  EXPECT_EQ(step.mechanism, "PLAIN");
}

TEST(Sasl, PlainAfterEmptyChallenge) {
  SaslExchange s;
  auto step = s.start("plain");
  ASSERT_EQ(step.kind, Kind::Challenge);
  EXPECT_EQ(step.reply.wire(), "334 \r\n");
  step = s.next(encode_base64(std::string("alice\0alice\0pw", 14)));
  ASSERT_EQ(step.kind, Kind::Credentials);
  EXPECT_EQ(step.user, "alice");
}

TEST(Sasl, PlainRefusals) {
  SaslExchange a;
  EXPECT_EQ(a.start("PLAIN !!!!").reply.summary(), "501 5.5.2 Error: cannot decode the response (base64)");
  SaslExchange b;
  EXPECT_EQ(b.start("PLAIN " + encode_base64("no nuls")).reply.code, 501);
  SaslExchange c;  // authorization identity of someone else: no proxy logins
  auto step = c.start("PLAIN " + encode_base64(std::string("bob\0alice\0pw", 12)));
  EXPECT_EQ(step.kind, Kind::Failed);
  EXPECT_EQ(step.reply.code, 535);
  EXPECT_TRUE(step.password.empty());
  SaslExchange d;
  d.start("PLAIN");
  EXPECT_EQ(d.next("*").reply.summary(), "501 5.0.0 Authentication cancelled");
}

TEST(Sasl, Login) {
  SaslExchange s;
  auto step = s.start("LOGIN");
  ASSERT_EQ(step.kind, Kind::Challenge);
  EXPECT_EQ(step.reply.wire(), "334 VXNlcm5hbWU6\r\n");
  step = s.next(encode_base64("alice@example.org"));
  ASSERT_EQ(step.kind, Kind::Challenge);
  EXPECT_EQ(step.reply.wire(), "334 UGFzc3dvcmQ6\r\n");
  step = s.next(encode_base64("pw"));
  ASSERT_EQ(step.kind, Kind::Credentials);
  EXPECT_EQ(step.user, "alice@example.org");
  EXPECT_EQ(step.password, "pw");
  // The user name as the initial response (what some clients send).
  SaslExchange t;
  step = t.start("LOGIN " + encode_base64("bob"));
  ASSERT_EQ(step.kind, Kind::Challenge);
  step = t.next(encode_base64("x"));
  EXPECT_EQ(step.user, "bob");
  SaslExchange u;
  u.start("LOGIN");
  EXPECT_EQ(u.next("*").reply.code, 501);
  SaslExchange v;
  v.start("LOGIN");
  EXPECT_EQ(v.next("%%%").reply.code, 501);
}

TEST(Sasl, UnknownMechanismAndSyntax) {
  SaslExchange s;
  EXPECT_EQ(s.start("CRAM-MD5").reply.summary(), "504 5.5.4 Error: unrecognized authentication mechanism");
  SaslExchange t;
  EXPECT_EQ(t.start("").reply.code, 501);
  SaslExchange u;
  EXPECT_EQ(u.next("abc").reply.code, 503);
}

}  // namespace
}  // namespace mk::smtp
