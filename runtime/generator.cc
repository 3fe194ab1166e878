#include "runtime/generator.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace exo::runtime {
namespace {

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Runs history[position, end) through the slot in batches; returns the last row's logits (empty
// when the range is empty).
absl::StatusOr<absl::Span<const float>> Prefill(Stage& stage, int32_t slot,
                                                const std::vector<int32_t>& history,
                                                int32_t position, int32_t end) {
  absl::Span<const float> logits;
  while (position < end) {
    const int32_t n = std::min<int32_t>(stage.options().max_batch_tokens, end - position);
    StageInput input;
    input.slot = slot;
    input.first_position = position;
    input.tokens = absl::MakeConstSpan(history).subspan(position, n);
    ASSIGN_OR_RETURN(logits, stage.Forward(input, LogitsMode::kLast));
    position += n;
  }
  return logits;
}

// The decoding loop with a drafter. The slot holds history[0, size - 1) on entry. Each pass
// forwards [last token, drafts...] with logits for every row, then walks the rows: row i decides
// the token after draft i - 1 (the target's own choice under greedy, the acceptance rule when
// sampling); the first disagreement ends the pass with the target's token, and if every draft
// is accepted the last row gives one more. The next pass starts at the accepted length, which
// rolls the cache back over the rejected drafts.
absl::Status DecodeSpeculative(Stage& stage, int32_t slot, std::vector<int32_t>& history,
                               const GenerateOptions& options, const TokenCallback& on_token,
                               GenerateStats& stats) {
  const StageOptions& so = stage.options();
  const int32_t n_vocab = stage.config().n_vocab;
  const bool greedy = !(options.sampling.temperature > 0.0f);
  SpeculativeOptions spec = options.speculative;
  spec.draft_max =
      std::max(0, std::min({spec.draft_max, so.max_logit_rows - 1, so.max_batch_tokens - 1}));
  DraftLengthController length(spec);
  Sampler sampler(options.sampling, n_vocab);
  DraftRowVerifier verifier(n_vocab);
  std::vector<int32_t> batch;
  batch.reserve(spec.draft_max + 1);
  DraftProposal proposal;
  SpeculativeStats& counters = stats.speculative;
  int32_t valid = stage.cached_length(slot);  // positions holding history tokens

  bool done = false;
  // Emits one token; returns false when generation ends with it.
  auto emit = [&](int32_t token) {
    if (options.is_stop_token && options.is_stop_token(token)) {
      stats.stopped_by_token = true;
      return false;
    }
    history.push_back(token);
    ++stats.generated_tokens;
    ++counters.emitted_tokens;
    if (!on_token(token)) return false;
    if (stats.generated_tokens >= options.max_tokens) return false;
    if (static_cast<int64_t>(history.size()) >= so.context) {
      stats.stopped_by_context = true;
      return false;
    }
    return true;
  };

  while (!done && stats.generated_tokens < options.max_tokens) {
    const int32_t first_position = static_cast<int32_t>(history.size()) - 1;
    // Room: the batch writes positions up to first_position + k, which must fit the context,
    // and more than the remaining tokens would be wasted.
    const int32_t room =
        std::min(so.context - 1 - first_position, options.max_tokens - stats.generated_tokens - 1);
    const int32_t want = std::max(0, std::min(length.Next(), room));
    proposal.Clear();
    double draft_seconds = 0;
    if (want > 0) {
      const auto draft_start = std::chrono::steady_clock::now();
      RETURN_IF_ERROR(options.drafter->Draft(history, want, proposal));
      draft_seconds = SecondsSince(draft_start);
      counters.draft_seconds += draft_seconds;
    }
    // A drafter may overshoot or propose ids the target cannot embed: keep the usable prefix.
    int32_t drafted = std::min<int32_t>(static_cast<int32_t>(proposal.tokens.size()), want);
    for (int32_t i = 0; i < drafted; ++i) {
      if (proposal.tokens[i] < 0 || proposal.tokens[i] >= n_vocab) drafted = i;
    }
    batch.assign(1, history.back());
    batch.insert(batch.end(), proposal.tokens.begin(), proposal.tokens.begin() + drafted);

    if (first_position > valid ||
        (first_position < stage.cached_length(slot) && !stage.CanRollBack(slot, first_position))) {
      // The sliding-window cache cannot go back that far: replay the sequence.
      stage.ResetSlot(slot);
      RETURN_IF_ERROR(Prefill(stage, slot, history, 0, first_position).status());
    }
    StageInput input;
    input.slot = slot;
    input.first_position = first_position;
    input.tokens = absl::MakeConstSpan(batch);
    const auto verify_start = std::chrono::steady_clock::now();
    ASSIGN_OR_RETURN(absl::Span<const float> logits, stage.Forward(input, LogitsMode::kAll));
    const double verify_seconds = SecondsSince(verify_start);
    counters.verify_seconds += verify_seconds;
    ++counters.passes;
    counters.drafted_tokens += drafted;

    int32_t accepted = 0;
    for (int32_t i = 0; i <= drafted; ++i) {
      const auto logits_row = logits.subspan(size_t(i) * n_vocab, n_vocab);
      if (stats.generated_tokens == 0 && options.first_logits != nullptr) {
        options.first_logits->assign(logits_row.begin(), logits_row.end());
      }
      const bool is_draft = i < drafted;
      const absl::Span<const float> q =
          !is_draft || proposal.deterministic() ? absl::Span<const float>() : proposal.Row(i);
      const RowDecision decision = verifier.Decide(logits_row, is_draft ? proposal.tokens[i] : -1,
                                                   q, sampler, history, greedy);
      if (decision.accepted) ++accepted;
      if (!emit(decision.token)) {
        done = true;
        break;
      }
      if (!decision.accepted) break;
    }
    counters.accepted_tokens += accepted;
    valid = first_position + 1 + accepted;
    length.Update(want, drafted, accepted, verify_seconds, draft_seconds);
  }
  stats.reusable_prefix = std::min<int32_t>(valid, static_cast<int32_t>(history.size()));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<GenerateStats> Generate(Stage& stage, int32_t slot, std::vector<int32_t>& history,
                                       const GenerateOptions& options,
                                       const TokenCallback& on_token) {
  RETURN_IF_ERROR(ValidateSamplingParams(options.sampling));
  const StageOptions& so = stage.options();
  if (!so.has_embedding || !so.has_head) {
    return absl::FailedPreconditionError("generation needs a stage with the embedding and head");
  }
  if (history.empty()) return absl::InvalidArgumentError("the prompt is empty");
  if (static_cast<int64_t>(history.size()) >= so.context) {
    return absl::OutOfRangeError(absl::StrCat("the prompt has ", history.size(),
                                              " tokens but the context holds ", so.context,
                                              "; shorten it or raise --ctx"));
  }
  GenerateStats stats;
  // Reuse the cached prefix; always recompute at least the last token to get its logits. A
  // rollback the sliding-window cache cannot serve starts the sequence again.
  int32_t position = std::min(
      {options.cached_prefix, stage.cached_length(slot), static_cast<int32_t>(history.size()) - 1});
  position = std::max(position, 0);
  if (position < stage.cached_length(slot) && !stage.CanRollBack(slot, position)) {
    position = 0;
  }
  // Starting over: forget the old sequence (a sliding-window cache could not roll back to 0).
  if (position == 0) stage.ResetSlot(slot);
  stats.prompt_tokens = static_cast<int32_t>(history.size()) - position;
  const int32_t size = static_cast<int32_t>(history.size());

  if (options.drafter != nullptr) {
    // Every pass starts with the newest token, so the prompt's last token waits for the first.
    const auto prompt_start = std::chrono::steady_clock::now();
    RETURN_IF_ERROR(Prefill(stage, slot, history, std::min(position, size - 1), size - 1).status());
    stats.prompt_seconds = SecondsSince(prompt_start);
    const auto gen_start = std::chrono::steady_clock::now();
    if (options.max_tokens > 0) {
      RETURN_IF_ERROR(DecodeSpeculative(stage, slot, history, options, on_token, stats));
    } else {
      stats.reusable_prefix = std::min(stage.cached_length(slot), size);
    }
    stats.generate_seconds = SecondsSince(gen_start);
    return stats;
  }

  const auto prompt_start = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(absl::Span<const float> logits, Prefill(stage, slot, history, position, size));
  stats.prompt_seconds = SecondsSince(prompt_start);

  Sampler sampler(options.sampling, stage.config().n_vocab);
  std::vector<float> scratch(logits.begin(), logits.end());
  const auto gen_start = std::chrono::steady_clock::now();
  for (int32_t i = 0; i < options.max_tokens; ++i) {
    if (i == 0 && options.first_logits != nullptr) *options.first_logits = scratch;
    const int32_t token = sampler.Sample(absl::MakeSpan(scratch), history);
    if (options.is_stop_token && options.is_stop_token(token)) {
      stats.stopped_by_token = true;
      break;
    }
    history.push_back(token);
    ++stats.generated_tokens;
    if (!on_token(token)) break;
    if (i + 1 == options.max_tokens) break;
    if (static_cast<int64_t>(history.size()) >= so.context) {
      stats.stopped_by_context = true;
      break;
    }
    StageInput input;
    input.slot = slot;
    input.first_position = static_cast<int32_t>(history.size()) - 1;
    input.tokens = absl::MakeConstSpan(history).subspan(history.size() - 1, 1);
    ASSIGN_OR_RETURN(logits, stage.Forward(input, LogitsMode::kLast));
    std::copy(logits.begin(), logits.end(), scratch.begin());
  }
  stats.generate_seconds = SecondsSince(gen_start);
  stats.reusable_prefix = std::min(stage.cached_length(slot), static_cast<int32_t>(history.size()));
  return stats;
}

}  // namespace exo::runtime
