#include "runtime/internal/transformer_blocks.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "kernels/attention.h"
#include "kernels/ops.h"
#include "kernels/quants.h"

namespace exo::runtime::internal {

void Linear(const TensorView& w, const float* in, int32_t n, float* out,
            kernels::ThreadPool* pool) {
  kernels::MatMul(w.type, w.data, w.rows, w.cols, in, n, out, pool);
}

void AddBias(float* rows, const TensorView& bias, int32_t n) {
  for (int32_t r = 0; r < n; ++r) kernels::Add(rows + r * bias.cols, bias.f32(), bias.cols);
}

void NormRows(const float* in, const TensorView& w, int32_t n, float eps, float* out) {
  for (int32_t r = 0; r < n; ++r) {
    kernels::RmsNorm(in + r * w.cols, w.f32(), out + r * w.cols, w.cols, eps);
  }
}

void NormHeads(float* rows, const TensorView& w, int32_t n, int32_t n_heads, float eps) {
  for (int64_t h = 0; h < int64_t{n} * n_heads; ++h) {
    float* head = rows + h * w.cols;
    kernels::RmsNorm(head, w.f32(), head, w.cols, eps);
  }
}

void AddRows(float* x, const float* y, int32_t n, int64_t width) { kernels::Add(x, y, n * width); }

void RopeTables(const ModelConfig& c, float base, float freq_scale, const float* freq_factors,
                int32_t first_position, int32_t n, float* cos_out, float* sin_out) {
  const int32_t pairs = c.rope_dim / 2;
  const float theta_scale = std::pow(base, -2.0f / static_cast<float>(c.rope_dim));
  for (int32_t r = 0; r < n; ++r) {
    float theta = static_cast<float>(first_position + r);
    for (int32_t i = 0; i < pairs; ++i) {
      const float factor = freq_factors != nullptr ? freq_factors[i] : 1.0f;
      const float angle = freq_scale * (theta / factor);
      cos_out[r * pairs + i] = std::cos(angle);
      sin_out[r * pairs + i] = std::sin(angle);
      theta *= theta_scale;
    }
  }
}

void ApplyRope(const LayerContext& ctx, float* rows, int32_t n_heads) {
  const ModelConfig& c = *ctx.config;
  const int32_t pairs = c.rope_dim / 2;
  for (int32_t r = 0; r < ctx.n; ++r) {
    const float* cs = ctx.rope_cos + r * pairs;
    const float* sn = ctx.rope_sin + r * pairs;
    for (int32_t h = 0; h < n_heads; ++h) {
      float* x = rows + (int64_t{r} * n_heads + h) * c.head_dim;
      for (int32_t i = 0; i < pairs; ++i) {
        // Normal style rotates adjacent pairs (2i, 2i+1); NeoX rotates (i, i + rope_dim/2).
        const int32_t a = c.rope_style == kernels::RopeStyle::kNormal ? 2 * i : i;
        const int32_t b = c.rope_style == kernels::RopeStyle::kNormal ? 2 * i + 1 : i + pairs;
        const float x0 = x[a];
        const float x1 = x[b];
        x[a] = x0 * cs[i] - x1 * sn[i];
        x[b] = x0 * sn[i] + x1 * cs[i];
      }
    }
  }
}

namespace {

void ParallelOrInline(kernels::ThreadPool* pool, int64_t count, int64_t grain,
                      const std::function<void(int64_t, int64_t)>& fn) {
  if (pool != nullptr) {
    pool->ParallelFor(count, grain, fn);
  } else {
    fn(0, count);
  }
}

// The cached keys and values the row at `position` of the sequence in `slot` sees through kv head
// `kv_head`, read in place: positions [lo, position], lo = position - window + 1 on
// sliding-window layers.
kernels::AttentionKeys VisibleKeys(const LayerContext& ctx, int32_t slot, int32_t position,
                                   int32_t kv_head) {
  const ModelConfig& c = *ctx.config;
  const bool sliding = c.sliding_window > 0 && c.layer_is_swa[ctx.layer];
  const int32_t lo = sliding ? std::max(0, position - c.sliding_window + 1) : 0;
  kernels::AttentionKeys keys;
  keys.keys = ctx.kv->KeyBlocks(slot, ctx.local_layer, kv_head);
  keys.values = ctx.kv->ValueRows(slot, ctx.local_layer) + int64_t{kv_head} * c.head_dim_v;
  keys.ld_values = c.n_embd_v_gqa();
  keys.first_row = ctx.kv->Row(ctx.local_layer, lo);
  keys.rows = ctx.kv->capacity(ctx.local_layer);  // >= window + max_batch - 1 or context
  keys.n_keys = position - lo + 1;
  return keys;
}

}  // namespace

void Attention(const LayerContext& ctx, const float* q, const float* k, const float* v, float scale,
               float* out) {
  const ModelConfig& c = *ctx.config;
  const int32_t k_width = c.n_embd_k_gqa();
  const int32_t v_width = c.n_embd_v_gqa();
  // 1. Append this batch's keys and values to each sequence's cache (f16, as llama.cpp stores
  // them).
  for (int32_t i = 0; i < ctx.n_sequences; ++i) {
    const SequenceRows& seq = ctx.sequences[i];
    for (int32_t r = 0; r < seq.n; ++r) {
      const int64_t row = seq.row_begin + r;
      ctx.kv->Write(seq.slot, ctx.local_layer, seq.first_position + r, k + row * k_width,
                    v + row * v_width);
    }
  }
  // 2. Every row of the batch, from the cache in place: one job per (row, kv head) with all the
  // query heads sharing it (each key and value is loaded once for them), or per (row, query
  // head) when that is the only way to give every thread work (a lone decode row of a model with
  // one kv head). Each head's arithmetic is the same either way, so a row's result does not
  // depend on its batch.
  const int32_t group = c.n_head / c.n_head_kv;
  const int threads = ctx.pool != nullptr ? ctx.pool->num_threads() : 1;
  const int32_t heads_per_job = int64_t{ctx.n} * c.n_head_kv >= threads ? group : 1;
  const int32_t jobs_per_row = c.n_head / heads_per_job;
  const int32_t hd = c.head_dim;
  const int32_t hdv = c.head_dim_v;
  ParallelOrInline(ctx.pool, int64_t{ctx.n} * jobs_per_row, 1, [&](int64_t begin, int64_t end) {
    for (int64_t job = begin; job < end; ++job) {
      const int32_t row = static_cast<int32_t>(job / jobs_per_row);
      const int32_t h = static_cast<int32_t>(job % jobs_per_row) * heads_per_job;
      const SequenceRows& seq = ctx.sequences[ctx.row_sequence[row]];
      const kernels::AttentionKeys keys =
          VisibleKeys(ctx, seq.slot, seq.first_position + (row - seq.row_begin), h / group);
      const int64_t first_head = int64_t{row} * c.n_head + h;
      kernels::AttendHeads(q + first_head * hd, heads_per_job, hd, keys, hdv, scale,
                           out + first_head * hdv);
    }
  });
}

void GatedActivation(const ModelConfig& c, float* gate, const float* up, int32_t n) {
  const int64_t count = int64_t{n} * c.n_ff;
  if (c.activation == FeedForwardActivation::kGeluTanh) {
    kernels::GeluTanhMul(gate, up, count);
  } else {
    kernels::SiluMul(gate, up, count);
  }
}

}  // namespace exo::runtime::internal
