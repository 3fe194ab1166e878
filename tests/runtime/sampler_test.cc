#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace exo::runtime {
namespace {

// Every filter and penalty off, temperature 1: draws follow softmax(logits).
SamplingParams Plain() {
  SamplingParams params;
  params.temperature = 1.0f;
  params.top_k = 0;
  params.top_p = 1.0f;
  params.min_p = 0.0f;
  params.seed = 1234;
  return params;
}

std::vector<double> Softmax(const std::vector<float>& logits) {
  const float max = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p(logits.size());
  double sum = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) sum += p[i] = std::exp(double{logits[i]} - max);
  for (double& x : p) x /= sum;
  return p;
}

// Logits whose softmax is `probabilities`.
std::vector<float> LogitsFor(const std::vector<double>& probabilities) {
  std::vector<float> logits;
  for (double p : probabilities) logits.push_back(static_cast<float>(std::log(p)));
  return logits;
}

// Ids that survived the filters on the last Sample() call.
std::set<int32_t> Survivors(const Sampler& sampler, int32_t vocab_size) {
  std::vector<Sampler::TokenLogprob> out(vocab_size);
  const int32_t n = sampler.TopLogprobs(absl::MakeSpan(out));
  std::set<int32_t> ids;
  for (int32_t i = 0; i < n; ++i) ids.insert(out[i].id);
  return ids;
}

int32_t SampleOnce(Sampler& sampler, std::vector<float> logits,
                   const std::vector<int32_t>& history = {}) {
  return sampler.Sample(absl::MakeSpan(logits), history);
}

TEST(Sampler, GreedyTakesArgmax) {
  SamplingParams params = Plain();
  params.temperature = 0.0f;
  Sampler sampler(params, 5);
  EXPECT_EQ(SampleOnce(sampler, {0.1f, 2.0f, -1.0f, 1.9f, 0.0f}), 1);
  EXPECT_EQ(SampleOnce(sampler, {-5.0f, -4.0f, -3.0f, -2.0f, -1.0f}), 4);
}

TEST(Sampler, GreedyTieGoesToLowestId) {
  SamplingParams params = Plain();
  params.temperature = 0.0f;
  Sampler sampler(params, 5);
  EXPECT_EQ(SampleOnce(sampler, {1.0f, 3.0f, 2.0f, 3.0f, 3.0f}), 1);
  EXPECT_EQ(SampleOnce(sampler, {7.0f, 7.0f, 7.0f, 7.0f, 7.0f}), 0);
}

TEST(Sampler, GreedyIgnoresNaN) {
  SamplingParams params = Plain();
  params.temperature = 0.0f;
  Sampler sampler(params, 3);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(SampleOnce(sampler, {nan, 1.0f, nan}), 1);
}

TEST(Sampler, GreedyLogprobIsLogSoftmaxOfPenalisedLogits) {
  SamplingParams params = Plain();
  params.temperature = 0.0f;
  Sampler sampler(params, 3);
  const std::vector<float> logits = {1.0f, 2.0f, 0.5f};
  EXPECT_EQ(SampleOnce(sampler, logits), 1);
  const std::vector<double> p = Softmax(logits);
  EXPECT_NEAR(sampler.SampledLogprob(), std::log(p[1]), 1e-5);
  Sampler::TokenLogprob top[2];
  ASSERT_EQ(sampler.TopLogprobs(absl::MakeSpan(top)), 2);
  EXPECT_EQ(top[0].id, 1);
  EXPECT_EQ(top[1].id, 0);
  EXPECT_NEAR(top[1].logprob, std::log(p[0]), 1e-5);
}

TEST(Sampler, GreedyUsesPenalisedLogits) {
  SamplingParams params = Plain();
  params.temperature = 0.0f;
  params.repetition_penalty = 4.0f;
  Sampler sampler(params, 3);
  // Token 0 (logit 4) was just generated: 4 / 4 = 1 < 2, so token 1 wins.
  EXPECT_EQ(SampleOnce(sampler, {4.0f, 2.0f, 0.0f}, {0}), 1);
}

TEST(Sampler, TopKKeepsTheKMostLikely) {
  SamplingParams params = Plain();
  params.top_k = 3;
  Sampler sampler(params, 6);
  const int32_t token = SampleOnce(sampler, {0.0f, 5.0f, 1.0f, 4.0f, 3.0f, 2.0f});
  EXPECT_EQ(Survivors(sampler, 6), (std::set<int32_t>{1, 3, 4}));
  EXPECT_TRUE(token == 1 || token == 3 || token == 4) << token;
}

