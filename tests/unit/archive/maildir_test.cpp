// maildir_test.cpp — tmp/ → fsync → new/, unique names with exact S=, abort.
#include "archive/maildir.h"

#include <gtest/gtest.h>

#include "support/string_content.h"
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace mk::archive {
namespace {

namespace fs = std::filesystem;

using mk::testing::StringContent;

std::vector<fs::path> files_in(const fs::path& dir) {
  std::vector<fs::path> out;
  if (fs::exists(dir))
    for (auto& e : fs::directory_iterator(dir)) out.push_back(e.path());
  return out;
}

fs::path fresh_dir(const char* name) {
  auto d = fs::path(::testing::TempDir()) / name;
  fs::remove_all(d);
  return d;
}

TEST(Maildir, DeliverCreatesFolderAndExactSizeName) {
  auto root = fresh_dir("mk_maildir_deliver");
  auto folder = (root / "example.org" / "alice").string();
  StringContent body("Subject: hi\r\n\r\nbody\r\n");
  auto r = deliver_to_maildir(folder, "Return-Path: <a@b>\r\n", body);
  ASSERT_EQ(r.outcome, Outcome::Ok) << r.detail;
  auto files = files_in(fs::path(folder) / "new");
  ASSERT_EQ(files.size(), 1u);
  EXPECT_TRUE(files_in(fs::path(folder) / "tmp").empty());
  EXPECT_TRUE(fs::exists(fs::path(folder) / "cur"));
  std::ifstream in(files[0], std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(), "Return-Path: <a@b>\r\nSubject: hi\r\n\r\nbody\r\n");
  auto name = files[0].filename().string();
  EXPECT_NE(name.find(",S=" + std::to_string(ss.str().size())), std::string::npos) << name;
  EXPECT_NE(name.find(".M"), std::string::npos);
  EXPECT_NE(name.find("P" + std::to_string(getpid()) + "Q"), std::string::npos) << name;
  struct stat st {};
  ASSERT_EQ(::stat(folder.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

TEST(Maildir, TwoPhaseCommitAndAbort) {
  auto folder = fresh_dir("mk_maildir_phases").string();
  StringContent body("x\r\n");
  PendingMaildirFile kept, dropped;
  ASSERT_EQ(prepare_maildir_file(folder, "", body, kept).outcome, Outcome::Ok);
  ASSERT_EQ(prepare_maildir_file(folder, "", body, dropped).outcome, Outcome::Ok);
  EXPECT_NE(kept.name(), dropped.name());
  EXPECT_EQ(files_in(fs::path(folder) / "tmp").size(), 2u);
  EXPECT_TRUE(files_in(fs::path(folder) / "new").empty());  // invisible until commit
  dropped.abort();
  ASSERT_EQ(kept.commit().outcome, Outcome::Ok);
  EXPECT_TRUE(files_in(fs::path(folder) / "tmp").empty());
  EXPECT_EQ(files_in(fs::path(folder) / "new").size(), 1u);
}

TEST(Maildir, ANameAnotherWriterTookIsNeverReplaced) {
  // Two gateways with one host name on one shared archive can meet on a name: the
  // message already in new/ stays, and ours gets a name of its own.
  auto folder = fresh_dir("mk_maildir_taken").string();
  StringContent body("ours\r\n");
  PendingMaildirFile pending;
  ASSERT_EQ(prepare_maildir_file(folder, "", body, pending).outcome, Outcome::Ok);
  const std::string taken = pending.name();
  auto theirs = fs::path(folder) / "new" / taken;
  std::ofstream(theirs, std::ios::binary) << "theirs\r\n";
  auto r = pending.commit();
  ASSERT_EQ(r.outcome, Outcome::Ok) << r.detail;
  EXPECT_NE(r.detail, taken);
  auto dot = taken.find('.', taken.find('.') + 1);
  EXPECT_EQ(r.detail, taken.substr(0, dot) + "R1" + taken.substr(dot)) << "still a Maildir name, same S=";
  std::ifstream in(theirs, std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), "theirs\r\n");
  std::ifstream ours(fs::path(folder) / "new" / r.detail, std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(ours), {}), "ours\r\n");
  EXPECT_TRUE(files_in(fs::path(folder) / "tmp").empty());
  EXPECT_EQ(files_in(fs::path(folder) / "new").size(), 2u);
}

TEST(Maildir, DestructorRemovesUncommittedFile) {
  auto folder = fresh_dir("mk_maildir_dtor").string();
  StringContent body("x\r\n");
  {
    PendingMaildirFile p;
    ASSERT_EQ(prepare_maildir_file(folder, "", body, p).outcome, Outcome::Ok);
  }
  EXPECT_TRUE(files_in(fs::path(folder) / "tmp").empty());
}

TEST(Maildir, UnwritableFolderIsTempFail) {
  StringContent body("x\r\n");
  auto r = deliver_to_maildir("/proc/mailkeep-cannot-write/box", "", body);
  EXPECT_EQ(r.outcome, Outcome::TempFail);
  EXPECT_FALSE(r.detail.empty());
}

}  // namespace
}  // namespace mk::archive
