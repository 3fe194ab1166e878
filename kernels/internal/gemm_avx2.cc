// AVX2 GEMM row kernels: one weight row against the transposed 16-token groups that the
// AVX-512 kernels use (kGemm32Tokens, kGemm32BlockBytes, kGemmKBlockBytes in quants_impl.h),
// taken as two halves of 8 tokens, one ymm register per lane and half. Every function carries
// its own target attribute, so this file builds into a baseline x86-64 binary; the Get*Avx2
// results are only used after CpuHasAvx2Fma() said yes, the VNNI ones after CpuHasAvxVnni().
//
// Bit-identity with the AVX2 single-token dot (quants_avx2.cc) is by construction, as for the
// AVX-512 kernels: per block and token the integer lane sums are the same exact integers
// (formed by other means), and the float work per token is the dot's, acc_j = fma(d_x * d_y,
// float(lane_j), acc_j) in block order (Q8_0: two alternating accumulators), the final sum in
// HorizontalSum's order. gemm_test checks both variants bit for bit.
//
// Per call, the weight row is unpacked once into a scratch buffer (quants as bytes in element
// order, scales as floats / int16 pairs), then every 8-token half of every group walks the row
// with its eight lane accumulators in registers, reading 4-byte weight pieces as broadcast loads
// (loads, not shuffles) from the buffer.
//
// Two variants of the integer work, the same integers:
// * plain AVX2: u8 x s8 with vpmaddubsw (int16 pairs) + vpmaddwd. vpmaddubsw saturates, so the
//   unsigned operand must stay small: Q4_0 / Q5_0 quants are taken unsigned (q + 8 / q + 16,
//   <= 31: 31 * 128 * 2 fits int16) and each lane starts from the group's prepared bias
//   (-offset * sum4(y)); Q8_0 keeps signed weights and uses the sign trick of the dot
//   (|w| <= 128 against sign(y, w), |y| <= 127); the K-quants' quants are <= 63.
// * AVX-VNNI (VEX vpdpbusd / vpdpwssd on ymm): Q8_0 is taken unsigned (w + 128) too, lane j is
//   one vpdpbusd(bias, q_j, y_j) (no intermediate saturation), the K-quants' scale step one
//   vpdpwssd. The instructions are written as inline asm so that one kernel body serves both
//   variants (a template cannot switch its target attribute); only the VNNI instantiations
//   contain them.
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/internal/blocks.h"
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

bool CpuHasAvxVnni() {
  static const bool supported = [] {
    if (!CpuHasAvx2Fma()) return false;  // EXO_DISABLE_SIMD / EXO_SIMD=scalar, or no AVX2
    const char* level = std::getenv("EXO_SIMD");
    if (level != nullptr && std::strcmp(level, "avx2-novnni") == 0) return false;
    // AVX-VNNI: CPUID leaf 7 subleaf 1, EAX bit 4 (the YMM state check is AVX2's).
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx)) return false;
    return (eax & (1u << 4)) != 0;
  }();
  return supported;
}

#define EXO_GEMM_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace {

using x86::Half;
using x86::HighBitsQ5;
using x86::Load256;
using x86::UnpackNibbles;

constexpr int kT = kGemm32Tokens;  // tokens per group; a half is 8 of them, 32 bytes per row

// The calling thread's buffer for one unpacked weight row; grows and is reused.
uint8_t* RowScratch(size_t bytes) {
  thread_local std::vector<uint8_t> scratch;
  if (scratch.size() < bytes) scratch.resize(bytes);
  return scratch.data();
}

// `p` as a pointer the compiler cannot see through: loads from it stay broadcast loads instead
// of being forwarded from the stores that filled it.
template <typename T>
inline T* Opaque(T* p) {
  asm("" : "+r"(p));
  return p;
}

EXO_GEMM_AVX2 inline __m256i Broadcast4(const void* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof(v));
  return _mm256_set1_epi32(v);
}

