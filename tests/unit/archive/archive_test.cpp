// archive_test.cpp — archive copies: two phases, headers, Maildir++ folders,
// Sent deduplication by Message-ID and body digest.
#include "archive/archive.h"

#include <gtest/gtest.h>

#include "support/string_content.h"

#include <filesystem>
#include <fstream>
#include <sstream>

namespace mk::archive {
namespace {

namespace fs = std::filesystem;

using mk::testing::StringContent;

size_t count_files(const fs::path& dir) {
  size_t n = 0;
  std::error_code ec;
  for (auto& e : fs::directory_iterator(dir, ec)) n += e.is_regular_file();
  return n;
}

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct ArchiveTest : ::testing::Test {
  // Per test: CTest runs tests in parallel processes.
  fs::path root = fs::path(::testing::TempDir()) /
                  (std::string("mk_archive_") + ::testing::UnitTest::GetInstance()->current_test_info()->name());
  void SetUp() override { fs::remove_all(root); }
  ArchiveTarget inbox(const std::string& user) {
    return {(root / "example.org" / user).string(), "example.org/" + user + "/INBOX", user + "@example.org", ""};
  }
  ArchiveTarget sent(const std::string& user) {
    return {(root / "example.org" / user / ".Sent").string(), "example.org/" + user + "/Sent", "",
            (root / ".mailkeep/sent-seen/example.org" / user).string()};
  }
};

TEST(Fingerprint, MessageIdAndBodyDigest) {
  auto a = message_fingerprint(StringContent("Subject: x\r\nMessage-ID: <1@x>\r\n\r\nbody\r\n"));
  auto a2 = message_fingerprint(StringContent("Received: other\r\nmessage-id:\r\n <1@x>\r\n\r\nbody\r\n"));
  auto b = message_fingerprint(StringContent("Message-ID: <1@x>\r\n\r\nother body\r\n"));
  auto c = message_fingerprint(StringContent("Message-ID: <2@x>\r\n\r\nbody\r\n"));
  ASSERT_TRUE(a && a2 && b && c);
  EXPECT_EQ(*a, *a2);  // headers differ, Message-ID (folded) and body same
  EXPECT_NE(*a, *b);
  EXPECT_NE(*a, *c);
  EXPECT_FALSE(message_fingerprint(StringContent("Subject: no id\r\n\r\nbody\r\n")));
  EXPECT_FALSE(message_fingerprint(StringContent("")));
}

TEST_F(ArchiveTest, PrepareThenCommitPublishesWithEnvelopeHeaders) {
  StringContent msg("Subject: hi\r\n\r\nhello\r\n");
  ArchiveCopies copies;
  auto r = copies.prepare({inbox("alice"), sent("bob")}, "bob@example.org", "Received: by test\r\n", msg);
  ASSERT_EQ(r.outcome, Outcome::Ok) << r.detail;
  EXPECT_EQ(count_files(root / "example.org/alice/tmp"), 1u);
  EXPECT_EQ(count_files(root / "example.org/alice/new"), 0u);
  ASSERT_EQ(copies.commit().outcome, Outcome::Ok);
  EXPECT_EQ(copies.published(), 2u);
  EXPECT_EQ(count_files(root / "example.org/alice/tmp"), 0u);
  ASSERT_EQ(count_files(root / "example.org/alice/new"), 1u);
  auto file = fs::directory_iterator(root / "example.org/alice/new")->path();
  EXPECT_EQ(read(file),
            "Return-Path: <bob@example.org>\r\nDelivered-To: alice@example.org\r\nReceived: by test\r\n"
            "Subject: hi\r\n\r\nhello\r\n");
  // Maildir++: .Sent inside bob's INBOX Maildir, with its marker file.
  EXPECT_EQ(count_files(root / "example.org/bob/.Sent/new"), 1u);
  EXPECT_TRUE(fs::exists(root / "example.org/bob/.Sent/maildirfolder"));
  EXPECT_TRUE(fs::exists(root / "example.org/bob/cur"));
}

TEST_F(ArchiveTest, AbortLeavesNothing) {
  StringContent msg("Subject: hi\r\n\r\nhello\r\n");
  {
    ArchiveCopies copies;
    ASSERT_EQ(copies.prepare({inbox("alice")}, "x@y", "", msg).outcome, Outcome::Ok);
    copies.abort();
  }
  EXPECT_EQ(count_files(root / "example.org/alice/tmp"), 0u);
  EXPECT_EQ(count_files(root / "example.org/alice/new"), 0u);
}

TEST_F(ArchiveTest, FailureOfOneCopyRemovesTheOthers) {
  StringContent msg("x\r\n");
  fs::create_directories(root / "example.org");
  std::ofstream(root / "example.org/blocked") << "a file where a folder should be";
  ArchiveCopies copies;
  auto r = copies.prepare({inbox("alice"), inbox("blocked")}, "x@y", "", msg);
  EXPECT_EQ(r.outcome, Outcome::TempFail);
  EXPECT_NE(r.detail.find("example.org/blocked/INBOX"), std::string::npos) << r.detail;
  EXPECT_EQ(count_files(root / "example.org/alice/tmp"), 0u);
}

TEST_F(ArchiveTest, SentCopiesAreDeduplicated) {
  StringContent copy1("Received: from a\r\nMessage-ID: <m1@example.org>\r\n\r\nsame body\r\n");
  StringContent copy2("Received: from b\r\nMessage-ID: <m1@example.org>\r\n\r\nsame body\r\n");
  StringContent other("Received: from b\r\nMessage-ID: <m1@example.org>\r\n\r\nedited body\r\n");
  for (auto* m : {&copy1, &copy2, &other}) {
    ArchiveCopies copies;
    ASSERT_EQ(copies.prepare({sent("bob")}, "bob@example.org", "", *m).outcome, Outcome::Ok);
    ASSERT_EQ(copies.commit().outcome, Outcome::Ok);
  }
  EXPECT_EQ(count_files(root / "example.org/bob/.Sent/new"), 2u);  // copy2 was a duplicate
  EXPECT_EQ(count_files(root / "example.org/bob/.Sent/tmp"), 0u);
  // INBOX copies are never deduplicated.
  for (int i = 0; i < 2; ++i) {
    ArchiveCopies copies;
    ASSERT_EQ(copies.prepare({inbox("alice")}, "bob@example.org", "", copy1).outcome, Outcome::Ok);
    ASSERT_EQ(copies.commit().outcome, Outcome::Ok);
  }
  EXPECT_EQ(count_files(root / "example.org/alice/new"), 2u);
}

TEST_F(ArchiveTest, StatsPerUserAndFolder) {
  StringContent msg("Message-ID: <s@x>\r\n\r\n12345\r\n");
  ArchiveCopies copies;
  ASSERT_EQ(copies.prepare({inbox("alice"), inbox("bob"), sent("bob")}, "a@b", "", msg).outcome, Outcome::Ok);
  ASSERT_EQ(copies.commit().outcome, Outcome::Ok);
  auto stats = archive_stats(root.string());
  ASSERT_EQ(stats.size(), 3u);
  EXPECT_EQ(stats[0].user, "example.org/alice");
  EXPECT_EQ(stats[0].folder, "INBOX");
  EXPECT_EQ(stats[0].messages, 1u);
  EXPECT_EQ(stats[0].bytes, std::string("Return-Path: <a@b>\r\nDelivered-To: alice@example.org\r\n").size() + msg.size());
  EXPECT_EQ(stats[2].user, "example.org/bob");
  EXPECT_EQ(stats[2].folder, "Sent");
}

TEST_F(ArchiveTest, HousekeepingRemovesOnlyOldTmpFilesAndMarkers) {
  StringContent msg("Message-ID: <h@x>\r\n\r\nbody\r\n");
  ArchiveCopies copies;
  ASSERT_EQ(copies.prepare({inbox("alice"), sent("bob")}, "a@b", "", msg).outcome, Outcome::Ok);
  ASSERT_EQ(copies.commit().outcome, Outcome::Ok);
  // A crash leftover in tmp/, and a fresh one.
  std::ofstream(root / "example.org/alice/tmp/leftover") << "x";
  std::ofstream(root / "example.org/alice/tmp/fresh") << "x";
  auto ten_days_ago = std::filesystem::file_time_type::clock::now() - std::chrono::hours(240);
  std::filesystem::last_write_time(root / "example.org/alice/tmp/leftover", ten_days_ago);
  int64_t now = time(nullptr);
  EXPECT_EQ(clean_archive(root.string(), now, 36 * 3600, 30 * 86400), 1u);
  EXPECT_FALSE(fs::exists(root / "example.org/alice/tmp/leftover"));
  EXPECT_TRUE(fs::exists(root / "example.org/alice/tmp/fresh"));
  EXPECT_EQ(count_files(root / "example.org/alice/new"), 1u);  // messages untouched, however old
  EXPECT_EQ(count_files(root / "example.org/bob/.Sent/new"), 1u);
  // The marker goes once it is older than the dedupe window.
  EXPECT_EQ(clean_archive(root.string(), now + 31 * 86400, 36 * 3600 * 100, 30 * 86400), 1u);
  EXPECT_EQ(count_files(root / "example.org/bob/.Sent/new"), 1u);
}

}  // namespace
}  // namespace mk::archive
