// Single-sequence text generation on one Stage that holds the whole model: prompt processing in
// batches, then sampling token by token. The CLI's `generate` and `chat` are built on it.
#ifndef EXO_RUNTIME_GENERATOR_H_
#define EXO_RUNTIME_GENERATOR_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "runtime/sampler.h"
#include "runtime/speculative.h"
#include "runtime/stage.h"

namespace exo::runtime {

struct GenerateOptions {
  int32_t max_tokens = 128;
  SamplingParams sampling;
  // Token ids that end generation (the tokenizer's end-of-generation set); not emitted.
  std::function<bool(int32_t)> is_stop_token;
  // How many leading tokens of `history` the stage's slot already holds from an earlier call
  // (a chat session's previous turns); they are not computed again.
  int32_t cached_prefix = 0;
  // When set, receives the logits that chose the first generated token.
  std::vector<float>* first_logits = nullptr;
  // When set, decoding is speculative: the drafter proposes tokens and the stage verifies them
  // in one Forward (LogitsMode::kAll) per pass. Not owned. Greedy output is identical to
  // decoding without it; sampled output follows the same distribution.
  Drafter* drafter = nullptr;
  SpeculativeOptions speculative;
};

struct GenerateStats {
  int32_t prompt_tokens = 0;
  int32_t generated_tokens = 0;
  double prompt_seconds = 0;        // prompt processing
  double generate_seconds = 0;      // from the first to the last generated token
  bool stopped_by_token = false;    // an end-of-generation token ended it
  bool stopped_by_context = false;  // the context filled up
  // Leading tokens of `history` whose keys and values the slot holds correctly afterwards; a
  // later call's cached_prefix must not exceed it (speculation leaves rejected drafts past it).
  int32_t reusable_prefix = 0;
  SpeculativeStats speculative;  // all zero without a drafter
};

// Called with each generated token; return false to stop.
using TokenCallback = std::function<bool(int32_t token)>;

// Runs the prompt `history` through the stage's `slot`, then generates; `history` grows with the
// generated tokens. Tokens covered by options.cached_prefix are reused from the slot's cache.
absl::StatusOr<GenerateStats> Generate(Stage& stage, int32_t slot, std::vector<int32_t>& history,
                                       const GenerateOptions& options,
                                       const TokenCallback& on_token);

}  // namespace exo::runtime

#endif  // EXO_RUNTIME_GENERATOR_H_
