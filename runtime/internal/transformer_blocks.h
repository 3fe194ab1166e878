// Shared building blocks of every architecture's layer: linear maps, norms, rotary embedding and
// attention over the KV cache. Each works on a batch of `n` token rows.
#ifndef EXO_RUNTIME_INTERNAL_TRANSFORMER_BLOCKS_H_
#define EXO_RUNTIME_INTERNAL_TRANSFORMER_BLOCKS_H_

#include <cstdint>

#include "kernels/thread_pool.h"
#include "runtime/batch.h"
#include "runtime/kv_cache.h"
#include "runtime/model_config.h"
#include "runtime/weights.h"

namespace exo::runtime::internal {

// Everything one layer needs to know about the batch it runs on. A batch holds rows of one or
// more sequences (distinct slots); matrices, norms and RoPE treat rows alike, attention keeps each
// sequence to its own cache.
struct LayerContext {
  const ModelConfig* config;
  int32_t layer;        // global layer index
  int32_t local_layer;  // index inside the stage (KV cache layer)
  const SequenceRows* sequences;
  int32_t n_sequences;
  const int32_t* row_sequence;  // n entries: the index into `sequences` of each row
  int32_t n;                    // rows in the batch (sum of the sequences' rows)
  KvCache* kv;
  kernels::ThreadPool* pool;
  const float* rope_cos;  // n x rope_dim/2, for this layer's RoPE base, at each row's position
  const float* rope_sin;
};

// Scratch rows, each sized for the stage's max batch.
struct LayerScratch {
  float* norm;  // n x n_embd
  float* q;     // n x n_head * head_dim
  float* k;     // n x n_head_kv * head_dim
  float* v;     // n x n_head_kv * head_dim_v
  float* attn;  // n x n_head * head_dim_v
  float* proj;  // n x n_embd
  float* gate;  // n x n_ff
  float* up;    // n x n_ff
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

// Writes this batch's keys and values (already roped) into each sequence's cache, then computes
// causal (optionally sliding-window) attention of q against that cache into `out`
// (n x n_head * head_dim_v), with an online softmax. `scale` multiplies q·k. The kernels read the
// f16 cache in place (no conversion pass): one job per (row, kv head) for every row of the batch,
// or per (row, query head) when there are fewer of those than threads (a lone decode row). Every
// way does the same arithmetic in the same order (kernels::AttendHeads), so a row's result does
// not depend on its batch.
void Attention(const LayerContext& ctx, const float* q, const float* k, const float* v, float scale,
               float* out);

// out = act(gate) * up, in place on gate.
void GatedActivation(const ModelConfig& c, float* gate, const float* up, int32_t n);

}  // namespace exo::runtime::internal

#endif  // EXO_RUNTIME_INTERNAL_TRANSFORMER_BLOCKS_H_
