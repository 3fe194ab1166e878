// StageHost: one pipeline stage's loaded layers and the sequences running through them, without any
// networking. It validates every incoming frame before doing any work (a refused frame changes
// nothing), maps sequence ids to KV slots, batches the frames of several sequences into one
// Stage::ForwardBatch pass, and on the last stage samples with each sequence's own Sampler, or
// verifies a frame's draft tokens (speculative decoding, docs/speculative.md) with the rule the
// single-node generator uses (runtime::DraftRowVerifier).
//
// Frames here are plain structs; node/wire.h converts them from and to exo.v1.ForwardFrame. The
// file depends only on the runtime and Abseil, so the fuzz build (-DEXO_ONLY_PARSERS=ON) can
// compile it into tests/fuzz/stage_host_fuzz.cc.
//
// Not thread-safe: one thread (the shard's worker) calls Step.
#ifndef EXO_NODE_STAGE_HOST_H_
#define EXO_NODE_STAGE_HOST_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/thread_pool.h"
#include "runtime/gguf.h"
#include "runtime/sampler.h"
#include "runtime/speculative.h"
#include "runtime/stage.h"

namespace exo::node {

// Element types of a frame's hidden state. The numbers are exo.v1.DType's (wire.cc checks).
enum class WireDType : int32_t {
  kF32 = 1,   // default: keeps split greedy output exact
  kF16 = 2,   // opt-in: half the bytes per hop, not bit-exact; range +-65504
  kBf16 = 3,  // opt-in: half the bytes per hop, not bit-exact; the range of f32
};
// Bytes per element of a supported dtype; 0 for anything else.
int32_t WireDTypeSize(int32_t dtype);

// A frame's sampling request (exo.v1.SamplingParams).
struct FrameSampling {
  runtime::SamplingParams params;
  int32_t top_logprobs = 0;  // alternatives to report per token, 0 to kMaxTopLogprobs
};

// One frame of one sequence, as it arrives at a stage.
struct StageFrame {
  uint64_t sequence_id = 0;
  uint64_t plan_epoch = 0;
  int32_t first_position = 0;  // position of the frame's first token
  int32_t token_count = 0;     // rows; 0 only with end_of_sequence (a cancel)
  int32_t dtype = static_cast<int32_t>(WireDType::kF32);  // of `hidden` in and out
  std::vector<int64_t> shape;  // [token_count, n_embd] when hidden is present
  std::string hidden;          // row-major little-endian; empty for the first stage
  // Token ids of the frame's positions: the first stage embeds them; later stages pass them on
  // so the last stage keeps each sequence's history for the repetition penalties. With draft
  // tokens: exactly one, the sequence's last token.
  std::vector<int32_t> tokens;
  // Speculative verification: drafted tokens for the rows after `tokens` (token_count is then
  // 1 + their number). The last stage computes logits for every row, accepts the longest prefix
  // the target agrees with and returns it plus one more token. Every stage embeds or passes them
  // on like `tokens`.
  std::vector<int32_t> draft_tokens;
  int32_t kv_keep_length = 0;    // when non-zero, must equal first_position (a rollback)
  bool end_of_sequence = false;  // free the sequence's slot after this frame
  bool no_sample = false;        // last stage: a prompt chunk that is not the last; sample nothing
  FrameSampling sampling;        // read from the sequence's first frame
};

struct SampledToken {
  int32_t token = 0;
  float logprob = 0.0f;
  std::vector<runtime::Sampler::TokenLogprob> top_logprobs;
};

// What one frame produced.
struct StageOutput {
  uint64_t sequence_id = 0;
  absl::Status status;  // not OK: the frame was refused (or failed) and changed nothing
  // A stage without the head: the frame to send to the next stage (also for cancels).
  std::optional<StageFrame> next;
  // The last stage: sampled tokens (empty for no_sample chunks and cancels). For a frame with
  // draft tokens: the accepted drafts, then the target's own token after them.
  std::vector<SampledToken> tokens;
  int32_t accepted_draft_count = 0;  // drafts accepted (tokens.size() - 1 for a draft frame)
};

struct StageHostOptions {
  uint64_t plan_epoch = 0;
  runtime::LayerRange layers;
  bool has_embedding = true;
  bool has_head = true;
  int32_t context = 4096;               // KV positions per sequence
  int32_t max_sequences = 4;            // KV slots
  int32_t max_batch_tokens = 256;       // rows per ForwardBatch pass (and per frame)
  kernels::ThreadPool* pool = nullptr;  // not owned
};

class StageHost {
 public:
  static constexpr int32_t kMaxTopLogprobs = 20;
  // Largest |value| accepted in a hidden state: real activations stay far below; anything larger
  // is a corrupt or hostile frame that would overflow the kernels' arithmetic.
  static constexpr float kMaxHiddenMagnitude = 1e8f;
  // Most draft tokens per frame: the last stage computes logits for at most 16 rows per pass.
  static constexpr int32_t kMaxDraftTokens = 15;

