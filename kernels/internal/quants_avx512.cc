// AVX-512 (F/BW/VL/DQ + VNNI) kernels: decode dot products (Q4_0, Q5_0, Q8_0, Q6_K), and
// prompt-processing kernels that take one weight row against groups of kGemm32Tokens tokens whose
// activations were transposed for them (quants_impl.h). Every function carries its own target
// attribute, so this file builds into a baseline x86-64 binary; the Get*Avx512 results are only
// used after CpuHasAvx512Vnni() said yes.
//
// Bit-identity with the AVX2 single-token dot (quants_avx2.cc) is by construction: per block and
// token the AVX2 kernel forms eight int32 lane sums and then does acc = fma(d, float(lanes), acc)
// in a fixed order, finishing with the same horizontal sum. Here the integer lane sums are formed
// differently (VNNI dot products; a decode register holding two chunks is folded back to eight
// lanes; the GEMM kernels hold lane j of 16 tokens per register and start from prepared biases:
// integer arithmetic is exact, so the lane values are equal) and the float operations per token
// are the same ones in the same order. gemm_test and simd_test check this bit for bit.
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "kernels/internal/blocks.h"
#include "kernels/internal/fp16.h"
#include "kernels/internal/quants_impl.h"
#include "kernels/internal/simd_x86.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define EXO_HAVE_X86 1
#else
#define EXO_HAVE_X86 0
#endif

// GCC 12's AVX-512 headers trip -W(maybe-)uninitialized on their own _mm512_undefined_*() values.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace exo::kernels::internal {

#if EXO_HAVE_X86

bool CpuHasAvx512Vnni() {
  static const bool supported = [] {
    if (!CpuHasAvx2Fma()) return false;  // also honours EXO_DISABLE_SIMD / EXO_SIMD=scalar
    const char* level = std::getenv("EXO_SIMD");
    if (level != nullptr &&
        (std::strcmp(level, "avx2") == 0 || std::strcmp(level, "avx2-novnni") == 0)) {
      return false;
    }
    __builtin_cpu_init();
    // __builtin_cpu_supports also checks that the OS saves the ZMM state.
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vnni");
  }();
  return supported;
}

#define EXO_AVX512 \
  __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))

namespace {

using x86::Half;
using x86::HorizontalSum;
using x86::HorizontalSumI32;
using x86::Load256;
using x86::UnpackNibbles;

EXO_AVX512 inline __m512i Load512(const void* p) {
  return _mm512_loadu_si512(reinterpret_cast<const __m512i*>(p));
}

// 32 bytes at p in both halves of a 512-bit register.
EXO_AVX512 inline __m512i Broadcast256(const void* p) { return _mm512_broadcast_i64x4(Load256(p)); }

// Lanes 0..7 plus lanes 8..15: the eight AVX2 lane sums of a register holding two chunks.
EXO_AVX512 inline __m256i Fold(__m512i s) {
  return _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64(s, 1));
}

// 0x10 in byte j when bit j of the little-endian uint32 at `p` is set, else 0.
EXO_AVX512 inline __m256i HighBitsQ5Mask(const uint8_t* p) {
  uint32_t bits;
  std::memcpy(&bits, p, sizeof(bits));
  const __mmask32 set = _cvtu32_mask32(bits);
  return _mm256_maskz_mov_epi8(set, _mm256_set1_epi8(0x10));
}

// ---- 32-element blocks against Q8_0 activations (Q4_0, Q5_0, Q8_0) ------------------------
// Decode (one token): lanes = dpbusd(|w|, sign(y, w)), the same lane sums as AVX2's
// madd(maddubs(|w|, sign(y, w)), 1) (|w| <= 128 and |y| <= 127: maddubs never saturates).
// GEMM (16 tokens transposed, see kGemm32Tokens): lane j of 16 tokens = dpbusd(bias, q_j, y_j)
// with the unsigned weight quants q = w + offset (4 bytes, broadcast) and bias = -offset * sum4(y)
// prepared with the activations: the same exact integers, and the float work for 16 tokens in
// one register.

