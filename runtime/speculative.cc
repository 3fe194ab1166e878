#include "runtime/speculative.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace exo::runtime {

// ---- Draft length ----------------------------------------------------------------------------

namespace {
// Weight of one observed token in the acceptance average: about the last ten drafted tokens count.
constexpr double kAcceptanceSmoothing = 0.1;
// Weight of one pass in the cost averages.
constexpr double kCostSmoothing = 0.2;
// While not drafting, the acceptance estimate moves this much of the way back to 1 per pass. A
// failed retry costs about 0.1 * a, so retries come every ~10 a / (1 - a) passes: often where
// rows are cheap (a low a already pays), rarely where they are dear.
constexpr double kAcceptanceRecovery = 0.01;
// An empty proposal that took more than this share of a pass counts as a rejected token.
constexpr double kDryAttemptShare = 0.05;
// A pass without drafts at least this often keeps the base cost current.
constexpr int32_t kBaseRefreshPasses = 32;
// The fallback rule before costs are known: draft while a^k stays at or above this.
constexpr double kFallbackRunProbability = 0.15;

double Smooth(double average, double sample, double weight) {
  return average < 0 ? sample : average + weight * (sample - average);
}
}  // namespace

DraftLengthController::DraftLengthController(const SpeculativeOptions& options)
    : options_(options) {
  options_.draft_max = std::max(options_.draft_max, 0);
  options_.draft_min = std::clamp(options_.draft_min, 0, options_.draft_max);
}

int32_t DraftLengthController::Next() const {
  if (!options_.adaptive) return options_.draft_max;
  const int32_t lo = options_.draft_min, hi = options_.draft_max;
  if (lo == 0 && passes_since_base_ >= kBaseRefreshPasses) return 0;
  if (base_seconds_ <= 0 || row_seconds_ < 0) {
    if (acceptance_ >= 1.0 - 1e-9) return hi;
    if (acceptance_ <= 1e-9) return lo;
    const double k = std::floor(std::log(kFallbackRunProbability) / std::log(acceptance_));
    return static_cast<int32_t>(std::clamp<double>(k, lo, hi));
  }
  // argmax_k E[tokens | k] / cost(k); ties keep the shorter draft.
  const double per_token = row_seconds_ + draft_token_seconds_;
  int32_t best = lo;
  double best_rate = -1;
  double expected = 0, run = 1;  // sum of a^i for i <= k, and a^k
  for (int32_t k = 0; k <= hi; ++k) {
    expected += run;
    run *= acceptance_;
    if (k < lo) continue;
    const double rate = expected / (base_seconds_ + k * per_token);
    if (rate > best_rate * (1.0 + 1e-9)) {
      best_rate = rate;
      best = k;
    }
  }
  return best;
}

void DraftLengthController::Update(int32_t requested, int32_t drafted, int32_t accepted,
                                   double pass_seconds, double draft_seconds) {
  drafted = std::max(drafted, 0);
  if (drafted == 0) {
    if (pass_seconds > 0) {
      base_seconds_ = Smooth(base_seconds_, pass_seconds, kCostSmoothing);
      passes_since_base_ = 0;
    }
    const bool dry_attempt =
        requested > 0 && base_seconds_ > 0 && draft_seconds > kDryAttemptShare * base_seconds_;
    if (dry_attempt) {
      // As if one token had been drafted, at this cost, and rejected.
      acceptance_ *= 1.0 - kAcceptanceSmoothing;
      draft_token_seconds_ = Smooth(draft_token_seconds_ > 0 ? draft_token_seconds_ : -1,
                                    draft_seconds, kCostSmoothing);
    } else {
      acceptance_ += kAcceptanceRecovery * (1.0 - acceptance_);
    }
    return;
  }
  ++passes_since_base_;
  // The accepted tokens are a prefix: each counts as a success; the first rejected one (if any)
  // as a failure; tokens after it were never tested and say nothing.
  accepted = std::clamp(accepted, 0, drafted);
  for (int32_t i = 0; i < accepted; ++i) acceptance_ += kAcceptanceSmoothing * (1.0 - acceptance_);
  if (accepted < drafted) acceptance_ *= 1.0 - kAcceptanceSmoothing;
  if (base_seconds_ > 0 && pass_seconds > 0) {
    row_seconds_ = Smooth(row_seconds_, std::max(0.0, (pass_seconds - base_seconds_) / drafted),
                          kCostSmoothing);
    draft_token_seconds_ = Smooth(draft_token_seconds_ > 0 ? draft_token_seconds_ : -1,
                                  std::max(0.0, draft_seconds) / drafted, kCostSmoothing);
  }
}

// ---- Acceptance rule --------------------------------------------------------------------------

