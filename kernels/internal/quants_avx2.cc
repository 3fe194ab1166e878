// AVX2 + FMA + F16C dot products. Every function carries its own target attribute so this file
// builds into a baseline x86-64 binary; GetVecDotAvx2 is only used after CpuHasAvx2Fma() said yes.
// Each kernel computes the same sums as its scalar reference in quants_ref.cc (integer parts
// exactly; float accumulation order differs).
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "kernels/internal/blocks.h"
#include "kernels/internal/fp16.h"
#include "kernels/internal/quants_impl.h"
#include "kernels/internal/simd_x86.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define EXO_HAVE_X86 1
#else
#define EXO_HAVE_X86 0
#endif

namespace exo::kernels::internal {

#if EXO_HAVE_X86

bool CpuHasAvx2Fma() {
  static const bool supported = [] {
    const char* disable = std::getenv("EXO_DISABLE_SIMD");
    if (disable != nullptr && disable[0] != '\0' && disable[0] != '0') return false;
    const char* level = std::getenv("EXO_SIMD");
    if (level != nullptr && std::strcmp(level, "scalar") == 0) return false;
    __builtin_cpu_init();
    // __builtin_cpu_supports checks that the OS saves the YMM state; F16C is not a name every
    // compiler accepts there, so read its CPUID bit directly.
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
  }();
  return supported;
}

#define EXO_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace {

using x86::Half;
using x86::HighBitsQ5;
using x86::HorizontalSum;
using x86::Load256;
using x86::UnpackNibbles;

// Sum of adjacent products of 32 signed bytes, as 8 floats. |x| <= 127 and |y| <= 127 keep
// maddubs from saturating.
EXO_AVX2 inline __m256 MulSumI8Pairs(__m256i x, __m256i y) {
  const __m256i abs_x = _mm256_sign_epi8(x, x);
  const __m256i signed_y = _mm256_sign_epi8(y, x);
  const __m256i dot16 = _mm256_maddubs_epi16(abs_x, signed_y);
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(dot16, _mm256_set1_epi16(1)));
}

// As MulSumI8Pairs with x unsigned (<= 31).
EXO_AVX2 inline __m256 MulSumU8I8Pairs(__m256i x, __m256i y) {
  const __m256i dot16 = _mm256_maddubs_epi16(x, y);
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(dot16, _mm256_set1_epi16(1)));
}

EXO_AVX2 float vec_dot_f32_avx2(const void* vx, const void* vy, int64_t n) {
  const float* x = static_cast<const float*>(vx);
  const float* y = static_cast<const float*>(vy);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(y + i + 8), acc1);
    acc2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16), _mm256_loadu_ps(y + i + 16), acc2);
    acc3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 24), _mm256_loadu_ps(y + i + 24), acc3);
  }
  for (; i + 8 <= n; i += 8) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), acc0);
  }
  float sum = HorizontalSum(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
  for (; i < n; ++i) sum += x[i] * y[i];
  return sum;
}

EXO_AVX2 inline __m256 LoadF16x8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

EXO_AVX2 float vec_dot_f16_avx2(const void* vx, const void* vy, int64_t n) {
  const uint16_t* x = static_cast<const uint16_t*>(vx);
  const uint16_t* y = static_cast<const uint16_t*>(vy);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm256_fmadd_ps(LoadF16x8(x + i), LoadF16x8(y + i), acc0);
    acc1 = _mm256_fmadd_ps(LoadF16x8(x + i + 8), LoadF16x8(y + i + 8), acc1);
    acc2 = _mm256_fmadd_ps(LoadF16x8(x + i + 16), LoadF16x8(y + i + 16), acc2);
    acc3 = _mm256_fmadd_ps(LoadF16x8(x + i + 24), LoadF16x8(y + i + 24), acc3);
  }
  for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(LoadF16x8(x + i), LoadF16x8(y + i), acc0);
  float sum = HorizontalSum(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
  for (; i < n; ++i) sum += Half(x[i]) * Half(y[i]);
  return sum;
}

EXO_AVX2 inline __m256 LoadBf16x8(const uint16_t* p) {
  const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}