// acc + (per int32 lane) the four products u8(u) x s8(s).
template <bool kVnni>
EXO_GEMM_AVX2 inline __m256i DotU8I8(__m256i acc, __m256i u, __m256i s) {
  if constexpr (kVnni) {
    asm("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(u), "xm"(s));
    return acc;
  } else {
    // Only for operands that cannot saturate vpmaddubsw (see the file comment).
    const __m256i pairs = _mm256_maddubs_epi16(u, s);
    return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
  }
}

// acc + (per int32 lane) the two products int16(a) x int16(b).
template <bool kVnni>
EXO_GEMM_AVX2 inline __m256i DotI16(__m256i acc, __m256i a, __m256i b) {
  if constexpr (kVnni) {
    asm("%{vex%} vpdpwssd %2, %1, %0" : "+x"(acc) : "x"(a), "xm"(b));
    return acc;
  } else {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
  }
}

// HorizontalSum's order for 8 tokens at once: ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)).
EXO_GEMM_AVX2 inline __m256 LaneSum(const __m256* l) {
  const __m256 s0 = _mm256_add_ps(l[0], l[4]);
  const __m256 s1 = _mm256_add_ps(l[1], l[5]);
  const __m256 s2 = _mm256_add_ps(l[2], l[6]);
  const __m256 s3 = _mm256_add_ps(l[3], l[7]);
  return _mm256_add_ps(_mm256_add_ps(s0, s2), _mm256_add_ps(s1, s3));
}

// ---- 32-element blocks (Q4_0, Q5_0, Q8_0) against Q8_0 groups -------------------------------
// The row buffer holds per block 32 weight bytes (Unpack below) and, after all blocks, the
// blocks' d as floats.

enum class Kind32 { kQ4_0, kQ5_0, kQ8_0 };

template <Kind32 K>
struct Weights32;

template <>
struct Weights32<Kind32::kQ4_0> {
  using Block = BlockQ4_0;
  static constexpr bool kTwoAccumulators = false;
  // q + 8 (0..15); the prepared bias is -8 * sum4(y).
  template <bool kVnni>
  EXO_GEMM_AVX2 static __m256i Unpack(const Block& b) {
    return UnpackNibbles(b.qs);
  }
};

template <>
struct Weights32<Kind32::kQ5_0> {
  using Block = BlockQ5_0;
  static constexpr bool kTwoAccumulators = false;
  // q + 16 (0..31); the prepared bias is -16 * sum4(y).
  template <bool kVnni>
  EXO_GEMM_AVX2 static __m256i Unpack(const Block& b) {
    return _mm256_or_si256(UnpackNibbles(b.qs), HighBitsQ5(b.qh));
  }
};

template <>
struct Weights32<Kind32::kQ8_0> {
  using Block = BlockQ8_0;
  // The AVX2 Q8_0 dot alternates two accumulators (even and odd blocks).
  static constexpr bool kTwoAccumulators = true;
  // VNNI: w + 128 (0..255) against the prepared bias -128 * sum4(y). Plain: |w| (0..128, -128
  // read as 128 unsigned), the sign going onto y per lane.
  template <bool kVnni>
  EXO_GEMM_AVX2 static __m256i Unpack(const Block& b) {
    const __m256i w = Load256(b.qs);
    return kVnni ? _mm256_xor_si256(w, _mm256_set1_epi8(static_cast<char>(0x80)))
                 : _mm256_sign_epi8(w, w);
  }
};

// Lane j (int32 per token) of block `i` for the 8 tokens of a half: `y` is the half's row of
// quants for lane j, `bias` its row of prepared biases.
template <Kind32 K, bool kVnni>
EXO_GEMM_AVX2 inline __m256i Lane32(const uint8_t* wq, const typename Weights32<K>::Block& x, int j,
                                    const uint8_t* y, const uint8_t* bias) {
  const __m256i yv = Load256(y);
  if constexpr (K == Kind32::kQ8_0 && !kVnni) {
    // |w| x sign(y, w) as the dot's MulSumI8Pairs (no bias: the products are signed).
    const __m256i signed_y = _mm256_sign_epi8(yv, Broadcast4(x.qs + 4 * j));
    const __m256i pairs = _mm256_maddubs_epi16(Broadcast4(wq + 4 * j), signed_y);
    return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
  } else {
    return DotU8I8<kVnni>(Load256(bias), Broadcast4(wq + 4 * j), yv);
  }
}

// acc[0 .. kLanes) += lanes kLane0 .. kLane0 + kLanes of block i, scaled by d_x * d_y.
template <Kind32 K, bool kVnni, int kLane0, int kLanes>
EXO_GEMM_AVX2 inline void Block32(const uint8_t* wq, float dx,
                                  const typename Weights32<K>::Block& x, const uint8_t* slot,
                                  __m256* acc) {
  // d_x * d_y per token, as the dot's scalar product (one rounding either way).
  const __m256 d = _mm256_mul_ps(
      _mm256_set1_ps(dx), _mm256_loadu_ps(reinterpret_cast<const float*>(slot + 16 * kT * 4)));
#pragma GCC unroll 8
  for (int k = 0; k < kLanes; ++k) {
    const int j = kLane0 + k;
    const uint8_t* y = slot + j * kT * 4;
    const __m256i lanes = Lane32<K, kVnni>(wq, x, j, y, y + 8 * kT * 4);
    acc[k] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(lanes), acc[k]);
  }
}

