// sync_test.cpp — a directory sync with a fake provider: what becomes an
// account, what is refused, the diff, the hold on mass removals, failures
// that keep the last good list, and the atomically written cache.
#include "directory/sync.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "directory/https_client.h"

namespace mk::directory {
namespace {

struct FakeProvider : Provider {
  std::vector<DirectoryEntry>* entries;
  bool fail = false;
  explicit FakeProvider(std::vector<DirectoryEntry>* e) : entries(e) {}
  FetchResult fetch() override {
    if (fail) throw SyncError("users page 2: HTTP 500");
    return FetchResult{*entries, 1, 2};
  }
};

struct Fixture : ::testing::Test {
  std::string dir = ::testing::TempDir() + "/mk_dir_sync_" + std::to_string(::getpid());
  Settings s = default_settings();
  std::vector<DirectoryEntry> entries;
  FakeProvider* provider = nullptr;
  std::unique_ptr<Syncer> syncer;

  void SetUp() override {
    std::filesystem::remove_all(dir);
    s.backup.domains = {"example.org", "example.com"};
    s.directory.provider = "google";
    s.directory.cache = dir + "/sub/accounts";
    auto p = std::make_unique<FakeProvider>(&entries);
    provider = p.get();
    syncer = std::make_unique<Syncer>(s, std::move(p));
  }
  void TearDown() override { std::filesystem::remove_all(dir); }
  std::string cache() {
    std::ifstream in(s.directory.cache);
    std::stringstream t;
    t << in.rdbuf();
    return t.str();
  }
};

std::vector<DirectoryEntry> users(int n) {
  std::vector<DirectoryEntry> out;
  for (int i = 0; i < n; ++i) out.push_back({"user" + std::to_string(i) + "@example.org", {}, false});
  return out;
}

TEST_F(Fixture, EntriesBecomeAccountsAndHostileAddressesAreRefused) {
  entries = {
      {"alice@example.org", {"sales@example.org", "alice@example.com", "alice@other.test", "../x@example.org"}, false},
      {"bob@example.org", {"sales@example.org", std::string("b\x01@example.org"), std::string(10000, 'x') + "@example.org"}, false},
      {"../etc@example.org", {}, false},
      {"team@example.com", {"all@example.com"}, true},
      {"carol@elsewhere.test", {}, false},
  };
  archive::AccountList empty;
  auto r = syncer->run(empty, {});
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.accounts, 3u);
  EXPECT_EQ(r.refused, 7u);  // other.test, ../x, sales twice, \x01, the long one, ../etc, elsewhere: see below
  auto& l = *r.list;
  EXPECT_EQ(l.find("sales", "example.org"), (archive::Account{"alice", "example.org"}));
  EXPECT_EQ(l.find("alice", "example.com"), (archive::Account{"alice", "example.org"})) << "an alias in another backup domain";
  EXPECT_EQ(l.find("all", "example.com"), (archive::Account{"team", "example.com"})) << "groups are accounts";
  EXPECT_FALSE(l.find("../etc", "example.org"));
  EXPECT_FALSE(l.find("carol", "elsewhere.test"));
  EXPECT_EQ(r.diff, (std::vector<std::string>{"+ alice@example.org", "+ bob@example.org", "+ team@example.com"}));
  // The cache holds the list in the accounts-file format.
  auto parsed = archive::parse_accounts(cache(), "cache");
  ASSERT_TRUE(parsed.accounts) << parsed.error;
  EXPECT_EQ(parsed.accounts->to_entries(), l.to_entries());
  EXPECT_EQ(syncer->counters().last_success.load() > 0, true);
}

TEST_F(Fixture, DiffDryRunHoldAndForce) {
  entries = users(20);
  archive::AccountList empty;
  auto first = syncer->run(empty, {});
  ASSERT_TRUE(first.ok);
  auto written = cache();
  // One removed (5%), one added, one changed: applied.
  entries.erase(entries.begin() + 3);
  entries.push_back({"new@example.org", {}, false});
  entries[0].aliases = {"boss@example.org"};
  SyncOptions dry;
  dry.dry_run = true;
  auto d = syncer->run(*first.list, dry);
  ASSERT_TRUE(d.ok);
  EXPECT_EQ(d.diff, (std::vector<std::string>{"+ new@example.org", "~ user0@example.org", "- user3@example.org"}));
  EXPECT_EQ(cache(), written) << "a dry run writes nothing";
  auto applied = syncer->run(*first.list, {});
  ASSERT_TRUE(applied.ok);
  EXPECT_NE(cache(), written);
  // Half the users gone: held, nothing written, until forced.
  written = cache();
  entries.resize(10);
  auto held = syncer->run(*applied.list, {});
  EXPECT_FALSE(held.ok);
  EXPECT_TRUE(held.held);
  EXPECT_EQ(held.removed, 10u);
  EXPECT_EQ(cache(), written);
  EXPECT_EQ(syncer->counters().held.load(), 1u);
  SyncOptions force;
  force.force = true;
  auto forced = syncer->run(*applied.list, force);
  ASSERT_TRUE(forced.ok);
  EXPECT_EQ(forced.accounts, 10u);
  EXPECT_NE(cache(), written);
}

TEST_F(Fixture, FailuresKeepTheLastGoodList) {
  entries = users(5);
  archive::AccountList empty;
  auto first = syncer->run(empty, {});
  ASSERT_TRUE(first.ok);
  auto written = cache();
  provider->fail = true;
  auto r = syncer->run(*first.list, {});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "users page 2: HTTP 500");
  EXPECT_EQ(cache(), written);
  EXPECT_EQ(syncer->counters().failures.load(), 1u);
  EXPECT_GT(syncer->counters().last_error.load(), 0);
  // An empty directory is a failure too, whatever max_removal says.
  provider->fail = false;
  entries.clear();
  SyncOptions force;
  force.force = true;
  EXPECT_FALSE(syncer->run(*first.list, force).ok);
  EXPECT_EQ(cache(), written);
}

