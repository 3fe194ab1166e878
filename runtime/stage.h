// The layer-range executor. A Stage runs layers [begin, end) of a model, optionally preceded by the
// token embedding and followed by the output norm and head. A whole model on one node is a Stage
// with every layer, the embedding and the head; a pipeline stage is the same code with a sub-range.
#ifndef EXO_RUNTIME_STAGE_H_
#define EXO_RUNTIME_STAGE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/thread_pool.h"
#include "runtime/batch.h"
#include "runtime/gguf.h"
#include "runtime/kv_cache.h"
#include "runtime/model_config.h"
#include "runtime/weights.h"

namespace exo::runtime {

struct StageOptions {
  LayerRange layers;          // {0, 0} with has_embedding and has_head is a valid (tiny) stage
  bool has_embedding = true;  // input is token ids (else hidden states)
  bool has_head = true;       // output is logits (else hidden states)
  int32_t context = 4096;     // KV positions per sequence; capped by nothing, checked by callers
  int32_t max_batch_tokens = 256;       // tokens per Forward call
  int32_t max_logit_rows = 16;          // rows of logits one call may return (speculative verify)
  int32_t num_slots = 1;                // sequences with their own KV cache
  kernels::ThreadPool* pool = nullptr;  // not owned; null runs single-threaded
};

struct StageInput {
  int32_t slot = 0;
  int32_t first_position = 0;        // position of the first token of this batch
  absl::Span<const int32_t> tokens;  // for a stage with the embedding
  absl::Span<const float> hidden;    // tokens * n_embd floats, for a stage without it
};

class Stage {
 public:
  // `file` must outlive the Stage: weights are used in place from its mapping.
  static absl::StatusOr<std::unique_ptr<Stage>> Create(const GgufFile& file,
                                                       const StageOptions& options);

  const ModelConfig& config() const { return config_; }
  const StageOptions& options() const { return options_; }
  uint64_t weight_bytes() const { return StageWeightBytes(weights_); }
  // Weight bytes one decode step reads: every matrix once, but only one row of the token
  // embedding (unless the head shares it, in which case the head reads it all).
  uint64_t weight_bytes_per_token() const;
  uint64_t kv_cache_bytes() const { return kv_.bytes(); }

  // Runs one batch of a sequence. Positions before first_position must already be in the slot's
  // cache (a smaller first_position than the cached length rolls the cache back). Returns hidden
  // states (tokens x n_embd) or, for a stage with the head, logits (1 or tokens rows x n_vocab).
  // The returned span stays valid until the next call. Never allocates.
  absl::StatusOr<absl::Span<const float>> Forward(const StageInput& input, LogitsMode mode);

  // Runs several sequences (distinct slots) in one pass, so they share every weight read: the
  // rows of all segments go through the matrices together and each segment attends only to its
  // own slot's cache. `tokens` (stage with the embedding) or `hidden` (n_embd floats per token)
  // hold the segments' rows concatenated in segment order. Returns, for a stage with the head,
  // logits rows concatenated in segment order (1 row for kLast, n_tokens rows for kAll); otherwise
  // hidden states for every token. Each segment follows Forward's rules; the total of tokens is at
  // most max_batch_tokens and of logits rows at most max_logit_rows (or max_batch_tokens if that
  // is smaller). A segment's result is bit-identical to running it alone. Validation happens
  // before any work: a refused batch changes nothing. Never allocates.
  absl::StatusOr<absl::Span<const float>> ForwardBatch(absl::Span<const BatchSegment> segments,
                                                       absl::Span<const int32_t> tokens,
                                                       absl::Span<const float> hidden);
  // Rows of logits one call may return.
  int32_t max_logit_rows() const;

  // Number of positions cached for `slot`.
  int32_t cached_length(int32_t slot) const { return cached_length_[slot]; }
  // Whether a batch may start at `position` < cached_length(slot): sliding-window layers must
  // still hold the keys it will attend to.
  bool CanRollBack(int32_t slot, int32_t position) const;
  // Forgets a sequence: its slot can start again at position 0.
  void ResetSlot(int32_t slot) { cached_length_[slot] = 0; }

 private:
  Stage(const ModelConfig& config, const StageOptions& options, StageWeights weights);
  absl::Status ValidateBatch(absl::Span<const BatchSegment> segments,
                             absl::Span<const int32_t> tokens, absl::Span<const float> hidden);
  void RunLayer(int32_t local_layer, int32_t n_rows);

  ModelConfig config_;
  StageOptions options_;
  StageWeights weights_;
  KvCache kv_;
  std::vector<int32_t> cached_length_;
  // RoPE cos/sin tables for the current batch (max_batch x rope_dim/2), for full-attention
  // layers and for sliding-window layers (which may use another base).
  std::vector<float> rope_cos_, rope_sin_, rope_cos_swa_, rope_sin_swa_;

  // The current batch's sequences (sized once).
  std::vector<SequenceRows> sequences_;
  std::vector<int32_t> row_sequence_;  // row -> index into sequences_
  int32_t n_sequences_ = 0;
  std::vector<uint8_t> slot_in_batch_;  // validation: which slots the batch names
  // Scratch, sized once for max_batch_tokens rows. Unlike a std::vector, whose zero-fill would
  // make every row the largest batch could use resident from the start, a page of these only
  // counts in RSS once a batch writes it: a decode step touches one row of logits, not
  // max_logit_rows (a vocabulary of 262k makes each row 1 MiB).
  class Scratch {
   public:
    void Allocate(size_t n) {
      data_.reset(new float[n]);  // default-initialised: no write, so no page is touched
      size_ = n;
    }
    float* data() { return data_.get(); }
    size_t size() const { return size_; }
    float& operator[](size_t i) { return data_[i]; }

   private:
    std::unique_ptr<float[]> data_;
    size_t size_ = 0;
  };
  Scratch x_, norm_, q_, k_, v_, attn_, proj_, gate_, up_, logits_;
};

}  // namespace exo::runtime

#endif  // EXO_RUNTIME_STAGE_H_
