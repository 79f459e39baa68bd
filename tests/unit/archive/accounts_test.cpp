// accounts_test.cpp — the accounts file: validation, reload on change, and
// keeping the last good list when the file breaks.
#include "archive/accounts.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

namespace mk::archive {
namespace {

TEST(Accounts, NameValidationTable) {
  struct Case {
    const char* name;
    bool ok;
  } cases[] = {
      {"alice", true},       {"first.last", true}, {"sales+eu", true},  {"a_b-c", true},
      {"", false},           {".hidden", false},   {"..", false},       {"a..b", false},
      {"a/b", false},        {"../etc", false},    {"a b", false},      {"Alice", false},  // callers lower-case first
      {"a\x01", false},      {"ü", false},         {"a@b", false},      {"a%b", false},
  };
  for (auto& c : cases) EXPECT_EQ(valid_account_name(c.name), c.ok) << c.name;
  EXPECT_TRUE(valid_account_name(std::string(64, 'a')));
  EXPECT_FALSE(valid_account_name(std::string(65, 'a')));
}

TEST(Accounts, ParsesCommentsBlanksAndCase) {
  auto r = parse_accounts("# users\nalice\n  Bob  # the boss\n\nsales\n", "acc");
  ASSERT_TRUE(r.accounts) << r.error;
  EXPECT_EQ(r.accounts->to_entries(),
            (std::vector<AccountEntry>{{"alice", {}}, {"bob", {}}, {"sales", {}}}));
  auto bad = parse_accounts("alice\n../../etc\n", "acc");
  EXPECT_FALSE(bad.accounts);
  EXPECT_EQ(bad.error.rfind("acc:2: '../../etc': invalid local part", 0), 0u) << bad.error;
}

TEST(Accounts, ReloadsOnChangeAndKeepsLastGoodList) {
  auto path = ::testing::TempDir() + "/mk_accounts_test.txt";
  std::ofstream(path) << "alice\n";
  AccountDirectory dir(path);
  ASSERT_TRUE(dir.reload(true));
  EXPECT_TRUE(dir.find("alice", "example.org"));
  EXPECT_FALSE(dir.find("bob", "example.org"));

  // A changed file is picked up (written under a new name and renamed, as cron jobs do).
  std::ofstream(path + ".new") << "alice\nbob\n";
  ASSERT_EQ(::rename((path + ".new").c_str(), path.c_str()), 0);
  EXPECT_TRUE(dir.reload());
  EXPECT_TRUE(dir.find("bob", "example.org"));

  // A broken file keeps the last good list.
  std::ofstream(path + ".new") << "carol\nbad/name\n";
  ASSERT_EQ(::rename((path + ".new").c_str(), path.c_str()), 0);
  EXPECT_FALSE(dir.reload());
  EXPECT_TRUE(dir.find("bob", "example.org"));
  EXPECT_FALSE(dir.find("carol", "example.org"));

  // A missing file too.
  ::unlink(path.c_str());
  EXPECT_FALSE(dir.reload());
  EXPECT_TRUE(dir.find("alice", "example.org"));
}

TEST(Accounts, AliasesAndExactAddresses) {
  auto r = parse_accounts("alice: Sales, info\nbob@example.org: bobby@example.com, help\ncarol\n", "acc");
  ASSERT_TRUE(r.accounts) << r.error;
  auto& l = *r.accounts;
  EXPECT_EQ(l.size(), 3u);
  // A short alias holds in every domain, for the account in that same domain.
  EXPECT_EQ(l.find("sales", "example.org"), (Account{"alice", "example.org"}));
  EXPECT_EQ(l.find("sales", "example.com"), (Account{"alice", "example.com"}));
  EXPECT_EQ(l.find("alice", "example.com"), (Account{"alice", "example.com"}));
  // An exact account lives in its own domain only; its aliases point there from anywhere.
  EXPECT_EQ(l.find("bob", "example.org"), (Account{"bob", "example.org"}));
  EXPECT_FALSE(l.find("bob", "example.com"));
  EXPECT_EQ(l.find("bobby", "example.com"), (Account{"bob", "example.org"}));
  EXPECT_EQ(l.find("help", "example.net"), (Account{"bob", "example.org"}));
  EXPECT_FALSE(l.find("bobby", "example.org"));
  // What format() writes parses back to the same list.
  auto again = parse_accounts(l.format(), "again");
  ASSERT_TRUE(again.accounts) << again.error;
  EXPECT_EQ(again.accounts->to_entries(), l.to_entries());
}

TEST(Accounts, RefusesDoubledAndUnsafeNames) {
  EXPECT_FALSE(parse_accounts("alice: sales\nbob: sales\n", "acc").accounts);
  EXPECT_FALSE(parse_accounts("alice: alice\n", "acc").accounts);
  EXPECT_FALSE(parse_accounts("alice@../etc\n", "acc").accounts);
  EXPECT_FALSE(parse_accounts("alice: ../x\n", "acc").accounts);
  EXPECT_FALSE(parse_accounts("alice@Example..org\n", "acc").accounts);
  auto r = parse_accounts("alice\nalice: x\n", "acc");
  ASSERT_FALSE(r.accounts);
  EXPECT_NE(r.error.find("acc:2: 'alice' is listed twice"), std::string::npos) << r.error;
  // A refused entry leaves the list as it was.
  AccountList l;
  EXPECT_EQ(l.add({"alice", {"sales"}}), "");
  EXPECT_NE(l.add({"bob", {"bobby", "sales"}}), "");
  EXPECT_FALSE(l.find("bobby", "example.org"));
  EXPECT_EQ(l.size(), 1u);
}

TEST(Accounts, PendingUntilTheFirstList) {
  AccountDirectory dir(::testing::TempDir() + "/mk_accounts_absent.txt", /*until_loaded=*/true);
  EXPECT_TRUE(dir.pending());
  EXPECT_FALSE(dir.reload(true));
  EXPECT_TRUE(dir.pending());
  auto list = std::make_shared<AccountList>();
  ASSERT_EQ(list->add({"alice@example.org", {}}), "");
  dir.replace(list);
  EXPECT_FALSE(dir.pending());
  EXPECT_TRUE(dir.find("alice", "example.org"));
}

}  // namespace
}  // namespace mk::archive