// Lanes kLane0 .. kLane0 + kLanes of the 8 tokens of one half (`half`: the group's base plus
// 32 bytes per half) over the whole row, into sums[kLane0 ..].
template <Kind32 K, bool kVnni, int kLane0, int kLanes>
EXO_GEMM_AVX2 inline void Pass32(const uint8_t* wq, const float* wd,
                                 const typename Weights32<K>::Block* x, const uint8_t* half,
                                 int64_t nb, __m256* sums) {
  constexpr bool kTwo = Weights32<K>::kTwoAccumulators;
  // One array for both accumulator sets, so that GCC keeps them in registers.
  __m256 acc[(kTwo ? 2 : 1) * kLanes];
#pragma GCC unroll 16
  for (__m256& a : acc) a = _mm256_setzero_ps();
  int64_t i = 0;
  if constexpr (kTwo) {
    for (; i + 2 <= nb; i += 2) {
      const uint8_t* slot = half + i * kGemm32BlockBytes;
      Block32<K, kVnni, kLane0, kLanes>(wq + 32 * i, wd[i], x[i], slot, acc);
      Block32<K, kVnni, kLane0, kLanes>(wq + 32 * (i + 1), wd[i + 1], x[i + 1],
                                        slot + kGemm32BlockBytes, acc + kLanes);
    }
  }
  for (; i < nb; ++i) {
    Block32<K, kVnni, kLane0, kLanes>(wq + 32 * i, wd[i], x[i], half + i * kGemm32BlockBytes, acc);
  }
#pragma GCC unroll 8
  for (int k = 0; k < kLanes; ++k) {
    sums[kLane0 + k] = kTwo ? _mm256_add_ps(acc[k], acc[kLanes + k]) : acc[k];
  }
}

template <Kind32 K, bool kVnni>
EXO_GEMM_AVX2 void Gemm32RowAvx2(const void* vx, const void* vgroups, int64_t n, int count,
                                 float* out) {
  using W = Weights32<K>;
  const typename W::Block* x = static_cast<const typename W::Block*>(vx);
  const uint8_t* groups = static_cast<const uint8_t*>(vgroups);
  const int64_t nb = n / kQk32;
  uint8_t* wq = RowScratch(static_cast<size_t>(nb) * (32 + sizeof(float)));
  float* wd = reinterpret_cast<float*>(wq + 32 * nb);
  for (int64_t i = 0; i < nb; ++i) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(wq + 32 * i), W::template Unpack<kVnni>(x[i]));
    wd[i] = Half(x[i].d);
  }
  const uint8_t* q = Opaque(wq);
  const int64_t stride = Gemm32GroupBytes(nb);
  for (int h = 0; h < 2 * count; ++h) {
    const uint8_t* half = groups + (h / 2) * stride + 32 * (h % 2);
    __m256 sums[8];
    if constexpr (W::kTwoAccumulators) {
      // 2 x 8 accumulators would not fit the 16 registers: lanes 0-3, then 4-7.
      Pass32<K, kVnni, 0, 4>(q, wd, x, half, nb, sums);
      Pass32<K, kVnni, 4, 4>(q, wd, x, half, nb, sums);
    } else {
      Pass32<K, kVnni, 0, 8>(q, wd, x, half, nb, sums);
    }
    _mm256_storeu_ps(out + 8 * h, LaneSum(sums));
  }
}

