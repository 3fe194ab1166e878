#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace exo::runtime {
namespace {

constexpr float kNegativeInfinity = -std::numeric_limits<float>::infinity();

// Strict total order: higher logit first, lower id first among equal logits.
struct MoreLikely {
  template <typename C>
  bool operator()(const C& a, const C& b) const {
    if (a.logit != b.logit) return a.logit > b.logit;
    return a.id < b.id;
  }
};

uint64_t RandomSeed() {
  std::random_device device;
  uint64_t seed = 0;
  while (seed == 0) seed = (uint64_t{device()} << 32) ^ device();
  return seed;
}

}  // namespace

absl::Status ValidateSamplingParams(const SamplingParams& params) {
  // Written as !(in range) so that NaN fails too.
  if (!(params.temperature >= 0.0f && params.temperature <= 100.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature must be in [0, 100] (0 = greedy), got ", params.temperature));
  }
  if (params.top_k < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k must be >= 0 (0 = off), got ", params.top_k));
  }
  if (!(params.top_p > 0.0f && params.top_p <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_p must be in (0, 1] (1 = off), got ", params.top_p));
  }
  if (!(params.min_p >= 0.0f && params.min_p <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_p must be in [0, 1] (0 = off), got ", params.min_p));
  }
  if (!(params.repetition_penalty > 0.0f && params.repetition_penalty <= 10.0f)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "repetition_penalty must be in (0, 10] (1 = off), got ", params.repetition_penalty));
  }
  if (!(params.presence_penalty >= -2.0f && params.presence_penalty <= 2.0f)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "presence_penalty must be in [-2, 2] (0 = off), got ", params.presence_penalty));
  }
  if (!(params.frequency_penalty >= -2.0f && params.frequency_penalty <= 2.0f)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "frequency_penalty must be in [-2, 2] (0 = off), got ", params.frequency_penalty));
  }
  if (params.penalty_last_n < -1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "penalty_last_n must be >= -1 (0 = off, -1 = whole history), got ", params.penalty_last_n));
  }
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingParams& params, int32_t vocab_size)
    : params_(params), vocab_size_(std::max<int32_t>(vocab_size, 1)) {
  candidates_.resize(vocab_size_);
  counts_.assign(vocab_size_, 0);
  Reset(params.seed);
}

void Sampler::Reset(uint64_t seed) {
  seed_ = seed != 0 ? seed : RandomSeed();
  rng_.seed(seed_);
}

double Sampler::NextUniform() {
  // The top 53 bits fill a double's mantissa exactly: k / 2^53 for k in [0, 2^53).
  return static_cast<double>(rng_() >> 11) * 0x1.0p-53;
}

void Sampler::ApplyPenalties(absl::Span<float> logits, absl::Span<const int32_t> history) {
  const bool any_penalty = params_.repetition_penalty != 1.0f || params_.presence_penalty != 0.0f ||
                           params_.frequency_penalty != 0.0f;
  if (!any_penalty || params_.penalty_last_n == 0 || history.empty()) return;
  size_t window = history.size();
  if (params_.penalty_last_n > 0) {
    window = std::min(window, static_cast<size_t>(params_.penalty_last_n));
  }
  const absl::Span<const int32_t> recent = history.subspan(history.size() - window);
  // `logits` may be shorter than the vocabulary; ids past its end are ignored.
  const int32_t limit = static_cast<int32_t>(logits.size());
  for (int32_t id : recent) {
    if (id >= 0 && id < limit) ++counts_[id];
  }
  // Second pass: penalise each distinct token once, and zero its count for the next call.
  for (int32_t id : recent) {
    if (id < 0 || id >= limit || counts_[id] == 0) continue;
    float& logit = logits[id];
    if (params_.repetition_penalty > 0.0f) {
      if (logit > 0.0f) {
        logit /= params_.repetition_penalty;
      } else {
        logit *= params_.repetition_penalty;
      }
    }
    logit -= static_cast<float>(counts_[id]) * params_.frequency_penalty + params_.presence_penalty;
    counts_[id] = 0;
  }
}

void Sampler::ApplyTopK() {
  const int32_t k = params_.top_k;
  if (k <= 0 || k >= live_) return;
  auto begin = candidates_.begin();
  // The top-k set under a strict total order is unique, and so is its sorted order.
  std::nth_element(begin, begin + (k - 1), begin + live_, MoreLikely());
  std::sort(begin, begin + k, MoreLikely());
  live_ = k;
  sorted_ = true;
}

