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
  EXPECT_EQ(*r.accounts, (AccountSet{"alice", "bob", "sales"}));
  auto bad = parse_accounts("alice\n../../etc\n", "acc");
  EXPECT_FALSE(bad.accounts);
  EXPECT_EQ(bad.error.rfind("acc:2: invalid local part", 0), 0u) << bad.error;
}

TEST(Accounts, ReloadsOnChangeAndKeepsLastGoodList) {
  auto path = ::testing::TempDir() + "/mk_accounts_test.txt";
  std::ofstream(path) << "alice\n";
  AccountDirectory dir(path);
  ASSERT_TRUE(dir.reload(true));
  EXPECT_TRUE(dir.contains("ALICE"));
  EXPECT_FALSE(dir.contains("bob"));

  // A changed file is picked up (written under a new name and renamed, as cron jobs do).
  std::ofstream(path + ".new") << "alice\nbob\n";
  ASSERT_EQ(::rename((path + ".new").c_str(), path.c_str()), 0);
  EXPECT_TRUE(dir.reload());
  EXPECT_TRUE(dir.contains("bob"));

  // A broken file keeps the last good list.
  std::ofstream(path + ".new") << "carol\nbad/name\n";
  ASSERT_EQ(::rename((path + ".new").c_str(), path.c_str()), 0);
  EXPECT_FALSE(dir.reload());
  EXPECT_TRUE(dir.contains("bob"));
  EXPECT_FALSE(dir.contains("carol"));

  // A missing file too.
  ::unlink(path.c_str());
  EXPECT_FALSE(dir.reload());
  EXPECT_TRUE(dir.contains("alice"));
}

}  // namespace
}  // namespace mk::archive
