// Per-sequence key/value cache for a stage's layers, stored as f16.
//
// Each (slot, layer) has its own buffer. Full-attention layers keep `context` rows. A
// sliding-window layer keeps only a ring of window + max_batch - 1 rows, enough for a batch of
// max_batch tokens to see `window` keys each; position p lives in row p % capacity.
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
  uint16_t* Key(int32_t slot, int32_t layer, int32_t position);
  uint16_t* Value(int32_t slot, int32_t layer, int32_t position);
  const uint16_t* Key(int32_t slot, int32_t layer, int32_t position) const;
  const uint16_t* Value(int32_t slot, int32_t layer, int32_t position) const;

  // The oldest position still held for a sequence whose newest written position is `newest`.
  int32_t OldestHeld(int32_t layer, int32_t newest) const;
  // Rows held per (slot, layer): `context` for full layers, the ring size for sliding ones.
  int32_t capacity(int32_t layer) const { return capacity_[layer]; }

 private:
  int32_t context_;
  int32_t num_slots_;
  int32_t k_width_;                            // n_head_kv * head_dim
  int32_t v_width_;                            // n_head_kv * head_dim_v
  std::vector<int32_t> capacity_;              // per local layer
  std::vector<std::vector<uint16_t>> keys_;    // [slot * n_layers + layer]
  std::vector<std::vector<uint16_t>> values_;  // [slot * n_layers + layer]
};

}  // namespace exo::runtime

#endif  // EXO_RUNTIME_KV_CACHE_H_