void Sampler::ApplyTopP() {
  if (!(params_.top_p < 1.0f) || live_ <= 1) return;
  ComputeNormalizer();
  const double target = static_cast<double>(params_.top_p) * std::exp(log_normalizer_);
  auto begin = candidates_.begin();
  // Sort only as much of the head as needed, in growing chunks: candidates [0, sorted_count) are
  // the most likely ones in order; each round selects the next chunk from the rest (linear) and
  // sorts just that chunk. Under a strict total order every chunk is uniquely defined.
  int32_t sorted_count = sorted_ ? live_ : 0;
  int32_t chunk = 64;
  double cumulative = 0.0;
  int32_t i = 0;
  while (true) {
    if (sorted_count < live_) {
      const int32_t next = std::min<int32_t>(live_, sorted_count + chunk);
      if (next < live_) {
        std::nth_element(begin + sorted_count, begin + (next - 1), begin + live_, MoreLikely());
      }
      std::sort(begin + sorted_count, begin + next, MoreLikely());
      sorted_count = next;
      chunk *= 4;
    }
    for (; i < sorted_count; ++i) {
      cumulative += std::exp(static_cast<double>(candidates_[i].logit) - max_logit_);
      if (cumulative >= target) {
        live_ = i + 1;
        sorted_ = true;
        return;
      }
    }
    if (sorted_count == live_) {
      sorted_ = true;  // everything sorted; rounding kept the whole set
      return;
    }
  }
}

void Sampler::ApplyMinP() {
  if (!(params_.min_p > 0.0f) || live_ <= 1) return;
  float max_logit = kNegativeInfinity;
  for (int32_t i = 0; i < live_; ++i) max_logit = std::max(max_logit, candidates_[i].logit);
  // p_i / p_max = exp(logit_i - max_logit) >= min_p; order-preserving compaction.
  const float threshold = max_logit + std::log(params_.min_p);
  int32_t kept = 0;
  for (int32_t i = 0; i < live_; ++i) {
    if (candidates_[i].logit >= threshold) candidates_[kept++] = candidates_[i];
  }
  live_ = std::max<int32_t>(kept, 1);
}

void Sampler::ComputeNormalizer() {
  max_logit_ = kNegativeInfinity;
  for (int32_t i = 0; i < live_; ++i) max_logit_ = std::max(max_logit_, candidates_[i].logit);
  if (max_logit_ == kNegativeInfinity) {
    // Every logit is -inf: treat the live set as uniform.
    for (int32_t i = 0; i < live_; ++i) candidates_[i].logit = 0.0f;
    max_logit_ = 0.0f;
  }
  double sum = 0.0;
  for (int32_t i = 0; i < live_; ++i) {
    sum += std::exp(static_cast<double>(candidates_[i].logit) - max_logit_);
  }
  log_normalizer_ = std::log(sum);
}

void Sampler::LoadCandidates(absl::Span<float> logits, absl::Span<const int32_t> history) {
  // NaN means "impossible"; +inf becomes the largest finite value so that differences stay
  // defined (inf - inf would be NaN).
  for (float& logit : logits) {
    if (std::isnan(logit)) logit = kNegativeInfinity;
    if (logit == std::numeric_limits<float>::infinity()) {
      logit = std::numeric_limits<float>::max();
    }
  }
  ApplyPenalties(logits, history);
  const int32_t n = static_cast<int32_t>(logits.size());
  for (int32_t i = 0; i < n; ++i) candidates_[i] = {i, logits[i]};
  live_ = n;
  sorted_ = false;
}

int32_t Sampler::GreedyIndex() {
  // Argmax, lowest id first among equals (the scan keeps the first maximum).
  ComputeNormalizer();
  int32_t best = 0;
  for (int32_t i = 1; i < live_; ++i) {
    if (candidates_[i].logit > candidates_[best].logit) best = i;
  }
  return best;
}

void Sampler::FilterAndScale() {
  ApplyTopK();
  ApplyTopP();
  ApplyMinP();
  // Temperature, after shifting the best logit to 0 so that a tiny temperature cannot push a
  // logit to +infinity (the shift does not change the distribution).
  float max_logit = kNegativeInfinity;
  for (int32_t i = 0; i < live_; ++i) max_logit = std::max(max_logit, candidates_[i].logit);
  if (max_logit == kNegativeInfinity) max_logit = 0.0f;
  const float inverse_temperature = 1.0f / params_.temperature;
  for (int32_t i = 0; i < live_; ++i) {
    candidates_[i].logit = (candidates_[i].logit - max_logit) * inverse_temperature;
  }
  ComputeNormalizer();
}

