#include "runtime/internal/transformer_blocks.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

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

void Attention(const LayerContext& ctx, const LayerScratch& s, const float* q, const float* k,
               const float* v, float scale, float* out) {
  const ModelConfig& c = *ctx.config;
  const int32_t k_width = c.n_embd_k_gqa();
  const int32_t v_width = c.n_embd_v_gqa();
  // 1. Append this batch's keys and values to the cache (f16, as llama.cpp stores them).
  for (int32_t r = 0; r < ctx.n; ++r) {
    const int32_t pos = ctx.first_position + r;
    kernels::QuantizeRow(kernels::TensorType::kF16, k + int64_t{r} * k_width,
                         ctx.kv->Key(ctx.slot, ctx.local_layer, pos), k_width);
    kernels::QuantizeRow(kernels::TensorType::kF16, v + int64_t{r} * v_width,
                         ctx.kv->Value(ctx.slot, ctx.local_layer, pos), v_width);
  }
  const bool sliding = c.sliding_window > 0 && c.layer_is_swa[ctx.layer];
  const int32_t group = c.n_head / c.n_head_kv;
  const int32_t hd = c.head_dim;
  const int32_t hdv = c.head_dim_v;

  // 2. Convert every position some row of the batch can see to f32, once. Row r at position p
  // sees keys [lo(p), p], lo(p) = p - window + 1 on sliding-window layers, else 0.
  const int32_t last = ctx.first_position + ctx.n - 1;
  const int32_t first_visible =
      sliding ? std::max(0, ctx.first_position - c.sliding_window + 1) : 0;
  const int32_t visible = last - first_visible + 1;
  auto convert = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int32_t p = first_visible + static_cast<int32_t>(i);
      kernels::DequantizeRow(kernels::TensorType::kF16, ctx.kv->Key(ctx.slot, ctx.local_layer, p),
                             s.keys + i * k_width, k_width);
      kernels::DequantizeRow(kernels::TensorType::kF16, ctx.kv->Value(ctx.slot, ctx.local_layer, p),
                             s.values + i * v_width, v_width);
    }
  };
  if (ctx.pool != nullptr) {
    ctx.pool->ParallelFor(visible, 64, convert);
  } else {
    convert(0, visible);
  }

  // 3. For every (row, head): online-softmax attention over the visible keys.
  auto work = [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> acc;
    acc.resize(hdv);
    for (int64_t job = begin; job < end; ++job) {
      const int32_t r = static_cast<int32_t>(job / c.n_head);
      const int32_t h = static_cast<int32_t>(job % c.n_head);
      const int32_t kv_head = h / group;
      const int32_t pos = ctx.first_position + r;
      const int32_t lo = sliding ? std::max(0, pos - c.sliding_window + 1) : 0;
      const float* qh = q + (int64_t{r} * c.n_head + h) * hd;
      std::fill(acc.begin(), acc.end(), 0.0f);
      float running_max = -std::numeric_limits<float>::infinity();
      float running_sum = 0.0f;
      for (int32_t p = lo; p <= pos; ++p) {
        const float* key = s.keys + int64_t{p - first_visible} * k_width + kv_head * hd;
        const float* value = s.values + int64_t{p - first_visible} * v_width + kv_head * hdv;
        float score = 0.0f;
        for (int32_t i = 0; i < hd; ++i) score += qh[i] * key[i];
        score *= scale;
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
      float* o = out + (int64_t{r} * c.n_head + h) * hdv;
      const float inv = 1.0f / running_sum;
      for (int32_t i = 0; i < hdv; ++i) o[i] = acc[i] * inv;
    }
  };
  const int64_t jobs = int64_t{ctx.n} * c.n_head;
  if (ctx.pool != nullptr) {
    ctx.pool->ParallelFor(jobs, 1, work);
  } else {
    work(0, jobs);
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
