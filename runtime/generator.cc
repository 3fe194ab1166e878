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
  stats.prompt_tokens = static_cast<int32_t>(history.size()) - position;

  const auto prompt_start = std::chrono::steady_clock::now();
  absl::Span<const float> logits;
  while (position < static_cast<int32_t>(history.size())) {
    const int32_t n =
        std::min<int32_t>(so.max_batch_tokens, static_cast<int32_t>(history.size()) - position);
    StageInput input;
    input.slot = slot;
    input.first_position = position;
    input.tokens = absl::MakeConstSpan(history).subspan(position, n);
    ASSIGN_OR_RETURN(logits, stage.Forward(input, LogitsMode::kLast));
    position += n;
  }
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
  return stats;
}

}  // namespace exo::runtime
