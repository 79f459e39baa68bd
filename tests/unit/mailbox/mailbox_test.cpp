// Gmail's labels to folders, flags and labels (the Takeout import), and
// Dovecot's dotlock: taken, waited for, and broken only when stale.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "mailbox/mailbox.h"

namespace mk::mailbox {
namespace {

struct LabelCase {
  const char* header;
  const char* folder;
  const char* flags;
  std::vector<std::string> labels;
};

TEST(GmailLabels, FolderFlagsAndLabels) {
  const LabelCase cases[] = {
      {"Inbox", "INBOX", "S", {}},
      {"Inbox,Unread", "INBOX", "", {}},
      {"Sent", "Sent", "S", {}},
      {"Sent,Inbox", "INBOX", "S", {}},  // a message to oneself is in the Inbox
      {"Spam,Inbox", "Junk", "S", {}},
      {"Trash,Spam", "Trash", "S", {}},
      {"", "Archive", "S", {}},
      {"Opened,Important,Category Updates", "Archive", "S", {}},
      {"Starred,Inbox", "INBOX", "FS", {}},
      {"Work,Receipts,Inbox", "INBOX", "S", {"Receipts", "Work"}},
      {"\"Projects, 2019\",Inbox", "INBOX", "S", {"Projects, 2019"}},
      {" Travel/Japan , Unread", "Archive", "", {"Travel/Japan"}},
  };
  for (auto& c : cases) {
    auto p = place_gmail_labels(c.header);
    EXPECT_EQ(p.folder, c.folder) << c.header;
    EXPECT_EQ(p.flags, c.flags) << c.header;
    EXPECT_EQ(p.labels, c.labels) << c.header;
  }
}

TEST(GmailLabels, Split) {
  EXPECT_EQ(split_gmail_labels("a,b"), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(split_gmail_labels("\"a,b\",c"), (std::vector<std::string>{"a,b", "c"}));
  EXPECT_EQ(split_gmail_labels(",, ,"), std::vector<std::string>{});
}

class LockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("mk-lock-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

TEST_F(LockTest, TakesAndReleasesTheDotlock) {
  {
    UidlistLock l(dir_.string());
    EXPECT_TRUE(l.locked());
    EXPECT_TRUE(std::filesystem::exists(dir_ / "dovecot-uidlist.lock"));
  }
  EXPECT_FALSE(std::filesystem::exists(dir_ / "dovecot-uidlist.lock"));
}

TEST_F(LockTest, WaitsForAFreshLockAndGivesUp) {
  std::ofstream(dir_ / "dovecot-uidlist.lock") << "12345\n";
  auto start = std::chrono::steady_clock::now();
  UidlistLock l(dir_.string(), 1);
  EXPECT_FALSE(l.locked());
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(900));
  EXPECT_TRUE(std::filesystem::exists(dir_ / "dovecot-uidlist.lock"));  // someone else's: left alone
}

TEST_F(LockTest, TakesTheLockWhenItsHolderLetsGo) {
  std::ofstream(dir_ / "dovecot-uidlist.lock") << "12345\n";
  std::thread release([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    std::filesystem::remove(dir_ / "dovecot-uidlist.lock");
  });
  UidlistLock l(dir_.string(), 5);
  release.join();
  EXPECT_TRUE(l.locked());
}

TEST_F(LockTest, BreaksAStaleLock) {
  auto path = dir_ / "dovecot-uidlist.lock";
  std::ofstream(path) << "12345\n";
  std::filesystem::last_write_time(path, std::filesystem::file_time_type::clock::now() - std::chrono::minutes(3));
  UidlistLock l(dir_.string(), 1);
  EXPECT_TRUE(l.locked());
}

}  // namespace
}  // namespace mk::mailbox