EXO_AVX2 float vec_dot_bf16_avx2(const void* vx, const void* vy, int64_t n) {
  const uint16_t* x = static_cast<const uint16_t*>(vx);
  const uint16_t* y = static_cast<const uint16_t*>(vy);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(LoadBf16x8(x + i), LoadBf16x8(y + i), acc0);
    acc1 = _mm256_fmadd_ps(LoadBf16x8(x + i + 8), LoadBf16x8(y + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(LoadBf16x8(x + i), LoadBf16x8(y + i), acc0);
  float sum = HorizontalSum(_mm256_add_ps(acc0, acc1));
  for (; i < n; ++i) sum += Bf16ToFloat(x[i]) * Bf16ToFloat(y[i]);
  return sum;
}

EXO_AVX2 float vec_dot_q8_0_q8_0_avx2(const void* vx, const void* vy, int64_t n) {
  const BlockQ8_0* x = static_cast<const BlockQ8_0*>(vx);
  const BlockQ8_0* y = static_cast<const BlockQ8_0*>(vy);
  const int64_t nb = n / kQk32;
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 2 <= nb; i += 2) {
    const __m256 d0 = _mm256_set1_ps(Half(x[i].d) * Half(y[i].d));
    const __m256 d1 = _mm256_set1_ps(Half(x[i + 1].d) * Half(y[i + 1].d));
    acc0 = _mm256_fmadd_ps(d0, MulSumI8Pairs(Load256(x[i].qs), Load256(y[i].qs)), acc0);
    acc1 = _mm256_fmadd_ps(d1, MulSumI8Pairs(Load256(x[i + 1].qs), Load256(y[i + 1].qs)), acc1);
  }
  for (; i < nb; ++i) {
    const __m256 d = _mm256_set1_ps(Half(x[i].d) * Half(y[i].d));
    acc0 = _mm256_fmadd_ps(d, MulSumI8Pairs(Load256(x[i].qs), Load256(y[i].qs)), acc0);
  }
  return HorizontalSum(_mm256_add_ps(acc0, acc1));
}

EXO_AVX2 float vec_dot_q4_0_q8_0_avx2(const void* vx, const void* vy, int64_t n) {
  const BlockQ4_0* x = static_cast<const BlockQ4_0*>(vx);
  const BlockQ8_0* y = static_cast<const BlockQ8_0*>(vy);
  const int64_t nb = n / kQk32;
  const __m256i eight = _mm256_set1_epi8(8);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    const __m256 d = _mm256_set1_ps(Half(x[i].d) * Half(y[i].d));
    const __m256i qx = _mm256_sub_epi8(UnpackNibbles(x[i].qs), eight);
    acc = _mm256_fmadd_ps(d, MulSumI8Pairs(qx, Load256(y[i].qs)), acc);
  }
  return HorizontalSum(acc);
}

EXO_AVX2 float vec_dot_q4_1_q8_1_avx2(const void* vx, const void* vy, int64_t n) {
  const BlockQ4_1* x = static_cast<const BlockQ4_1*>(vx);
  const BlockQ8_1* y = static_cast<const BlockQ8_1*>(vy);
  const int64_t nb = n / kQk32;
  __m256 acc = _mm256_setzero_ps();
  float sum_mins = 0.0f;
  for (int64_t i = 0; i < nb; ++i) {
    const __m256 d = _mm256_set1_ps(Half(x[i].d) * Half(y[i].d));
    sum_mins += Half(x[i].m) * Half(y[i].s);
    acc = _mm256_fmadd_ps(d, MulSumU8I8Pairs(UnpackNibbles(x[i].qs), Load256(y[i].qs)), acc);
  }
  return HorizontalSum(acc) + sum_mins;
}

EXO_AVX2 float vec_dot_q5_0_q8_0_avx2(const void* vx, const void* vy, int64_t n) {
  const BlockQ5_0* x = static_cast<const BlockQ5_0*>(vx);
  const BlockQ8_0* y = static_cast<const BlockQ8_0*>(vy);
  const int64_t nb = n / kQk32;
  const __m256i sixteen = _mm256_set1_epi8(16);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    const __m256 d = _mm256_set1_ps(Half(x[i].d) * Half(y[i].d));
    const __m256i q = _mm256_or_si256(UnpackNibbles(x[i].qs), HighBitsQ5(x[i].qh));
    acc = _mm256_fmadd_ps(d, MulSumI8Pairs(_mm256_sub_epi8(q, sixteen), Load256(y[i].qs)), acc);
  }
  return HorizontalSum(acc);
}

EXO_AVX2 float vec_dot_q5_1_q8_1_avx2(const void* vx, const void* vy, int64_t n) {
  const BlockQ5_1* x = static_cast<const BlockQ5_1*>(vx);
  const BlockQ8_1* y = static_cast<const BlockQ8_1*>(vy);
  const int64_t nb = n / kQk32;
  __m256 acc = _mm256_setzero_ps();
  float sum_mins = 0.0f;
  for (int64_t i = 0; i < nb; ++i) {
    const __m256 d = _mm256_set1_ps(Half(x[i].d) * Half(y[i].d));
    sum_mins += Half(x[i].m) * Half(y[i].s);
    const __m256i q = _mm256_or_si256(UnpackNibbles(x[i].qs), HighBitsQ5(x[i].qh));
    acc = _mm256_fmadd_ps(d, MulSumU8I8Pairs(q, Load256(y[i].qs)), acc);
  }
  return HorizontalSum(acc) + sum_mins;
}

// Shared Q4_K / Q5_K tail: the mins term from the Q8_K 16-sums, per block.
inline int SumMinsK(const uint8_t* mins, const int16_t* bsums) {
  int sum = 0;
  for (int j = 0; j < 8; ++j) sum += mins[j] * (bsums[2 * j] + bsums[2 * j + 1]);
  return sum;
}

