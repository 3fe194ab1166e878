// Statistics for the speculative-decoding tests (single node in tests/runtime, pipeline in
// tests/node): Pearson's chi-square against an exact distribution, and the target model's exact
// distribution of the first two generated tokens, computed without any speculation.
#ifndef EXO_TESTS_RUNTIME_SPECULATIVE_TESTLIB_H_
#define EXO_TESTS_RUNTIME_SPECULATIVE_TESTLIB_H_

#include <cmath>
#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/sampler.h"
#include "runtime/stage.h"

namespace exo::runtime::spectest {

// Upper critical value of chi-square with `df` degrees of freedom at significance 1e-3
// (Wilson-Hilferty approximation, good to a few percent for df >= 3).
inline double ChiSquareCritical(int df) {
  const double z = 3.090;  // standard normal quantile of 1 - 1e-3
  const double a = 2.0 / (9.0 * df);
  return df * std::pow(1.0 - a + z * std::sqrt(a), 3.0);
}

struct ChiSquare {
  double statistic = 0;
  int df = 0;
  bool Rejects() const { return df > 0 && statistic > ChiSquareCritical(df); }
};

// Pearson's test of `counts` against probabilities `expected` (summing to 1). Cells expecting
// fewer than 5 observations are pooled into one.
inline ChiSquare ChiSquareTest(const std::vector<int64_t>& counts,
                               const std::vector<double>& expected) {
  int64_t total = 0;
  for (int64_t c : counts) total += c;
  ChiSquare result;
  double pooled_expected = 0, pooled_observed = 0;
  int cells = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    const double e = expected[i] * total;
    if (e < 5.0) {
      pooled_expected += e;
      pooled_observed += counts[i];
      continue;
    }
    result.statistic += (counts[i] - e) * (counts[i] - e) / e;
    ++cells;
  }
  if (pooled_expected >= 5.0) {
    result.statistic +=
        (pooled_observed - pooled_expected) * (pooled_observed - pooled_expected) / pooled_expected;
    ++cells;
  } else if (pooled_observed > 0 && pooled_expected < 1e-9) {
    result.statistic = 1e30;  // observed something impossible
  }
  result.df = cells - 1;
  return result;
}

// The target's exact distribution of the first two generated tokens: p(t1) from the prompt, and
// p(t2) = sum over t1 of p(t1) p(t2 | t1), through the same sampler chain, on a whole-model stage
// (slot 0 is used and reset).
struct ExactDistribution {
  std::vector<double> first, second;
};

inline ExactDistribution TargetDistribution(Stage& stage, const std::vector<int32_t>& prompt,
                                            const SamplingParams& params) {
  const int32_t n_vocab = stage.config().n_vocab;
  Sampler sampler(params, n_vocab);
  std::vector<float> probabilities(n_vocab);
  auto distribution_after = [&](const std::vector<int32_t>& tokens) {
    stage.ResetSlot(0);
    StageInput input;
    input.tokens = tokens;
    auto logits = stage.Forward(input, LogitsMode::kLast);
    EXPECT_TRUE(logits.ok()) << logits.status();
    std::vector<float> row(logits->begin(), logits->end());
    sampler.Distribution(absl::MakeSpan(row), tokens, absl::MakeSpan(probabilities));
    return std::vector<double>(probabilities.begin(), probabilities.end());
  };
  ExactDistribution exact;
  exact.first = distribution_after(prompt);
  exact.second.assign(n_vocab, 0.0);
  for (int32_t t1 = 0; t1 < n_vocab; ++t1) {
    if (exact.first[t1] == 0.0) continue;
    std::vector<int32_t> tokens = prompt;
    tokens.push_back(t1);
    const std::vector<double> next = distribution_after(tokens);
    for (int32_t t2 = 0; t2 < n_vocab; ++t2) exact.second[t2] += exact.first[t1] * next[t2];
  }
  return exact;
}

}  // namespace exo::runtime::spectest

#endif  // EXO_TESTS_RUNTIME_SPECULATIVE_TESTLIB_H_
