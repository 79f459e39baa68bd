// store_suite_test.cpp — one suite, every AliasStore backend: the SQLite
// file, and PostgreSQL when MK_TEST_POSTGRES_URL names a server (the e2e
// test tests/e2e/test_store_postgres.py starts a throwaway PostgreSQL 15 and
// runs this binary against it; without the variable those cases skip).
// What it pins down: rows round-trip, ids are never reused, and holds count
// toward max_usage, atomically under concurrency, and lapse when expired.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "aliases/sqlite_store.h"
#include "aliases/store.h"
#include "store/pg.h"
#include "store/pg_alias_store.h"

namespace mk::aliases {
namespace {

namespace fs = std::filesystem;

struct Backend {
  const char* name;
};

class StoreSuite : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    std::string name = GetParam().name;
    if (name == "sqlite") {
      dir_ = fs::temp_directory_path() / ("mk-store-suite-" + std::to_string(::getpid()) + "-" +
                                          ::testing::UnitTest::GetInstance()->current_test_info()->name());
      fs::remove_all(dir_);
      fs::create_directories(dir_);
      store_ = open_sqlite_store((dir_ / "aliases.db").string());
    } else {
      const char* url = std::getenv("MK_TEST_POSTGRES_URL");
      if (!url || !*url) GTEST_SKIP() << "MK_TEST_POSTGRES_URL not set (tests/e2e/test_store_postgres.py sets it)";
      auto pool = std::make_shared<store::PgPool>(url, 8);
      store_ = store::open_pg_alias_store(pool);
      pool->exec("TRUNCATE alias_holds, aliases, alias_ids, alias_creation_turns");
    }
  }
  void TearDown() override {
    store_.reset();
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  static Alias alias(std::string id, std::optional<uint32_t> max_usage = std::nullopt,
                     std::optional<int64_t> valid_until = std::nullopt) {
    Alias a;
    a.id = std::move(id);
    a.target = "owner@example.net";
    a.created = 1000;
    a.valid_until = valid_until;
    a.max_usage = max_usage;
    a.creator_ip = "192.0.2.7";
    a.token_hash = std::string(64, 'a');
    return a;
  }

  std::unique_ptr<AliasStore> store_;
  fs::path dir_;
};

TEST_P(StoreSuite, RowsRoundTripAndIdsAreNeverReused) {
  Alias a = alias("k3x9q7wdm2fa8c", 5, 90000);
  ASSERT_TRUE(store_->insert(a));
  EXPECT_FALSE(store_->insert(a)) << "the same id twice";
  auto b = store_->find("k3x9q7wdm2fa8c");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->target, "owner@example.net");
  EXPECT_EQ(b->created, 1000);
  EXPECT_EQ(b->valid_until, 90000);
  EXPECT_EQ(b->max_usage, 5u);
  EXPECT_EQ(b->uses, 0u);
  EXPECT_EQ(b->creator_ip, "192.0.2.7");
  EXPECT_FALSE(b->disabled);
  EXPECT_EQ(b->token_hash, std::string(64, 'a'));
  Alias unlimited = alias("unlimited00000");
  unlimited.created = 2000;
  ASSERT_TRUE(store_->insert(unlimited));
  auto u = store_->find("unlimited00000");
  ASSERT_TRUE(u);
  EXPECT_FALSE(u->valid_until);
  EXPECT_FALSE(u->max_usage);
  EXPECT_FALSE(store_->find("nosuchalias000"));
  auto listed = store_->list(10);
  ASSERT_EQ(listed.size(), 2u);
  EXPECT_EQ(listed[0].id, "unlimited00000") << "newest first";
  EXPECT_EQ(store_->list(1).size(), 1u);