  // `file` must outlive the host (weights are used in place from its mapping).
  static absl::StatusOr<std::unique_ptr<StageHost>> Create(const runtime::GgufFile& file,
                                                           const StageHostOptions& options);

  const StageHostOptions& options() const { return options_; }
  const runtime::ModelConfig& config() const { return stage_->config(); }
  uint64_t weight_bytes() const { return stage_->weight_bytes(); }
  uint64_t kv_cache_bytes() const { return stage_->kv_cache_bytes(); }
  int32_t active_sequences() const { return static_cast<int32_t>(sequences_.size()); }
  // Most draft tokens one frame may carry here: kMaxDraftTokens, fewer when a frame holds fewer
  // than kMaxDraftTokens + 1 rows (max_batch_tokens).
  int32_t max_draft_tokens() const;

  // Runs `frames` in arrival order, batching frames of distinct sequences into shared passes
  // (several passes when a sequence has several frames or the rows exceed max_batch_tokens).
  // Returns one output per frame, in the same order. Never crashes on any frame.
  std::vector<StageOutput> Step(std::vector<StageFrame> frames);

  // Forgets every sequence (their slots become free).
  void CancelAll();

 private:
  struct Sequence {
    int32_t slot = 0;
    std::unique_ptr<runtime::Sampler> sampler;  // last stage only
    bool greedy = true;                         // last stage: temperature 0
    int32_t top_logprobs = 0;
    std::vector<int32_t> history;  // last stage: every token of the sequence so far
  };

  StageHost(const runtime::GgufFile& file, const StageHostOptions& options,
            std::unique_ptr<runtime::Stage> stage);
  // Checks a frame against the current state (nothing changes). `slot_taken` marks slots that
  // frames earlier in the same pass will claim.
  absl::Status Validate(const StageFrame& frame, int32_t reserved_slots) const;
  // The draft-token rules of a frame (part of Validate).
  absl::Status ValidateDrafts(const StageFrame& frame) const;
  // Last stage: fills `out` from the logits of a frame's rows (1 row, or 1 + drafts rows).
  void SampleOrVerify(const StageFrame& frame, const float* logits, Sequence& sequence,
                      StageOutput& out);
  // Decodes the frame's hidden state into `out` (n_embd floats per row).
  absl::Status DecodeHidden(const StageFrame& frame, float* out) const;
  // Fails when a value does not fit the dtype (f16 overflows on large activations).
  absl::Status EncodeHidden(const float* rows, int32_t n_rows, int32_t dtype,
                            std::string* out) const;
  int32_t FreeSlots() const;
  void Release(uint64_t sequence_id);

  StageHostOptions options_;
  std::unique_ptr<runtime::Stage> stage_;
  std::map<uint64_t, Sequence> sequences_;
  std::vector<uint8_t> slot_used_;
  // Per-pass scratch.
  std::vector<int32_t> batch_tokens_;
  std::vector<float> batch_hidden_;
  std::vector<float> logits_scratch_;
  std::unique_ptr<runtime::DraftRowVerifier> verifier_;  // last stage only
};

}  // namespace exo::node

#endif  // EXO_NODE_STAGE_HOST_H_
