// sessions_suite_test.cpp — one suite, every webreader::SessionStore: the
// in-memory one, and PostgreSQL when MK_TEST_POSTGRES_URL names a server
// (tests/e2e/test_store_postgres.py runs this binary against a throwaway
// PostgreSQL 15). What it pins down: a cookie finds its session and its CSRF
// token, each use renews the idle time, the absolute limit holds, logout
// ends it, a guessed or malformed cookie finds nothing, and (PostgreSQL) a
// second store on the same database — another gateway — sees the same.
#include <gtest/gtest.h>

#include <cstdlib>

#include "store/pg.h"
#include "store/pg_sessions.h"
#include "webreader/sessions.h"

namespace mk::webreader {
namespace {

const SessionLimits kLimits{10, 100, 1000};

class SessionsSuite : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    if (std::string(GetParam()) == "memory") {
      a_ = std::make_unique<MemorySessionStore>(kLimits);
    } else {
      const char* url = std::getenv("MK_TEST_POSTGRES_URL");
      if (!url || !*url) GTEST_SKIP() << "MK_TEST_POSTGRES_URL not set (tests/e2e/test_store_postgres.py sets it)";
      auto pool = std::make_shared<store::PgPool>(url, 4);
      a_ = store::open_pg_sessions(pool, kLimits);
      b_ = store::open_pg_sessions(std::make_shared<store::PgPool>(url, 2), kLimits);
      pool->exec("TRUNCATE web_sessions");
    }
  }
  SessionStore& other() { return b_ ? *b_ : *a_; }  // "another gateway" where there is one
  std::unique_ptr<SessionStore> a_, b_;
};

TEST_P(SessionsSuite, CookiesFindTheirSessionUntilIdleAbsoluteOrLogout) {
  auto& s = *a_;
  SessionInfo info;
  auto c = s.create("alice@example.org", 1000, &info);
  EXPECT_EQ(c.size(), 64u);
  EXPECT_EQ(info.csrf.size(), 64u);
  EXPECT_NE(info.csrf, c);
  auto found = other().find(c, 1005);
  ASSERT_TRUE(found);
  EXPECT_EQ(found->user, "alice@example.org");
  EXPECT_EQ(found->csrf, info.csrf);
  EXPECT_EQ(found->created, 1000);
  EXPECT_TRUE(s.find(c, 1014)) << "each use renews the idle time (1005 was a use, on the other store)";
  EXPECT_FALSE(other().find(c, 1025)) << "idle";
  EXPECT_FALSE(s.find(c, 1014)) << "an expired session is gone, not revived";

  auto d = s.create("bob@example.org", 2000);
  for (int t = 2005; t < 2100; t += 5) ASSERT_TRUE((t % 10 ? s : other()).find(d, t)) << t;
  EXPECT_FALSE(s.find(d, 2101)) << "absolute";

  auto e = s.create("carol@example.org", 3000);
  other().remove(e);  // logout on one gateway ends it on all
  EXPECT_FALSE(s.find(e, 3000));
  EXPECT_FALSE(s.find("", 3000));
  EXPECT_FALSE(s.find(std::string(64, 'a'), 3000));
  EXPECT_FALSE(s.find(c + "x", 3000));
  EXPECT_FALSE(s.find("'; DROP TABLE web_sessions; --" + std::string(33, 'x'), 3000));
  s.remove("not-a-cookie");
  auto f = s.create("dave@example.org", 4000);
  EXPECT_NE(f, e);
  EXPECT_EQ(s.find(f, 4001)->user, "dave@example.org");
}

INSTANTIATE_TEST_SUITE_P(Backends, SessionsSuite, ::testing::Values("memory", "postgres"),
                         [](const auto& info) { return std::string(info.param); });

}  // namespace
}  // namespace mk::webreader
