// Builds the planner's view of a model (partition::ModelProfile) from a GGUF file: bytes per
// layer from the tensor table, embedding and head bytes, KV cache per layer at the configured
// context (as runtime::KvCache lays it out), activation scratch as runtime::Stage allocates it.
#ifndef EXO_NODE_MODEL_PROFILE_H_
#define EXO_NODE_MODEL_PROFILE_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "partition/profile.h"
#include "runtime/gguf.h"
#include "runtime/model_config.h"

namespace exo::node {

struct ModelProfileOptions {
  int32_t context = 4096;          // KV positions per sequence; capped at the model's own
  int32_t max_batch_tokens = 256;  // tokens per Forward call (sizes scratch and SWA rings)
  int32_t max_logit_rows = 16;     // logits rows a stage may return
  int32_t num_slots = 1;           // sequences with their own KV cache
  bool f16_activations = false;    // hidden states between stages as f16 instead of f32
  uint64_t overhead_bytes = 0;     // added to each stage's scratch (process, allocator)
};

// InvalidArgument when the tensor table does not match the config (a block tensor past
// n_layer, a missing token embedding) or the options are out of range.
absl::StatusOr<partition::ModelProfile> BuildModelProfile(const runtime::GgufFile& file,
                                                          const runtime::ModelConfig& config,
                                                          const ModelProfileOptions& options);

}  // namespace exo::node

#endif  // EXO_NODE_MODEL_PROFILE_H_
