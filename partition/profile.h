// What the planner knows about devices and models. Plain data: node/ fills these from
// heartbeats and GGUF files; partition/ only reads them.
#ifndef EXO_PARTITION_PROFILE_H_
#define EXO_PARTITION_PROFILE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace exo::partition {

// One machine of the cluster.
struct DeviceProfile {
  std::string node_id;
  uint64_t memory_bytes = 0;             // memory the node may use for weights, KV and scratch
  double decode_bytes_per_second = 0.0;  // memory bandwidth: decode speed is bytes / this
  std::string device_kind;               // free-form: "apple-m2-max", "cuda-rtx4090", "cpu-a76"
};

// One model, as far as memory and speed planning is concerned.
struct ModelProfile {
  int32_t n_layers = 0;
  std::vector<uint64_t> layer_bytes;          // weight bytes of each layer; size n_layers
  uint64_t embedding_bytes = 0;               // token embedding (first stage)
  uint64_t head_bytes = 0;                    // output norm and head (last stage)
  uint64_t kv_bytes_per_token_per_layer = 0;  // K and V together
  int32_t context_length = 0;                 // tokens of KV cache reserved per stage
  uint64_t scratch_bytes = 0;                 // activations and buffers, per stage

  // KV cache bytes each layer reserves for the whole context; size 0 or n_layers. Needed when
  // layers differ (sliding-window layers keep only a window of rows). When empty every layer
  // reserves kv_bytes_per_token_per_layer * context_length.
  std::vector<uint64_t> layer_kv_bytes;
  // The head reads the token embedding (tied weights): head_bytes includes embedding_bytes, and
  // a stage holding both counts the embedding once.
  bool head_shares_embedding = false;
  // Bytes one token's hidden state takes between stages (n_embd * 4 for f32); for time estimates.
  uint64_t hidden_bytes_per_token = 0;
};

// KV bytes layer `layer` reserves for the whole context (see layer_kv_bytes). 0 out of range.
uint64_t LayerKvBytes(const ModelProfile& model, int32_t layer);

// InvalidArgument when the profile is inconsistent (layer count, sizes, context length).
absl::Status ValidateModelProfile(const ModelProfile& model);

// Bytes needed to hold the whole model on one node: every layer, embedding and head (once when
// shared), KV for the full context and one stage's scratch. Saturates at UINT64_MAX instead of
// wrapping.
uint64_t ModelMemoryBytes(const ModelProfile& model);

// "1.50 GiB (1610612736 bytes)": for error messages.
std::string FormatBytes(uint64_t bytes);

}  // namespace exo::partition

#endif  // EXO_PARTITION_PROFILE_H_
