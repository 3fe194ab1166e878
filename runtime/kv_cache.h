// Per-sequence key/value cache for a stage's layers, stored as f16 in the layout the attention
// kernels read in place (kernels::AttentionKeys): per kv head, keys in blocks of 16 rows (element
// d of row r at (r / 16) * 16 * head_dim + d * 16 + r % 16); values row-major.
//
// Each (slot, layer) has its own buffer. Full-attention layers keep `context` rows. A
// sliding-window layer keeps only a ring of window + max_batch - 1 rows, enough for a batch of
// max_batch tokens to see `window` keys each; position p lives in row p % capacity. Capacities are
// rounded up to whole key blocks.
#ifndef EXO_RUNTIME_KV_CACHE_H_
#define EXO_RUNTIME_KV_CACHE_H_

#include <cstdint>
#include <vector>

#include "runtime/model_config.h"
#include "runtime/weights.h"

namespace exo::runtime {

class KvCache {
 public:
  KvCache(const ModelConfig& config, LayerRange layers, int32_t context, int32_t max_batch,
          int32_t num_slots);

  // Bytes a cache with these settings takes, without allocating it (for planning).
  static uint64_t BytesFor(const ModelConfig& config, LayerRange layers, int32_t context,
                           int32_t max_batch, int32_t num_slots);

  int32_t num_slots() const { return num_slots_; }
  int32_t context() const { return context_; }
  uint64_t bytes() const;

  // `layer` is the local index (0 = the stage's first layer).
  // Stores the keys (n_head_kv * head_dim floats, roped) and values of `position` as f16.
  void Write(int32_t slot, int32_t layer, int32_t position, const float* keys, const float* values);
  // kv head `kv_head`'s key blocks, and the layer's value rows (row r at r * n_head_kv *
  // head_dim_v).
  const uint16_t* KeyBlocks(int32_t slot, int32_t layer, int32_t kv_head) const;
  const uint16_t* ValueRows(int32_t slot, int32_t layer) const;
  // The row position p lives in.
  int32_t Row(int32_t layer, int32_t position) const { return position % capacity_[layer]; }

  // The oldest position still held for a sequence whose newest written position is `newest`.
  int32_t OldestHeld(int32_t layer, int32_t newest) const;
  // Rows held per (slot, layer): `context` for full layers, the ring size for sliding ones.
  int32_t capacity(int32_t layer) const { return capacity_[layer]; }

 private:
  int32_t context_;
  int32_t num_slots_;
  int32_t head_dim_;
  int32_t k_width_;                            // n_head_kv * head_dim
  int32_t v_width_;                            // n_head_kv * head_dim_v
  std::vector<int32_t> capacity_;              // per local layer
  std::vector<std::vector<uint16_t>> keys_;    // [slot * n_layers + layer]
  std::vector<std::vector<uint16_t>> values_;  // [slot * n_layers + layer]
};

}  // namespace exo::runtime

#endif  // EXO_RUNTIME_KV_CACHE_H_
