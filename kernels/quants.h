// Quantised block formats (ggml-compatible layouts): dequantisation, reference quantisation and
// dot products. Every function here has a scalar reference; SIMD variants are chosen at run time.
#ifndef EXO_KERNELS_QUANTS_H_
#define EXO_KERNELS_QUANTS_H_

#include <cstdint>

#include "kernels/types.h"

namespace exo::kernels {

// fp16 / bf16 <-> fp32 conversions (round to nearest even).
float Fp16ToFp32(uint16_t h);
uint16_t Fp32ToFp16(float f);
float Bf16ToFp32(uint16_t h);
uint16_t Fp32ToBf16(float f);

// Dequantizes `n` elements (n % block_size == 0) of a row of `type` into f32.
void DequantizeRow(TensorType type, const void* src, float* dst, int64_t n);

// Reference quantisation of `n` f32 values into `type` (n % block_size == 0). Used by tests and by
// the GGUF writer for synthetic models; not tuned for speed.
void QuantizeRow(TensorType type, const float* src, void* dst, int64_t n);

// The type that activations are quantised to before a dot product with weights of `type`
// (Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1/Q5_1, Q8_K for K-quants, F16 for F16, BF16 for BF16,
// F32 for F32), as ggml does.
TensorType VecDotType(TensorType weight_type);

// Dot product of one row of weights (`type`, n elements) with one row of activations already
// converted to VecDotType(type).
float VecDot(TensorType type, const void* weights, const void* activations, int64_t n);

// The SIMD level the kernels dispatch to on this machine (after EXO_SIMD / EXO_DISABLE_SIMD):
// "avx512-vnni", "avx2-vnni" (AVX2 with the AVX-VNNI GEMM kernels), "avx2", "neon" or "scalar".
const char* SimdLevelName();

}  // namespace exo::kernels

#endif  // EXO_KERNELS_QUANTS_H_
