// history_suite_test.cpp — one suite, every spam::History backend: the
// SQLite file, and PostgreSQL when MK_TEST_POSTGRES_URL names a server
// (tests/e2e/test_store_postgres.py runs this binary against a throwaway
// PostgreSQL 15; without the variable those cases skip). Also the shared
// model (store/pg_shared_file.h): turns, publishing and pulling.
// What it pins down: verdicts and their features round-trip exactly, in
// order, batches included; labels count as errors; purging drops features
// before rows; text PostgreSQL cannot hold is stored, not refused.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "spam/history.h"
#include "store/pg.h"
#include "store/pg_history.h"
#include "store/pg_shared_file.h"

namespace mk::spam {
namespace {

namespace fs = std::filesystem;

std::string test_name() { return ::testing::UnitTest::GetInstance()->current_test_info()->name(); }

fs::path temp_dir() {
  std::string name = test_name();
  for (char& c : name)
    if (c == '/') c = '_';
  auto dir = fs::temp_directory_path() / ("mk-history-suite-" + std::to_string(::getpid()) + "-" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

Verdict verdict(std::string sig, int64_t time, double score, Call call) {
  Verdict v;
  v.signature = std::move(sig);
  v.time = time;
  v.client = "192.0.2.1";
  v.sender = "a@example.net";
  v.recipients = "b@example.org, c@example.org";
  v.subject = "Hello <there> & \"friends\" 'quoted' \\ back";
  v.score = score;
  v.call = call;
  v.action = "relayed";
  return v;
}

class HistorySuite : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    if (std::string(GetParam()) == "sqlite") {
      dir_ = temp_dir();
      history_ = open_sqlite_history((dir_ / "history.db").string());
    } else {
      const char* url = std::getenv("MK_TEST_POSTGRES_URL");
      if (!url || !*url) GTEST_SKIP() << "MK_TEST_POSTGRES_URL not set (tests/e2e/test_store_postgres.py sets it)";
      pool_ = std::make_shared<store::PgPool>(url, 4);
      history_ = store::open_pg_history(pool_);
      pool_->exec("TRUNCATE spam_verdicts, spam_features");
    }
  }
  void TearDown() override {
    history_.reset();
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  std::unique_ptr<History> history_;
  std::shared_ptr<store::PgPool> pool_;
  fs::path dir_;
};

TEST_P(HistorySuite, VerdictsAndFeaturesRoundTripInOrder) {
  std::vector<uint32_t> features = {7, 3, 1u << 19, 3, 0, 65535, 65536};
  auto& h = *history_;
  h.record(verdict("s1", 1000, 0.999, Call::Spam), features);
  h.record(verdict("s2", 2000, 0.0001234567891234, Call::Ham), features);
  h.record_all({{verdict("s3", 3000, 0.6, Call::Unsure), {42}}, {verdict("s4", 3000, 0.2, Call::Ham), {}}});
  std::vector<uint32_t> got;
  auto v = h.find("s2", &got);
  ASSERT_TRUE(v);
  EXPECT_EQ(got, (std::vector<uint32_t>{0, 3, 7, 65535, 65536, 1u << 19}));
  EXPECT_EQ(v->subject, "Hello <there> & \"friends\" 'quoted' \\ back");
  EXPECT_EQ(v->recipients, "b@example.org, c@example.org");
  EXPECT_EQ(v->client, "192.0.2.1");
  EXPECT_EQ(v->action, "relayed");
  EXPECT_DOUBLE_EQ(v->score, 0.0001234567891234);
  EXPECT_EQ(v->call, Call::Ham);
  EXPECT_EQ(v->time, 2000);
  EXPECT_FALSE(v->reclassified_as);
  EXPECT_EQ(h.find("s3", &got)->call, Call::Unsure);
  EXPECT_EQ(got, std::vector<uint32_t>{42});
  EXPECT_EQ(h.find("s1", nullptr)->call, Call::Spam);
  EXPECT_FALSE(h.find("nope", &got));

  // Newest first; of one second, the later recorded first.
  auto recent = h.recent(3);
  ASSERT_EQ(recent.size(), 3u);
  EXPECT_EQ(recent[0].signature, "s4");
  EXPECT_EQ(recent[1].signature, "s3");
  EXPECT_EQ(recent[2].signature, "s2");
  EXPECT_EQ(h.recent(100).size(), 4u);
}

TEST_P(HistorySuite, LabelsCountAsErrorsAndPurgeDropsFeaturesFirst) {
  auto& h = *history_;
  std::vector<uint32_t> features = {1, 2, 3};
  h.record(verdict("s1", 1000, 0.99, Call::Spam), features);
  h.record(verdict("s2", 2000, 0.10, Call::Ham), features);
  h.record(verdict("s3", 3000, 0.20, Call::Ham), features);
  h.record(verdict("s4", 3000, 0.70, Call::Unsure), features);
  h.set_reclassified("s3", true);   // missed spam
  h.set_reclassified("s4", true);   // missed spam (unsure)
  h.set_reclassified("s1", false);  // a false positive
  h.set_reclassified("nope", true);  // nothing to label: no error
  EXPECT_EQ(h.find("s1", nullptr)->reclassified_as, std::optional<bool>(false));
  auto all = h.counts(0);
  EXPECT_EQ(all.spam, 1u);
  EXPECT_EQ(all.unsure, 1u);
  EXPECT_EQ(all.ham, 2u);
  EXPECT_EQ(all.missed_spam, 2u);
  EXPECT_EQ(all.false_positives, 1u);
  auto later = h.counts(1500);
  EXPECT_EQ(later.spam, 0u);
  EXPECT_EQ(later.ham, 2u);
  EXPECT_EQ(later.false_positives, 0u);

  h.purge(/*features_before=*/2500, /*rows_before=*/1500);
  std::vector<uint32_t> got;
  EXPECT_FALSE(h.find("s1", nullptr));  // row gone
  ASSERT_TRUE(h.find("s2", &got));      // row kept, features gone
  EXPECT_TRUE(got.empty());
  ASSERT_TRUE(h.find("s3", &got));
  EXPECT_EQ(got, features);
}

TEST_P(HistorySuite, ARecordedAgainSignatureReplacesTheRow) {
  auto& h = *history_;
  h.record(verdict("s1", 1000, 0.1, Call::Ham), {1});
  h.set_reclassified("s1", true);
  h.record_all({{verdict("s1", 1000, 0.2, Call::Ham), {2}}, {verdict("s1", 1001, 0.995, Call::Spam), {3}}});
  std::vector<uint32_t> got;
  auto v = h.find("s1", &got);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->call, Call::Spam);
  EXPECT_EQ(v->time, 1001);
  EXPECT_EQ(got, std::vector<uint32_t>{3});
  EXPECT_FALSE(v->reclassified_as);
  EXPECT_EQ(h.recent(10).size(), 1u);
}

TEST_P(HistorySuite, RawBytesAndNulInTextAreStoredNotRefused) {
  auto& h = *history_;
  Verdict v = verdict("s1", 1000, 0.5, Call::Unsure);
  v.subject = std::string("caf\xE9 \xFF\xFE ok") + std::string(1, '\0') + "end";
  v.sender = "\xC3\xA9t\xC3\xA9@example.org";  // valid UTF-8 stays as it is
  h.record(v, {1});
  auto got = h.find("s1", nullptr);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->sender, "\xC3\xA9t\xC3\xA9@example.org");
  EXPECT_TRUE(got->subject.starts_with("caf")) << got->subject;
  EXPECT_NE(got->subject.find(" ok"), std::string::npos) << got->subject;  // SQLite's text ends at the NUL
}

TEST_P(HistorySuite, BuffersAndManyThreadsLoseNothing) {
  auto buffered = make_buffered_history(std::move(history_), std::chrono::milliseconds(5));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 250; ++i)
        buffered->record(verdict("t" + std::to_string(t) + "-" + std::to_string(i), 1000 + i, 0.1, Call::Ham),
                         {uint32_t(i), uint32_t(t)});
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(buffered->counts(0).ham, 1000u);
  std::vector<uint32_t> got;
  ASSERT_TRUE(buffered->find("t3-249", &got));
  EXPECT_EQ(got, (std::vector<uint32_t>{3, 249}));
}

