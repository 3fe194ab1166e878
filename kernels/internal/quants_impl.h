// Internal entry points of the quantised kernels: the scalar references and the run-time selected
// SIMD variants. Only kernels/*.cc and the kernel tests include this.
#ifndef EXO_KERNELS_INTERNAL_QUANTS_IMPL_H_
#define EXO_KERNELS_INTERNAL_QUANTS_IMPL_H_

#include <cstdint>

#include "kernels/types.h"

namespace exo::kernels::internal {

// Dot product of `n` weights with `n` activations already in the matching VecDotType.
using VecDotFn = float (*)(const void* weights, const void* activations, int64_t n);

// Scalar reference implementations (ggml *_ref / *_generic semantics). They abort on a type they
// do not handle; types are validated by the loaders before they reach the kernels.
void DequantizeRowRef(TensorType type, const void* src, float* dst, int64_t n);
void QuantizeRowRef(TensorType type, const float* src, void* dst, int64_t n);
// Returns nullptr when `type` has no dot product.
VecDotFn GetVecDotRef(TensorType type);

// AVX2 + FMA + F16C variants; nullptr when `type` has none. Only call the result when
// CpuHasAvx2Fma() is true.
VecDotFn GetVecDotAvx2(TensorType type);
bool CpuHasAvx2Fma();

// AVX2 activation quantisers, byte-identical to QuantizeRowRef: Q8_0 and Q8_K. False when `type`
// has none or the row holds a NaN/inf (dst is then partly written; quantise it with the
// reference). Only call when CpuHasAvx2Fma() is true.
bool QuantizeRowAvx2(TensorType type, const float* src, void* dst, int64_t n);
// F16 / BF16 rows to f32 with F16C / shifts (exact, as the reference; KV cache reads). False for
// other types.
bool DequantizeRowAvx2(TensorType type, const void* src, float* dst, int64_t n);

// NEON (AArch64) variants: dots for F32, Q4_0, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K (nullptr for other
// types) and byte-identical Q8_0 / Q8_K quantisers (false as QuantizeRowAvx2). CpuHasNeon() is
// true on AArch64 unless EXO_DISABLE_SIMD=1 or EXO_SIMD=scalar; elsewhere always false.
bool CpuHasNeon();
VecDotFn GetVecDotNeon(TensorType type);
bool QuantizeRowNeon(TensorType type, const float* src, void* dst, int64_t n);
bool DequantizeRowNeon(TensorType type, const void* src, float* dst, int64_t n);

// The dot product the public VecDot uses for `type` (SIMD where available), nullptr if none.
VecDotFn GetVecDot(TensorType type);

// Most activation rows one multi-token dot product takes at once.
inline constexpr int kMaxDotTokens = 4;

// Dot products of one weight row with `tokens` (1..kMaxDotTokens) activation rows that lie
// `act_row_bytes` apart: every weight block is unpacked once and used for each token. out[t] is
// bit-identical to GetVecDot(type)(weights, activations + t * act_row_bytes, n): per token the
// same floating-point operations in the same order.
using VecDotMultiFn = void (*)(const void* weights, const void* activations, int64_t act_row_bytes,
                               int64_t n, int tokens, float* out);

// AVX2 multi-token variants; nullptr when `type` has none. Only call after CpuHasAvx2Fma().
VecDotMultiFn GetVecDotMultiAvx2(TensorType type);

// The multi-token dot product matching GetVecDot(type), or nullptr when there is none (scalar
// path, or a type without one): callers then use the single-token dot.
VecDotMultiFn GetVecDotMulti(TensorType type);

// True when this CPU (and OS) has AVX-512 F/BW/VL/DQ + VNNI and neither EXO_DISABLE_SIMD nor
// EXO_SIMD=scalar|avx2 asks for less.
bool CpuHasAvx512Vnni();

// AVX-512 decode dots (Q4_0, Q5_0, Q8_0, Q6_K), bit-identical to GetVecDotAvx2; nullptr for other
// types. Only call after CpuHasAvx512Vnni().
VecDotFn GetVecDotAvx512(TensorType type);

// ---- AVX-512 GEMM for the 32-element block types (Q4_0, Q5_0, Q8_0) ----------------------
// The activations get a layout of their own, prepared once per MatMul: tokens in groups of
// kGemm32Tokens (the last group padded with zero tokens), transposed so that one 512-bit register
// holds lane j (quants 4j..4j+3 of a block) of all 16 tokens. Per group and block b, at
// b * kGemm32BlockBytes:
//   int8_t  qs[8][16][4]   qs[j][t] = token t's quants 4j..4j+3
//   int32_t bias[8][16]    -offset * (sum of qs[j][t]), where `offset` is the weight type's zero
//                          point (Q4_0 8, Q5_0 16, Q8_0 128): the kernel takes the weight quants
//                          unsigned (q + offset) and starts each lane from its bias
//   float   d[16]          token t's block scale
// The integer lanes stay exact, so lane j of token t is the AVX2 dot's lane j; per token and
// block the float work is the AVX2 dot's, acc_j = fma(d_x * d_y, float(lane_j), acc_j), and the
// final sum adds the eight lanes in HorizontalSum's order.
inline constexpr int kGemm32Tokens = 16;
inline constexpr int64_t kGemm32BlockBytes = 8 * kGemm32Tokens * 4 * 2 + kGemm32Tokens * 4;

// Bytes of one group with `blocks` blocks per row.
inline int64_t Gemm32GroupBytes(int64_t blocks) { return blocks * kGemm32BlockBytes; }

// Writes token t (0 .. kGemm32Tokens - 1) of a group from its Q8_0 row of `blocks` blocks, for
// weights of `type` (Q4_0, Q5_0 or Q8_0).
void PackGemm32Token(TensorType type, const void* q8_0_row, int64_t blocks, int t, void* group);
// Fills token t of a group with zeros (quants, bias and scale): the padding of a last group.
// Its results are computed and dropped.
void PadGemm32Token(int64_t blocks, int t, void* group);

// Most groups one Gemm32RowFn call takes: the weight unpacking is shared by their tokens.
inline constexpr int kGemm32MaxGroups = 2;

// Dot products of one weight row (`type`, n elements) with the tokens of `count` (1 ..
// kGemm32MaxGroups) prepared groups that lie Gemm32GroupBytes(n / 32) apart: out[16 * g + t] is
// bit-identical to GetVecDot(type)(weights, Q8_0 row of token t of group g, n).
using Gemm32RowFn = void (*)(const void* weights, const void* groups, int64_t n, int count,
                             float* out);

// AVX-512 variants for Q4_0 / Q5_0 / Q8_0; nullptr otherwise. Only call after CpuHasAvx512Vnni().
Gemm32RowFn GetGemm32RowAvx512(TensorType type);
// The 32-element GEMM row kernel for `type` on this CPU, or nullptr.
Gemm32RowFn GetGemm32Row(TensorType type);

// ---- AVX-512 GEMM for the K-quants (Q4_K, Q5_K, Q6_K) ------------------------------------
// As above, Q8_K activations transposed in groups of kGemm32Tokens tokens. Per group and
// super-block i, at i * kGemmKBlockBytes:
//   int8_t  qs[64][16][4]    qs[p][t] = token t's quants 4p..4p+3 (p = 8 * chunk + lane)
//   int16_t bsums[8][16][2]  bsums[m][t] = token t's bsums 2m and 2m + 1
//   float   d[16]            token t's super-block scale
// Lane j of chunk c (32 quants) of token t is the AVX2 dot's lane j of chunk c, scaled as there;
// per token and super-block the float work is the AVX2 dot's (acc_j = fma(d_x * d_y,
// float(lane_j), acc_j), the mins term, the final HorizontalSum order).
inline constexpr int64_t kGemmKBlockBytes =
    64 * kGemm32Tokens * 4 + 8 * kGemm32Tokens * 4 + kGemm32Tokens * 4;

inline int64_t GemmKGroupBytes(int64_t blocks) { return blocks * kGemmKBlockBytes; }

// Token t (0 .. kGemm32Tokens - 1) of a group from its Q8_K row of `blocks` super-blocks.
void PackGemmKToken(const void* q8_k_row, int64_t blocks, int t, void* group);
// Token t of a group as zeros (padding; its results are dropped).
void PadGemmKToken(int64_t blocks, int t, void* group);

// Dot products of one weight row (`type`, n elements) with the kGemm32Tokens tokens of a
// prepared group: out[t] is bit-identical to GetVecDot(type)(weights, token t's Q8_K row, n).
using GemmKRowFn = void (*)(const void* weights, const void* group, int64_t n, float* out);

// AVX-512 variants for Q4_K / Q5_K / Q6_K; nullptr otherwise. Only call after
// CpuHasAvx512Vnni().
GemmKRowFn GetGemmKRowAvx512(TensorType type);
// The K-quant GEMM row kernel for `type` on this CPU, or nullptr.
GemmKRowFn GetGemmKRow(TensorType type);

// ---- AVX2 GEMM on the same groups (gemm_avx2.cc) ----------------------------------------
// The kernels above for AVX2-only CPUs: the same group layouts taken as two halves of 8
// tokens, the same results bit for bit. `vnni` picks the AVX-VNNI (VEX vpdpbusd / vpdpwssd)
// variant, only for CpuHasAvxVnni(); the plain one needs CpuHasAvx2Fma(). nullptr for types
// without one. At the AVX2 level GetGemm32Row / GetGemmKRow return these.
Gemm32RowFn GetGemm32RowAvx2(TensorType type, bool vnni);
GemmKRowFn GetGemmKRowAvx2(TensorType type, bool vnni);
// True when CpuHasAvx2Fma(), the CPU has AVX-VNNI (CPUID 7.1 EAX bit 4) and EXO_SIMD is not
// avx2-novnni (which also stops at the AVX2 level, to test or time the plain AVX2 kernels).
bool CpuHasAvxVnni();

// 6-bit scale/min pair `j` (0..7) of a Q4_K / Q5_K block, as ggml's get_scale_min_k4.
inline void GetScaleMinK4(int j, const uint8_t* q, uint8_t* scale, uint8_t* min) {
  if (j < 4) {
    *scale = q[j] & 63;
    *min = q[j + 4] & 63;
  } else {
    *scale = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *min = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

}  // namespace exo::kernels::internal

#endif  // EXO_KERNELS_INTERNAL_QUANTS_IMPL_H_
