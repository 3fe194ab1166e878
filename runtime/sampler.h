// Token sampler: turns one row of logits into a token id.
//
// The chain follows llama.cpp's common sampler:
//   penalties (repetition, presence, frequency over the last `penalty_last_n` tokens)
//   -> top-k -> top-p -> min-p -> temperature -> draw.
// With temperature 0 the draw is replaced by argmax over the penalised logits (lowest id wins a
// tie) and the filters are skipped, since they cannot change the argmax.
//
// Determinism: draws come from a std::mt19937_64 seeded with `seed`, turned into a uniform number
// by our own arithmetic (no std::*_distribution, whose output differs between standard
// libraries), and candidates are kept either in id order or sorted by (logit desc, id asc), both
// uniquely defined. The same seed and inputs give the same tokens on every platform.
//
// All buffers are allocated in the constructor; Sample() never allocates.
#ifndef EXO_RUNTIME_SAMPLER_H_
#define EXO_RUNTIME_SAMPLER_H_

#include <cstdint>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace exo::runtime {

struct SamplingParams {
  float temperature = 0.8f;         // 0 = greedy; otherwise in (0, 100]
  int32_t top_k = 40;               // keep the k most likely tokens; 0 = off
  float top_p = 0.95f;              // keep the smallest set with this much mass; 1 = off
  float min_p = 0.05f;              // drop tokens with p < min_p * p_max; 0 = off
  float repetition_penalty = 1.0f;  // divides positive / multiplies negative logits; 1 = off
  float presence_penalty = 0.0f;    // OpenAI: subtracted once from every seen token, [-2, 2]
  float frequency_penalty = 0.0f;   // OpenAI: subtracted per occurrence, [-2, 2]
  int32_t penalty_last_n = 64;      // window for the penalties; 0 = off, -1 = whole history
  uint64_t seed = 0;                // 0 = a random seed, chosen once
};

// InvalidArgument naming the offending field when a parameter is out of range (NaN included).
absl::Status ValidateSamplingParams(const SamplingParams& params);

class Sampler {
 public:
  struct TokenLogprob {
    int32_t id;
    float logprob;
  };

  // `params` should have passed ValidateSamplingParams; out-of-range values are clamped to the
  // nearest sensible behaviour rather than trusted. `vocab_size` must be positive.
  Sampler(const SamplingParams& params, int32_t vocab_size);

  // Samples one token. `logits` holds one value per vocabulary entry (entries past vocab_size
  // are ignored) and receives the penalised logits; NaN logits are treated as -infinity and
  // +infinity as the largest finite float.
  // `history` is every previous token of the sequence (prompt and generated); ids outside the
  // vocabulary are ignored. Returns a token id in [0, vocab_size).
  int32_t Sample(absl::Span<float> logits, absl::Span<const int32_t> history);

  // The final distribution Sample() would draw from, written densely: probabilities[id] for every
  // id below min(logits.size(), vocab_size, probabilities.size()), zero for filtered tokens, and
  // zero past that. With temperature 0 it is one-hot at the token Sample() would return. Same
  // treatment of `logits` and `history` as Sample(); draws no random number. Used by speculative
  // decoding, whose acceptance test needs p(x) of the target and q(x) of the draft.
  void Distribution(absl::Span<float> logits, absl::Span<const int32_t> history,
                    absl::Span<float> probabilities);

  // Draws an id with probability weights[id] / sum(weights) by inverse CDF in id order (weights
  // must be >= 0). Returns -1 when every weight is zero. Uses the same generator as Sample().
  int32_t SampleFromWeights(absl::Span<const float> weights);

  // A uniform number in [0, 1) from the same generator as Sample().
  double Uniform() { return NextUniform(); }

  // Reseeds the generator; 0 picks a fresh random seed.
  void Reset(uint64_t seed);

  // The seed in use (the chosen one when 0 was asked for), so a sequence can be replayed.
  uint64_t seed() const { return seed_; }

  // Log-probability of the last sampled token in the final distribution: the one drawn from
  // (after filters and temperature), or, for greedy sampling, the softmax of the penalised
  // logits over the whole vocabulary.
  float SampledLogprob() const { return sampled_logprob_; }

  // Fills `out` with the most likely tokens of the same final distribution, most likely first
  // (lowest id first among equals). Returns how many were written: at most out.size() and at
  // most the number of tokens that survived the filters. Allocation-free.
  int32_t TopLogprobs(absl::Span<TokenLogprob> out) const;

 private:
  struct Candidate {
    int32_t id;
    float logit;
  };

  // Sanitises and penalises `logits` (the first `n` entries) and loads them as candidates.
  void LoadCandidates(absl::Span<float> logits, absl::Span<const int32_t> history);
  // Greedy: index of the best candidate (lowest id among equals), after ComputeNormalizer().
  int32_t GreedyIndex();
  // Sampling: top-k, top-p, min-p and temperature over the candidates, then ComputeNormalizer().
  void FilterAndScale();
  void ApplyPenalties(absl::Span<float> logits, absl::Span<const int32_t> history);
  void ApplyTopK();
  void ApplyTopP();
  void ApplyMinP();
  // Computes max_logit_ and log_normalizer_ over the live candidates.
  void ComputeNormalizer();
  // A uniform double in [0, 1) from one 64-bit draw.
  double NextUniform();

  SamplingParams params_;
  int32_t vocab_size_;
  uint64_t seed_ = 0;
  std::mt19937_64 rng_;

  std::vector<Candidate> candidates_;  // capacity vocab_size_
  int32_t live_ = 0;                   // candidates_[0, live_) survive the filters
  bool sorted_ = false;                // live candidates sorted by (logit desc, id asc)
  std::vector<int32_t> counts_;        // per-token occurrences in the window; zero between calls
  float max_logit_ = 0.0f;
  double log_normalizer_ = 0.0;  // log sum exp(logit - max_logit_) over live candidates
  float sampled_logprob_ = 0.0f;
};

}  // namespace exo::runtime

#endif  // EXO_RUNTIME_SAMPLER_H_