// Nibbles of 16 packed bytes in both 256-bit halves: low nibbles in bytes 0..15 of a half, high
// nibbles in bytes 16..31.
EXO_AVX512 inline __m512i UnpackNibbles512(const uint8_t* p) {
  const __m512i packed =
      _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  const __m512i shift = _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4);
  return _mm512_and_si512(_mm512_srlv_epi64(packed, shift), _mm512_set1_epi8(0x0F));
}

struct Q4_0Weights {
  using Block = BlockQ4_0;
  static constexpr bool kTwoAccumulators = false;
  static constexpr int kOffset = 8;
  EXO_AVX512 static __m256i Signed(const Block& b) {
    return _mm256_sub_epi8(UnpackNibbles(b.qs), _mm256_set1_epi8(8));
  }
  // q + kOffset (0..15) in both halves.
  EXO_AVX512 static __m512i Unsigned(const Block& b) { return UnpackNibbles512(b.qs); }
};

struct Q5_0Weights {
  using Block = BlockQ5_0;
  static constexpr bool kTwoAccumulators = false;
  static constexpr int kOffset = 16;
  EXO_AVX512 static __m256i Signed(const Block& b) {
    const __m256i q = _mm256_or_si256(UnpackNibbles(b.qs), HighBitsQ5Mask(b.qh));
    return _mm256_sub_epi8(q, _mm256_set1_epi8(16));
  }
  EXO_AVX512 static __m512i Unsigned(const Block& b) {
    uint32_t bits;
    std::memcpy(&bits, b.qh, sizeof(bits));
    // Bit j of qh is bit 4 of quant j, in each half. Adding 16 sets it (the nibble is below 16).
    const __mmask64 high = _cvtu64_mask64(static_cast<uint64_t>(bits) * 0x100000001ull);
    const __m512i q = UnpackNibbles512(b.qs);
    return _mm512_mask_add_epi8(q, high, q, _mm512_set1_epi8(16));
  }
};

struct Q8_0Weights {
  using Block = BlockQ8_0;
  // The AVX2 Q8_0 dot alternates two accumulators (even and odd blocks).
  static constexpr bool kTwoAccumulators = true;
  static constexpr int kOffset = 128;
  EXO_AVX512 static __m256i Signed(const Block& b) { return Load256(b.qs); }
  // w + 128 (0..255): flipping the sign bit.
  EXO_AVX512 static __m512i Unsigned(const Block& b) {
    return _mm512_xor_si512(Broadcast256(b.qs), _mm512_set1_epi8(static_cast<char>(0x80)));
  }
};

// Block i of the weight row against G groups of 16 tokens (group g's block at slot + g * stride):
// acc[8 * g + j] holds lane j of group g's tokens.
template <int G>
EXO_AVX512 inline void Gemm32Block(__m512i q, float dx, const uint8_t* slot, int64_t stride,
                                   __m512* acc) {
  // The unsigned quants go through memory so that each 4-byte piece is a broadcast load (a load,
  // not a shuffle on the vector ports). The empty asm hides that `w` points at the buffer it
  // reads, else the compiler forwards the store through two shuffles per piece.
  alignas(64) uint8_t buffer[64];
  _mm512_store_si512(buffer, q);
  const uint8_t* w = buffer;
  asm("" : "+r"(w) : "m"(buffer));
  constexpr int kT = kGemm32Tokens;
  const __m512 dxv = _mm512_set1_ps(dx);
  __m512 d[G];
#pragma GCC unroll 16
  for (int g = 0; g < G; ++g) {
    // d_x * d_y per token, as the AVX2 dot's scalar product (one rounding either way).
    d[g] = _mm512_mul_ps(
        dxv, _mm512_loadu_ps(reinterpret_cast<const float*>(slot + g * stride + 16 * kT * 4)));
  }
#pragma GCC unroll 16
  for (int j = 0; j < 8; ++j) {
    int32_t wj;
    std::memcpy(&wj, w + 4 * j, sizeof(wj));
    const __m512i qj = _mm512_set1_epi32(wj);
#pragma GCC unroll 16
    for (int g = 0; g < G; ++g) {
      const uint8_t* y = slot + g * stride + j * kT * 4;
      const __m512i lanes = _mm512_dpbusd_epi32(Load512(y + 8 * kT * 4), qj, Load512(y));
      acc[8 * g + j] = _mm512_fmadd_ps(d[g], _mm512_cvtepi32_ps(lanes), acc[8 * g + j]);
    }
  }
}