VerifyOutcome VerifyDraftToken(int32_t x, absl::Span<const float> p, absl::Span<const float> q,
                               Sampler& sampler, absl::Span<float> residual) {
  const int32_t n = static_cast<int32_t>(p.size());
  const bool one_hot = q.empty();
  auto q_at = [&](int32_t id) -> float {
    if (one_hot) return id == x ? 1.0f : 0.0f;
    return id >= 0 && id < static_cast<int32_t>(q.size()) ? q[id] : 0.0f;
  };
  const float px = x >= 0 && x < n ? p[x] : 0.0f;
  const float qx = q_at(x);
  // Accept with probability min(1, p(x) / q(x)): u * q(x) < p(x) for u uniform in [0, 1).
  if (qx > 0.0f && sampler.Uniform() * qx < px) return {true, x};
  // Rejected: draw from the part of p that q under-covers.
  for (int32_t id = 0; id < n; ++id) residual[id] = std::max(0.0f, p[id] - q_at(id));
  int32_t token = sampler.SampleFromWeights(residual.subspan(0, n));
  // p <= q everywhere (equal up to rounding): rejection had probability ~0; draw from p itself.
  if (token < 0) token = sampler.SampleFromWeights(p);
  return {false, token};
}

DraftRowVerifier::DraftRowVerifier(int32_t n_vocab)
    : row_(n_vocab), p_(n_vocab), residual_(n_vocab) {}

RowDecision DraftRowVerifier::Decide(absl::Span<const float> logits, int32_t draft,
                                     absl::Span<const float> q, Sampler& sampler,
                                     absl::Span<const int32_t> history, bool greedy) {
  const size_t n = std::min(logits.size(), row_.size());
  std::copy(logits.begin(), logits.begin() + n, row_.begin());
  std::fill(row_.begin() + n, row_.end(), -std::numeric_limits<float>::infinity());
  RowDecision decision;
  if (greedy) {
    // The very token decoding without a drafter would pick.
    decision.token = sampler.Sample(absl::MakeSpan(row_), history);
    decision.logprob = sampler.SampledLogprob();
    decision.accepted = draft >= 0 && decision.token == draft;
    return decision;
  }
  sampler.Distribution(absl::MakeSpan(row_), history, absl::MakeSpan(p_));
  if (draft >= 0) {
    const VerifyOutcome outcome =
        VerifyDraftToken(draft, p_, q, sampler, absl::MakeSpan(residual_));
    decision.token = outcome.token;
    decision.accepted = outcome.accepted;
  } else {
    decision.token = sampler.SampleFromWeights(p_);
  }
  decision.logprob =
      decision.token >= 0 ? std::log(p_[decision.token]) : -std::numeric_limits<float>::infinity();
  return decision;
}

// ---- Vocabulary check -------------------------------------------------------------------------

absl::Status CheckDraftVocabulary(const Tokenizer& target, const Tokenizer& draft,
                                  const VocabularyCheckOptions& options) {
  const std::string advice = "; use a draft model from the same family as the target";
  if (target.kind() != draft.kind()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the draft model's tokenizer is of another kind than the target's (",
        target.kind() == TokenizerKind::kSentencePiece ? "SentencePiece" : "BPE", " vs ",
        draft.kind() == TokenizerKind::kSentencePiece ? "SentencePiece" : "BPE", ")", advice));
  }
  const int64_t difference = std::abs(int64_t{target.vocab_size()} - draft.vocab_size());
  if (difference > options.max_size_difference) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the draft model has ", draft.vocab_size(), " tokens and the target ", target.vocab_size(),
        ": they differ by more than ", options.max_size_difference, advice));
  }
  if (target.bos_id() != draft.bos_id() || target.add_bos() != draft.add_bos()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the draft model's BOS token (id ", draft.bos_id(),
                     ", added: ", draft.add_bos(), ") differs from the target's (id ",
                     target.bos_id(), ", added: ", target.add_bos(), ")", advice));
  }
  if (target.eos_id() != draft.eos_id()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the draft model's EOS token (id ", draft.eos_id(),
                     ") differs from the target's (id ", target.eos_id(), ")", advice));
  }
  const int32_t common = std::min(target.vocab_size(), draft.vocab_size());
  for (int32_t id = std::max(options.first_checked_id, 0); id < common; ++id) {
    if (target.TokenText(id) != draft.TokenText(id)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token ", id, " is '", std::string(target.TokenText(id)), "' in the target but '",
          std::string(draft.TokenText(id)), "' in the draft model", advice));
    }
  }
  return absl::OkStatus();
}

// ---- Draft model ------------------------------------------------------------------------------

DraftModelDrafter::DraftModelDrafter(Stage& stage, int32_t slot, const SamplingParams& sampling,
                                     const DraftModelOptions& options)
    : stage_(stage),
      slot_(slot),
      sampling_(sampling),
      options_(options),
      // Its own random stream, derived from the target's seed (0 stays "pick one").
      sampler_(sampling, stage.config().n_vocab),
      greedy_sampler_(
          [&] {
            SamplingParams greedy = sampling;
            greedy.temperature = 0.0f;
            return greedy;
          }(),
          stage.config().n_vocab) {
  if (sampling.seed != 0) sampler_.Reset(sampling.seed ^ 0x9e3779b97f4a7c15ULL);
  scratch_.resize(stage.config().n_vocab);
}