int32_t Sampler::Sample(absl::Span<float> logits, absl::Span<const int32_t> history) {
  const int32_t n = static_cast<int32_t>(std::min<size_t>(logits.size(), vocab_size_));
  if (n == 0) {
    sampled_logprob_ = 0.0f;
    live_ = 0;
    return 0;
  }
  LoadCandidates(logits.subspan(0, n), history);

  if (!(params_.temperature > 0.0f)) {
    const int32_t best = GreedyIndex();
    sampled_logprob_ = static_cast<float>(candidates_[best].logit - max_logit_ - log_normalizer_);
    return candidates_[best].id;
  }

  FilterAndScale();
  // Inverse-CDF draw over the live candidates in their (uniquely defined) order.
  const double target = NextUniform() * std::exp(log_normalizer_);
  int32_t chosen = live_ - 1;
  double cumulative = 0.0;
  for (int32_t i = 0; i < live_; ++i) {
    cumulative += std::exp(static_cast<double>(candidates_[i].logit) - max_logit_);
    if (target < cumulative) {
      chosen = i;
      break;
    }
  }
  // Rounding can leave `target` past the last sum; the fallback must be a token with mass.
  while (chosen > 0 && candidates_[chosen].logit == kNegativeInfinity) --chosen;
  sampled_logprob_ = static_cast<float>(candidates_[chosen].logit - max_logit_ - log_normalizer_);
  return candidates_[chosen].id;
}

void Sampler::Distribution(absl::Span<float> logits, absl::Span<const int32_t> history,
                           absl::Span<float> probabilities) {
  std::fill(probabilities.begin(), probabilities.end(), 0.0f);
  const int32_t n = static_cast<int32_t>(
      std::min({logits.size(), static_cast<size_t>(vocab_size_), probabilities.size()}));
  if (n == 0) {
    live_ = 0;
    return;
  }
  LoadCandidates(logits.subspan(0, n), history);
  if (!(params_.temperature > 0.0f)) {
    probabilities[candidates_[GreedyIndex()].id] = 1.0f;
    return;
  }
  FilterAndScale();
  for (int32_t i = 0; i < live_; ++i) {
    probabilities[candidates_[i].id] = static_cast<float>(
        std::exp(static_cast<double>(candidates_[i].logit) - max_logit_ - log_normalizer_));
  }
}

int32_t Sampler::SampleFromWeights(absl::Span<const float> weights) {
  double total = 0.0;
  int32_t last_positive = -1;
  for (size_t i = 0; i < weights.size(); ++i) {
    if (weights[i] > 0.0f) {
      total += weights[i];
      last_positive = static_cast<int32_t>(i);
    }
  }
  if (last_positive < 0) return -1;
  const double target = NextUniform() * total;
  double cumulative = 0.0;
  for (int32_t i = 0; i < last_positive; ++i) {
    if (weights[i] > 0.0f) {
      cumulative += weights[i];
      if (target < cumulative) return i;
    }
  }
  // Rounding can leave `target` past the last partial sum: the last token with mass.
  return last_positive;
}

int32_t Sampler::TopLogprobs(absl::Span<TokenLogprob> out) const {
  const int32_t want = static_cast<int32_t>(std::min<size_t>(out.size(), live_));
  if (want == 0) return 0;
  // Insertion into a small sorted buffer: O(live * want), no allocation, no reordering.
  int32_t filled = 0;
  for (int32_t i = 0; i < live_; ++i) {
    const Candidate& c = candidates_[i];
    int32_t pos = filled;
    while (pos > 0) {
      const TokenLogprob& prev = out[pos - 1];
      const bool before = c.logit > prev.logprob || (c.logit == prev.logprob && c.id < prev.id);
      if (!before) break;
      --pos;
    }
    if (pos >= want) continue;
    const int32_t last = std::min(filled, want - 1);
    for (int32_t j = last; j > pos; --j) out[j] = out[j - 1];
    out[pos] = {c.id, c.logit};  // raw logit for now; converted below
    if (filled < want) ++filled;
  }
  for (int32_t i = 0; i < filled; ++i) {
    out[i].logprob = static_cast<float>(out[i].logprob - max_logit_ - log_normalizer_);
  }
  return filled;
}

}  // namespace exo::runtime