// HorizontalSum's order per token: ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)). The lanes
// come as values: with an array pointer GCC keeps the accumulators in memory.
EXO_AVX512 inline void StoreLaneSums(__m512 l0, __m512 l1, __m512 l2, __m512 l3, __m512 l4,
                                     __m512 l5, __m512 l6, __m512 l7, float* out) {
  const __m512 s0 = _mm512_add_ps(l0, l4);
  const __m512 s1 = _mm512_add_ps(l1, l5);
  const __m512 s2 = _mm512_add_ps(l2, l6);
  const __m512 s3 = _mm512_add_ps(l3, l7);
  _mm512_storeu_ps(out, _mm512_add_ps(_mm512_add_ps(s0, s2), _mm512_add_ps(s1, s3)));
}

template <typename W, int G>
EXO_AVX512 void Gemm32RowGroups(const typename W::Block* x, const uint8_t* groups, int64_t nb,
                                float* out) {
  const int64_t stride = Gemm32GroupBytes(nb);
  // One array for both accumulator sets: as two arrays GCC keeps Q8_0's in memory.
  constexpr int kSets = W::kTwoAccumulators ? 2 : 1;
  __m512 acc[kSets * 8 * G];
#pragma GCC unroll 16
  for (__m512& a : acc) a = _mm512_setzero_ps();
  __m512* acc0 = acc;
  int64_t i = 0;
  if constexpr (W::kTwoAccumulators) {
    // Even blocks into acc0, odd ones into acc1, as the AVX2 Q8_0 dot.
    __m512* acc1 = acc + 8 * G;
    for (; i + 2 <= nb; i += 2) {
      const uint8_t* slot = groups + i * kGemm32BlockBytes;
      Gemm32Block<G>(W::Unsigned(x[i]), Half(x[i].d), slot, stride, acc0);
      Gemm32Block<G>(W::Unsigned(x[i + 1]), Half(x[i + 1].d), slot + kGemm32BlockBytes, stride,
                     acc1);
    }
  }
  for (; i < nb; ++i) {
    Gemm32Block<G>(W::Unsigned(x[i]), Half(x[i].d), groups + i * kGemm32BlockBytes, stride, acc0);
  }
  if constexpr (W::kTwoAccumulators) {
#pragma GCC unroll 16
    for (int j = 0; j < 8 * G; ++j) acc0[j] = _mm512_add_ps(acc0[j], acc[8 * G + j]);
  }
#pragma GCC unroll 16
  for (int g = 0; g < G; ++g) {
    const __m512* a = acc0 + 8 * g;
    StoreLaneSums(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], out + kGemm32Tokens * g);
  }
}

template <typename W>
EXO_AVX512 void Gemm32Row(const void* vx, const void* vgroups, int64_t n, int count, float* out) {
  const typename W::Block* x = static_cast<const typename W::Block*>(vx);
  const uint8_t* groups = static_cast<const uint8_t*>(vgroups);
  const int64_t nb = n / kQk32;
  static_assert(kGemm32MaxGroups == 2, "one or two groups below");
  if constexpr (W::kTwoAccumulators) {
    // Two accumulator sets for two groups would need all 32 registers: one group at a time.
    for (int g = 0; g < count; ++g) {
      Gemm32RowGroups<W, 1>(x, groups + g * Gemm32GroupBytes(nb), nb, out + kGemm32Tokens * g);
    }
  } else if (count == 2) {
    Gemm32RowGroups<W, 2>(x, groups, nb, out);
  } else {
    Gemm32RowGroups<W, 1>(x, groups, nb, out);
  }
}

// Single-token dots: the AVX2 kernels' float work (same accumulators, same order) on VNNI lane
// sums, so that decode and prompt processing agree bit for bit on every x86 level.
// DotStep: acc += d * float(lanes of one block), the AVX2 kernels' per-block step.
template <typename W>
EXO_AVX512 inline __m256 DotStep(const typename W::Block& x, const BlockQ8_0& y, __m256 acc) {
  const __m256i w = W::Signed(x);
  const __m256i ys = _mm256_sign_epi8(Load256(y.qs), w);
  const __m256i lanes = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(w, w), ys);
  return _mm256_fmadd_ps(_mm256_set1_ps(Half(x.d) * Half(y.d)), _mm256_cvtepi32_ps(lanes), acc);
}