// ---- K-quants (Q4_K, Q5_K, Q6_K) against Q8_K groups ------------------------------------
// Per super-block the row buffer holds the 256 quants in element order, then `kPairs` int16
// pairs as uint32 (Q4_K/Q5_K: (scale c, scale c) c = 0..7, then (min m, min m); Q6_K:
// (scale s, scale s) s = 0..15, then (-32 scale 2m, -32 scale 2m + 1) m = 0..7), then d (and
// dmin) as floats.

enum class KindK { kQ4_K, kQ5_K, kQ6_K };

// The 16 int16 of v as pairs (v_k, v_k) at out[k], k = 0..15.
EXO_GEMM_AVX2 inline void StorePairs(__m256i v, uint32_t* out) {
  const __m256i lo = _mm256_unpacklo_epi16(v, v);  // k = 0..3 | 8..11
  const __m256i hi = _mm256_unpackhi_epi16(v, v);  // k = 4..7 | 12..15
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm256_permute2x128_si256(lo, hi, 0x20));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 8), _mm256_permute2x128_si256(lo, hi, 0x31));
}

// The Q4_K / Q5_K 6-bit scales and mins (GetScaleMinK4 for j = 0..7) as 16 bytes, scales
// first, worked out on 32-bit words.
inline void ScalesMinsK4(const uint8_t* packed, uint8_t* out) {
  uint32_t w[3];
  std::memcpy(w, packed, 12);
  constexpr uint32_t kLow6 = 0x3f3f3f3f, kLow4 = 0x0f0f0f0f, kLow2 = 0x03030303;
  const uint32_t words[4] = {
      w[0] & kLow6,                                          // scales 0..3
      (w[2] & kLow4) | (((w[0] >> 6) & kLow2) << 4),         // scales 4..7
      w[1] & kLow6,                                          // mins 0..3
      ((w[2] >> 4) & kLow4) | (((w[1] >> 6) & kLow2) << 4),  // mins 4..7
  };
  std::memcpy(out, words, 16);
}

template <KindK K>
struct WeightsK {
  using Block = std::conditional_t<K == KindK::kQ4_K, BlockQ4_K,
                                   std::conditional_t<K == KindK::kQ5_K, BlockQ5_K, BlockQ6_K>>;
  static constexpr bool kSixBit = K == KindK::kQ6_K;
  static constexpr int kPairs = kSixBit ? 24 : 16;
  static constexpr int kFloats = kSixBit ? 1 : 2;
  static constexpr int64_t kBytes = kQkK + 4 * kPairs + 4 * kFloats;

