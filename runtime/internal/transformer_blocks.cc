#include "runtime/internal/transformer_blocks.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "absl/types/span.h"
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

// Adds one key/value position to an online softmax: `score` is q·k already scaled; `acc` holds the
// running weighted sum of values, rescaled whenever a new maximum appears.
inline void OnlineSoftmaxStep(float score, const float* value, int32_t hdv, float* acc,
                              float& running_max, float& running_sum) {
  if (score > running_max) {
    const float rescale = std::exp(running_max - score);
    running_sum *= rescale;
    for (int32_t i = 0; i < hdv; ++i) acc[i] *= rescale;
    running_max = score;
  }
  const float weight = std::exp(score - running_max);
  running_sum += weight;
  for (int32_t i = 0; i < hdv; ++i) acc[i] += weight * value[i];
}

// q·k with eight running sums (so the compiler can keep them in one vector register), added up in
// a fixed order: every attention path uses this, so a row's scores never depend on its batch.
// q·k, summed in order. Every attention path uses this, so a row's scores never depend on its
// batch. (Eight partial sums were tried: no more exact, but the different rounding moved the
// Gemma 3 logits far enough from llama.cpp's to fail the reference comparison on one prompt,
// cosine 0.9933 against the 0.995 bound; see docs/ARCHITECTURE.md, Numerics.)
inline float Dot(const float* a, const float* b, int32_t n) {
  float sum = 0.0f;
  for (int32_t i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

void ParallelOrInline(kernels::ThreadPool* pool, int64_t count, int64_t grain,
                      const std::function<void(int64_t, int64_t)>& fn) {
  if (pool != nullptr) {
    pool->ParallelFor(count, grain, fn);
  } else {
    fn(0, count);
  }
}

// A sequence with several rows (prefill, speculative verification): convert every position some
// row can see to f32 once, then one job per (row, head).
void AttendRows(const LayerContext& ctx, const LayerScratch& s, const SequenceRows& seq,
                const float* q, float scale, float* out) {
  const ModelConfig& c = *ctx.config;
  const int32_t k_width = c.n_embd_k_gqa();
  const int32_t v_width = c.n_embd_v_gqa();
  const bool sliding = c.sliding_window > 0 && c.layer_is_swa[ctx.layer];
  const int32_t group = c.n_head / c.n_head_kv;
  const int32_t hd = c.head_dim;
  const int32_t hdv = c.head_dim_v;
  // Row r at position p sees keys [lo(p), p], lo(p) = p - window + 1 on sliding-window layers.
  const int32_t last = seq.first_position + seq.n - 1;
  const int32_t first_visible =
      sliding ? std::max(0, seq.first_position - c.sliding_window + 1) : 0;
  const int32_t visible = last - first_visible + 1;
  ParallelOrInline(ctx.pool, visible, 64, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int32_t p = first_visible + static_cast<int32_t>(i);
      kernels::DequantizeRow(kernels::TensorType::kF16, ctx.kv->Key(seq.slot, ctx.local_layer, p),
                             s.keys + i * k_width, k_width);
      kernels::DequantizeRow(kernels::TensorType::kF16, ctx.kv->Value(seq.slot, ctx.local_layer, p),
                             s.values + i * v_width, v_width);
    }
  });
  ParallelOrInline(ctx.pool, int64_t{seq.n} * c.n_head, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> acc;
    acc.resize(hdv);
    for (int64_t job = begin; job < end; ++job) {
      const int32_t r = static_cast<int32_t>(job / c.n_head);
      const int32_t h = static_cast<int32_t>(job % c.n_head);
      const int32_t kv_head = h / group;
      const int32_t pos = seq.first_position + r;
      const int32_t lo = sliding ? std::max(0, pos - c.sliding_window + 1) : 0;
      const float* qh = q + (int64_t{seq.row_begin + r} * c.n_head + h) * hd;
      std::fill(acc.begin(), acc.end(), 0.0f);
      float running_max = -std::numeric_limits<float>::infinity();
      float running_sum = 0.0f;
      for (int32_t p = lo; p <= pos; ++p) {
        const float* key = s.keys + int64_t{p - first_visible} * k_width + kv_head * hd;
        const float* value = s.values + int64_t{p - first_visible} * v_width + kv_head * hdv;
        OnlineSoftmaxStep(Dot(qh, key, hd) * scale, value, hdv, acc.data(), running_max,
                          running_sum);
      }
      float* o = out + (int64_t{seq.row_begin + r} * c.n_head + h) * hdv;
      const float inv = 1.0f / running_sum;
      for (int32_t i = 0; i < hdv; ++i) o[i] = acc[i] * inv;
    }
  });
}

