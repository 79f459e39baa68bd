// aliases_test.cpp — ids, validation, expiry with an injected clock, the
// reserve/commit/release protocol, and the SQLite store on a real file.
#include <gtest/gtest.h>

#include <filesystem>
#include <set>
#include <thread>

#include "aliases/alias_id.h"
#include "aliases/service.h"
#include "aliases/sqlite_store.h"
#include "fake_store.h"
#include <sqlite3.h>

namespace mk::aliases {
namespace {

TEST(AliasId, AlphabetLengthAndNoReuse) {
  std::set<std::string> seen;
  std::map<char, int> counts;
  for (int i = 0; i < 20000; ++i) {
    auto id = generate_alias_id();
    ASSERT_EQ(id.size(), kAliasIdLength);
    for (char c : id) {
      ASSERT_NE(kAliasAlphabet.find(c), std::string_view::npos) << id;
      counts[c]++;
    }
    ASSERT_TRUE(seen.insert(id).second) << "duplicate id " << id;
  }
  // No look-alikes, and every symbol in use (a biased generator would starve some).
  for (char c : std::string("01ilo")) EXPECT_EQ(counts.count(c), 0u) << c;
  EXPECT_EQ(counts.size(), kAliasAlphabet.size());
  for (auto& [c, n] : counts) EXPECT_GT(n, 20000 * 14 / 31 / 2) << c;  // within 2x of uniform
}

TEST(AliasId, NormaliseIsCaseInsensitiveAndStrict) {
  auto id = generate_alias_id();
  std::string upper = id;
  for (auto& c : upper) c = char(std::toupper(c));
  EXPECT_EQ(normalise_alias_id(upper), id);
  EXPECT_FALSE(normalise_alias_id(id.substr(1)));
  EXPECT_FALSE(normalise_alias_id(id + "a"));
  EXPECT_FALSE(normalise_alias_id("0000000000000o"));
  EXPECT_FALSE(normalise_alias_id("../../etc/pass"));
}

TEST(AliasId, TokensHashAndCompare) {
  auto t = generate_token();
  EXPECT_EQ(t.size(), 64u);
  auto h = hash_token(t);
  EXPECT_NE(h, t);
  EXPECT_TRUE(token_matches(h, t));
  EXPECT_FALSE(token_matches(h, t.substr(1)));
  EXPECT_FALSE(token_matches(h, generate_token()));
}

struct ServiceTest : ::testing::Test {
  FakeAliasStore store;
  int64_t now = 1'700'000'000;
  AliasService service{store, {{"alias.example", "alias2.example"}, 7, 60, 100}, [this] { return now; }};
};

TEST_F(ServiceTest, CreateValidatesTable) {
  struct Case {
    const char* target;
    std::optional<int64_t> days, uses;
    bool ok;
    const char* error_part;
  } cases[] = {
      {"me@example.com", std::nullopt, std::nullopt, true, ""},
      {"me@example.com", 60, 100, true, ""},
      {"first.last+tag@sub.example.com", 1, 1, true, ""},
      {"", 7, 5, false, "missing"},
      {"not-an-address", 7, 5, false, "RFC 5321"},
      {"a@b@c.example", 7, 5, false, "RFC 5321"},
      {"me@[192.0.2.1]", 7, 5, false, "address literal"},
      {"me@example.com>", 7, 5, false, "RFC 5321"},
      {"x@alias.example", 7, 5, false, "alias of ours"},
      {"x@ALIAS2.example", 7, 5, false, "alias of ours"},
      {"me@example.com", 0, 5, false, "days"},
      {"me@example.com", 61, 5, false, "days"},
      {"me@example.com", 7, 0, false, "max_usage"},
      {"me@example.com", 7, 101, false, "max_usage"},
  };
  for (auto& c : cases) {
    auto r = service.create({c.target, c.days, c.uses, "192.0.2.1"});
    EXPECT_EQ(r.alias.has_value(), c.ok) << c.target << " " << r.error;
    if (!c.ok) {
      EXPECT_NE(r.error.find(c.error_part), std::string::npos) << c.target << ": " << r.error;
    }
  }
}

TEST_F(ServiceTest, ExpiryArithmeticWithInjectedClock) {
  auto r = service.create({"me@example.com", 3, std::nullopt, "ip"});
  ASSERT_TRUE(r.alias);
  EXPECT_EQ(*r.alias->valid_until, now + 3 * 86400);
  EXPECT_EQ(service.address_of(*r.alias), r.alias->id + "@alias.example");
  auto d = service.create({"me@example.com", std::nullopt, std::nullopt, "ip"});
  EXPECT_EQ(*d.alias->valid_until, now + 7 * 86400);  // default_days

  now += 3 * 86400 - 1;
  EXPECT_EQ(service.reserve(r.alias->id).status, Reservation::Reserved);
  service.release(r.alias->id);
  now += 1;  // the exact second it ends
  EXPECT_EQ(service.reserve(r.alias->id).status, Reservation::Expired);
  EXPECT_EQ(service.purge(), 1u);
  EXPECT_EQ(service.reserve(r.alias->id).status, Reservation::Unknown);
}

TEST_F(ServiceTest, ReserveCommitReleaseCountsOnlyDeliveries) {
  auto r = service.create({"me@example.com", 7, 2, "ip"});
  auto id = r.alias->id;
  std::string upper = id;
  for (auto& c : upper) c = char(std::toupper(c));
  auto a = service.reserve(upper);  // case-insensitive
  ASSERT_EQ(a.status, Reservation::Reserved);
  EXPECT_EQ(a.target, "me@example.com");
  auto b = service.reserve(id);
  ASSERT_EQ(b.status, Reservation::Reserved);
  EXPECT_EQ(service.reserve(id).status, Reservation::UsedUp);  // two pending = max
  service.release(id);                                          // one transaction failed
  EXPECT_EQ(store.rows[id].uses, 0u);
  auto c = service.reserve(id);
  ASSERT_EQ(c.status, Reservation::Reserved);
  service.commit_use(id);
  service.commit_use(id);
  EXPECT_EQ(store.rows[id].uses, 2u);
  EXPECT_EQ(service.reserve(id).status, Reservation::UsedUp);
  EXPECT_EQ(service.reserve("nonexistent000").status, Reservation::Unknown);
  service.disable(id);
  EXPECT_EQ(service.reserve(id).status, Reservation::Disabled);
}

TEST_F(ServiceTest, ConcurrentReservationsNeverOverDeliver) {
  auto r = service.create({"me@example.com", 7, 5, "ip"});
  auto id = r.alias->id;
  std::atomic<int> reserved{0}, refused{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 20; ++t)
    threads.emplace_back([&] {
      auto res = service.reserve(id);
      if (res.status == Reservation::Reserved) {
        ++reserved;
        service.commit_use(id);
      } else {
        EXPECT_EQ(res.status, Reservation::UsedUp);
        ++refused;
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(reserved.load(), 5);
  EXPECT_EQ(refused.load(), 15);
  EXPECT_EQ(store.rows[id].uses, 5u);
}

TEST_F(ServiceTest, IdsAreNeverReusedAfterPurge) {
  auto r = service.create({"me@example.com", 1, std::nullopt, "ip"});
  auto id = r.alias->id;
  now += 2 * 86400;
  EXPECT_EQ(service.purge(), 1u);
  Alias again = *r.alias;
  EXPECT_FALSE(store.insert(again));  // the id stays issued
}

TEST(SqliteStore, RoundTripMigrationAndReopen) {
  auto path = ::testing::TempDir() + "/mk_sqlite_store_test.db";
  for (auto suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path + suffix);
  Alias a;
  a.id = generate_alias_id();
  a.target = "me@example.com";
  a.created = 1000;
  a.valid_until = 5000;
  a.max_usage = 3;
  a.creator_ip = "192.0.2.1";
  a.token_hash = hash_token("t");
  {
    auto store = open_sqlite_store(path);
    ASSERT_TRUE(store->insert(a));
    EXPECT_FALSE(store->insert(a));  // same id twice
    store->add_use(a.id);
    Alias unlimited = a;
    unlimited.id = generate_alias_id();
    unlimited.valid_until.reset();
    unlimited.max_usage.reset();
    unlimited.created = 2000;
    ASSERT_TRUE(store->insert(unlimited));
    auto listed = store->list(10);
    ASSERT_EQ(listed.size(), 2u);
    EXPECT_EQ(listed[0].id, unlimited.id);  // newest first
    EXPECT_FALSE(listed[0].max_usage);
  }
  auto store = open_sqlite_store(path);  // reopen: migrations are not re-run
  auto got = store->find(a.id);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->target, a.target);
  EXPECT_EQ(got->uses, 1u);
  EXPECT_EQ(*got->valid_until, 5000);
  EXPECT_EQ(*got->max_usage, 3u);
  EXPECT_EQ(got->token_hash, a.token_hash);
  EXPECT_TRUE(store->disable(a.id));
  EXPECT_EQ(store->purge(6000), 1u);  // disabled one goes; unlimited stays
  EXPECT_FALSE(store->find(a.id));
  EXPECT_FALSE(store->insert(a));  // its id stays issued after the purge
  EXPECT_EQ(store->list(10).size(), 1u);
}

TEST(SqliteStore, RefusesNewerSchema) {
  auto path = ::testing::TempDir() + "/mk_sqlite_newer.db";
  for (auto suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path + suffix);
  { open_sqlite_store(path); }
  {
    // Simulate a database written by a future mailkeep.
    auto store = open_sqlite_store(path);
  }
  std::string cmd = "PRAGMA user_version = 99";
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, cmd.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  try {
    open_sqlite_store(path);
    FAIL() << "opened a newer schema";
  } catch (const StoreError& e) {
    EXPECT_NE(std::string(e.what()).find("newer"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace mk::aliases