EXO_AVX2 float vec_dot_q4_k_q8_k_avx2(const void* vx, const void* vy, int64_t n) {
  const BlockQ4_K* x = static_cast<const BlockQ4_K*>(vx);
  const BlockQ8_K* y = static_cast<const BlockQ8_K*>(vy);
  const int64_t nb = n / kQkK;
  const __m256i low_mask = _mm256_set1_epi8(0x0F);
  __m256 acc = _mm256_setzero_ps();
  float sum_mins = 0.0f;
  for (int64_t i = 0; i < nb; ++i) {
    uint8_t scales[8], mins[8];
    for (int j = 0; j < 8; ++j) GetScaleMinK4(j, x[i].scales, &scales[j], &mins[j]);
    sum_mins += Half(x[i].dmin) * y[i].d * static_cast<float>(SumMinsK(mins, y[i].bsums));
    __m256i sumi = _mm256_setzero_si256();
    for (int chunk = 0; chunk < 4; ++chunk) {
      const __m256i q4 = Load256(x[i].qs + 32 * chunk);
      const __m256i lo = _mm256_and_si256(q4, low_mask);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), low_mask);
      __m256i p0 = _mm256_maddubs_epi16(lo, Load256(y[i].qs + 64 * chunk));
      __m256i p1 = _mm256_maddubs_epi16(hi, Load256(y[i].qs + 64 * chunk + 32));
      p0 = _mm256_madd_epi16(p0, _mm256_set1_epi16(scales[2 * chunk]));
      p1 = _mm256_madd_epi16(p1, _mm256_set1_epi16(scales[2 * chunk + 1]));
      sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
    }
    const __m256 d = _mm256_set1_ps(Half(x[i].d) * y[i].d);
    acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
  }
  return HorizontalSum(acc) - sum_mins;
}

EXO_AVX2 float vec_dot_q5_k_q8_k_avx2(const void* vx, const void* vy, int64_t n) {
  const BlockQ5_K* x = static_cast<const BlockQ5_K*>(vx);
  const BlockQ8_K* y = static_cast<const BlockQ8_K*>(vy);
  const int64_t nb = n / kQkK;
  const __m256i low_mask = _mm256_set1_epi8(0x0F);
  const __m256i one = _mm256_set1_epi8(1);
  __m256 acc = _mm256_setzero_ps();
  float sum_mins = 0.0f;
  for (int64_t i = 0; i < nb; ++i) {
    uint8_t scales[8], mins[8];
    for (int j = 0; j < 8; ++j) GetScaleMinK4(j, x[i].scales, &scales[j], &mins[j]);
    sum_mins += Half(x[i].dmin) * y[i].d * static_cast<float>(SumMinsK(mins, y[i].bsums));
    __m256i high_bits = Load256(x[i].qh);
    __m256i sumi = _mm256_setzero_si256();
    for (int chunk = 0; chunk < 4; ++chunk) {
      const __m256i q4 = Load256(x[i].qs + 32 * chunk);
      // Bit 0 of each qh byte is bit 4 of the low-nibble quant, bit 1 of the high-nibble one;
      // shifting high_bits by 2 per chunk brings the next pair down.
      const __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(high_bits, one), 4);
      const __m256i h1 =
          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(high_bits, 1), one), 4);
      high_bits = _mm256_srli_epi16(high_bits, 2);
      const __m256i lo = _mm256_or_si256(_mm256_and_si256(q4, low_mask), h0);
      const __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q4, 4), low_mask), h1);
      __m256i p0 = _mm256_maddubs_epi16(lo, Load256(y[i].qs + 64 * chunk));
      __m256i p1 = _mm256_maddubs_epi16(hi, Load256(y[i].qs + 64 * chunk + 32));
      p0 = _mm256_madd_epi16(p0, _mm256_set1_epi16(scales[2 * chunk]));
      p1 = _mm256_madd_epi16(p1, _mm256_set1_epi16(scales[2 * chunk + 1]));
      sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
    }
    const __m256 d = _mm256_set1_ps(Half(x[i].d) * y[i].d);
    acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
  }
  return HorizontalSum(acc) - sum_mins;
}