template <typename W>
EXO_AVX512 float VecDot32(const void* vx, const void* vy, int64_t n) {
  const typename W::Block* x = static_cast<const typename W::Block*>(vx);
  const BlockQ8_0* y = static_cast<const BlockQ8_0*>(vy);
  const int64_t nb = n / kQk32;
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  if constexpr (W::kTwoAccumulators) {
    for (; i + 2 <= nb; i += 2) {
      acc0 = DotStep<W>(x[i], y[i], acc0);
      acc1 = DotStep<W>(x[i + 1], y[i + 1], acc1);
    }
  }
  for (; i < nb; ++i) acc0 = DotStep<W>(x[i], y[i], acc0);
  return W::kTwoAccumulators ? HorizontalSum(_mm256_add_ps(acc0, acc1)) : HorizontalSum(acc0);
}

// ---- K-quants against Q8_K activations ----------------------------------------------------

// Decode dot of Q6_K. Per 128-element half, q0|q1 match y[128h..128h+63] and q2|q3
// y[128h+64..128h+127], each register two 32-byte chunks folded back to the AVX2 lanes.
EXO_AVX512 float VecDotQ6K(const void* vx, const void* vy, int64_t n) {
  const BlockQ6_K* x = static_cast<const BlockQ6_K*>(vx);
  const BlockQ8_K* y = static_cast<const BlockQ8_K*>(vy);
  const int64_t nb = n / kQkK;
  const __m512i low_mask = _mm512_set1_epi8(0x0F);
  const __m512i two_bits = _mm512_set1_epi8(0x03);
  const __m512i shift01 = _mm512_setr_epi64(0, 0, 0, 0, 2, 2, 2, 2);
  const __m512i shift23 = _mm512_setr_epi64(4, 4, 4, 4, 6, 6, 6, 6);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    const float d = Half(x[i].d) * y[i].d;
    const __m256i sc16 =
        _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x[i].scales)));
    const __m512i sc512 = _mm512_castsi256_si512(sc16);
    __m512i q[4], sc[4];
    for (int h = 0; h < 2; ++h) {
      const __m512i ql = Load512(x[i].ql + 64 * h);
      const __m512i qh = Broadcast256(x[i].qh + 32 * h);
      q[2 * h] = _mm512_or_si512(
          _mm512_and_si512(ql, low_mask),
          _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi64(qh, shift01), two_bits), 4));
      q[2 * h + 1] = _mm512_or_si512(
          _mm512_and_si512(_mm512_srli_epi16(ql, 4), low_mask),
          _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi64(qh, shift23), two_bits), 4));
      // 128-bit lane k of q[2h + m] uses scale 8h + 4m + k.
      for (int m = 0; m < 2; ++m) {
        const int base = 8 * h + 4 * m;
        const __m512i index = _mm512_set_epi16(
            base + 3, base + 3, base + 3, base + 3, base + 3, base + 3, base + 3, base + 3,
            base + 2, base + 2, base + 2, base + 2, base + 2, base + 2, base + 2, base + 2,
            base + 1, base + 1, base + 1, base + 1, base + 1, base + 1, base + 1, base + 1, base,
            base, base, base, base, base, base, base);
        sc[2 * h + m] = _mm512_permutexvar_epi16(index, sc512);
      }
    }
    // The quants are stored +32; sum(scale * 32 * y) over each 16-group comes from bsums.
    const int offset_sum = HorizontalSumI32(_mm256_madd_epi16(sc16, Load256(y[i].bsums)));
    __m512i s = _mm512_setzero_si512();
    for (int k = 0; k < 4; ++k) {
      s = _mm512_dpwssd_epi32(s, _mm512_maddubs_epi16(q[k], Load512(y[i].qs + 64 * k)), sc[k]);
    }
    const __m256i lanes =
        _mm256_add_epi32(Fold(s), _mm256_setr_epi32(-32 * offset_sum, 0, 0, 0, 0, 0, 0, 0));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(lanes), acc);
  }
  return HorizontalSum(acc);
}