// Every single-row sequence of the batch (decode), together: one job per (sequence, head), each
// converting the cached rows of its kv head from f16 as it goes (no shared scratch, so any number
// of sequences run in one parallel pass).
void AttendSingleRows(const LayerContext& ctx, absl::Span<const int32_t> singles, const float* q,
                      float scale, float* out) {
  const ModelConfig& c = *ctx.config;
  const bool sliding = c.sliding_window > 0 && c.layer_is_swa[ctx.layer];
  const int32_t group = c.n_head / c.n_head_kv;
  const int32_t hd = c.head_dim;
  const int32_t hdv = c.head_dim_v;
  const int64_t jobs = static_cast<int64_t>(singles.size()) * c.n_head;
  ParallelOrInline(ctx.pool, jobs, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> key, value, acc;
    key.resize(hd);
    value.resize(hdv);
    acc.resize(hdv);
    for (int64_t job = begin; job < end; ++job) {
      const SequenceRows& seq = ctx.sequences[singles[job / c.n_head]];
      const int32_t h = static_cast<int32_t>(job % c.n_head);
      const int32_t kv_head = h / group;
      const int32_t pos = seq.first_position;
      const int32_t lo = sliding ? std::max(0, pos - c.sliding_window + 1) : 0;
      const float* qh = q + (int64_t{seq.row_begin} * c.n_head + h) * hd;
      std::fill(acc.begin(), acc.end(), 0.0f);
      float running_max = -std::numeric_limits<float>::infinity();
      float running_sum = 0.0f;
      for (int32_t p = lo; p <= pos; ++p) {
        kernels::DequantizeRow(kernels::TensorType::kF16,
                               ctx.kv->Key(seq.slot, ctx.local_layer, p) + int64_t{kv_head} * hd,
                               key.data(), hd);
        kernels::DequantizeRow(kernels::TensorType::kF16,
                               ctx.kv->Value(seq.slot, ctx.local_layer, p) + int64_t{kv_head} * hdv,
                               value.data(), hdv);
        OnlineSoftmaxStep(Dot(qh, key.data(), hd) * scale, value.data(), hdv, acc.data(),
                          running_max, running_sum);
      }
      float* o = out + (int64_t{seq.row_begin} * c.n_head + h) * hdv;
      const float inv = 1.0f / running_sum;
      for (int32_t i = 0; i < hdv; ++i) o[i] = acc[i] * inv;
    }
  });
}

}  // namespace

void Attention(const LayerContext& ctx, const LayerScratch& s, const float* q, const float* k,
               const float* v, float scale, float* out) {
  const ModelConfig& c = *ctx.config;
  const int32_t k_width = c.n_embd_k_gqa();
  const int32_t v_width = c.n_embd_v_gqa();
  // 1. Append this batch's keys and values to each sequence's cache (f16, as llama.cpp stores
  // them).
  for (int32_t i = 0; i < ctx.n_sequences; ++i) {
    const SequenceRows& seq = ctx.sequences[i];
    for (int32_t r = 0; r < seq.n; ++r) {
      const int64_t row = seq.row_begin + r;
      const int32_t pos = seq.first_position + r;
      kernels::QuantizeRow(kernels::TensorType::kF16, k + row * k_width,
                           ctx.kv->Key(seq.slot, ctx.local_layer, pos), k_width);
      kernels::QuantizeRow(kernels::TensorType::kF16, v + row * v_width,
                           ctx.kv->Value(seq.slot, ctx.local_layer, pos), v_width);
    }
  }
  // 2. Sequences with several rows one at a time; single-row sequences all together.
  for (int32_t i = 0; i < ctx.n_sequences; ++i) {
    if (ctx.sequences[i].n > 1) AttendRows(ctx, s, ctx.sequences[i], q, scale, out);
  }
  if (ctx.n_single_row_sequences > 0) {
    AttendSingleRows(
        ctx, absl::Span<const int32_t>(ctx.single_row_sequences, ctx.n_single_row_sequences), q,
        scale, out);
  }
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