EXO_AVX2 float vec_dot_q6_k_q8_k_avx2(const void* vx, const void* vy, int64_t n) {
  const BlockQ6_K* x = static_cast<const BlockQ6_K*>(vx);
  const BlockQ8_K* y = static_cast<const BlockQ8_K*>(vy);
  const int64_t nb = n / kQkK;
  const __m256i low_mask = _mm256_set1_epi8(0x0F);
  const __m256i two_bits = _mm256_set1_epi8(0x03);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    const int8_t* sc = x[i].scales;
    // The quants are stored +32; sum(scale * 32 * y) over each 16-group comes from bsums.
    int offset_sum = 0;
    for (int g = 0; g < 16; ++g) offset_sum += sc[g] * y[i].bsums[g];
    const float d = Half(x[i].d) * y[i].d;
    __m256i sumi = _mm256_setr_epi32(-32 * offset_sum, 0, 0, 0, 0, 0, 0, 0);
    for (int half = 0; half < 2; ++half) {
      const __m256i ql0 = Load256(x[i].ql + 64 * half);
      const __m256i ql1 = Load256(x[i].ql + 64 * half + 32);
      const __m256i qh = Load256(x[i].qh + 32 * half);
      __m256i q[4];
      q[0] = _mm256_or_si256(_mm256_and_si256(ql0, low_mask),
                             _mm256_slli_epi16(_mm256_and_si256(qh, two_bits), 4));
      q[1] = _mm256_or_si256(
          _mm256_and_si256(ql1, low_mask),
          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), two_bits), 4));
      q[2] = _mm256_or_si256(
          _mm256_and_si256(_mm256_srli_epi16(ql0, 4), low_mask),
          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), two_bits), 4));
      q[3] = _mm256_or_si256(
          _mm256_and_si256(_mm256_srli_epi16(ql1, 4), low_mask),
          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), two_bits), 4));
      for (int k = 0; k < 4; ++k) {
        const int group = 8 * half + 2 * k;
        const __m256i p = _mm256_maddubs_epi16(q[k], Load256(y[i].qs + 128 * half + 32 * k));
        const __m256i scale =
            _mm256_set_m128i(_mm_set1_epi16(sc[group + 1]), _mm_set1_epi16(sc[group]));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, scale));
      }
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
  }
  return HorizontalSum(acc);
}

// ---- Activation quantisers -------------------------------------------------------------------
// Byte-identical to QuantizeQ8_0 / QuantizeQ8_K in quants_ref.cc: the scale is computed by the
// same scalar expressions, every product x * id is the same single f32 multiply, and the
// roundings are reproduced exactly (roundf's ties away from zero below; lrintf's ties to even is
// cvtps_epi32 under the default rounding mode).

// roundf(v) for |v| < 2^23: trunc(v), plus sign(v) when the (exact) fraction is at least 0.5.
EXO_AVX2 inline __m256i RoundHalfAwayToInt(__m256 v) {
  const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m256 frac = _mm256_sub_ps(v, t);
  const __m256 sign_mask = _mm256_set1_ps(-0.0f);
  const __m256 abs_frac = _mm256_andnot_ps(sign_mask, frac);
  const __m256 up = _mm256_cmp_ps(abs_frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ);
  const __m256 step =
      _mm256_and_ps(up, _mm256_or_ps(_mm256_set1_ps(1.0f), _mm256_and_ps(v, sign_mask)));
  return _mm256_cvttps_epi32(_mm256_add_ps(t, step));
}

// Packs 32 int32 (four registers, values in int8 range) into 32 int8 in order.
EXO_AVX2 inline __m256i PackI32ToI8(__m256i a, __m256i b, __m256i c, __m256i d) {
  const __m256i ab = _mm256_packs_epi32(a, b);  // lanes interleave per 128 bits
  const __m256i cd = _mm256_packs_epi32(c, d);
  const __m256i abcd = _mm256_packs_epi16(ab, cd);
  return _mm256_permutevar8x32_epi32(abcd, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// Largest |x[j]|, or NaN when some x[j] is NaN.
EXO_AVX2 inline float MaxAbs(const float* x, int n) {
  const __m256 sign_mask = _mm256_set1_ps(-0.0f);
  __m256 m = _mm256_setzero_ps();
  __m256 nan = _mm256_setzero_ps();
  for (int j = 0; j < n; j += 8) {
    const __m256 a = _mm256_andnot_ps(sign_mask, _mm256_loadu_ps(x + j));
    m = _mm256_max_ps(m, a);
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
  }
  if (_mm256_movemask_ps(nan) != 0) return std::nanf("");
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  h = _mm_max_ss(h, _mm_movehdup_ps(h));
  return _mm_cvtss_f32(h);
}

EXO_AVX2 bool QuantizeQ8_0Avx2(const float* x, BlockQ8_0* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQk32) {
    const float amax = MaxAbs(x, kQk32);
    if (!(amax <= 3.0e38f)) return false;  // NaN or inf: leave it to the reference
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = FloatToHalf(d);
    const __m256 vid = _mm256_set1_ps(id);
    __m256i q[4];
    for (int k = 0; k < 4; ++k) {
      q[k] = RoundHalfAwayToInt(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * k), vid));
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y[i].qs), PackI32ToI8(q[0], q[1], q[2], q[3]));
  }
  return true;
}