// ---- K-quants against transposed Q8_K groups (kGemmKBlockBytes) ---------------------------
// Per super-block the weight quants are unpacked once into 256 bytes in element order; lane j
// of chunk c for 16 tokens is then maddubs(quants 32c + 4j.. broadcast, y) (int16 pairs, no
// saturation: quants <= 63, |y| <= 128) and vpdpwssd against the pair (scale, scale), which adds
// scale * (4-product sum), the AVX2 lane's integer, exactly.

// `p` as a pointer the compiler cannot see through: loads from it stay broadcast loads instead
// of being forwarded from the stores that filled it (two shuffles per piece).
template <typename T>
EXO_AVX512 inline const T* Opaque(const T* p) {
  asm("" : "+r"(p));
  return p;
}

EXO_AVX512 inline __m512i Broadcast32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof(v));
  return _mm512_set1_epi32(v);
}

// The 16 int16 of v as pairs (v_k, v_k), k = 0..15, at out[k]: the broadcast operands of
// vpdpwssd.
EXO_AVX512 inline void StoreDuplicatedPairs(__m256i v, uint32_t* out) {
  const __m256i lo = _mm256_unpacklo_epi16(v, v);  // k = 0..3 | 8..11
  const __m256i hi = _mm256_unpackhi_epi16(v, v);  // k = 4..7 | 12..15
  _mm256_store_si256(reinterpret_cast<__m256i*>(out), _mm256_permute2x128_si256(lo, hi, 0x20));
  _mm256_store_si256(reinterpret_cast<__m256i*>(out + 8), _mm256_permute2x128_si256(lo, hi, 0x31));
}

// Q4_K / Q5_K: the eight 6-bit scales and mins (GetScaleMinK4) as pairs, scales at out[0..7]
// and mins at out[8..15]. The 12 bytes are rearranged as four 32-bit words: byte j of words
// 0-1 is scale j, of words 2-3 min j.
EXO_AVX512 inline void StoreScaleMinPairs(const uint8_t* packed, uint32_t* out) {
  uint32_t w[4];
  std::memcpy(w, packed, 12);
  constexpr uint32_t kLow6 = 0x3f3f3f3f, kLow4 = 0x0f0f0f0f, kLow2 = 0x03030303;
  w[3] = ((w[2] >> 4) & kLow4) | (((w[1] >> 6) & kLow2) << 4);
  const uint32_t mins_low = w[1] & kLow6;
  w[1] = (w[2] & kLow4) | (((w[0] >> 6) & kLow2) << 4);
  w[2] = mins_low;
  w[0] &= kLow6;
  StoreDuplicatedPairs(_mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w))),
                       out);
}

// HorizontalSum order of 8 lane registers (16 tokens each).
EXO_AVX512 inline __m512 LaneSum(const __m512* a) {
  const __m512 s0 = _mm512_add_ps(a[0], a[4]);
  const __m512 s1 = _mm512_add_ps(a[1], a[5]);
  const __m512 s2 = _mm512_add_ps(a[2], a[6]);
  const __m512 s3 = _mm512_add_ps(a[3], a[7]);
  return _mm512_add_ps(_mm512_add_ps(s0, s2), _mm512_add_ps(s1, s3));
}

// lanes[j] (+)= sum over chunks c of scale(c, j) * dot4(quants of lane j of chunk c, y).
// `pairs` holds the scale pairs: pair index c (Q4_K/Q5_K) or 2c + j / 4 (Q6_K, 16 sub-blocks).
template <bool kSixteenScales>
EXO_AVX512 inline void KChunks(const uint8_t* quants, const uint32_t* pairs, const uint8_t* y,
                               bool accumulate, __m512i* lanes) {
  constexpr int kT = kGemm32Tokens;
#pragma GCC unroll 8
  for (int c = 0; c < 8; ++c) {
    const __m512i scale_lo = Broadcast32(pairs + (kSixteenScales ? 2 * c : c));
    const __m512i scale_hi = kSixteenScales ? Broadcast32(pairs + 2 * c + 1) : scale_lo;
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) {
      const __m512i scale = j < 4 ? scale_lo : scale_hi;
      const __m512i p = _mm512_maddubs_epi16(Broadcast32(quants + 32 * c + 4 * j),
                                             Load512(y + (8 * c + j) * kT * 4));
      lanes[j] = (c == 0 && !accumulate) ? _mm512_madd_epi16(p, scale)
                                         : _mm512_dpwssd_epi32(lanes[j], p, scale);
    }
  }
}