absl::StatusOr<std::unique_ptr<DraftModelDrafter>> DraftModelDrafter::Create(
    Stage& stage, int32_t slot, const SamplingParams& sampling, const DraftModelOptions& options) {
  RETURN_IF_ERROR(ValidateSamplingParams(sampling));
  if (!stage.options().has_embedding || !stage.options().has_head) {
    return absl::FailedPreconditionError("a draft model needs a stage with the embedding and head");
  }
  if (slot < 0 || slot >= stage.options().num_slots) {
    return absl::InvalidArgumentError(absl::StrCat("draft slot ", slot, " is out of range"));
  }
  if (!(options.min_confidence >= 0.0f && options.min_confidence <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the draft confidence threshold must be in [0, 1], got ", options.min_confidence));
  }
  stage.ResetSlot(slot);
  return std::unique_ptr<DraftModelDrafter>(new DraftModelDrafter(stage, slot, sampling, options));
}

absl::StatusOr<absl::Span<const float>> DraftModelDrafter::Sync() {
  const int32_t n = static_cast<int32_t>(history_.size());
  // Reuse the longest common prefix; always recompute the last token to get its logits.
  int32_t position = static_cast<int32_t>(
      std::mismatch(cached_.begin(), cached_.end(), history_.begin(), history_.end()).first -
      cached_.begin());
  position = std::min({position, stage_.cached_length(slot_), n - 1});
  if (position < stage_.cached_length(slot_) && !stage_.CanRollBack(slot_, position)) {
    position = 0;
  }
  if (position == 0) stage_.ResetSlot(slot_);
  absl::Span<const float> logits;
  while (position < n) {
    const int32_t count = std::min(stage_.options().max_batch_tokens, n - position);
    StageInput input;
    input.slot = slot_;
    input.first_position = position;
    input.tokens = absl::MakeConstSpan(history_).subspan(position, count);
    ASSIGN_OR_RETURN(logits, stage_.Forward(input, LogitsMode::kLast));
    position += count;
  }
  cached_ = history_;
  return logits;
}

absl::Status DraftModelDrafter::Draft(absl::Span<const int32_t> context, int32_t max_tokens,
                                      DraftProposal& proposal) {
  proposal.Clear();
  const int32_t vocab = stage_.config().n_vocab;
  proposal.vocab = vocab;
  const int32_t limit = stage_.options().context;
  if (max_tokens <= 0 || context.empty() || static_cast<int32_t>(context.size()) >= limit) {
    return absl::OkStatus();
  }
  const bool greedy = !(sampling_.temperature > 0.0f) || options_.one_hot_proposals;
  history_.assign(context.begin(), context.end());
  ASSIGN_OR_RETURN(absl::Span<const float> logits, Sync());
  for (int32_t i = 0; i < max_tokens; ++i) {
    std::copy(logits.begin(), logits.end(), scratch_.begin());
    int32_t token = -1;
    if (greedy) {
      token = greedy_sampler_.Sample(absl::MakeSpan(scratch_), history_);
      if (std::exp(greedy_sampler_.SampledLogprob()) < options_.min_confidence) break;
    } else {
      const size_t offset = proposal.probabilities.size();
      proposal.probabilities.resize(offset + vocab);
      absl::Span<float> q = absl::MakeSpan(proposal.probabilities).subspan(offset, vocab);
      sampler_.Distribution(absl::MakeSpan(scratch_), history_, q);
      if (*std::max_element(q.begin(), q.end()) < options_.min_confidence) {
        proposal.probabilities.resize(offset);
        break;
      }
      token = sampler_.SampleFromWeights(q);
    }
    proposal.tokens.push_back(token);
    history_.push_back(token);
    if (i + 1 == max_tokens || static_cast<int32_t>(history_.size()) >= limit) break;
    ASSIGN_OR_RETURN(logits, Sync());
  }
  return absl::OkStatus();
}

// ---- Prompt lookup ----------------------------------------------------------------------------

absl::Status NgramDrafter::Draft(absl::Span<const int32_t> context, int32_t max_tokens,
                                 DraftProposal& proposal) {
  proposal.Clear();
  const int32_t n_context = static_cast<int32_t>(context.size());
  if (max_tokens <= 0) return absl::OkStatus();
  const int32_t start =
      options_.search_window > 0 ? std::max(0, n_context - options_.search_window) : 0;
  const int32_t longest = std::min(options_.ngram_max, n_context - 1);
  for (int32_t n = longest; n >= std::max(options_.ngram_min, 1); --n) {
    const absl::Span<const int32_t> suffix = context.subspan(n_context - n, n);
    // The most recent earlier occurrence: its continuation is the likeliest to repeat.
    for (int32_t i = n_context - n - 1; i >= start; --i) {
      if (!std::equal(suffix.begin(), suffix.end(), context.begin() + i)) continue;
      // Copy what followed; past the context's end the copy continues from the proposal itself,
      // so a repeating pattern is extended periodically.
      for (int32_t j = 0; j < max_tokens; ++j) {
        const int32_t source = i + n + j;
        proposal.tokens.push_back(source < n_context ? context[source]
                                                     : proposal.tokens[source - n_context]);
      }
      return absl::OkStatus();
    }
  }
  return absl::OkStatus();
}

}  // namespace exo::runtime
