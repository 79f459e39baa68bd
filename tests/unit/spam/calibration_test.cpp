// calibration_test.cpp — the three verdicts' cutoffs: chosen from synthetic
// out-of-fold scores for an error target, overridden by [spam] numbers,
// stored in the model file (and absent from a format 1 file), and
// cross-validation that scores each example with a model that did not learn it.
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>

#include "spam/calibration.h"
#include "spam/model.h"
#include "spam/trainer.h"

namespace mk::spam {
namespace {

size_t count_at_or_above(const std::vector<Scored>& s, bool spam, double cutoff) {
  return size_t(std::count_if(s.begin(), s.end(), [&](auto& x) { return x.spam == spam && x.score >= cutoff; }));
}

// Overlapping classes: good mail ~ U(0, 0.7), spam ~ U(0.4, 1), `n` of each.
std::vector<Scored> overlapping(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> ham(0.0, 0.7), spam(0.4, 1.0);
  std::vector<Scored> s;
  for (size_t i = 0; i < n; ++i) {
    s.push_back({ham(rng), false});
    s.push_back({spam(rng), true});
  }
  return s;
}

TEST(Calibration, SpamCutoffSitsAboveEveryGoodScoreAtZeroFpRate) {
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    auto s = overlapping(200, seed);
    auto c = choose_cutoffs(s, 0.0, 0.05);
    ASSERT_TRUE(c);
    double worst_ham = 0;
    for (auto& x : s)
      if (!x.spam) worst_ham = std::max(worst_ham, x.score);
    EXPECT_GT(c->cutoffs.spam, worst_ham) << "seed " << seed;
    EXPECT_EQ(count_at_or_above(s, false, c->cutoffs.spam), 0u);
    EXPECT_EQ(c->false_positives, 0u);
    // Not further up than the next score: every spam above the worst good one is still caught.
    size_t spam_above_worst = size_t(std::count_if(s.begin(), s.end(), [&](auto& x) { return x.spam && x.score > worst_ham; }));
    EXPECT_EQ(count_at_or_above(s, true, c->cutoffs.spam), spam_above_worst);
    EXPECT_EQ(c->missed, 200u - spam_above_worst);
    EXPECT_EQ(c->ham, 200u);
    EXPECT_EQ(c->spam, 200u);
  }
}

TEST(Calibration, FpRateLeavesThatShareOfGoodMailAbove) {
  auto s = overlapping(1000, 7);
  auto c = choose_cutoffs(s, 0.01, 0.05);
  ASSERT_TRUE(c);
  EXPECT_EQ(count_at_or_above(s, false, c->cutoffs.spam), 10u);  // 1 % of 1000
  EXPECT_EQ(c->false_positives, 10u);
  auto strict = choose_cutoffs(s, 0.0, 0.05);
  EXPECT_LT(c->cutoffs.spam, strict->cutoffs.spam);
  EXPECT_LT(c->missed, strict->missed);
}

TEST(Calibration, UnsureCutoffLeavesAtMostFnRateOfSpamBelow) {
  auto s = overlapping(1000, 3);
  for (double rate : {0.0, 0.01, 0.05, 0.2}) {
    auto c = choose_cutoffs(s, 0.0, rate);
    ASSERT_TRUE(c);
    size_t below = 1000 - count_at_or_above(s, true, c->cutoffs.unsure);
    EXPECT_EQ(below, size_t(rate * 1000)) << rate;
    EXPECT_LE(c->cutoffs.unsure, c->cutoffs.spam);
    // The counts match the verdicts the cutoffs give.
    size_t unsure_ham = 0, unsure_spam = 0;
    for (auto& x : s)
      if (call_of(x.score, c->cutoffs) == Call::Unsure) ++(x.spam ? unsure_spam : unsure_ham);
    EXPECT_EQ(c->unsure_ham, unsure_ham);
    EXPECT_EQ(c->unsure_spam, unsure_spam);
  }
}

TEST(Calibration, SeparableScoresNeedNoUnsureBandAndCutoffsNeverCross) {
  std::vector<Scored> s;
  for (int i = 0; i < 50; ++i) s.push_back({0.01 + i * 0.001, false});
  for (int i = 0; i < 50; ++i) s.push_back({0.95 + i * 0.0005, true});
  auto c = choose_cutoffs(s, 0.0, 0.5);  // half the spam may fall below "unsure": above the spam cutoff, so clamped
  ASSERT_TRUE(c);
  EXPECT_GT(c->cutoffs.spam, 0.059);
  EXPECT_LE(c->cutoffs.spam, 0.95);
  EXPECT_LE(c->cutoffs.unsure, c->cutoffs.spam);
  EXPECT_EQ(c->missed, 0u);
  EXPECT_EQ(c->false_positives, 0u);
}

TEST(Calibration, CutoffsSitBetweenScoresInLogOdds) {
  // The worst good message at 0.9, the lowest spam above it at 0.9999: in
  // log-odds 2.2 and 9.2, halfway 5.7, so the cutoff is p = 0.9967 (a plain
  // average, 0.95, would sit much nearer the good message in log-odds).
  std::vector<Scored> s{{0.1, false}, {0.9, false}, {0.9999, true}, {0.99995, true}};
  auto c = choose_cutoffs(s, 0.0, 0.0);
  ASSERT_TRUE(c);
  EXPECT_NEAR(c->cutoffs.spam, 0.9967, 0.0005);
  EXPECT_EQ(c->cutoffs.unsure, c->cutoffs.spam);  // no spam may be called ham: unsure from the lowest spam, clamped
}

TEST(Calibration, NeedsBothClasses) {
  EXPECT_FALSE(choose_cutoffs({{0.2, false}, {0.3, false}}, 0, 0.05));
  EXPECT_FALSE(choose_cutoffs({{0.9, true}}, 0, 0.05));
  EXPECT_FALSE(choose_cutoffs({}, 0, 0.05));
  // A single good score at the very top: the cutoff still sits above it.
  auto c = choose_cutoffs({{1.0, false}, {0.5, true}}, 0, 0);
  ASSERT_TRUE(c);
  EXPECT_GT(c->cutoffs.spam, 1.0);
  EXPECT_EQ(call_of(1.0, c->cutoffs), Call::Unsure);
}

TEST(Calibration, VerdictsAtTheCutoffs) {
  Cutoffs c{0.3, 0.8};
  EXPECT_EQ(call_of(0.29, c), Call::Ham);
  EXPECT_EQ(call_of(0.3, c), Call::Unsure);
  EXPECT_EQ(call_of(0.79, c), Call::Unsure);
  EXPECT_EQ(call_of(0.8, c), Call::Spam);
  EXPECT_STREQ(status_word(Call::Unsure), "Unsure");
  EXPECT_STREQ(status_word(Call::Spam), "Yes");
  EXPECT_STREQ(status_word(Call::Ham), "No");
  EXPECT_STREQ(call_name(Call::Unsure), "unsure");
}

TEST(Calibration, ConfiguredNumbersOverrideTheModelsCutoffs) {
  TokenizerSettings settings;
  settings.hash_bits = 12;
  Model m(settings);
  EXPECT_DOUBLE_EQ(effective_cutoffs(&m, std::nullopt, std::nullopt).unsure, 0.5);  // no calibration: defaults
  EXPECT_DOUBLE_EQ(effective_cutoffs(&m, std::nullopt, std::nullopt).spam, 0.99);
  EXPECT_DOUBLE_EQ(effective_cutoffs(nullptr, std::nullopt, std::nullopt).spam, 0.99);
  Calibration cal;
  cal.cutoffs = {0.2, 0.93};
  m.set_calibration(cal);
  EXPECT_DOUBLE_EQ(effective_cutoffs(&m, std::nullopt, std::nullopt).unsure, 0.2);
  EXPECT_DOUBLE_EQ(effective_cutoffs(&m, std::nullopt, std::nullopt).spam, 0.93);
  EXPECT_DOUBLE_EQ(effective_cutoffs(&m, 0.4, std::nullopt).unsure, 0.4);
  EXPECT_DOUBLE_EQ(effective_cutoffs(&m, 0.4, std::nullopt).spam, 0.93);
  EXPECT_DOUBLE_EQ(effective_cutoffs(&m, std::nullopt, 0.7).spam, 0.7);
  // An unsure cutoff above the spam one would make "unsure" empty and confusing: clamped.
  auto crossed = effective_cutoffs(&m, 0.95, std::nullopt);
  EXPECT_DOUBLE_EQ(crossed.unsure, 0.93);
  EXPECT_DOUBLE_EQ(crossed.spam, 0.93);
}

TEST(Calibration, HeaderFieldsNameTheVerdictAndCutoffs) {
  Judgement j{0.734, Call::Unsure, {0.412, 0.98137}};
  EXPECT_EQ(header_fields(j, "0123abcd4567ef89"),
            "X-Spam-Status: Unsure, score=0.734 tag=0.412 reject=0.98137\r\nX-Spam-Score: 0.734\r\n"
            "X-Mailkeep-Signature: 0123abcd4567ef89\r\n");
}

TEST(Calibration, TravelsInTheModelFileAndFormatOneLoadsWithout) {
  TokenizerSettings settings;
  settings.hash_bits = 12;
  Model m(settings);
  m.train({1, 2, 3}, true, TrainMode::Everything);
  Calibration cal;
  cal.cutoffs = {0.25, 0.975};
  cal.folds = 5;
  cal.max_fn_rate = 0.05;
  cal.ham = 900;
  cal.spam = 300;
  cal.missed = 42;
  cal.unsure_ham = 7;
  m.set_calibration(cal);
  auto path = ::testing::TempDir() + "/mk_calibration_test.model";
  ASSERT_EQ(m.save(path), "");
  Model back(settings);
  ASSERT_EQ(Model::load(path, back, settings), "");
  ASSERT_TRUE(back.calibration());
  EXPECT_DOUBLE_EQ(back.calibration()->cutoffs.unsure, 0.25);
  EXPECT_DOUBLE_EQ(back.calibration()->cutoffs.spam, 0.975);
  EXPECT_EQ(back.calibration()->folds, 5u);
  EXPECT_EQ(back.calibration()->missed, 42u);
  EXPECT_EQ(back.calibration()->unsure_ham, 7u);
  EXPECT_DOUBLE_EQ(back.score({1, 2, 3}), m.score({1, 2, 3}));

  // A format 1 file (before calibration): the same header with format = 1,
  // then the weights and the CRC over both. Built from the format 2 file.
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  const size_t header = 56, record = 64, weights = (size_t(1) << 12) * sizeof(float);
  ASSERT_EQ(bytes.size(), header + record + weights + 4);
  std::string v1 = bytes.substr(0, header) + bytes.substr(header + record, weights);
  uint32_t one = 1;
  std::memcpy(v1.data() + 8, &one, 4);
  uint32_t crc = uint32_t(crc32(0, reinterpret_cast<const Bytef*>(v1.data()), uInt(v1.size())));
  v1.append(reinterpret_cast<const char*>(&crc), 4);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << v1;
  Model old(settings);
  ASSERT_EQ(Model::load(path, old, settings), "");
  EXPECT_FALSE(old.calibration());
  EXPECT_DOUBLE_EQ(old.score({1, 2, 3}), m.score({1, 2, 3}));
}

TEST(CrossValidation, ScoresEachExampleOnceWithAModelThatDidNotLearnIt) {
  // Each example has a feature of its own and a shared one; labels are random.
  // A model that learned an example recognises it by its own feature; one
  // that did not can only guess. So in-sample scores are right and
  // out-of-fold scores are no better than chance.
  TokenizerSettings settings;
  settings.hash_bits = 14;
  const size_t n = 400;
  std::mt19937 rng(11);
  std::vector<std::vector<uint32_t>> features(n);
  TrainingSet set;
  for (size_t i = 0; i < n; ++i) {
    features[i] = {0, uint32_t(1 + i)};
    set.spam.push_back(rng() % 2 == 0);
  }
  set.features = [&](size_t i, std::vector<uint32_t>&) { return &features[i]; };
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  BatchOptions options;
  options.mode = TrainMode::Everything;
  options.passes = 10;
  options.rate = 0.5;

  Model whole(settings);
  train_batch(whole, set, order, options, {});
  size_t right_in_sample = 0;
  for (size_t i = 0; i < n; ++i) right_in_sample += (whole.score(features[i]) >= 0.5) == set.spam[i];
  EXPECT_GT(right_in_sample, n * 95 / 100);

  std::vector<size_t> which;
  auto scored = cross_validate(Model(settings), set, order, 5, options, &which);
  ASSERT_EQ(scored.size(), n);
  std::vector<size_t> sorted = which;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, order) << "every example scored exactly once";
  size_t right_out_of_fold = 0;
  for (size_t j = 0; j < n; ++j) {
    EXPECT_EQ(scored[j].spam, bool(set.spam[which[j]]));
    right_out_of_fold += (scored[j].score >= 0.5) == scored[j].spam;
  }
  EXPECT_LT(right_out_of_fold, n * 65 / 100);
  // And a start model's weights carry into every fold (training on top of an existing model).
  Model start(settings);
  for (int k = 0; k < 20; ++k) start.train({0}, true, TrainMode::Everything);
  auto from_start = cross_validate(start, set, order, 5, BatchOptions{TrainMode::OnError, 1, 0.0, 0.35, 2.0}, nullptr);
  for (auto& s : from_start) EXPECT_DOUBLE_EQ(s.score, start.score({0, 1}));  // rate 0: nothing learned on top
}

}  // namespace
}  // namespace mk::spam
