// Shared building blocks of every architecture's layer: linear maps, norms, rotary embedding and
// attention over the KV cache. Each works on a batch of `n` token rows.
#ifndef EXO_RUNTIME_INTERNAL_TRANSFORMER_BLOCKS_H_
#define EXO_RUNTIME_INTERNAL_TRANSFORMER_BLOCKS_H_

#include <cstdint>

#include "kernels/thread_pool.h"
#include "runtime/kv_cache.h"
#include "runtime/model_config.h"
#include "runtime/weights.h"

namespace exo::runtime::internal {

// Everything one layer needs to know about the batch it runs on.
struct LayerContext {
  const ModelConfig* config;
  int32_t layer;           // global layer index
  int32_t local_layer;     // index inside the stage (KV cache layer)
  int32_t slot;            // KV cache slot of the sequence
  int32_t first_position;  // position of row 0
  int32_t n;               // rows in the batch
  KvCache* kv;
  kernels::ThreadPool* pool;
  const float* rope_cos;  // n x rope_dim/2, for this layer's RoPE base
  const float* rope_sin;
};

// Scratch rows, each sized for the stage's max batch.
struct LayerScratch {
  float* norm;    // n x n_embd
  float* q;       // n x n_head * head_dim
  float* k;       // n x n_head_kv * head_dim
  float* v;       // n x n_head_kv * head_dim_v
  float* attn;    // n x n_head * head_dim_v
  float* proj;    // n x n_embd
  float* gate;    // n x n_ff
  float* up;      // n x n_ff
  float* keys;    // context x n_head_kv * head_dim: the cached keys a batch sees, as f32
  float* values;  // context x n_head_kv * head_dim_v: the same for values
};

// out (n x w.rows) = in (n x w.cols) · Wᵀ
void Linear(const TensorView& w, const float* in, int32_t n, float* out, kernels::ThreadPool* pool);
// rows (n x w.cols) += bias
void AddBias(float* rows, const TensorView& bias, int32_t n);
// out[r] = rmsnorm(in[r]) * w for each of n rows of w.cols values; in and out may alias.
void NormRows(const float* in, const TensorView& w, int32_t n, float eps, float* out);
// In-place RMSNorm of every head vector (head_dim = w.cols) of n rows of n_heads heads.
void NormHeads(float* rows, const TensorView& w, int32_t n, int32_t n_heads, float eps);
// x (n x width) += y
void AddRows(float* x, const float* y, int32_t n, int64_t width);

// Fills cos/sin tables (n x rope_dim/2) for positions first_position.. as ggml computes them:
// theta_i = position * freq_scale * base^(-2i/rope_dim) / freq_factor_i, iterated in float.
void RopeTables(const ModelConfig& c, float base, float freq_scale, const float* freq_factors,
                int32_t first_position, int32_t n, float* cos_out, float* sin_out);
// Rotates the first rope_dim dims of each head (n rows of n_heads heads of head_dim).
void ApplyRope(const LayerContext& ctx, float* rows, int32_t n_heads);

// Writes this batch's keys and values (already roped) into the cache, then computes causal
// (optionally sliding-window) attention of q against the cache into `out`
// (n x n_head * head_dim_v). `scale` multiplies q·k. The keys and values the batch can see are
// converted from f16 once into s.keys / s.values and shared by every query row and head.
void Attention(const LayerContext& ctx, const LayerScratch& s, const float* q, const float* k,
               const float* v, float scale, float* out);

// out = act(gate) * up, in place on gate.
void GatedActivation(const ModelConfig& c, float* gate, const float* up, int32_t n);

}  // namespace exo::runtime::internal

#endif  // EXO_RUNTIME_INTERNAL_TRANSFORMER_BLOCKS_H_