INSTANTIATE_TEST_SUITE_P(Backends, HistorySuite, ::testing::Values("sqlite", "postgres"),
                         [](const auto& info) { return std::string(info.param); });

// The shared model, PostgreSQL only (without a shared store there is none).
class SharedFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* url = std::getenv("MK_TEST_POSTGRES_URL");
    if (!url || !*url) GTEST_SKIP() << "MK_TEST_POSTGRES_URL not set";
    pool_ = std::make_shared<store::PgPool>(url, 4);
    a_ = store::open_pg_shared_file(pool_, store::kSpamModel);  // two gateways: two shares, two files
    b_ = store::open_pg_shared_file(pool_, store::kSpamModel);
    pool_->exec("TRUNCATE shared_files");
    dir_ = temp_dir();
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  static void write(const fs::path& p, const std::string& bytes) { std::ofstream(p, std::ios::binary) << bytes; }
  static std::string read(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  std::shared_ptr<store::PgPool> pool_;
  std::unique_ptr<SharedFile> a_, b_;
  fs::path dir_;
};

TEST_F(SharedFileTest, PublishedBytesReachTheOtherFileOnceAndTurnsStartFromTheNewest) {
  auto fa = (dir_ / "a.model").string(), fb = (dir_ / "b.model").string();
  EXPECT_FALSE(b_->pull(fb)) << "nothing shared yet";
  EXPECT_FALSE(fs::exists(fb));
  std::string bytes("model\0bytes\xFF\x01", 13);
  {
    auto turn = a_->begin(fa);
    write(fa, bytes);
    turn->publish();
  }
  EXPECT_TRUE(b_->pull(fb));
  EXPECT_EQ(read(fb), bytes);
  EXPECT_FALSE(b_->pull(fb)) << "the same version is not copied twice";
  EXPECT_FALSE(a_->pull(fa)) << "the publisher has it";

  // B's turn starts from A's newest publication, even when its file is stale.
  {
    auto turn = a_->begin(fa);
    write(fa, "second");
    turn->publish();
  }
  write(fb, "stale");
  {
    auto turn = b_->begin(fb);
    EXPECT_EQ(read(fb), "second");
    write(fb, "third");
    turn->publish();
  }
  EXPECT_TRUE(a_->pull(fa));
  EXPECT_EQ(read(fa), "third");
  EXPECT_EQ(pool_->exec("SELECT version FROM shared_files WHERE name = 'spam_model'").integer(0, 0), 3);
}

TEST_F(SharedFileTest, OneTurnAtATimeAcrossShares) {
  auto fa = (dir_ / "a.model").string(), fb = (dir_ / "b.model").string();
  std::atomic<int> inside{0}, most{0};
  auto writer = [&](SharedFile& share, const std::string& file) {
    for (int i = 0; i < 5; ++i) {
      auto turn = share.begin(file);
      int now = ++inside;
      most = std::max(most.load(), now);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      write(file, read(file) + "x");  // read-modify-write: no update may be lost
      turn->publish();
      --inside;
    }
  };
  write(fa, "");
  write(fb, "");
  std::thread ta(writer, std::ref(*a_), fa), tb(writer, std::ref(*b_), fb);
  ta.join();
  tb.join();
  EXPECT_EQ(most.load(), 1);
  a_->pull(fa);
  EXPECT_EQ(read(fa), std::string(10, 'x'));
}

}  // namespace
}  // namespace mk::spam
