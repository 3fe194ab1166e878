#include "runtime/internal/transformer_blocks.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "absl/types/span.h"
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

// Cached keys (f16) of positions [first, first + n) of one kv head into keys_t (head_dim rows of
// `ld` floats, transposed as kernels::AttentionKeys wants), starting at column `column`. Eight
// positions at a time: converted into `rows` (8 x head_dim scratch), then written as runs of 8
// consecutive floats per dimension rather than one float per row of keys_t.
void TransposeKeys(const LayerContext& ctx, int32_t slot, int32_t first, int32_t n, int32_t kv_head,
                   float* keys_t, int64_t ld, int64_t column, float* rows) {
  constexpr int32_t kBlock = 8;
  const int32_t hd = ctx.config->head_dim;
  for (int32_t i0 = 0; i0 < n; i0 += kBlock) {
    const int32_t count = std::min(kBlock, n - i0);
    for (int32_t j = 0; j < count; ++j) {
      kernels::DequantizeRow(
          kernels::TensorType::kF16,
          ctx.kv->Key(slot, ctx.local_layer, first + i0 + j) + int64_t{kv_head} * hd,
          rows + int64_t{j} * hd, hd);
    }
    float* dst = keys_t + column + i0;
    for (int32_t d = 0; d < hd; ++d) {
      for (int32_t j = 0; j < count; ++j) dst[d * ld + j] = rows[int64_t{j} * hd + d];
    }
  }
}

// One sequence's rows (prefill, speculative verification, or a decode row when there are few):
// convert every position some row can see to f32 once (keys transposed per kv head), then attend,
// one job per (row, kv head) or per (row, query head).
void AttendRows(const LayerContext& ctx, const LayerScratch& s, const SequenceRows& seq,
                const float* q, float scale, float* out) {
  const ModelConfig& c = *ctx.config;
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
  // s.keys: kv head h's keys at s.keys + h * hd * visible, element d of position p at
  // [d * visible + p - first_visible].
  const int64_t head_keys = int64_t{hd} * visible;
  // One pass over runs of positions converts their keys (every kv head) and values.
  ParallelOrInline(ctx.pool, visible, 32, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> rows;
    rows.resize(size_t(8) * hd);
    const int32_t count = static_cast<int32_t>(end - begin);
    for (int32_t kv_head = 0; kv_head < c.n_head_kv; ++kv_head) {
      TransposeKeys(ctx, seq.slot, first_visible + static_cast<int32_t>(begin), count, kv_head,
                    s.keys + kv_head * head_keys, visible, begin, rows.data());
    }
    for (int64_t i = begin; i < end; ++i) {
      const int32_t p = first_visible + static_cast<int32_t>(i);
      kernels::DequantizeRow(kernels::TensorType::kF16, ctx.kv->Value(seq.slot, ctx.local_layer, p),
                             s.values + i * v_width, v_width);
    }
  });
  // One job per (row, kv head) with all the query heads sharing it; per (row, query head) when
  // that is the only way to give every thread work (a decode row of a model with one kv head).
  // Each head's arithmetic is the same either way.
  const int threads = ctx.pool != nullptr ? ctx.pool->num_threads() : 1;
  const int32_t heads_per_job = int64_t{seq.n} * c.n_head_kv >= threads ? group : 1;
  const int32_t jobs_per_row = c.n_head / heads_per_job;
  ParallelOrInline(ctx.pool, int64_t{seq.n} * jobs_per_row, 1, [&](int64_t begin, int64_t end) {
    for (int64_t job = begin; job < end; ++job) {
      const int32_t r = static_cast<int32_t>(job / jobs_per_row);
      const int32_t h = static_cast<int32_t>(job % jobs_per_row) * heads_per_job;
      const int32_t kv_head = h / group;
      const int32_t pos = seq.first_position + r;
      const int32_t lo = sliding ? std::max(0, pos - c.sliding_window + 1) : 0;
      const int64_t first_head = int64_t{seq.row_begin + r} * c.n_head + h;
      kernels::AttentionKeys keys;
      keys.keys_t = s.keys + kv_head * head_keys + (lo - first_visible);
      keys.ld_keys = visible;
      keys.values = s.values + int64_t{lo - first_visible} * v_width + int64_t{kv_head} * hdv;
      keys.ld_values = v_width;
      keys.n_keys = pos - lo + 1;
      kernels::AttendHeads(q + first_head * hd, heads_per_job, hd, keys, hdv, scale,
                           out + first_head * hdv);
    }
  });
}

// Single-row sequences (decode), together: one job per (sequence, kv head) with all the query
// heads sharing it, each converting its cached rows from f16 into its own scratch (no shared
// scratch, so any number of sequences run in one parallel pass). Attention() uses this when
// there are at least as many such jobs as threads; fewer sequences go through AttendRows one at
// a time, which converts a sequence's rows once, in parallel, and can split the heads.
void AttendSingleRows(const LayerContext& ctx, absl::Span<const int32_t> singles, const float* q,
                      float scale, float* out) {
  const ModelConfig& c = *ctx.config;
  const bool sliding = c.sliding_window > 0 && c.layer_is_swa[ctx.layer];
  const int32_t group = c.n_head / c.n_head_kv;
  const int32_t hd = c.head_dim;
  const int32_t hdv = c.head_dim_v;
  const int64_t jobs = static_cast<int64_t>(singles.size()) * c.n_head_kv;
  ParallelOrInline(ctx.pool, jobs, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> keys_t, values, rows;
    for (int64_t job = begin; job < end; ++job) {
      const SequenceRows& seq = ctx.sequences[singles[job / c.n_head_kv]];
      const int32_t kv_head = static_cast<int32_t>(job % c.n_head_kv);
      const int32_t pos = seq.first_position;
      const int32_t lo = sliding ? std::max(0, pos - c.sliding_window + 1) : 0;
      const int32_t n = pos - lo + 1;
      keys_t.resize(size_t(hd) * n);
      values.resize(size_t(hdv) * n);
      rows.resize(size_t(8) * hd);
      TransposeKeys(ctx, seq.slot, lo, n, kv_head, keys_t.data(), n, 0, rows.data());
      for (int32_t i = 0; i < n; ++i) {
        kernels::DequantizeRow(
            kernels::TensorType::kF16,
            ctx.kv->Value(seq.slot, ctx.local_layer, lo + i) + int64_t{kv_head} * hdv,
            values.data() + int64_t{i} * hdv, hdv);
      }
      const int64_t head = int64_t{seq.row_begin} * c.n_head + int64_t{kv_head} * group;
      kernels::AttentionKeys keys{keys_t.data(), n, values.data(), hdv, n};
      kernels::AttendHeads(q + head * hd, group, hd, keys, hdv, scale, out + head * hdv);
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
  // 2. Sequences with several rows one at a time; single-row sequences all together when they
  // give every thread a job, else one at a time too (sharing each one's conversion).
  for (int32_t i = 0; i < ctx.n_sequences; ++i) {
    if (ctx.sequences[i].n > 1) AttendRows(ctx, s, ctx.sequences[i], q, scale, out);
  }
  const int threads = ctx.pool != nullptr ? ctx.pool->num_threads() : 1;
  if (int64_t{ctx.n_single_row_sequences} * c.n_head_kv >= threads) {
    AttendSingleRows(
        ctx, absl::Span<const int32_t>(ctx.single_row_sequences, ctx.n_single_row_sequences), q,
        scale, out);
  } else {
    for (int32_t i = 0; i < ctx.n_single_row_sequences; ++i) {
      AttendRows(ctx, s, ctx.sequences[ctx.single_row_sequences[i]], q, scale, out);
    }
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
