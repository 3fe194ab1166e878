#include "kernels/ops.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernels/internal/gemv.h"
#include "kernels/internal/quants_impl.h"
#include "kernels/quants.h"

namespace exo::kernels {
namespace {

// Rows per ParallelFor grain and tokens per inner tile of the prefill loop.
constexpr int64_t kRowGrain = 16;
constexpr int64_t kTokenTile = 16;
// Weight rows the GEMM path keeps hot while every token group passes over them.
constexpr int64_t kGemmRowBlock = 32;
// Below this many multiply-adds (~10 us on one core) handing work to the pool costs about as
// much as it saves (a ParallelFor round trip measured ~10-15 us on a busy 2-core machine).
constexpr int64_t kMinParallelWork = 1 << 18;

// Activation scratch of the calling thread; grows to the largest request and is then reused.
uint8_t* ActivationScratch(size_t bytes) {
  thread_local std::vector<uint8_t> scratch;
  if (scratch.size() < bytes) scratch.resize(bytes);
  return scratch.data();
}

// Transposed token groups of the GEMM kernels, as ActivationScratch (64-byte aligned:
// whole-register loads).
uint8_t* GroupScratch(size_t bytes) {
  struct alignas(64) Line {
    uint8_t bytes[64];
  };
  thread_local std::vector<Line> scratch;
  if (scratch.size() * sizeof(Line) < bytes)
    scratch.resize((bytes + sizeof(Line) - 1) / sizeof(Line));
  return scratch.data()->bytes;
}

void RunParallel(ThreadPool* pool, int64_t n, int64_t grain, int64_t work,
                 const std::function<void(int64_t, int64_t)>& fn) {
  if (pool == nullptr || pool->num_threads() == 1 || work < kMinParallelWork) {
    fn(0, n);
  } else {
    pool->ParallelFor(n, grain, fn);
  }
}

}  // namespace

namespace {

// Everything a MatMul worker needs, so that the ParallelFor lambdas capture one pointer and fit
// std::function's inline storage (no allocation per call).
struct MatMulJob {
  TensorType act_type;
  internal::VecDotFn dot;
  internal::VecDotMultiFn dot_multi;       // nullptr: only the single-token dot
  internal::GemvRowsFn gemv = nullptr;     // one token: kGemvRows rows at once (nullptr: none)
  uint8_t* gemv_prepared = nullptr;        // `gemv`'s activation-side data (PrepareGemv)
  internal::Gemm32RowFn gemm32 = nullptr;  // nullptr: no 16-token kernel (32-element types)
  internal::GemmKRowFn gemmk = nullptr;    // nullptr: no 16-token kernel (K-quants)
  TensorType type;
  const uint8_t* weights;
  int64_t weight_row_bytes;
  int64_t rows;
  int64_t cols;
  const float* x;
  uint8_t* act_scratch = nullptr;
  const uint8_t* act;
  int64_t act_row_bytes;
  int64_t act_blocks = 0;  // blocks per activation row
  int64_t n;
  uint8_t* group_act = nullptr;  // `gemm32` / `gemmk` groups of kGemm32Tokens tokens
  int64_t group_bytes = 0;
  float* y;

  void QuantizeActivations(int64_t begin, int64_t end) const {
    for (int64_t t = begin; t < end; ++t) {
      uint8_t* row = act_scratch + t * act_row_bytes;
      QuantizeRow(act_type, x + t * cols, row, cols);
      if (gemm32 != nullptr || gemmk != nullptr) PackGroupToken(t, row);
    }
  }

  // Token t into its gemm32 / gemmk group; the last token also writes the zero tokens that pad
  // the last group.
  void PackGroupToken(int64_t t, const uint8_t* row) const {
    constexpr int64_t kG = internal::kGemm32Tokens;
    uint8_t* group = group_act + (t / kG) * group_bytes;
    const int k = static_cast<int>(t % kG);
    if (gemmk != nullptr) {
      internal::PackGemmKToken(row, act_blocks, k, group);
    } else {
      internal::PackGemm32Token(type, row, act_blocks, k, group);
    }
    if (t + 1 == n) {
      for (int pad = static_cast<int>(n % kG); pad != 0 && pad < kG; ++pad) {
        if (gemmk != nullptr) {
          internal::PadGemmKToken(act_blocks, pad, group);
        } else {
          internal::PadGemm32Token(act_blocks, pad, group);
        }
      }
    }
  }

