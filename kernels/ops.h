// The operations a transformer forward pass is built from. All take f32 activations; weights may
// be any supported TensorType. None of these allocate on the hot path (per-thread scratch grows
// once and is reused).
#ifndef EXO_KERNELS_OPS_H_
#define EXO_KERNELS_OPS_H_

#include <cstdint>

#include "kernels/thread_pool.h"
#include "kernels/types.h"

namespace exo::kernels {

// y (n x rows) = x (n x cols) * W^T, where W is `rows` rows of `cols` elements of `type`, each row
// RowBytes(type, cols) bytes, stored contiguously. Activations are converted to VecDotType(type)
// first, exactly as the dot-product kernels expect. `pool` may be null (single thread).
void MatMul(TensorType type, const void* weights, int64_t rows, int64_t cols, const float* x,
            int64_t n, float* y, ThreadPool* pool);

// Copies row `row` of a [rows x cols] matrix of `type` into dst as f32 (embedding lookup).
void GetRow(TensorType type, const void* weights, int64_t cols, int64_t row, float* dst);

// y = x / sqrt(mean(x^2) + eps) * w   (w may be null: no scale). x and y may alias.
void RmsNorm(const float* x, const float* w, float* y, int64_t n, float eps);

// Rotary position embedding in place on one head vector of `head_dim` values at `position`,
// rotating the first `rot_dim` dims. kNormal pairs (2i, 2i+1) (llama); kNeox pairs (i, i+half)
// (qwen2, gemma). theta_i = position * base^(-2i/rot_dim) * freq_scale.
enum class RopeStyle { kNormal, kNeox };
void Rope(float* head, int64_t head_dim, int64_t rot_dim, int64_t position, float base,
          float freq_scale, RopeStyle style);

// In-place softmax over n values.
void Softmax(float* x, int64_t n);

// Activations, in place: x = silu(x) * g / x = gelu_tanh(x) * g.
void SiluMul(float* x, const float* g, int64_t n);
void GeluTanhMul(float* x, const float* g, int64_t n);

// y += x (n values)
void Add(float* y, const float* x, int64_t n);

}  // namespace exo::kernels

#endif  // EXO_KERNELS_OPS_H_