TEST(Sampler, TopKBreaksTiesAtTheBoundaryByLowestId) {
  SamplingParams params = Plain();
  params.top_k = 2;
  Sampler sampler(params, 5);
  SampleOnce(sampler, {1.0f, 2.0f, 1.0f, 3.0f, 2.0f});
  EXPECT_EQ(Survivors(sampler, 5), (std::set<int32_t>{1, 3}));
}

TEST(Sampler, TopKLargerThanVocabularyKeepsEverything) {
  SamplingParams params = Plain();
  params.top_k = 100;
  Sampler sampler(params, 4);
  SampleOnce(sampler, {1.0f, 2.0f, 3.0f, 4.0f});
  EXPECT_EQ(Survivors(sampler, 4).size(), 4u);
}

TEST(Sampler, TopPKeepsSmallestSetReachingTheMass) {
  const std::vector<float> logits = LogitsFor({0.05, 0.5, 0.15, 0.3});
  struct Case {
    float top_p;
    std::set<int32_t> survivors;
  };
  for (const Case& c :
       {Case{0.4f, {1}}, Case{0.75f, {1, 3}}, Case{0.9f, {1, 3, 2}}, Case{0.99f, {0, 1, 2, 3}}}) {
    SamplingParams params = Plain();
    params.top_p = c.top_p;
    Sampler sampler(params, 4);
    SampleOnce(sampler, logits);
    EXPECT_EQ(Survivors(sampler, 4), c.survivors) << "top_p " << c.top_p;
  }
}

TEST(Sampler, TopPOnLargeVocabularyMatchesReference) {
  // No top-k, so top-p must sort a long unsorted list in growing chunks.
  constexpr int32_t kVocab = 5000;
  std::vector<float> logits(kVocab);
  for (int32_t i = 0; i < kVocab; ++i) {
    logits[i] = static_cast<float>((i * 7919) % kVocab) * 0.002f;  // a permutation of a ramp
  }
  const std::vector<double> p = Softmax(logits);
  std::vector<int32_t> order(kVocab);
  for (int32_t i = 0; i < kVocab; ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return p[a] > p[b]; });
  SamplingParams params = Plain();
  params.top_p = 0.9f;
  std::set<int32_t> expected;
  double cumulative = 0.0;
  for (int32_t id : order) {
    expected.insert(id);
    cumulative += p[id];
    if (cumulative >= 0.9) break;
  }
  ASSERT_GT(expected.size(), 256u);  // more than the first chunks
  Sampler sampler(params, kVocab);
  const int32_t token = SampleOnce(sampler, logits);
  EXPECT_EQ(Survivors(sampler, kVocab), expected);
  EXPECT_TRUE(expected.count(token));
}

TEST(Sampler, MinPDropsTokensBelowFractionOfTheBest) {
  const std::vector<float> logits = LogitsFor({0.05, 0.5, 0.15, 0.3});
  struct Case {
    float min_p;
    std::set<int32_t> survivors;
  };
  for (const Case& c :
       {Case{0.05f, {0, 1, 2, 3}}, Case{0.2f, {1, 2, 3}}, Case{0.5f, {1, 3}}, Case{0.9f, {1}}}) {
    SamplingParams params = Plain();
    params.min_p = c.min_p;
    Sampler sampler(params, 4);
    SampleOnce(sampler, logits);
    EXPECT_EQ(Survivors(sampler, 4), c.survivors) << "min_p " << c.min_p;
  }
}

TEST(Sampler, FiltersApplyInOrderTopKThenTopPThenMinP) {
  // Probabilities 0.4, 0.3, 0.2, 0.1. top_k 3 renormalises to 4/9, 3/9, 2/9; top_p 0.7 then
  // keeps {0, 1} (7/9 >= 0.7); min_p 0.8 of 4/9 drops token 1 (3/9 < 0.8 * 4/9).
  const std::vector<float> logits = LogitsFor({0.4, 0.3, 0.2, 0.1});
  SamplingParams params = Plain();
  params.top_k = 3;
  params.top_p = 0.7f;
  Sampler sampler(params, 4);
  SampleOnce(sampler, logits);
  EXPECT_EQ(Survivors(sampler, 4), (std::set<int32_t>{0, 1}));
  params.min_p = 0.8f;
  Sampler strict(params, 4);
  EXPECT_EQ(SampleOnce(strict, logits), 0);
  EXPECT_EQ(Survivors(strict, 4), (std::set<int32_t>{0}));
  EXPECT_NEAR(strict.SampledLogprob(), 0.0f, 1e-6);
}