  // Weight rows [row_begin, row_end) against every token, in groups of kGemm32Tokens, blocked so
  // that a few dozen weight rows stay in L1/L2 while every token group passes over them.
  void MultiplyRowsGrouped(int64_t row_begin, int64_t row_end) const {
    constexpr int64_t kG = internal::kGemm32Tokens;
    const int64_t groups = (n + kG - 1) / kG;
    for (int64_t rb = row_begin; rb < row_end; rb += kGemmRowBlock) {
      const int64_t re = std::min(row_end, rb + kGemmRowBlock);
      // gemmk takes one group per call.
      const int64_t step = gemmk != nullptr ? 1 : internal::kGemm32MaxGroups;
      for (int64_t g = 0; g < groups; g += step) {
        const int count = static_cast<int>(std::min(step, groups - g));
        const int64_t tokens = std::min(count * kG, n - g * kG);
        const uint8_t* group = group_act + g * group_bytes;
        float* y_group = y + g * kG * rows;
        for (int64_t r = rb; r < re; ++r) {
          float out[internal::kGemm32MaxGroups * kG];
          if (gemmk != nullptr) {
            gemmk(weights + r * weight_row_bytes, group, cols, out);
          } else {
            gemm32(weights + r * weight_row_bytes, group, cols, count, out);
          }
          for (int64_t k = 0; k < tokens; ++k) y_group[k * rows + r] = out[k];
        }
      }
    }
  }

  // Decode: kGemvRows weight rows at a time against the one token, the rest one by one.
  void MultiplyRowsGemv(int64_t row_begin, int64_t row_end) const {
    constexpr int64_t kR = internal::kGemvRows;
    int64_t r = row_begin;
    for (; r + kR <= row_end; r += kR) {
      gemv(weights + r * weight_row_bytes, weight_row_bytes, act, gemv_prepared, cols, y + r);
    }
    for (; r < row_end; ++r) y[r] = dot(weights + r * weight_row_bytes, act, cols);
  }

  // Weight rows [row_begin, row_end) against tokens [t_begin, t_end); each weight row meets a
  // tile of tokens while it is hot in cache. Where the type has a multi-token dot, tokens go
  // through it in groups of up to kMaxDotTokens (each weight block unpacked once per group;
  // results bit-identical to the single dot); a lone token uses the single dot.
  void MultiplyRowsWithDots(int64_t row_begin, int64_t row_end, int64_t t_begin,
                            int64_t t_end) const {
    constexpr int64_t kGroup = internal::kMaxDotTokens;
    for (int64_t t0 = t_begin; t0 < t_end; t0 += kTokenTile) {
      const int64_t t1 = std::min(t_end, t0 + kTokenTile);
      for (int64_t r = row_begin; r < row_end; ++r) {
        const uint8_t* weight_row = weights + r * weight_row_bytes;
        int64_t t = t0;
        if (dot_multi != nullptr) {
          for (; t1 - t >= 2; t += kGroup) {
            const int tokens = static_cast<int>(std::min(kGroup, t1 - t));
            float out[kGroup];
            dot_multi(weight_row, act + t * act_row_bytes, act_row_bytes, cols, tokens, out);
            for (int k = 0; k < tokens; ++k) y[(t + k) * rows + r] = out[k];
          }
        }
        for (; t < t1; ++t) {
          y[t * rows + r] = dot(weight_row, act + t * act_row_bytes, cols);
        }
      }
    }
  }