  store_->add_use("k3x9q7wdm2fa8c");
  EXPECT_EQ(store_->find("k3x9q7wdm2fa8c")->uses, 1u);
  EXPECT_TRUE(store_->disable("k3x9q7wdm2fa8c"));
  EXPECT_FALSE(store_->disable("nosuchalias000"));
  EXPECT_EQ(store_->purge(3000), 1u) << "the disabled one";
  EXPECT_FALSE(store_->find("k3x9q7wdm2fa8c"));
  EXPECT_FALSE(store_->insert(a)) << "a purged id stays issued";
  EXPECT_EQ(store_->purge(3000), 0u);
}

TEST_P(StoreSuite, HoldsCountTowardMaxUsage) {
  ASSERT_TRUE(store_->insert(alias("three000000000", 3)));
  const int64_t now = 5000, until = 9000;
  EXPECT_TRUE(store_->hold("three000000000", "t1", now, until).held);
  EXPECT_TRUE(store_->hold("three000000000", "t2", now, until).held);
  auto third = store_->hold("three000000000", "t3", now, until);
  EXPECT_TRUE(third.held);
  EXPECT_EQ(third.pending, 2u);
  ASSERT_TRUE(third.alias);
  EXPECT_EQ(third.alias->target, "owner@example.net");
  auto fourth = store_->hold("three000000000", "t4", now, until);
  EXPECT_FALSE(fourth.held) << "three held of three";
  EXPECT_EQ(fourth.pending, 3u);
  ASSERT_TRUE(fourth.alias);
  EXPECT_EQ(state_of(*fourth.alias, now, fourth.pending), AliasState::UsedUp);

  store_->release_hold("t2");
  EXPECT_TRUE(store_->hold("three000000000", "t5", now, until).held) << "a released hold frees its use";
  store_->commit_hold("three000000000", "t1");
  EXPECT_EQ(store_->find("three000000000")->uses, 1u);
  EXPECT_FALSE(store_->hold("three000000000", "t6", now, until).held) << "one stored use and two held";
  store_->release_hold("t5");
  store_->release_hold("t5");  // twice: the second finds nothing and gives nothing back
  EXPECT_TRUE(store_->hold("three000000000", "t7", now, until).held);
  EXPECT_FALSE(store_->hold("three000000000", "t8", now, until).held);

  auto unknown = store_->hold("nosuchalias000", "t9", now, until);
  EXPECT_FALSE(unknown.held);
  EXPECT_FALSE(unknown.alias);
}

TEST_P(StoreSuite, DeadAliasesHoldNothing) {
  ASSERT_TRUE(store_->insert(alias("expired0000000", std::nullopt, 4000)));
  ASSERT_TRUE(store_->insert(alias("disabled000000")));
  store_->disable("disabled000000");
  auto e = store_->hold("expired0000000", "a", 4000, 9000);
  EXPECT_FALSE(e.held);
  ASSERT_TRUE(e.alias);
  EXPECT_EQ(state_of(*e.alias, 4000, e.pending), AliasState::Expired);
  EXPECT_TRUE(store_->hold("expired0000000", "b", 3999, 9000).held) << "live one second before";
  auto d = store_->hold("disabled000000", "c", 4000, 9000);
  EXPECT_FALSE(d.held);
  ASSERT_TRUE(d.alias);
  EXPECT_TRUE(d.alias->disabled);
}

TEST_P(StoreSuite, ExpiredHoldsGiveTheirUsesBack) {
  ASSERT_TRUE(store_->insert(alias("once0000000000", 1)));
  EXPECT_TRUE(store_->hold("once0000000000", "dead-gateway", 1000, 1010).held);
  EXPECT_FALSE(store_->hold("once0000000000", "x", 1009, 1100).held) << "still held at 1009";
  EXPECT_EQ(store_->expire_holds(1009), 0u);
  EXPECT_EQ(store_->expire_holds(1010), 1u);
  EXPECT_EQ(store_->expire_holds(1010), 0u);
  EXPECT_TRUE(store_->hold("once0000000000", "y", 1010, 1100).held) << "the lapsed use came back";
  // A hold() finds lapsed holds by itself, with or without expire_holds.
  ASSERT_TRUE(store_->insert(alias("twice000000000", 1)));
  EXPECT_TRUE(store_->hold("twice000000000", "p", 1000, 1005).held);
  EXPECT_TRUE(store_->hold("twice000000000", "q", 1006, 1100).held);
  // A commit after the hold lapsed still counts the message the upstream took.
  store_->commit_hold("twice000000000", "p");
  EXPECT_EQ(store_->find("twice000000000")->uses, 1u);
  store_->release_hold("q");
  EXPECT_FALSE(store_->hold("twice000000000", "r", 1006, 1100).held) << "used up by the stored use";
}