EXO_AVX2 bool QuantizeQ8_KAvx2(const float* x, BlockQ8_K* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQkK) {
    const float amax = MaxAbs(x, kQkK);
    if (!(amax <= 3.0e38f)) return false;
    if (amax == 0.0f) {
      std::memset(&y[i], 0, sizeof(y[i]));
      continue;
    }
    // The reference keeps the first element of largest magnitude, with its sign.
    float max = 0.0f;
    for (int j = 0; j < kQkK; ++j) {
      if (std::fabs(x[j]) == amax) {
        max = x[j];
        break;
      }
    }
    const float iscale = -127.0f / max;
    const __m256 vscale = _mm256_set1_ps(iscale);
    const __m256i top = _mm256_set1_epi32(127);
    for (int g = 0; g < kQkK / 32; ++g) {
      __m256i q[4];
      for (int k = 0; k < 4; ++k) {
        const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + 32 * g + 8 * k), vscale);
        q[k] = _mm256_min_epi32(_mm256_cvtps_epi32(v), top);
      }
      const __m256i packed = PackI32ToI8(q[0], q[1], q[2], q[3]);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(y[i].qs + 32 * g), packed);
      // bsums of the two 16-groups: widen to int16, add pairs down to two sums.
      const __m256i wide_lo = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(packed));
      const __m256i wide_hi = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(packed, 1));
      const __m256i s_lo = _mm256_madd_epi16(wide_lo, _mm256_set1_epi16(1));
      const __m256i s_hi = _mm256_madd_epi16(wide_hi, _mm256_set1_epi16(1));
      int32_t lanes_lo[8], lanes_hi[8];
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(lanes_lo), s_lo);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(lanes_hi), s_hi);
      int sum_lo = 0, sum_hi = 0;
      for (int k = 0; k < 8; ++k) {
        sum_lo += lanes_lo[k];
        sum_hi += lanes_hi[k];
      }
      y[i].bsums[2 * g] = static_cast<int16_t>(sum_lo);
      y[i].bsums[2 * g + 1] = static_cast<int16_t>(sum_hi);
    }
    y[i].d = 1.0f / iscale;
  }
  return true;
}

}  // namespace

EXO_AVX2 bool DequantizeRowAvx2(TensorType type, const void* src, float* dst, int64_t n) {
  if (type != TensorType::kF16 && type != TensorType::kBF16) return false;
  const uint16_t* x = static_cast<const uint16_t*>(src);
  int64_t i = 0;
  if (type == TensorType::kF16) {
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, LoadF16x8(x + i));
    for (; i < n; ++i) dst[i] = HalfToFloat(x[i]);
  } else {
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, LoadBf16x8(x + i));
    for (; i < n; ++i) dst[i] = Bf16ToFloat(x[i]);
  }
  return true;
}

bool QuantizeRowAvx2(TensorType type, const float* src, void* dst, int64_t n) {
  switch (type) {
    case TensorType::kQ8_0:
      return QuantizeQ8_0Avx2(src, static_cast<BlockQ8_0*>(dst), n / kQk32);
    case TensorType::kQ8_K:
      return QuantizeQ8_KAvx2(src, static_cast<BlockQ8_K*>(dst), n / kQkK);
    default:
      return false;
  }
}

namespace {

// ---- Multi-token dot products -------------------------------------------------------------
// One weight row against T activation rows (`stride` bytes apart). Each weight block is unpacked
// once; per token the floating-point work is exactly that of the single-token kernel above (same
// products, same accumulator layout, same order), so every result is bit-identical to it. Only
// integer work (exact) is shared or reordered.

// MulSumI8Pairs(x, y) with sign(x, x) computed once by the caller.
EXO_AVX2 inline __m256 MulSumI8PairsAbs(__m256i abs_x, __m256i x, __m256i y) {
  const __m256i dot16 = _mm256_maddubs_epi16(abs_x, _mm256_sign_epi8(y, x));
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(dot16, _mm256_set1_epi16(1)));
}

template <typename Block, int T>
inline void TokenRows(const void* vy, int64_t stride, const Block* (&y)[T]) {
  const uint8_t* base = static_cast<const uint8_t*>(vy);
  for (int t = 0; t < T; ++t) y[t] = reinterpret_cast<const Block*>(base + t * stride);
}

template <int T>
EXO_AVX2 void VecDotQ8_0Tokens(const void* vx, const void* vy, int64_t stride, int64_t n,
                               float* out) {
  const BlockQ8_0* x = static_cast<const BlockQ8_0*>(vx);
  const BlockQ8_0* y[T];
  TokenRows(vy, stride, y);
  const int64_t nb = n / kQk32;
  __m256 acc0[T], acc1[T];
  for (int t = 0; t < T; ++t) acc0[t] = acc1[t] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 2 <= nb; i += 2) {
    const __m256i x0 = Load256(x[i].qs);
    const __m256i x1 = Load256(x[i + 1].qs);
    const __m256i abs0 = _mm256_sign_epi8(x0, x0);
    const __m256i abs1 = _mm256_sign_epi8(x1, x1);
    const float xd0 = Half(x[i].d);
    const float xd1 = Half(x[i + 1].d);
    for (int t = 0; t < T; ++t) {
      const __m256 d0 = _mm256_set1_ps(xd0 * Half(y[t][i].d));
      const __m256 d1 = _mm256_set1_ps(xd1 * Half(y[t][i + 1].d));
      acc0[t] = _mm256_fmadd_ps(d0, MulSumI8PairsAbs(abs0, x0, Load256(y[t][i].qs)), acc0[t]);
      acc1[t] = _mm256_fmadd_ps(d1, MulSumI8PairsAbs(abs1, x1, Load256(y[t][i + 1].qs)), acc1[t]);
    }
  }
  for (; i < nb; ++i) {
    const __m256i x0 = Load256(x[i].qs);
    const __m256i abs0 = _mm256_sign_epi8(x0, x0);
    const float xd0 = Half(x[i].d);
    for (int t = 0; t < T; ++t) {
      const __m256 d = _mm256_set1_ps(xd0 * Half(y[t][i].d));
      acc0[t] = _mm256_fmadd_ps(d, MulSumI8PairsAbs(abs0, x0, Load256(y[t][i].qs)), acc0[t]);
    }
  }
  for (int t = 0; t < T; ++t) out[t] = HorizontalSum(_mm256_add_ps(acc0[t], acc1[t]));
}