  // Weight rows [row_begin, row_end) against every token: the decode kernel for one token, the
  // 16-token GEMM kernels for batches of 8 or more (AVX-512 or AVX2), else the dot products.
  void MultiplyRows(int64_t row_begin, int64_t row_end) const {
    if (gemv != nullptr) return MultiplyRowsGemv(row_begin, row_end);
    if (gemm32 != nullptr || gemmk != nullptr) return MultiplyRowsGrouped(row_begin, row_end);
    MultiplyRowsWithDots(row_begin, row_end, 0, n);
  }
};

}  // namespace

void MatMul(TensorType type, const void* weights, int64_t rows, int64_t cols, const float* x,
            int64_t n, float* y, ThreadPool* pool) {
  if (rows <= 0 || n <= 0) return;
  MatMulJob job;
  job.dot = internal::GetVecDot(type);
  if (job.dot == nullptr) {
    std::fprintf(stderr, "exo: internal error: MatMul does not support tensor type %s\n",
                 TypeName(type));
    std::abort();
  }
  job.dot_multi = n > 1 ? internal::GetVecDotMulti(type) : nullptr;
  job.gemv = n == 1 ? internal::GetGemvRows(type) : nullptr;
  // Every token of the batch goes through the 16-token kernel (the last group padded: at 8
  // tokens it still beats, or at plain AVX2 equals, the multi-token dots).
  job.gemm32 = n >= 8 ? internal::GetGemm32Row(type) : nullptr;
  job.gemmk = n >= 8 ? internal::GetGemmKRow(type) : nullptr;
  job.type = type;
  job.act_type = VecDotType(type);
  job.weights = static_cast<const uint8_t*>(weights);
  job.weight_row_bytes = RowBytes(type, cols);
  job.rows = rows;
  job.cols = cols;
  job.x = x;
  job.act_row_bytes = RowBytes(job.act_type, cols);
  job.act_blocks = cols / GetTypeInfo(job.act_type).block_size;
  job.n = n;
  job.y = y;
  if (job.gemm32 != nullptr || job.gemmk != nullptr) {
    constexpr int64_t kG = internal::kGemm32Tokens;
    job.group_bytes = job.gemmk != nullptr ? internal::GemmKGroupBytes(job.act_blocks)
                                           : internal::Gemm32GroupBytes(job.act_blocks);
    job.group_act = GroupScratch(static_cast<size_t>((n + kG - 1) / kG * job.group_bytes));
  }
  // The decode kernel's activation-side data (shared by every weight row), in the group scratch
  // that only the batch kernels use otherwise.
  const int64_t gemv_prepared_bytes =
      job.gemv != nullptr ? internal::GemvPreparedBytes(type, cols) : 0;
  if (gemv_prepared_bytes > 0) {
    job.gemv_prepared = GroupScratch(static_cast<size_t>(gemv_prepared_bytes));
  }
  const MatMulJob* job_ptr = &job;

  // 1. Convert every activation row to the dot product's input type, once.
  if (job.act_type == TensorType::kF32) {
    job.act = reinterpret_cast<const uint8_t*>(x);
  } else {
    job.act_scratch = ActivationScratch(static_cast<size_t>(job.act_row_bytes * n));
    job.act = job.act_scratch;
    RunParallel(pool, n, 1, n * cols * 4, [job_ptr](int64_t begin, int64_t end) {
      job_ptr->QuantizeActivations(begin, end);
    });
  }
  if (job.gemv_prepared != nullptr) {
    internal::PrepareGemv(type, job.act, cols, job.gemv_prepared);
  }

  // 2. Each thread takes a range of weight rows.
  RunParallel(pool, rows, kRowGrain, rows * cols * n,
              [job_ptr](int64_t begin, int64_t end) { job_ptr->MultiplyRows(begin, end); });
}

void GetRow(TensorType type, const void* weights, int64_t cols, int64_t row, float* dst) {
  const uint8_t* base = static_cast<const uint8_t*>(weights);
  DequantizeRow(type, base + row * RowBytes(type, cols), dst, cols);
}

void RmsNorm(const float* x, const float* w, float* y, int64_t n, float eps) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i] * x[i]);
  const float mean = static_cast<float>(sum / static_cast<double>(n));
  const float scale = 1.0f / std::sqrt(mean + eps);
  if (w == nullptr) {
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] * scale;
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = (x[i] * scale) * w[i];
  }
}

void Rope(float* head, int64_t head_dim, int64_t rot_dim, int64_t position, float base,
          float freq_scale, RopeStyle style) {
  (void)head_dim;  // dims [rot_dim, head_dim) pass through unchanged
  // As ggml: theta_i = position * base^(-2i/rot_dim), built by repeated multiplication in f32.
  const float theta_scale = std::pow(base, -2.0f / static_cast<float>(rot_dim));
  float theta = static_cast<float>(position);
  const int64_t half = rot_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float angle = theta * freq_scale;
    const float cos_theta = std::cos(angle);
    const float sin_theta = std::sin(angle);
    theta *= theta_scale;
    const int64_t a = style == RopeStyle::kNormal ? 2 * i : i;
    const int64_t b = style == RopeStyle::kNormal ? 2 * i + 1 : i + half;
    const float x0 = head[a];
    const float x1 = head[b];
    head[a] = x0 * cos_theta - x1 * sin_theta;
    head[b] = x0 * sin_theta + x1 * cos_theta;
  }
}

void Softmax(float* x, int64_t n) {
  if (n <= 0) return;
  float max = x[0];
  for (int64_t i = 1; i < n; ++i) max = std::max(max, x[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - max);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void SiluMul(float* x, const float* g, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] / (1.0f + std::exp(-x[i])) * g[i];
}

void GeluTanhMul(float* x, const float* g, int64_t n) {
  constexpr float kSqrt2OverPi = 0.79788456080286535588f;
  constexpr float kCoefA = 0.044715f;
  for (int64_t i = 0; i < n; ++i) {
    // 0.5 * v * (1 + tanh(u)) == v / (1 + exp(-2u)); the second form avoids the cancellation
    // in 1 + tanh(u) for negative v.
    const float v = x[i];
    const float u = kSqrt2OverPi * v * (1.0f + kCoefA * v * v);
    x[i] = v / (1.0f + std::exp(-2.0f * u)) * g[i];
  }
}

void Add(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

}  // namespace exo::kernels