// Sum over m of pair m (two int16) times token t's bsums 2m, 2m + 1, for 16 tokens.
EXO_AVX512 inline __m512i KBsumDot(const uint32_t* pairs, const uint8_t* bsums) {
  constexpr int kT = kGemm32Tokens;
  __m512i sum = _mm512_madd_epi16(Broadcast32(pairs), Load512(bsums));
#pragma GCC unroll 8
  for (int m = 1; m < 8; ++m) {
    sum = _mm512_dpwssd_epi32(sum, Broadcast32(pairs + m), Load512(bsums + m * kT * 4));
  }
  return sum;
}

template <bool kFiveBit>
EXO_AVX512 void GemmKRowQ45K(const void* vx, const void* vgroup, int64_t n, float* out) {
  using Block = std::conditional_t<kFiveBit, BlockQ5_K, BlockQ4_K>;
  const Block* x = static_cast<const Block*>(vx);
  const uint8_t* group = static_cast<const uint8_t*>(vgroup);
  const int64_t nb = n / kQkK;
  constexpr int kT = kGemm32Tokens;
  const __m512i low_mask = _mm512_set1_epi8(0x0F);
  const __m512i nibble_shift = _mm512_setr_epi64(0, 0, 0, 0, 4, 4, 4, 4);
  __m512 acc[8];
#pragma GCC unroll 8
  for (int j = 0; j < 8; ++j) acc[j] = _mm512_setzero_ps();
  __m512 sum_mins = _mm512_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    const uint8_t* slot = group + i * kGemmKBlockBytes;
    alignas(64) uint8_t quants[kQkK];
    alignas(64) uint32_t pairs[16];  // scale pairs 0..7, min pairs 8..15
    StoreScaleMinPairs(x[i].scales, pairs);
    [[maybe_unused]] __m512i high_bits;
    if constexpr (kFiveBit) high_bits = Broadcast256(x[i].qh);
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c) {
      // Elements 64c..64c+63: low nibbles of qs[32c..] then their high nibbles.
      __m512i w = _mm512_and_si512(_mm512_srlv_epi64(Broadcast256(x[i].qs + 32 * c), nibble_shift),
                                   low_mask);
      if constexpr (kFiveBit) {
        const __m512i shift = _mm512_setr_epi64(2 * c, 2 * c, 2 * c, 2 * c, 2 * c + 1, 2 * c + 1,
                                                2 * c + 1, 2 * c + 1);
        const __m512i h =
            _mm512_and_si512(_mm512_srlv_epi64(high_bits, shift), _mm512_set1_epi8(1));
        w = _mm512_or_si512(w, _mm512_slli_epi16(h, 4));
      }
      _mm512_store_si512(quants + 64 * c, w);
    }
    __m512i lanes[8];
    KChunks<false>(Opaque(quants), Opaque(pairs), slot, false, lanes);
    const __m512i mins = KBsumDot(Opaque(pairs) + 8, slot + 64 * kT * 4);
    const __m512 yd = _mm512_loadu_ps(reinterpret_cast<const float*>(slot + 72 * kT * 4));
    const __m512 d = _mm512_mul_ps(_mm512_set1_ps(Half(x[i].d)), yd);
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) acc[j] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(lanes[j]), acc[j]);
    // sum_mins += (dmin * d_y) * float(mins), as the AVX2 dot.
    const __m512 dmin = _mm512_mul_ps(_mm512_set1_ps(Half(x[i].dmin)), yd);
    sum_mins = _mm512_add_ps(sum_mins, _mm512_mul_ps(dmin, _mm512_cvtepi32_ps(mins)));
  }
  _mm512_storeu_ps(out, _mm512_sub_ps(LaneSum(acc), sum_mins));
}