TEST_F(Fixture, AHandWrittenListComparesPerDomain) {
  auto current = archive::parse_accounts("alice\nbob: sales\n", "f");
  ASSERT_TRUE(current.accounts);
  entries = {{"alice@example.org", {}, false}, {"alice@example.com", {}, false},
             {"bob@example.org", {"sales@example.org"}, false}, {"bob@example.com", {"sales@example.com"}, false}};
  auto r = syncer->run(*current.accounts, {});
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.added, 0u);
  EXPECT_EQ(r.removed, 0u);
  EXPECT_EQ(r.changed, 2u) << "short aliases became exact ones";
}

TEST(Url, ParsesHttpsUrls) {
  std::string err;
  auto u = parse_url("https://admin.googleapis.com/admin/directory/v1/users?customer=my_customer", &err);
  ASSERT_TRUE(u) << err;
  EXPECT_EQ(u->host, "admin.googleapis.com");
  EXPECT_EQ(u->port, "443");
  EXPECT_EQ(u->target, "/admin/directory/v1/users?customer=my_customer");
  u = parse_url("https://127.0.0.1:8443", &err);
  ASSERT_TRUE(u);
  EXPECT_EQ(u->port, "8443");
  EXPECT_EQ(u->target, "/");
  u = parse_url("https://[::1]:9/x", &err);
  ASSERT_TRUE(u);
  EXPECT_EQ(u->host, "::1");
  for (auto bad : {"http://example.org/", "https://", "https://u:p@host/", "https://host:99999/", "https://host:x/",
                   "https://host/a b", "https://[::1/"})
    EXPECT_FALSE(parse_url(bad, &err)) << bad;
  EXPECT_EQ(url_encode("mailEnabled eq true"), "mailEnabled%20eq%20true");
  EXPECT_EQ(url_encode("a+b/c=d&e~"), "a%2Bb%2Fc%3Dd%26e~");
}

}  // namespace
}  // namespace mk::directory
