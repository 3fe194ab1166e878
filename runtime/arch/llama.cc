#include "runtime/arch/layers.h"

namespace exo::runtime::arch {

using namespace internal;  // NOLINT: the blocks are this file's vocabulary

void LlamaLayer(const LayerContext& ctx, const LayerWeights& w, const LayerScratch& s, float* x) {
  const ModelConfig& c = *ctx.config;
  const int32_t n = ctx.n;

  // 1. attention input norm
  NormRows(x, w.attn_norm, n, c.rms_eps, s.norm);
  // 2. q, k, v projections (+ biases for qwen2)
  Linear(w.wq, s.norm, n, s.q, ctx.pool);
  Linear(w.wk, s.norm, n, s.k, ctx.pool);
  Linear(w.wv, s.norm, n, s.v, ctx.pool);
  if (c.has_qkv_bias) {
    AddBias(s.q, w.bq, n);
    AddBias(s.k, w.bk, n);
    AddBias(s.v, w.bv, n);
  }
  // 3. rotary position embedding on q and k
  ApplyRope(ctx, s.q, c.n_head);
  ApplyRope(ctx, s.k, c.n_head_kv);
  // 4. causal attention over the cache, then the output projection and the residual
  Attention(ctx, s.q, s.k, s.v, c.attention_scale, s.attn);
  Linear(w.wo, s.attn, n, s.proj, ctx.pool);
  AddRows(x, s.proj, n, c.n_embd);
  // 5. feed-forward: norm, SwiGLU, down projection, residual
  NormRows(x, w.ffn_norm, n, c.rms_eps, s.norm);
  Linear(w.ffn_gate, s.norm, n, s.gate, ctx.pool);
  Linear(w.ffn_up, s.norm, n, s.up, ctx.pool);
  GatedActivation(c, s.gate, s.up, n);
  Linear(w.ffn_down, s.gate, n, s.proj, ctx.pool);
  AddRows(x, s.proj, n, c.n_embd);
}

}  // namespace exo::runtime::arch