template <int T>
EXO_AVX2 void VecDotQ5_0Tokens(const void* vx, const void* vy, int64_t stride, int64_t n,
                               float* out) {
  const BlockQ5_0* x = static_cast<const BlockQ5_0*>(vx);
  const BlockQ8_0* y[T];
  TokenRows(vy, stride, y);
  const int64_t nb = n / kQk32;
  const __m256i sixteen = _mm256_set1_epi8(16);
  __m256 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    const float xd = Half(x[i].d);
    const __m256i q =
        _mm256_sub_epi8(_mm256_or_si256(UnpackNibbles(x[i].qs), HighBitsQ5(x[i].qh)), sixteen);
    const __m256i abs_q = _mm256_sign_epi8(q, q);
    for (int t = 0; t < T; ++t) {
      const __m256 d = _mm256_set1_ps(xd * Half(y[t][i].d));
      acc[t] = _mm256_fmadd_ps(d, MulSumI8PairsAbs(abs_q, q, Load256(y[t][i].qs)), acc[t]);
    }
  }
  for (int t = 0; t < T; ++t) out[t] = HorizontalSum(acc[t]);
}

template <int T>
EXO_AVX2 void VecDotQ4_KTokens(const void* vx, const void* vy, int64_t stride, int64_t n,
                               float* out) {
  const BlockQ4_K* x = static_cast<const BlockQ4_K*>(vx);
  const BlockQ8_K* y[T];
  TokenRows(vy, stride, y);
  const int64_t nb = n / kQkK;
  const __m256i low_mask = _mm256_set1_epi8(0x0F);
  __m256 acc[T];
  float sum_mins[T];
  for (int t = 0; t < T; ++t) {
    acc[t] = _mm256_setzero_ps();
    sum_mins[t] = 0.0f;
  }
  for (int64_t i = 0; i < nb; ++i) {
    uint8_t scales[8], mins[8];
    for (int j = 0; j < 8; ++j) GetScaleMinK4(j, x[i].scales, &scales[j], &mins[j]);
    const float xdmin = Half(x[i].dmin);
    const float xd = Half(x[i].d);
    __m256i sumi[T];
    for (int t = 0; t < T; ++t) {
      sum_mins[t] += xdmin * y[t][i].d * static_cast<float>(SumMinsK(mins, y[t][i].bsums));
      sumi[t] = _mm256_setzero_si256();
    }
    for (int chunk = 0; chunk < 4; ++chunk) {
      const __m256i q4 = Load256(x[i].qs + 32 * chunk);
      const __m256i lo = _mm256_and_si256(q4, low_mask);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), low_mask);
      const __m256i scale0 = _mm256_set1_epi16(scales[2 * chunk]);
      const __m256i scale1 = _mm256_set1_epi16(scales[2 * chunk + 1]);
      for (int t = 0; t < T; ++t) {
        const __m256i p0 = _mm256_maddubs_epi16(lo, Load256(y[t][i].qs + 64 * chunk));
        const __m256i p1 = _mm256_maddubs_epi16(hi, Load256(y[t][i].qs + 64 * chunk + 32));
        sumi[t] = _mm256_add_epi32(sumi[t], _mm256_add_epi32(_mm256_madd_epi16(p0, scale0),
                                                             _mm256_madd_epi16(p1, scale1)));
      }
    }
    for (int t = 0; t < T; ++t) {
      const __m256 d = _mm256_set1_ps(xd * y[t][i].d);
      acc[t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi[t]), acc[t]);
    }
  }
  for (int t = 0; t < T; ++t) out[t] = HorizontalSum(acc[t]) - sum_mins[t];
}