EXO_AVX512 void GemmKRowQ6K(const void* vx, const void* vgroup, int64_t n, float* out) {
  const BlockQ6_K* x = static_cast<const BlockQ6_K*>(vx);
  const uint8_t* group = static_cast<const uint8_t*>(vgroup);
  const int64_t nb = n / kQkK;
  constexpr int kT = kGemm32Tokens;
  const __m512i low_mask = _mm512_set1_epi8(0x0F);
  const __m512i two_bits = _mm512_set1_epi8(0x03);
  const __m512i shift01 = _mm512_setr_epi64(0, 0, 0, 0, 2, 2, 2, 2);
  const __m512i shift23 = _mm512_setr_epi64(4, 4, 4, 4, 6, 6, 6, 6);
  __m512 acc[8];
#pragma GCC unroll 8
  for (int j = 0; j < 8; ++j) acc[j] = _mm512_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    const uint8_t* slot = group + i * kGemmKBlockBytes;
    alignas(64) uint8_t quants[kQkK];
    alignas(64) uint32_t pairs[24];  // scale pairs 0..15; 16..23: -32 * (scale 2m, scale 2m + 1)
    {
      const __m256i sc16 =
          _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x[i].scales)));
      StoreDuplicatedPairs(sc16, pairs);
      _mm256_store_si256(reinterpret_cast<__m256i*>(pairs + 16),
                         _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16(sc16, 5)));
    }
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      // Elements 128h..128h+63, then 128h+64..128h+127 (see VecDotQ6K).
      const __m512i ql = Load512(x[i].ql + 64 * h);
      const __m512i qh = Broadcast256(x[i].qh + 32 * h);
      _mm512_store_si512(
          quants + 128 * h,
          _mm512_or_si512(
              _mm512_and_si512(ql, low_mask),
              _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi64(qh, shift01), two_bits), 4)));
      _mm512_store_si512(
          quants + 128 * h + 64,
          _mm512_or_si512(
              _mm512_and_si512(_mm512_srli_epi16(ql, 4), low_mask),
              _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi64(qh, shift23), two_bits), 4)));
    }
    // The quants are stored +32: lane 0 starts from -32 * sum(scale * bsum), as the AVX2 dot.
    __m512i lanes[8];
    lanes[0] = KBsumDot(Opaque(pairs) + 16, slot + 64 * kT * 4);
#pragma GCC unroll 8
    for (int j = 1; j < 8; ++j) lanes[j] = _mm512_setzero_si512();
    KChunks<true>(Opaque(quants), Opaque(pairs), slot, true, lanes);
    const __m512 yd = _mm512_loadu_ps(reinterpret_cast<const float*>(slot + 72 * kT * 4));
    const __m512 d = _mm512_mul_ps(_mm512_set1_ps(Half(x[i].d)), yd);
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) acc[j] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(lanes[j]), acc[j]);
  }
  _mm512_storeu_ps(out, LaneSum(acc));
}

}  // namespace

VecDotFn GetVecDotAvx512(TensorType type) {
  switch (type) {
    case TensorType::kQ4_0:
      return VecDot32<Q4_0Weights>;
    case TensorType::kQ5_0:
      return VecDot32<Q5_0Weights>;
    case TensorType::kQ8_0:
      return VecDot32<Q8_0Weights>;
    // Q4_K / Q5_K decode stays on AVX2: for one token the 512-bit unpacking costs more than it
    // saves (measured ~25% slower on Zen 4, which splits 512-bit operations in two).
    case TensorType::kQ6_K:
      return VecDotQ6K;
    default:
      return nullptr;
  }
}

Gemm32RowFn GetGemm32RowAvx512(TensorType type) {
  switch (type) {
    case TensorType::kQ4_0:
      return Gemm32Row<Q4_0Weights>;
    case TensorType::kQ5_0:
      return Gemm32Row<Q5_0Weights>;
    case TensorType::kQ8_0:
      return Gemm32Row<Q8_0Weights>;
    default:
      return nullptr;
  }
}