  EXO_GEMM_AVX2 static void Unpack(const Block& b, uint8_t* dst) {
    uint32_t* pairs = reinterpret_cast<uint32_t*>(dst + kQkK);
    float* d = reinterpret_cast<float*>(pairs + kPairs);
    const __m256i low_mask = _mm256_set1_epi8(0x0F);
    if constexpr (kSixBit) {
      const __m256i two_bits = _mm256_set1_epi8(0x03);
      // As the AVX2 dot: per 128-element half, four 32-quant chunks.
      for (int h = 0; h < 2; ++h) {
        const __m256i ql0 = Load256(b.ql + 64 * h);
        const __m256i ql1 = Load256(b.ql + 64 * h + 32);
        const __m256i qh = Load256(b.qh + 32 * h);
        const __m256i q[4] = {
            _mm256_or_si256(_mm256_and_si256(ql0, low_mask),
                            _mm256_slli_epi16(_mm256_and_si256(qh, two_bits), 4)),
            _mm256_or_si256(
                _mm256_and_si256(ql1, low_mask),
                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), two_bits), 4)),
            _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(ql0, 4), low_mask),
                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), two_bits), 4)),
            _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(ql1, 4), low_mask),
                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), two_bits), 4)),
        };
        for (int k = 0; k < 4; ++k) {
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 128 * h + 32 * k), q[k]);
        }
      }
      const __m256i sc16 =
          _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b.scales)));
      StorePairs(sc16, pairs);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(pairs + 16),
                          _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16(sc16, 5)));
      d[0] = Half(b.d);
    } else {
      [[maybe_unused]] __m256i high_bits;
      if constexpr (K == KindK::kQ5_K) high_bits = Load256(b.qh);
      const __m256i one = _mm256_set1_epi8(1);
      for (int c = 0; c < 4; ++c) {
        const __m256i q4 = Load256(b.qs + 32 * c);
        __m256i lo = _mm256_and_si256(q4, low_mask);
        __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), low_mask);
        if constexpr (K == KindK::kQ5_K) {
          // Bit 2c of qh[l] is bit 4 of element 64c + l, bit 2c + 1 that of 64c + 32 + l.
          const __m256i h0 = _mm256_and_si256(_mm256_srli_epi16(high_bits, 2 * c), one);
          const __m256i h1 = _mm256_and_si256(_mm256_srli_epi16(high_bits, 2 * c + 1), one);
          lo = _mm256_or_si256(lo, _mm256_slli_epi16(h0, 4));
          hi = _mm256_or_si256(hi, _mm256_slli_epi16(h1, 4));
        }
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 64 * c), lo);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 64 * c + 32), hi);
      }
      alignas(16) uint8_t sm[16];
      ScalesMinsK4(b.scales, sm);
      StorePairs(_mm256_cvtepu8_epi16(_mm_load_si128(reinterpret_cast<const __m128i*>(sm))), pairs);
      d[0] = Half(b.d);
      d[1] = Half(b.dmin);
    }
  }
};

// Sum over m = 0..7 of pair m times the half's bsums pair m, for 8 tokens.
template <bool kVnni>
EXO_GEMM_AVX2 inline __m256i BsumDot(const uint32_t* pairs, const uint8_t* bsums) {
  __m256i sum = _mm256_madd_epi16(Broadcast4(pairs), Load256(bsums));
#pragma GCC unroll 8
  for (int m = 1; m < 8; ++m) {
    sum = DotI16<kVnni>(sum, Broadcast4(pairs + m), Load256(bsums + m * kT * 4));
  }
  return sum;
}

// One half (8 tokens) against the unpacked row, into out[0..8).
template <KindK K, bool kVnni>
EXO_GEMM_AVX2 inline void HalfK(const uint8_t* row, const uint8_t* half, int64_t nb, float* out) {
  using W = WeightsK<K>;
  __m256 acc[8];
#pragma GCC unroll 8
  for (int j = 0; j < 8; ++j) acc[j] = _mm256_setzero_ps();
  [[maybe_unused]] __m256 sum_mins = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    const uint8_t* w = row + i * W::kBytes;
    const uint32_t* pairs = reinterpret_cast<const uint32_t*>(w + kQkK);
    const float* wd = reinterpret_cast<const float*>(pairs + W::kPairs);
    const uint8_t* slot = half + i * kGemmKBlockBytes;
    __m256i lanes[8];
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) lanes[j] = _mm256_setzero_si256();
    if constexpr (W::kSixBit) {
      // The quants are stored +32: lane 0 starts from -32 * sum(scale * bsum), as the dot.
      lanes[0] = BsumDot<kVnni>(pairs + 16, slot + 64 * kT * 4);
    }
    // Not unrolled: unrolled, GCC hoists all 64 vpmaddubsw and spills their results.