template <int T>
EXO_AVX2 void VecDotQ6_KTokens(const void* vx, const void* vy, int64_t stride, int64_t n,
                               float* out) {
  const BlockQ6_K* x = static_cast<const BlockQ6_K*>(vx);
  const BlockQ8_K* y[T];
  TokenRows(vy, stride, y);
  const int64_t nb = n / kQkK;
  const __m256i low_mask = _mm256_set1_epi8(0x0F);
  const __m256i two_bits = _mm256_set1_epi8(0x03);
  __m256 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    const int8_t* sc = x[i].scales;
    const float xd = Half(x[i].d);
    __m256i sumi[T];
    float d[T];
    for (int t = 0; t < T; ++t) {
      int offset_sum = 0;
      for (int g = 0; g < 16; ++g) offset_sum += sc[g] * y[t][i].bsums[g];
      d[t] = xd * y[t][i].d;
      sumi[t] = _mm256_setr_epi32(-32 * offset_sum, 0, 0, 0, 0, 0, 0, 0);
    }
    for (int half = 0; half < 2; ++half) {
      const __m256i ql0 = Load256(x[i].ql + 64 * half);
      const __m256i ql1 = Load256(x[i].ql + 64 * half + 32);
      const __m256i qh = Load256(x[i].qh + 32 * half);
      __m256i q[4];
      q[0] = _mm256_or_si256(_mm256_and_si256(ql0, low_mask),
                             _mm256_slli_epi16(_mm256_and_si256(qh, two_bits), 4));
      q[1] = _mm256_or_si256(
          _mm256_and_si256(ql1, low_mask),
          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), two_bits), 4));
      q[2] = _mm256_or_si256(
          _mm256_and_si256(_mm256_srli_epi16(ql0, 4), low_mask),
          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), two_bits), 4));
      q[3] = _mm256_or_si256(
          _mm256_and_si256(_mm256_srli_epi16(ql1, 4), low_mask),
          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), two_bits), 4));
      for (int k = 0; k < 4; ++k) {
        const int group = 8 * half + 2 * k;
        const __m256i scale =
            _mm256_set_m128i(_mm_set1_epi16(sc[group + 1]), _mm_set1_epi16(sc[group]));
        for (int t = 0; t < T; ++t) {
          const __m256i p = _mm256_maddubs_epi16(q[k], Load256(y[t][i].qs + 128 * half + 32 * k));
          sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(p, scale));
        }
      }
    }
    for (int t = 0; t < T; ++t) {
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d[t]), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
    }
  }
  for (int t = 0; t < T; ++t) out[t] = HorizontalSum(acc[t]);
}

template <int T>
EXO_AVX2 void VecDotQ4_0Tokens(const void* vx, const void* vy, int64_t stride, int64_t n,
                               float* out) {
  const BlockQ4_0* x = static_cast<const BlockQ4_0*>(vx);
  const BlockQ8_0* y[T];
  TokenRows(vy, stride, y);
  const int64_t nb = n / kQk32;
  const __m256i eight = _mm256_set1_epi8(8);
  __m256 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    const float xd = Half(x[i].d);
    const __m256i q = _mm256_sub_epi8(UnpackNibbles(x[i].qs), eight);
    const __m256i abs_q = _mm256_sign_epi8(q, q);
    for (int t = 0; t < T; ++t) {
      const __m256 d = _mm256_set1_ps(xd * Half(y[t][i].d));
      acc[t] = _mm256_fmadd_ps(d, MulSumI8PairsAbs(abs_q, q, Load256(y[t][i].qs)), acc[t]);
    }
  }
  for (int t = 0; t < T; ++t) out[t] = HorizontalSum(acc[t]);
}

template <int T>
EXO_AVX2 void VecDotQ5_KTokens(const void* vx, const void* vy, int64_t stride, int64_t n,
                               float* out) {
  const BlockQ5_K* x = static_cast<const BlockQ5_K*>(vx);
  const BlockQ8_K* y[T];
  TokenRows(vy, stride, y);
  const int64_t nb = n / kQkK;
  const __m256i low_mask = _mm256_set1_epi8(0x0F);
  const __m256i one = _mm256_set1_epi8(1);
  __m256 acc[T];
  float sum_mins[T];
  for (int t = 0; t < T; ++t) {
    acc[t] = _mm256_setzero_ps();
    sum_mins[t] = 0.0f;
  }
  for (int64_t i = 0; i < nb; ++i) {
    uint8_t scales[8], mins[8];
    for (int j = 0; j < 8; ++j) GetScaleMinK4(j, x[i].scales, &scales[j], &mins[j]);
    const float xdmin = Half(x[i].dmin);
    const float xd = Half(x[i].d);
    __m256i sumi[T];
    for (int t = 0; t < T; ++t) {
      sum_mins[t] += xdmin * y[t][i].d * static_cast<float>(SumMinsK(mins, y[t][i].bsums));
      sumi[t] = _mm256_setzero_si256();
    }
    __m256i high_bits = Load256(x[i].qh);
    for (int chunk = 0; chunk < 4; ++chunk) {
      const __m256i q4 = Load256(x[i].qs + 32 * chunk);
      const __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(high_bits, one), 4);
      const __m256i h1 =
          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(high_bits, 1), one), 4);
      high_bits = _mm256_srli_epi16(high_bits, 2);
      const __m256i lo = _mm256_or_si256(_mm256_and_si256(q4, low_mask), h0);
      const __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q4, 4), low_mask), h1);
      const __m256i scale0 = _mm256_set1_epi16(scales[2 * chunk]);
      const __m256i scale1 = _mm256_set1_epi16(scales[2 * chunk + 1]);
      for (int t = 0; t < T; ++t) {
        const __m256i p0 = _mm256_maddubs_epi16(lo, Load256(y[t][i].qs + 64 * chunk));
        const __m256i p1 = _mm256_maddubs_epi16(hi, Load256(y[t][i].qs + 64 * chunk + 32));
        sumi[t] = _mm256_add_epi32(sumi[t], _mm256_add_epi32(_mm256_madd_epi16(p0, scale0),
                                                             _mm256_madd_epi16(p1, scale1)));
      }
    }
    for (int t = 0; t < T; ++t) {
      const __m256 d = _mm256_set1_ps(xd * y[t][i].d);
      acc[t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi[t]), acc[t]);
    }
  }
  for (int t = 0; t < T; ++t) out[t] = HorizontalSum(acc[t]) - sum_mins[t];
}