TEST(Sampler, LogprobsComeFromTheTemperedFilteredDistribution) {
  const std::vector<float> logits = {1.0f, 2.0f, 0.0f, -1.0f};
  SamplingParams params = Plain();
  params.temperature = 0.5f;
  params.top_k = 3;
  Sampler sampler(params, 4);
  const int32_t token = SampleOnce(sampler, logits);
  const std::vector<double> p = Softmax({2.0f, 4.0f, 0.0f});  // top 3, divided by 0.5
  Sampler::TokenLogprob top[4];
  ASSERT_EQ(sampler.TopLogprobs(absl::MakeSpan(top)), 3);
  EXPECT_EQ(top[0].id, 1);
  EXPECT_EQ(top[1].id, 0);
  EXPECT_EQ(top[2].id, 2);
  EXPECT_NEAR(top[0].logprob, std::log(p[1]), 1e-5);
  EXPECT_NEAR(top[1].logprob, std::log(p[0]), 1e-5);
  EXPECT_NEAR(top[2].logprob, std::log(p[2]), 1e-5);
  const int32_t index = token == 1 ? 1 : token == 0 ? 0 : 2;
  EXPECT_NEAR(sampler.SampledLogprob(), std::log(p[index]), 1e-5);
}

TEST(Sampler, TinyTemperatureActsLikeGreedy) {
  SamplingParams params = Plain();
  params.temperature = 1e-30f;
  Sampler sampler(params, 4);
  for (int step = 0; step < 20; ++step) {
    EXPECT_EQ(SampleOnce(sampler, {1e30f, 2e30f, -1e30f, 1.5e30f}), 1);
    EXPECT_NEAR(sampler.SampledLogprob(), 0.0f, 1e-6);
  }
}

TEST(Sampler, AlwaysReturnsAnIdInsideTheVocabulary) {
  // Hostile rows: NaN, infinities, all -inf, huge values; every parameter mix.
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<std::vector<float>> rows = {{nan, nan, nan, nan, nan},
                                                {-inf, -inf, -inf, -inf, -inf},
                                                {inf, 0.0f, inf, -inf, nan},
                                                {3e38f, -3e38f, 3e38f, 0.0f, 1.0f},
                                                {-inf, -inf, 2.0f, -inf, -inf}};
  for (float temperature : {0.0f, 0.01f, 1.0f, 50.0f}) {
    for (int32_t top_k : {0, 1, 3}) {
      for (float top_p : {0.1f, 1.0f}) {
        for (float min_p : {0.0f, 0.9f}) {
          SamplingParams params;
          params.temperature = temperature;
          params.top_k = top_k;
          params.top_p = top_p;
          params.min_p = min_p;
          params.repetition_penalty = 1.5f;
          params.frequency_penalty = 1.0f;
          params.seed = 5;
          Sampler sampler(params, 5);
          for (const std::vector<float>& row : rows) {
            const int32_t token = SampleOnce(sampler, row, {0, 2, 2, 7, -3});
            EXPECT_GE(token, 0);
            EXPECT_LT(token, 5);
            EXPECT_FALSE(std::isnan(sampler.SampledLogprob()));
          }
        }
      }
    }
  }
}

TEST(Sampler, SameSeedSameSequence) {
  SamplingParams params;  // defaults: all filters on
  params.seed = 42;
  std::vector<float> logits(64);
  for (int32_t i = 0; i < 64; ++i) logits[i] = std::sin(i * 0.37f) * 3.0f;
  Sampler a(params, 64);
  Sampler b(params, 64);
  std::vector<int32_t> history_a, history_b;
  for (int step = 0; step < 200; ++step) {
    history_a.push_back(SampleOnce(a, logits, history_a));
    history_b.push_back(SampleOnce(b, logits, history_b));
  }
  EXPECT_EQ(history_a, history_b);
  // Reset rewinds the stream.
  a.Reset(42);
  std::vector<int32_t> again;
  for (int step = 0; step < 200; ++step) again.push_back(SampleOnce(a, logits, again));
  EXPECT_EQ(again, history_a);
}

