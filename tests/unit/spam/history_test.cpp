// history_test.cpp — the verdict history: the features' storage form, the
// SQLite store on a real file (record, find, counts since a date, purge,
// reopen), and reclassification retraining the model file from stored
// features (with the in-memory fake and with SQLite).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <thread>

#include "fake_history.h"
#include "spam/history.h"
#include "spam/trainer.h"

namespace mk::spam {
namespace {

namespace fs = std::filesystem;

struct TempDir {
  fs::path path = fs::temp_directory_path() / ("mk-history-" + std::to_string(::getpid()) + "-" +
                                               std::to_string(reinterpret_cast<uintptr_t>(this)));
  TempDir() { fs::create_directories(path); }
  ~TempDir() { fs::remove_all(path); }
};

const CutoffOverrides kHalf{0.5, 0.5};  // tag = reject = 0.5: spam at 0.5, no unsure band

std::vector<uint32_t> features_of(const std::string& message) {
  Tokenizer t;
  t.feed(message);
  return t.finish();
}

Verdict verdict(std::string sig, int64_t time, double score, bool spam) {
  Verdict v;
  v.signature = std::move(sig);
  v.time = time;
  v.client = "192.0.2.7";
  v.sender = "a@example.com";
  v.recipients = "b@example.org, c@example.org";
  v.subject = "Hello <there> & \"friends\"";
  v.score = score;
  v.call = spam ? Call::Spam : Call::Ham;
  v.action = "relayed";
  return v;
}

TEST(FeatureCodec, RoundTripsAndIsCompact) {
  std::vector<uint32_t> f = {0, 1, 2, 127, 128, 300, 16383, 16384, 4'000'000, 4'194'303, UINT32_MAX};
  auto blob = encode_features(f);
  std::vector<uint32_t> back;
  ASSERT_TRUE(decode_features(blob, back));
  EXPECT_EQ(back, f);
  auto real = features_of("Subject: a test\r\n\r\nsome words for a body that is long enough to matter here\r\n");
  EXPECT_LT(encode_features(real).size(), real.size() * 3);
  ASSERT_TRUE(decode_features(encode_features(real), back));
  std::sort(real.begin(), real.end());
  EXPECT_EQ(back, real);
}

TEST(FeatureCodec, DamagedBlobsAreRefused) {
  std::vector<uint32_t> out;
  EXPECT_FALSE(decode_features(std::string("\x80", 1), out));                  // cut in a varint
  EXPECT_FALSE(decode_features(std::string("\xff\xff\xff\xff\xff\x01", 6), out));  // too long
  EXPECT_FALSE(decode_features(std::string("\x05\x00", 2), out));               // a repeated feature
  EXPECT_FALSE(decode_features(std::string("\xff\xff\xff\xff\x0f\x01", 6), out));  // past 2^32
  EXPECT_TRUE(decode_features("", out));
  EXPECT_TRUE(out.empty());
}

TEST(Signature, UniqueAndHex) {
  auto a = make_signature(1'700'000'000), b = make_signature(1'700'000'000);
  EXPECT_NE(a, b);
  EXPECT_EQ(a.size(), 16u);
  EXPECT_EQ(a.find_first_not_of("0123456789abcdef"), std::string::npos);
}

TEST(SqliteHistory, RecordsFindsCountsAndPurges) {
  TempDir dir;
  auto path = (dir.path / "sub" / "history.db").string();
  auto features = features_of("Subject: cheap pills\r\n\r\nbuy now\r\n");
  {
    auto h = open_sqlite_history(path);
    h->record(verdict("s1", 1000, 0.99, true), features);
    h->record(verdict("s2", 2000, 0.10, false), features);
    h->record(verdict("s3", 3000, 0.20, false), features);
    h->set_reclassified("s3", true);  // missed spam
    h->set_reclassified("s1", false);  // a false positive
  }
  auto h = open_sqlite_history(path);  // reopened: everything persisted
  std::vector<uint32_t> got;
  auto v = h->find("s2", &got);
  ASSERT_TRUE(v);
  std::sort(features.begin(), features.end());
  EXPECT_EQ(got, features);
  EXPECT_EQ(v->subject, "Hello <there> & \"friends\"");
  EXPECT_EQ(v->recipients, "b@example.org, c@example.org");
  EXPECT_FALSE(v->reclassified_as);
  EXPECT_FALSE(h->find("nope", &got));

  auto recent = h->recent(2);
  ASSERT_EQ(recent.size(), 2u);
  EXPECT_EQ(recent[0].signature, "s3");
  EXPECT_EQ(recent[0].reclassified_as, std::optional<bool>(true));
  EXPECT_EQ(recent[1].signature, "s2");

  auto all = h->counts(0);
  EXPECT_EQ(all.spam, 1u);
  EXPECT_EQ(all.ham, 2u);
  EXPECT_EQ(all.missed_spam, 1u);
  EXPECT_EQ(all.false_positives, 1u);
  auto later = h->counts(1500);
  EXPECT_EQ(later.spam, 0u);
  EXPECT_EQ(later.ham, 2u);
  EXPECT_EQ(later.false_positives, 0u);

  h->purge(/*features_before=*/2500, /*rows_before=*/1500);
  EXPECT_FALSE(h->find("s1", nullptr));  // row gone
  ASSERT_TRUE(h->find("s2", &got));      // row kept, features gone
  EXPECT_TRUE(got.empty());
  ASSERT_TRUE(h->find("s3", &got));
  EXPECT_EQ(got, features);
}

TEST(SqliteHistory, UnopenablePathNamesTheFile) {
  TempDir dir;
  auto blocker = dir.path / "file";
  std::ofstream(blocker) << "x";
  try {
    open_sqlite_history((blocker / "history.db").string());
    FAIL() << "opened a database under a regular file";
  } catch (const db::Error& e) {
    EXPECT_NE(std::string(e.what()).find("history.db"), std::string::npos) << e.what();
  }
}

TEST(BufferedHistory, QueuesWritesInBatchesAndLosesNothingOnClose) {
  TempDir dir;
  auto path = (dir.path / "h.db").string();
  auto features = features_of("Subject: x\r\n\r\nsome words\r\n");
  {
    // A long interval: only the explicit reads and the destructor write.
    auto h = make_buffered_history(open_sqlite_history(path), std::chrono::hours(1));
    for (int i = 0; i < 50; ++i) h->record(verdict("b" + std::to_string(i), 1000 + i, 0.1, false), features);
    EXPECT_EQ(open_sqlite_history(path)->counts(0).ham, 0u) << "still queued";
    EXPECT_EQ(h->counts(0).ham, 50u) << "a read writes the queue first";
    h->record(verdict("last", 5000, 0.9, true), features);
  }
  auto reopened = open_sqlite_history(path);
  EXPECT_EQ(reopened->counts(0).spam, 1u) << "the destructor wrote the rest";
  EXPECT_EQ(reopened->counts(0).ham, 50u);
}

TEST(BufferedHistory, WritesOnItsOwnAndBoundsTheQueue) {
  TempDir dir;
  auto path = (dir.path / "h.db").string();
  auto features = features_of("Subject: x\r\n\r\nwords\r\n");
  auto h = make_buffered_history(open_sqlite_history(path), std::chrono::milliseconds(10));
  h->record(verdict("soon", 100, 0.2, false), features);
  auto reader = open_sqlite_history(path);
  bool seen = false;
  for (int i = 0; i < 200 && !seen; ++i) {
    seen = reader->find("soon", nullptr).has_value();
    if (!seen) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(seen) << "the writer thread flushed within its interval";

  {
    auto bounded = make_buffered_history(std::make_unique<FakeHistory>(), std::chrono::hours(1), 3);
    for (int i = 0; i < 10; ++i) bounded->record(verdict("q" + std::to_string(i), i, 0.1, false), features);
    EXPECT_EQ(bounded->recent(100).size(), 3u) << "beyond max_queued, verdicts are dropped, not waited for";
  }
}

struct ReclassifyTest : ::testing::Test {
  TempDir dir;
  std::string model_path = (dir.path / "spam.model").string();
  std::string spammy = "Subject: cheap pills\r\nFrom: x@spam.example\r\n\r\nbuy cheap pills now, best price\r\n";
  std::string hammy = "Subject: meeting notes\r\nFrom: alice@example.com\r\n\r\nthe minutes of the meeting\r\n";

  void train_model() {
    Model m;
    for (int i = 0; i < 5; ++i) {
      m.train(features_of(spammy), true, TrainMode::Everything);
      m.train(features_of(hammy), false, TrainMode::Everything);
    }
    ASSERT_EQ(m.save(model_path), "");
  }
  double score_now(const std::string& message) {
    Model m;
    EXPECT_EQ(Model::load(model_path, m, {}), "");
    return m.score(features_of(message));
  }
};

TEST_F(ReclassifyTest, FlipsTheVerdictOfTheSameMessageAndRecordsTheLabel) {
  train_model();
  FakeHistory history;
  ASSERT_LT(score_now(hammy), 0.5);
  history.record(verdict("h1", 100, score_now(hammy), false), features_of(hammy));
  auto r = reclassify(history, model_path, {}, "h1", /*as_spam=*/true, kHalf);
  ASSERT_EQ(r.outcome, Outcome::Ok) << r.code << " " << r.detail;
  EXPECT_LT(r.before, 0.5);
  EXPECT_GE(r.after, 0.5);
  EXPECT_GE(score_now(hammy), 0.5);  // the saved model now calls it spam
  EXPECT_EQ(history.rows["h1"].verdict.reclassified_as, std::optional<bool>(true));
  EXPECT_EQ(history.counts(0).missed_spam, 1u);
  // And back: the operator changed their mind.
  r = reclassify(history, model_path, {}, "h1", false, kHalf);
  ASSERT_EQ(r.outcome, Outcome::Ok);
  EXPECT_LT(score_now(hammy), 0.5);
}

TEST_F(ReclassifyTest, WorksWithoutAModelFileYet) {
  FakeHistory history;
  history.record(verdict("x", 100, 0.5, true), features_of(spammy));
  auto r = reclassify(history, model_path, {}, "x", false, kHalf);
  ASSERT_EQ(r.outcome, Outcome::Ok) << r.detail;
  EXPECT_LT(score_now(spammy), 0.5);
}

TEST_F(ReclassifyTest, UnknownExpiredAndBrokenAreReportedNotGuessed) {
  train_model();
  FakeHistory history;
  EXPECT_EQ(reclassify(history, model_path, {}, "missing", true, kHalf).code, "not-found");
  history.record(verdict("old", 100, 0.1, false), features_of(hammy));
  history.purge(/*features_before=*/200, /*rows_before=*/0);
  auto r = reclassify(history, model_path, {}, "old", true, kHalf);
  EXPECT_EQ(r.outcome, Outcome::PermFail);
  EXPECT_EQ(r.code, "expired");
  history.fail = true;
  EXPECT_EQ(reclassify(history, model_path, {}, "old", true, kHalf).code, "history-unavailable");
  history.fail = false;
  history.record(verdict("ok", 100, 0.1, false), features_of(hammy));
  std::ofstream(model_path, std::ios::trunc) << "not a model";
  r = reclassify(history, model_path, {}, "ok", true, kHalf);
  EXPECT_EQ(r.outcome, Outcome::TempFail);
  EXPECT_EQ(r.code, "model-unavailable");
  std::ifstream in(model_path);
  std::string content((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(content, "not a model");  // a damaged model is never silently replaced
}

TEST_F(ReclassifyTest, WithTheSqliteHistory) {
  train_model();
  auto history = open_sqlite_history((dir.path / "h.db").string());
  history->record(verdict("sq", 100, score_now(spammy), true), features_of(spammy));
  auto r = reclassify(*history, model_path, {}, "sq", false, kHalf);
  ASSERT_EQ(r.outcome, Outcome::Ok) << r.detail;
  EXPECT_LT(score_now(spammy), 0.5);
  EXPECT_EQ(history->counts(0).false_positives, 1u);
}

TEST_F(ReclassifyTest, LearnUsesStoredFeaturesWhenTheSignatureIsKnown) {
  train_model();
  FakeHistory history;
  history.record(verdict("s1", 100, score_now(hammy), false), features_of(hammy));
  // What the client hands back may differ from what was scored (re-encoded): the stored features win.
  auto r = learn(&history, model_path, {}, "s1", features_of(spammy), /*as_spam=*/true, kHalf, Verdict{},
                 std::chrono::milliseconds(100));
  ASSERT_EQ(r.outcome, Outcome::Ok) << r.code << " " << r.detail;
  EXPECT_TRUE(r.stored);
  EXPECT_EQ(r.signature, "s1");
  EXPECT_GE(score_now(hammy), 0.5);
  EXPECT_EQ(history.counts(0).missed_spam, 1u);
  EXPECT_EQ(history.rows.size(), 1u);
}

TEST_F(ReclassifyTest, LearnTokenizedRecordsARowOfItsOwn) {
  train_model();
  FakeHistory history;
  Verdict from;
  from.sender = "someone@example.com";
  from.subject = "hello";
  auto r = learn(&history, model_path, {}, "unknown-signature", features_of(hammy), true, kHalf, from,
                 std::chrono::milliseconds(100));
  ASSERT_EQ(r.outcome, Outcome::Ok) << r.detail;
  EXPECT_FALSE(r.stored);
  ASSERT_EQ(history.rows.size(), 1u);
  auto& row = history.rows.begin()->second;
  EXPECT_EQ(row.verdict.sender, "someone@example.com");
  EXPECT_EQ(row.verdict.action, "learned");
  EXPECT_EQ(row.verdict.call, Call::Ham);  // as scored before learning
  EXPECT_EQ(row.verdict.reclassified_as, std::optional<bool>(true));
  EXPECT_EQ(history.counts(0).missed_spam, 1u);
  EXPECT_GE(score_now(hammy), 0.5);
}

TEST_F(ReclassifyTest, LearnGivesUpOnALockedModelAndLeavesIt) {
  train_model();
  std::ifstream in0(model_path, std::ios::binary);
  std::string before((std::istreambuf_iterator<char>(in0)), {});
  ModelLock held(model_path);
  ASSERT_EQ(held.error(), "");
  FakeHistory history;
  auto t0 = std::chrono::steady_clock::now();
  auto r = learn(&history, model_path, {}, "", features_of(hammy), true, kHalf, Verdict{},
                 std::chrono::milliseconds(50));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(50));
  EXPECT_EQ(r.outcome, Outcome::TempFail);
  EXPECT_EQ(r.code, "locked");
  std::ifstream in(model_path, std::ios::binary);
  std::string after((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(after, before);
  EXPECT_TRUE(history.rows.empty());
}

}  // namespace
}  // namespace mk::spam