// VecDotMultiFn entry point for a kernel template: picks the instantiation for `tokens`.
template <template <int> class Kernel>
void DispatchTokens(const void* vx, const void* vy, int64_t stride, int64_t n, int tokens,
                    float* out) {
  switch (tokens) {
    case 1:
      Kernel<1>::Run(vx, vy, stride, n, out);
      return;
    case 2:
      Kernel<2>::Run(vx, vy, stride, n, out);
      return;
    case 3:
      Kernel<3>::Run(vx, vy, stride, n, out);
      return;
    case 4:
      Kernel<4>::Run(vx, vy, stride, n, out);
      return;
    default:
      std::abort();  // callers pass 1..kMaxDotTokens
  }
}

static_assert(kMaxDotTokens == 4, "DispatchTokens handles 1..4 tokens");

#define EXO_TOKENS_KERNEL(Name, fn)                                                          \
  template <int T>                                                                           \
  struct Name {                                                                              \
    static void Run(const void* vx, const void* vy, int64_t stride, int64_t n, float* out) { \
      fn<T>(vx, vy, stride, n, out);                                                         \
    }                                                                                        \
  };
EXO_TOKENS_KERNEL(Q8_0Tokens, VecDotQ8_0Tokens)
EXO_TOKENS_KERNEL(Q5_0Tokens, VecDotQ5_0Tokens)
EXO_TOKENS_KERNEL(Q4_KTokens, VecDotQ4_KTokens)
EXO_TOKENS_KERNEL(Q6_KTokens, VecDotQ6_KTokens)
EXO_TOKENS_KERNEL(Q4_0Tokens, VecDotQ4_0Tokens)
EXO_TOKENS_KERNEL(Q5_KTokens, VecDotQ5_KTokens)
#undef EXO_TOKENS_KERNEL

}  // namespace

VecDotMultiFn GetVecDotMultiAvx2(TensorType type) {
  switch (type) {
    case TensorType::kQ5_0:
      return DispatchTokens<Q5_0Tokens>;
    case TensorType::kQ8_0:
      return DispatchTokens<Q8_0Tokens>;
    case TensorType::kQ4_K:
      return DispatchTokens<Q4_KTokens>;
    case TensorType::kQ6_K:
      return DispatchTokens<Q6_KTokens>;
    case TensorType::kQ4_0:
      return DispatchTokens<Q4_0Tokens>;
    case TensorType::kQ5_K:
      return DispatchTokens<Q5_KTokens>;
    default:
      return nullptr;
  }
}

VecDotFn GetVecDotAvx2(TensorType type) {
  switch (type) {
    case TensorType::kF32:
      return vec_dot_f32_avx2;
    case TensorType::kF16:
      return vec_dot_f16_avx2;
    case TensorType::kBF16:
      return vec_dot_bf16_avx2;
    case TensorType::kQ4_0:
      return vec_dot_q4_0_q8_0_avx2;
    case TensorType::kQ4_1:
      return vec_dot_q4_1_q8_1_avx2;
    case TensorType::kQ5_0:
      return vec_dot_q5_0_q8_0_avx2;
    case TensorType::kQ5_1:
      return vec_dot_q5_1_q8_1_avx2;
    case TensorType::kQ8_0:
      return vec_dot_q8_0_q8_0_avx2;
    case TensorType::kQ4_K:
      return vec_dot_q4_k_q8_k_avx2;
    case TensorType::kQ5_K:
      return vec_dot_q5_k_q8_k_avx2;
    case TensorType::kQ6_K:
      return vec_dot_q6_k_q8_k_avx2;
    default:
      return nullptr;
  }
}

#else  // !EXO_HAVE_X86

bool CpuHasAvx2Fma() { return false; }
bool QuantizeRowAvx2(TensorType, const float*, void*, int64_t) { return false; }
bool DequantizeRowAvx2(TensorType, const void*, float*, int64_t) { return false; }
VecDotFn GetVecDotAvx2(TensorType) { return nullptr; }
VecDotMultiFn GetVecDotMultiAvx2(TensorType) { return nullptr; }

#endif

// The multi-token kernels exist only as AVX2 variants, and GetVecDot picks the AVX2 single dot
// exactly when CpuHasAvx2Fma() holds, so the pair always matches bit for bit.
VecDotMultiFn GetVecDotMulti(TensorType type) {
  return CpuHasAvx2Fma() ? GetVecDotMultiAvx2(type) : nullptr;
}

}  // namespace exo::kernels::internal