TEST(Sampler, DifferentSeedsDiffer) {
  SamplingParams params = Plain();
  std::vector<float> logits(32, 0.0f);  // uniform: 32^100 possible sequences
  params.seed = 1;
  Sampler a(params, 32);
  params.seed = 2;
  Sampler b(params, 32);
  std::vector<int32_t> sequence_a, sequence_b;
  for (int step = 0; step < 100; ++step) {
    sequence_a.push_back(SampleOnce(a, logits));
    sequence_b.push_back(SampleOnce(b, logits));
  }
  EXPECT_NE(sequence_a, sequence_b);
  EXPECT_EQ(a.seed(), 1u);
}

TEST(Sampler, SeedZeroPicksARandomSeedOnce) {
  SamplingParams params = Plain();
  params.seed = 0;
  Sampler sampler(params, 4);
  EXPECT_NE(sampler.seed(), 0u);
  const uint64_t chosen = sampler.seed();
  SampleOnce(sampler, {0.0f, 0.0f, 0.0f, 0.0f});
  EXPECT_EQ(sampler.seed(), chosen);
}

TEST(Sampler, FixedSeedGivesFixedTokens) {
  // Golden values: mt19937_64 is fully specified by the standard and the uniform conversion is
  // ours, so this sequence must be the same on every platform. With 8 equal logits the token is
  // floor(8 * u), i.e. the top 3 bits of each 64-bit draw of mt19937_64 seeded with 7.
  SamplingParams params = Plain();
  params.seed = 7;
  Sampler sampler(params, 8);
  std::vector<int32_t> tokens;
  for (int step = 0; step < 12; ++step) {
    tokens.push_back(SampleOnce(sampler, std::vector<float>(8, 0.0f)));
  }
  EXPECT_EQ(tokens, (std::vector<int32_t>{6, 7, 0, 7, 1, 0, 6, 7, 2, 5, 6, 4}));
}