#pragma GCC unroll 1
    for (int c = 0; c < 8; ++c) {
      const __m256i scale_lo = Broadcast4(pairs + (W::kSixBit ? 2 * c : c));
      const __m256i scale_hi = W::kSixBit ? Broadcast4(pairs + 2 * c + 1) : scale_lo;
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j) {
        // Quants <= 63, |y| <= 128: vpmaddubsw does not saturate.
        const __m256i p = _mm256_maddubs_epi16(Broadcast4(w + 32 * c + 4 * j),
                                               Load256(slot + (8 * c + j) * kT * 4));
        const __m256i scale = j < 4 ? scale_lo : scale_hi;
        lanes[j] = DotI16<kVnni>(lanes[j], p, scale);
      }
    }
    const __m256 yd = _mm256_loadu_ps(reinterpret_cast<const float*>(slot + 72 * kT * 4));
    const __m256 d = _mm256_mul_ps(_mm256_set1_ps(wd[0]), yd);
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) acc[j] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(lanes[j]), acc[j]);
    if constexpr (!W::kSixBit) {
      // sum_mins += (dmin * d_y) * float(mins), as the dot.
      const __m256i mins = BsumDot<kVnni>(pairs + 8, slot + 64 * kT * 4);
      const __m256 dmin = _mm256_mul_ps(_mm256_set1_ps(wd[1]), yd);
      sum_mins = _mm256_add_ps(sum_mins, _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(mins)));
    }
  }
  const __m256 total = LaneSum(acc);
  _mm256_storeu_ps(out, W::kSixBit ? total : _mm256_sub_ps(total, sum_mins));
}

template <KindK K, bool kVnni>
EXO_GEMM_AVX2 void GemmKRowAvx2(const void* vx, const void* vgroup, int64_t n, float* out) {
  using W = WeightsK<K>;
  const typename W::Block* x = static_cast<const typename W::Block*>(vx);
  const uint8_t* group = static_cast<const uint8_t*>(vgroup);
  const int64_t nb = n / kQkK;
  uint8_t* row = RowScratch(static_cast<size_t>(nb * W::kBytes));
  for (int64_t i = 0; i < nb; ++i) W::Unpack(x[i], row + i * W::kBytes);
  const uint8_t* r = Opaque(row);
  HalfK<K, kVnni>(r, group, nb, out);
  HalfK<K, kVnni>(r, group + 32, nb, out + 8);
}

}  // namespace

Gemm32RowFn GetGemm32RowAvx2(TensorType type, bool vnni) {
  switch (type) {
    case TensorType::kQ4_0:
      return vnni ? Gemm32RowAvx2<Kind32::kQ4_0, true> : Gemm32RowAvx2<Kind32::kQ4_0, false>;
    case TensorType::kQ5_0:
      return vnni ? Gemm32RowAvx2<Kind32::kQ5_0, true> : Gemm32RowAvx2<Kind32::kQ5_0, false>;
    case TensorType::kQ8_0:
      return vnni ? Gemm32RowAvx2<Kind32::kQ8_0, true> : Gemm32RowAvx2<Kind32::kQ8_0, false>;
    default:
      return nullptr;
  }
}

GemmKRowFn GetGemmKRowAvx2(TensorType type, bool vnni) {
  switch (type) {
    case TensorType::kQ4_K:
      return vnni ? GemmKRowAvx2<KindK::kQ4_K, true> : GemmKRowAvx2<KindK::kQ4_K, false>;
    case TensorType::kQ5_K:
      return vnni ? GemmKRowAvx2<KindK::kQ5_K, true> : GemmKRowAvx2<KindK::kQ5_K, false>;
    case TensorType::kQ6_K:
      return vnni ? GemmKRowAvx2<KindK::kQ6_K, true> : GemmKRowAvx2<KindK::kQ6_K, false>;
    default:
      return nullptr;
  }
}

#else  // !EXO_HAVE_X86

bool CpuHasAvxVnni() { return false; }
Gemm32RowFn GetGemm32RowAvx2(TensorType, bool) { return nullptr; }
GemmKRowFn GetGemmKRowAvx2(TensorType, bool) { return nullptr; }

#endif

}  // namespace exo::kernels::internal