TEST_P(StoreSuite, RacingHoldsNeverExceedMaxUsage) {
  ASSERT_TRUE(store_->insert(alias("fifty000000000", 50)));
  std::atomic<int> held{0}, refused{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 16; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        try {
          auto h = store_->hold("fifty000000000", "t" + std::to_string(t) + "-" + std::to_string(i), 1000, 9000);
          (h.held ? held : refused)++;
        } catch (const std::exception&) {
          failed++;
        }
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(held.load(), 50);
  EXPECT_EQ(refused.load(), 16 * 20 - 50);
  EXPECT_EQ(store_->find("fifty000000000")->uses, 0u) << "held, not stored";
}

TEST_P(StoreSuite, CreationTurnsAreOnePerIntervalPerClientAndAtomic) {
  auto& s = *store_;
  EXPECT_FALSE(s.creation_wait("192.0.2.7", 1000));
  EXPECT_TRUE(s.take_creation("192.0.2.7", 1000, 30));
  EXPECT_EQ(s.creation_wait("192.0.2.7", 1010), std::optional<int64_t>(20));
  EXPECT_FALSE(s.take_creation("192.0.2.7", 1010, 30));
  EXPECT_TRUE(s.take_creation("2001:db8::/64", 1010, 30)) << "another client has its own turn";
  s.give_back_creation("192.0.2.7", 1011);  // the request was refused after all
  EXPECT_FALSE(s.creation_wait("192.0.2.7", 1011));
  EXPECT_TRUE(s.take_creation("192.0.2.7", 1011, 30));
  EXPECT_TRUE(s.take_creation("192.0.2.7", 1041, 30)) << "the interval passed";

  // Racing requests of one client: one gets the turn.
  std::atomic<int> got{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&] {
      if (s.take_creation("198.51.100.1", 5000, 30)) ++got;
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(got.load(), 1);
}

INSTANTIATE_TEST_SUITE_P(Backends, StoreSuite, ::testing::Values(Backend{"sqlite"}, Backend{"postgres"}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(PgPool, RedactsPasswords) {
  EXPECT_EQ(store::PgPool::redacted("postgresql://mk:s3cret@db.example.org/mailkeep"),
            "postgresql://mk:***@db.example.org/mailkeep");
  EXPECT_EQ(store::PgPool::redacted("postgresql://mk@db/mailkeep?password=s3cret&sslmode=require"),
            "postgresql://mk@db/mailkeep?password=***&sslmode=require");
  EXPECT_EQ(store::PgPool::redacted("host=db password='a b' dbname=mk"), "host=db password=*** dbname=mk");
  EXPECT_EQ(store::PgPool::redacted("postgresql:///mailkeep?host=/tmp"), "postgresql:///mailkeep?host=/tmp");
}

TEST(PgPool, AnUnreachableServerIsATemporaryErrorThatBacksOff) {
  // Nothing listens on port 1 of loopback: connect fails at once.
  store::PgPool pool("postgresql://mk@127.0.0.1:1/mailkeep?connect_timeout=2", 2);
  try {
    pool.exec("SELECT 1");
    FAIL() << "connected to nothing";
  } catch (const db::Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot connect"), std::string::npos) << e.what();
  }
  // Within the backoff the next call fails without trying again.
  try {
    pool.exec("SELECT 1");
    FAIL() << "connected to nothing";
  } catch (const db::Error& e) {
    EXPECT_NE(std::string(e.what()).find("unavailable (retrying"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace mk::aliases