TEST(Sampler, FrequenciesMatchSoftmaxAtTemperatureOne) {
  const std::vector<float> logits = {0.3f, -1.2f, 2.0f, 0.0f, 1.1f, -0.5f, 0.7f, -2.5f};
  const std::vector<double> p = Softmax(logits);
  Sampler sampler(Plain(), 8);
  constexpr int kDraws = 100000;
  std::vector<int> counts(8, 0);
  std::vector<float> scratch(8);
  for (int i = 0; i < kDraws; ++i) {
    scratch = logits;
    ++counts[sampler.Sample(absl::MakeSpan(scratch), {})];
  }
  double chi_square = 0.0;
  for (int i = 0; i < 8; ++i) {
    const double expected = p[i] * kDraws;
    chi_square += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  // 7 degrees of freedom: P(chi2 > 24.32) = 0.001.
  EXPECT_LT(chi_square, 24.32);
}

TEST(Sampler, RepetitionPenaltyDividesPositiveAndMultipliesNegative) {
  SamplingParams params = Plain();
  params.repetition_penalty = 2.0f;
  Sampler sampler(params, 5);
  std::vector<float> logits = {4.0f, -3.0f, 1.0f, 2.0f, -1.0f};
  sampler.Sample(absl::MakeSpan(logits), std::vector<int32_t>{0, 1, 0, 3});
  EXPECT_FLOAT_EQ(logits[0], 2.0f);  // seen twice, penalised once
  EXPECT_FLOAT_EQ(logits[1], -6.0f);
  EXPECT_FLOAT_EQ(logits[2], 1.0f);  // not seen
  EXPECT_FLOAT_EQ(logits[3], 1.0f);
  EXPECT_FLOAT_EQ(logits[4], -1.0f);  // not seen
}

TEST(Sampler, PresenceAndFrequencyPenaltiesFollowOpenAI) {
  SamplingParams params = Plain();
  params.presence_penalty = 1.0f;
  params.frequency_penalty = 0.5f;
  Sampler sampler(params, 6);
  std::vector<float> logits(6, 0.0f);
  sampler.Sample(absl::MakeSpan(logits), std::vector<int32_t>{2, 2, 2, 5});
  EXPECT_FLOAT_EQ(logits[2], -(1.0f + 3 * 0.5f));
  EXPECT_FLOAT_EQ(logits[5], -(1.0f + 1 * 0.5f));
  for (int id : {0, 1, 3, 4}) EXPECT_FLOAT_EQ(logits[id], 0.0f) << id;
}

TEST(Sampler, PenaltiesOnlySeeTheLastNTokens) {
  SamplingParams params = Plain();
  params.frequency_penalty = 1.0f;
  params.penalty_last_n = 3;
  Sampler sampler(params, 4);
  std::vector<float> logits(4, 0.0f);
  sampler.Sample(absl::MakeSpan(logits), std::vector<int32_t>{0, 0, 1, 2, 2});
  EXPECT_FLOAT_EQ(logits[0], 0.0f);  // outside the window
  EXPECT_FLOAT_EQ(logits[1], -1.0f);
  EXPECT_FLOAT_EQ(logits[2], -2.0f);
  // Counts do not leak into the next call.
  std::vector<float> again(4, 0.0f);
  sampler.Sample(absl::MakeSpan(again), std::vector<int32_t>{1});
  EXPECT_FLOAT_EQ(again[1], -1.0f);
  EXPECT_FLOAT_EQ(again[2], 0.0f);
}

TEST(Sampler, PenaltyWindowZeroIsOffAndMinusOneIsWholeHistory) {
  SamplingParams params = Plain();
  params.frequency_penalty = 1.0f;
  params.penalty_last_n = 0;
  Sampler off(params, 3);
  std::vector<float> logits(3, 0.0f);
  off.Sample(absl::MakeSpan(logits), std::vector<int32_t>{0, 1});
  EXPECT_EQ(logits, std::vector<float>(3, 0.0f));
  params.penalty_last_n = -1;
  Sampler all(params, 3);
  std::vector<int32_t> history(500, 2);
  history.front() = 0;
  all.Sample(absl::MakeSpan(logits), history);
  EXPECT_FLOAT_EQ(logits[0], -1.0f);
  EXPECT_FLOAT_EQ(logits[2], -499.0f);
}

TEST(Sampler, HistoryIdsOutsideVocabularyAreIgnored) {
  SamplingParams params = Plain();
  params.presence_penalty = 1.0f;
  Sampler sampler(params, 3);
  std::vector<float> logits(3, 0.0f);
  sampler.Sample(absl::MakeSpan(logits), std::vector<int32_t>{-1, 3, 1000, 1});
  EXPECT_EQ(logits, (std::vector<float>{0.0f, -1.0f, 0.0f}));
}

TEST(Sampler, ShortLogitRowOnlySamplesAndPenalisesItsOwnEntries) {
  SamplingParams params = Plain();
  params.presence_penalty = 1.0f;
  Sampler sampler(params, 100);
  std::vector<float> logits = {0.0f, 0.0f, 0.0f};
  for (int step = 0; step < 50; ++step) {
    logits.assign(3, 0.0f);
    const int32_t token = sampler.Sample(absl::MakeSpan(logits), std::vector<int32_t>{1, 50, 99});
    EXPECT_GE(token, 0);
    EXPECT_LT(token, 3);
  }
  EXPECT_EQ(logits, (std::vector<float>{0.0f, -1.0f, 0.0f}));
}

TEST(ValidateSamplingParams, AcceptsDefaultsAndGreedy) {
  EXPECT_TRUE(ValidateSamplingParams(SamplingParams()).ok());
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  EXPECT_TRUE(ValidateSamplingParams(greedy).ok());
}

TEST(ValidateSamplingParams, NamesTheBadField) {
  struct Case {
    std::string field;
    void (*mutate)(SamplingParams&);
  };
  const Case cases[] = {
      {"temperature", [](SamplingParams& p) { p.temperature = -0.1f; }},
      {"temperature",
       [](SamplingParams& p) { p.temperature = std::numeric_limits<float>::quiet_NaN(); }},
      {"top_k", [](SamplingParams& p) { p.top_k = -1; }},
      {"top_p", [](SamplingParams& p) { p.top_p = 0.0f; }},
      {"top_p", [](SamplingParams& p) { p.top_p = 1.01f; }},
      {"min_p", [](SamplingParams& p) { p.min_p = -0.01f; }},
      {"min_p", [](SamplingParams& p) { p.min_p = 1.5f; }},
      {"repetition_penalty", [](SamplingParams& p) { p.repetition_penalty = 0.0f; }},
      {"repetition_penalty", [](SamplingParams& p) { p.repetition_penalty = 11.0f; }},
      {"presence_penalty", [](SamplingParams& p) { p.presence_penalty = 2.5f; }},
      {"frequency_penalty", [](SamplingParams& p) { p.frequency_penalty = -2.5f; }},
      {"penalty_last_n", [](SamplingParams& p) { p.penalty_last_n = -2; }},
  };
  for (const Case& c : cases) {
    SamplingParams params;
    c.mutate(params);
    const absl::Status status = ValidateSamplingParams(params);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_NE(std::string(status.message()).find(c.field), std::string::npos) << status;
  }
}

}  // namespace
}  // namespace exo::runtime