GemmKRowFn GetGemmKRowAvx512(TensorType type) {
  switch (type) {
    case TensorType::kQ4_K:
      return GemmKRowQ45K<false>;
    case TensorType::kQ5_K:
      return GemmKRowQ45K<true>;
    case TensorType::kQ6_K:
      return GemmKRowQ6K;
    default:
      return nullptr;
  }
}

#else  // !EXO_HAVE_X86

bool CpuHasAvx512Vnni() { return false; }
VecDotFn GetVecDotAvx512(TensorType) { return nullptr; }
Gemm32RowFn GetGemm32RowAvx512(TensorType) { return nullptr; }
GemmKRowFn GetGemmKRowAvx512(TensorType) { return nullptr; }

#endif

// AVX-512 where the CPU has it, else the AVX2 kernels (gemm_avx2.cc), with AVX-VNNI where
// present.
Gemm32RowFn GetGemm32Row(TensorType type) {
  if (CpuHasAvx512Vnni()) return GetGemm32RowAvx512(type);
  return CpuHasAvx2Fma() ? GetGemm32RowAvx2(type, CpuHasAvxVnni()) : nullptr;
}

GemmKRowFn GetGemmKRow(TensorType type) {
  if (CpuHasAvx512Vnni()) return GetGemmKRowAvx512(type);
  return CpuHasAvx2Fma() ? GetGemmKRowAvx2(type, CpuHasAvxVnni()) : nullptr;
}

// Plain C++ (it runs once per token and block, not per weight row), portable.
void PackGemm32Token(TensorType type, const void* q8_0_row, int64_t blocks, int t, void* group) {
  constexpr int kT = kGemm32Tokens;
  const int32_t offset = type == TensorType::kQ4_0 ? 8 : type == TensorType::kQ5_0 ? 16 : 128;
  const BlockQ8_0* y = static_cast<const BlockQ8_0*>(q8_0_row);
  uint8_t* slot = static_cast<uint8_t*>(group);
  for (int64_t b = 0; b < blocks; ++b, slot += kGemm32BlockBytes) {
    for (int j = 0; j < 8; ++j) {
      const int8_t* q = y[b].qs + 4 * j;
      std::memcpy(slot + (j * kT + t) * 4, q, 4);
      const int32_t bias = -offset * (q[0] + q[1] + q[2] + q[3]);
      std::memcpy(slot + 8 * kT * 4 + (j * kT + t) * 4, &bias, 4);
    }
    const float d = HalfToFloat(y[b].d);
    std::memcpy(slot + 16 * kT * 4 + t * 4, &d, 4);
  }
}

void PadGemm32Token(int64_t blocks, int t, void* group) {
  constexpr int kT = kGemm32Tokens;
  uint8_t* slot = static_cast<uint8_t*>(group);
  for (int64_t b = 0; b < blocks; ++b, slot += kGemm32BlockBytes) {
    for (int j = 0; j < 16; ++j) std::memset(slot + (j * kT + t) * 4, 0, 4);  // qs and bias
    std::memset(slot + 16 * kT * 4 + t * 4, 0, 4);
  }
}

void PackGemmKToken(const void* q8_k_row, int64_t blocks, int t, void* group) {
  constexpr int kT = kGemm32Tokens;
  const BlockQ8_K* y = static_cast<const BlockQ8_K*>(q8_k_row);
  uint8_t* slot = static_cast<uint8_t*>(group);
  for (int64_t b = 0; b < blocks; ++b, slot += kGemmKBlockBytes) {
    for (int p = 0; p < 64; ++p) std::memcpy(slot + (p * kT + t) * 4, y[b].qs + 4 * p, 4);
    for (int m = 0; m < 8; ++m) {
      std::memcpy(slot + ((64 + m) * kT + t) * 4, y[b].bsums + 2 * m, 4);
    }
    std::memcpy(slot + (72 * kT + t) * 4, &y[b].d, 4);
  }
}

void PadGemmKToken(int64_t blocks, int t, void* group) {
  constexpr int kT = kGemm32Tokens;
  uint8_t* slot = static_cast<uint8_t*>(group);
  for (int64_t b = 0; b < blocks; ++b, slot += kGemmKBlockBytes) {
    for (int p = 0; p < 73; ++p) std::memset(slot + (p * kT + t) * 4, 0, 4);
  }
}

}  // namespace exo::kernels::internal
