#include "runtime/arch/layers.h"

namespace exo::runtime::arch {

using namespace internal;  // NOLINT: the blocks are this file's vocabulary

void Gemma3Layer(const LayerContext& ctx, const LayerWeights& w, const LayerScratch& s, float* x) {
  const ModelConfig& c = *ctx.config;
  const int32_t n = ctx.n;

  // 1. attention input norm (the GGUF stores Gemma's (1 + w) norm weights already added)
  NormRows(x, w.attn_norm, n, c.rms_eps, s.norm);
  // 2. q, k, v projections
  Linear(w.wq, s.norm, n, s.q, ctx.pool);
  Linear(w.wk, s.norm, n, s.k, ctx.pool);
  Linear(w.wv, s.norm, n, s.v, ctx.pool);
  // 3. QK-norm: RMSNorm of every query and key head
  NormHeads(s.q, w.q_norm, n, c.n_head, c.rms_eps);
  NormHeads(s.k, w.k_norm, n, c.n_head_kv, c.rms_eps);
  // 4. rotary embedding (NeoX; the base depends on whether this layer slides, see Stage)
  ApplyRope(ctx, s.q, c.n_head);
  ApplyRope(ctx, s.k, c.n_head_kv);
  // 5. attention (sliding window on most layers), output projection, post-attention norm
  Attention(ctx, s.q, s.k, s.v, c.attention_scale, s.attn);
  Linear(w.wo, s.attn, n, s.proj, ctx.pool);
  NormRows(s.proj, w.post_attention_norm, n, c.rms_eps, s.proj);
  AddRows(x, s.proj, n, c.n_embd);
  // 6. feed-forward: norm, GELU(tanh)-gated, down projection, post-FFN norm, residual
  NormRows(x, w.ffn_norm, n, c.rms_eps, s.norm);
  Linear(w.ffn_gate, s.norm, n, s.gate, ctx.pool);
  Linear(w.ffn_up, s.norm, n, s.up, ctx.pool);
  GatedActivation(c, s.gate, s.up, n);
  Linear(w.ffn_down, s.gate, n, s.proj, ctx.pool);
  NormRows(s.proj, w.post_ffw_norm, n, c.rms_eps, s.proj);
  AddRows(x, s.proj, n, c.n_embd);
}

}  // namespace exo::runtime::arch
