// Small AVX2 building blocks shared by the x86 kernels (quants_avx2.cc, quants_avx512.cc,
// gemv_x86.cc). Several of them fix an order of floating-point operations that the bit-identity
// promise depends on (HorizontalSum above all), so every kernel must use these very functions.
// Each carries its own target attribute; they inline into AVX2 and AVX-512 functions alike.
#ifndef EXO_KERNELS_INTERNAL_SIMD_X86_H_
#define EXO_KERNELS_INTERNAL_SIMD_X86_H_

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace exo::kernels::internal::x86 {

#define EXO_X86_AVX2_HELPER __attribute__((target("avx2,fma,f16c"), always_inline)) inline

// The sum of 8 floats in the one order every x86 dot product uses.
EXO_X86_AVX2_HELPER float HorizontalSum(__m256 v) {
  __m128 sum = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
  sum = _mm_add_ss(sum, _mm_movehdup_ps(sum));
  return _mm_cvtss_f32(sum);
}

EXO_X86_AVX2_HELPER int HorizontalSumI32(__m256i v) {
  __m128i sum = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0x4E));
  sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0xB1));
  return _mm_cvtsi128_si32(sum);
}

EXO_X86_AVX2_HELPER float Half(uint16_t h) { return _cvtsh_ss(h); }

EXO_X86_AVX2_HELPER __m256i Load256(const void* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

// 16 packed bytes -> 32 nibbles: low nibbles in bytes 0..15, high nibbles in bytes 16..31.
EXO_X86_AVX2_HELPER __m256i UnpackNibbles(const uint8_t* p) {
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m256i both = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

// 0x10 in byte j when bit j of the little-endian uint32 at `p` is set, else 0 (AVX2; the
// AVX-512 kernels use a mask move instead).
EXO_X86_AVX2_HELPER __m256i HighBitsQ5(const uint8_t* p) {
  uint32_t bits;
  std::memcpy(&bits, p, sizeof(bits));
  const __m256i select = _mm256_set_epi64x(0x0303030303030303LL, 0x0202020202020202LL,
                                           0x0101010101010101LL, 0x0000000000000000LL);
  const __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(bits)), select);
  const __m256i bit = _mm256_set1_epi64x(static_cast<long long>(0x8040201008040201ULL));
  const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
  return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}

#undef EXO_X86_AVX2_HELPER

}  // namespace exo::kernels::internal::x86

#endif  // x86

#endif  // EXO_KERNELS_INTERNAL_SIMD_X86_H_
