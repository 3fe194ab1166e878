// Multi-row decode kernels (x86, AVX-512 VNNI and AVX2): Q4_0/Q5_0/Q8_0 against Q8_0 activations,
// Q4_1/Q5_1 against Q8_1, Q4_K/Q5_K/Q6_K against Q8_K. Per row they do exactly what the
// single-row dot of the same level does (VecDot32 / VecDotQ6K in quants_avx512.cc, the AVX2 dots
// in quants_avx2.cc, which agree bit for bit): the same int32 lane sums, the same
// acc = fma(dx * dy, float(lanes), acc) per block with the same accumulator pattern, the same
// horizontal sum (and mins terms). Only the order in which the rows' independent operations are
// issued differs, which cannot change a bit. gemv_test checks this.
#include <cstring>
#include <type_traits>

#include "kernels/internal/blocks.h"
#include "kernels/internal/gemv.h"
#include "kernels/internal/quants_impl.h"
#include "kernels/internal/simd_x86.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define EXO_GEMV_X86 1
#else
#define EXO_GEMV_X86 0
#endif

// GCC 12's AVX-512 headers trip -W(maybe-)uninitialized on their own _mm512_undefined_*() values.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace exo::kernels::internal {

#if EXO_GEMV_X86

#define EXO_GEMV_AVX512 \
  __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))
// Small helpers inlined into kernels of both levels (AVX2 code only).
#define EXO_GEMV_AVX2_OR_512 __attribute__((target("avx2,fma,f16c"), always_inline))

namespace {

using x86::Half;
using x86::HighBitsQ5;
using x86::HorizontalSum;
using x86::Load256;
using x86::UnpackNibbles;

constexpr int R = kGemvRows;

// Lane r: row r's block-i scale (f16) times dy, the single dot's f32 product Half(x.d) * dy; the
// four rows' scales are converted in one go.
template <typename Block>
EXO_GEMV_AVX2_OR_512 inline __m128 FourRowScales(const Block* const* x, int64_t i, float dy) {
  uint64_t d = 0;
  for (int r = 0; r < 4; ++r) d |= static_cast<uint64_t>(x[r][i].d) << (16 * r);
  return _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi64_si128(static_cast<long long>(d))), _mm_set1_ps(dy));
}
// How far ahead of the current block each row's stream is prefetched: the same block of the row
// group after next, so the prefetches run one group ahead of the hardware's own.
constexpr int kPrefetchGroups = 2;

// ---- AVX-512: two rows per 512-bit register ------------------------------------------------
// There is no 512-bit vpsignb, so the weight quants are taken unsigned, q = w + offset (Q4_0: the
// nibble, offset 8; Q5_0: nibble | high bit, offset 16; Q8_0: w ^ 0x80, offset 128), and each
// int32 lane starts from bias = -offset * (sum of its 4 activation bytes), prepared once per
// activation row (PrepareGemv): dpbusd(bias, q, y) = sum(w * y), the same exact integers as the
// AVX2 dot's lanes. Rows r and r + 1 share one register (r in the low 256 bits), so the dpbusd,
// the int -> float conversion and the fma serve two rows; per row the float work is still
// acc = fma(dx * dy, float(lanes), acc) per block, then HorizontalSum of that row's 8 lanes.

// Prepared activation data: int32 bias[nb][8], then float dy[nb] (the activation scales).
EXO_GEMV_AVX512 void PrepareGemv32(int32_t offset, const BlockQ8_0* y, int64_t nb, void* out) {
  int32_t* bias = static_cast<int32_t*>(out);
  float* dy = reinterpret_cast<float*>(bias + 8 * nb);
  for (int64_t b = 0; b < nb; ++b) {
    for (int j = 0; j < 8; ++j) {
      const int8_t* q = y[b].qs + 4 * j;
      bias[8 * b + j] = -offset * (q[0] + q[1] + q[2] + q[3]);
    }
    dy[b] = Half(y[b].d);  // the same conversion as the single dot's
  }
}

// Nibbles of two rows' 16 packed bytes: per 256-bit half (a low, b high) the low nibbles in
// bytes 0..15, the high nibbles in bytes 16..31.
EXO_GEMV_AVX512 inline __m512i NibblePair(const uint8_t* a, const uint8_t* b) {
  const __m256i pa =
      _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a)));
  const __m256i pb =
      _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b)));
  const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(pa), pb, 1);
  const __m512i shift = _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4);
  return _mm512_and_si512(_mm512_srlv_epi64(both, shift), _mm512_set1_epi8(0x0F));
}

struct Q4_0Pair {
  using Block = BlockQ4_0;
  static constexpr int32_t kOffset = 8;
  static constexpr bool kTwoAccumulators = false;
  EXO_GEMV_AVX512 static __m512i Unsigned(const Block& a, const Block& b) {
    return NibblePair(a.qs, b.qs);
  }
};

// Q5_0 / Q5_1 quants of two rows (nibble | high bit << 4), as NibblePair.
struct Q5Pair {
  template <typename Block>
  EXO_GEMV_AVX512 static __m512i Unsigned(const Block& a, const Block& b) {
    uint32_t ha, hb;
    std::memcpy(&ha, a.qh, sizeof(ha));
    std::memcpy(&hb, b.qh, sizeof(hb));
    // Bit j of the mask: bit 4 of byte j (bytes 32..63 are row b's).
    const __mmask64 high =
        _cvtu64_mask64(static_cast<uint64_t>(ha) | static_cast<uint64_t>(hb) << 32);
    const __m512i nibbles = NibblePair(a.qs, b.qs);
    return _mm512_mask_add_epi8(nibbles, high, nibbles, _mm512_set1_epi8(0x10));
  }
};

struct Q5_0Pair : Q5Pair {
  using Block = BlockQ5_0;
  static constexpr int32_t kOffset = 16;
  static constexpr bool kTwoAccumulators = false;
};

struct Q8_0Pair {
  using Block = BlockQ8_0;
  static constexpr int32_t kOffset = 128;
  static constexpr bool kTwoAccumulators = true;  // even blocks into acc0, odd into acc1
  EXO_GEMV_AVX512 static __m512i Unsigned(const Block& a, const Block& b) {
    const __m512i w = _mm512_inserti64x4(_mm512_castsi256_si512(Load256(a.qs)), Load256(b.qs), 1);
    return _mm512_xor_si512(w, _mm512_set1_epi8(static_cast<char>(0x80)));
  }
};

// Block i of the R = 4 rows: acc[p] (rows 2p, 2p + 1) += (dx * dy) * float(lanes).
template <typename W>
EXO_GEMV_AVX512 inline void PairStep(const typename W::Block* const* x, int64_t i,
                                     const BlockQ8_0& y, const int32_t* bias, const float* dy,
                                     __m512* acc) {
  static_assert(R == 4, "two register pairs below");
  const __m512i yv = _mm512_broadcast_i64x4(Load256(y.qs));
  const __m512i b = _mm512_broadcast_i64x4(Load256(bias));
  // dx * dy of the four rows: one conversion of four halves, one multiply (the same f32 product
  // per row as the single dot's Half(x.d) * Half(y.d)).
  const __m128 s = FourRowScales(x, i, *dy);
  const __m512 s4 = _mm512_castps128_ps512(s);
  for (int p = 0; p < 2; ++p) {
    const __m512i lanes = _mm512_dpbusd_epi32(b, W::Unsigned(x[2 * p][i], x[2 * p + 1][i]), yv);
    // 2p in the low 8 floats, 2p + 1 in the high 8.
    const __m512i pick = _mm512_setr_epi32(2 * p, 2 * p, 2 * p, 2 * p, 2 * p, 2 * p, 2 * p, 2 * p,
                                           2 * p + 1, 2 * p + 1, 2 * p + 1, 2 * p + 1, 2 * p + 1,
                                           2 * p + 1, 2 * p + 1, 2 * p + 1);
    acc[p] = _mm512_fmadd_ps(_mm512_permutexvar_ps(pick, s4), _mm512_cvtepi32_ps(lanes), acc[p]);
  }
}

template <typename W>
EXO_GEMV_AVX512 void GemvRowPairs(const void* vw, int64_t row_bytes, const void* vy,
                                  const void* prepared, int64_t n, float* out) {
  using Block = typename W::Block;
  const uint8_t* base = static_cast<const uint8_t*>(vw);
  const Block* x[R];
  for (int r = 0; r < R; ++r) x[r] = reinterpret_cast<const Block*>(base + r * row_bytes);
  const BlockQ8_0* y = static_cast<const BlockQ8_0*>(vy);
  const int64_t nb = n / kQk32;
  const int32_t* bias = static_cast<const int32_t*>(prepared);
  const float* dy = reinterpret_cast<const float*>(bias + 8 * nb);
  const int64_t ahead = kPrefetchGroups * R * row_bytes;
  __m512 acc0[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
  __m512 acc1[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
  int64_t i = 0;
  for (; i + 2 <= nb; i += 2) {  // two blocks per prefetch (>= one cache line)
    for (int r = 0; r < R; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(x[r] + i) + ahead, _MM_HINT_T0);
    }
    PairStep<W>(x, i, y[i], bias + 8 * i, dy + i, acc0);
    PairStep<W>(x, i + 1, y[i + 1], bias + 8 * (i + 1), dy + i + 1,
                W::kTwoAccumulators ? acc1 : acc0);
  }
  for (; i < nb; ++i) PairStep<W>(x, i, y[i], bias + 8 * i, dy + i, acc0);
  for (int p = 0; p < 2; ++p) {
    const __m512 sum = W::kTwoAccumulators ? _mm512_add_ps(acc0[p], acc1[p]) : acc0[p];
    out[2 * p] = HorizontalSum(_mm512_castps512_ps256(sum));
    out[2 * p + 1] = HorizontalSum(_mm512_extractf32x8_ps(sum, 1));
  }
}

// ---- Q4_1 / Q5_1 against Q8_1 (AVX-512, two rows per register) -----------------------------
// The level's dots are vec_dot_q4_1_q8_1_avx2 / vec_dot_q5_1_q8_1_avx2: per block, lanes =
// madd(maddubs(q, y), 1) with q unsigned (nibble, or nibble | high bit), acc = fma(Half(x.d) *
// Half(y.d), float(lanes), acc), sum_mins += Half(x.m) * Half(y.s); the result is
// HorizontalSum(acc) + sum_mins. The quants are already unsigned and maddubs cannot saturate
// here (|2 * 31 * 128| < 2^15), so one vpdpbusd from zero makes the same lanes with no
// prepared bias. The four rows' (d, m) are converted in one go and multiplied by (d_y, s_y) in
// one vmulps (the single dot's f32 products), and the four sum_mins run lane-wise in one register.

struct Q4_1Pair {
  using Block = BlockQ4_1;
  EXO_GEMV_AVX512 static __m512i Unsigned(const Block& a, const Block& b) {
    return NibblePair(a.qs, b.qs);
  }
};

struct Q5_1Pair : Q5Pair {
  using Block = BlockQ5_1;
};

// (d, m) of block i of the four rows, as halves: lanes 2r, 2r + 1 are row r's d, m (the two
// fields lead every Q4_1 / Q5_1 block).
template <typename Block>
EXO_GEMV_AVX2_OR_512 inline __m128i DmOfRows(const Block* const* x, int64_t i) {
  uint32_t dm[R];
  for (int r = 0; r < R; ++r) std::memcpy(&dm[r], &x[r][i].d, sizeof(uint32_t));
  return _mm_setr_epi32(static_cast<int>(dm[0]), static_cast<int>(dm[1]), static_cast<int>(dm[2]),
                        static_cast<int>(dm[3]));
}

// (d_y, s_y, d_y, s_y, ...) of a Q8_1 block as f32.
EXO_GEMV_AVX2_OR_512 inline __m256 DsOfToken(const BlockQ8_1& y) {
  uint32_t ds;
  std::memcpy(&ds, &y.d, sizeof(ds));
  return _mm256_cvtph_ps(_mm_set1_epi32(static_cast<int>(ds)));
}

template <typename W>
EXO_GEMV_AVX512 void GemvRowPairsMin(const void* vw, int64_t row_bytes, const void* vy,
                                     const void* /*prepared*/, int64_t n, float* out) {
  static_assert(R == 4, "two register pairs below");
  using Block = typename W::Block;
  const uint8_t* base = static_cast<const uint8_t*>(vw);
  const Block* x[R];
  for (int r = 0; r < R; ++r) x[r] = reinterpret_cast<const Block*>(base + r * row_bytes);
  const BlockQ8_1* y = static_cast<const BlockQ8_1*>(vy);
  const int64_t nb = n / kQk32;
  const int64_t ahead = kPrefetchGroups * R * row_bytes;
  // Per pair p: the f32 lane of the product vector that holds row 2p's d (low 8 floats) and
  // row 2p + 1's (high 8).
  const __m512i pick[2] = {_mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2),
                           _mm512_setr_epi32(4, 4, 4, 4, 4, 4, 4, 4, 6, 6, 6, 6, 6, 6, 6, 6)};
  const __m256i odd = _mm256_setr_epi32(1, 3, 5, 7, 1, 3, 5, 7);
  __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
  __m128 sum_mins = _mm_setzero_ps();  // lane r: row r's
  for (int64_t i = 0; i < nb; ++i) {
    if ((i & 1) == 0) {  // every other block: >= 40 bytes, so every line of the stream is met
      for (int r = 0; r < R; ++r) {
        _mm_prefetch(reinterpret_cast<const char*>(x[r] + i) + ahead, _MM_HINT_T0);
      }
    }
    const __m512i yv = _mm512_broadcast_i64x4(Load256(y[i].qs));
    // Lanes 2r, 2r + 1: Half(d_r) * Half(d_y), Half(m_r) * Half(s_y).
    const __m256 prod = _mm256_mul_ps(_mm256_cvtph_ps(DmOfRows(x, i)), DsOfToken(y[i]));
    const __m512 prod512 = _mm512_castps256_ps512(prod);
    for (int p = 0; p < 2; ++p) {
      const __m512i lanes = _mm512_dpbusd_epi32(_mm512_setzero_si512(),
                                                W::Unsigned(x[2 * p][i], x[2 * p + 1][i]), yv);
      acc[p] = _mm512_fmadd_ps(_mm512_permutexvar_ps(pick[p], prod512), _mm512_cvtepi32_ps(lanes),
                               acc[p]);
    }
    sum_mins = _mm_add_ps(sum_mins, _mm256_castps256_ps128(_mm256_permutevar8x32_ps(prod, odd)));
  }
  float mins_out[R];
  _mm_storeu_ps(mins_out, sum_mins);
  for (int p = 0; p < 2; ++p) {
    out[2 * p] = HorizontalSum(_mm512_castps512_ps256(acc[p])) + mins_out[2 * p];
    out[2 * p + 1] = HorizontalSum(_mm512_extractf32x8_ps(acc[p], 1)) + mins_out[2 * p + 1];
  }
}

// ---- Q6_K against Q8_K (AVX-512: the level's VecDotQ6K, four rows) -------------------------
// Per row the integer lanes of VecDotQ6K (quants_avx512.cc: 512-bit maddubs + dpwssd over two
// 32-byte chunks per register, folded back to the AVX2 dot's eight lanes, -32 * sum(scale *
// bsum) added to lane 0) and its float work: acc = fma(d * d_y, float(lanes), acc) per
// super-block, HorizontalSum(acc). Shared by the four rows: the activation loads, the scales'
// int16 conversion of d, and the reduction of the four offset sums.

EXO_GEMV_AVX512 inline __m512i Load512(const void* p) {
  return _mm512_loadu_si512(reinterpret_cast<const __m512i*>(p));
}

EXO_GEMV_AVX512 inline __m256i Fold(__m512i s) {
  return _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64(s, 1));
}

// Sum of the eight int32 lanes of v into 4 lanes (still exact).
EXO_GEMV_AVX512 inline __m128i Fold256(__m256i v) {
  return _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
}

EXO_GEMV_AVX512 void GemvRowsQ6K(const void* vw, int64_t row_bytes, const void* vy,
                                 const void* /*prepared*/, int64_t n, float* out) {
  static_assert(R == 4, "four rows' d in one register below");
  const uint8_t* base = static_cast<const uint8_t*>(vw);
  const BlockQ6_K* x[R];
  for (int r = 0; r < R; ++r) x[r] = reinterpret_cast<const BlockQ6_K*>(base + r * row_bytes);
  const BlockQ8_K* y = static_cast<const BlockQ8_K*>(vy);
  const int64_t nb = n / kQkK;
  const int64_t ahead = kPrefetchGroups * R * row_bytes;
  const __m512i low_mask = _mm512_set1_epi8(0x0F);
  const __m512i two_bits = _mm512_set1_epi8(0x03);
  const __m512i shift01 = _mm512_setr_epi64(0, 0, 0, 0, 2, 2, 2, 2);
  const __m512i shift23 = _mm512_setr_epi64(4, 4, 4, 4, 6, 6, 6, 6);
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    const __m256 dxy = _mm256_castps128_ps256(FourRowScales(x, i, y[i].d));
    const __m256i bsums = Load256(y[i].bsums);
    __m512i yq[4];
    for (int k = 0; k < 4; ++k) yq[k] = Load512(y[i].qs + 64 * k);
    __m256i sc16[R];
    __m512i s[R];
    for (int r = 0; r < R; ++r) {
      const BlockQ6_K& b = x[r][i];
      const char* next = reinterpret_cast<const char*>(&b) + ahead;
      for (int line = 0; line < static_cast<int>(sizeof(BlockQ6_K)); line += 64) {
        _mm_prefetch(next + line, _MM_HINT_T0);
      }
      sc16[r] = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b.scales)));
      const __m512i sc512 = _mm512_castsi256_si512(sc16[r]);
      s[r] = _mm512_setzero_si512();
      for (int h = 0; h < 2; ++h) {
        const __m512i ql = Load512(b.ql + 64 * h);
        const __m512i qh = _mm512_broadcast_i64x4(Load256(b.qh + 32 * h));
        __m512i q[2];
        q[0] = _mm512_or_si512(
            _mm512_and_si512(ql, low_mask),
            _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi64(qh, shift01), two_bits), 4));
        q[1] = _mm512_or_si512(
            _mm512_and_si512(_mm512_srli_epi16(ql, 4), low_mask),
            _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi64(qh, shift23), two_bits), 4));
        for (int m = 0; m < 2; ++m) {
          // 128-bit lane k of q[m] uses scale 8h + 4m + k.
          const short c = static_cast<short>(8 * h + 4 * m);
          const __m512i index =
              _mm512_set_epi16(c + 3, c + 3, c + 3, c + 3, c + 3, c + 3, c + 3, c + 3, c + 2, c + 2,
                               c + 2, c + 2, c + 2, c + 2, c + 2, c + 2, c + 1, c + 1, c + 1, c + 1,
                               c + 1, c + 1, c + 1, c + 1, c, c, c, c, c, c, c, c);
          s[r] = _mm512_dpwssd_epi32(s[r], _mm512_maddubs_epi16(q[m], yq[2 * h + m]),
                                     _mm512_permutexvar_epi16(index, sc512));
        }
      }
    }
    // Lane r: row r's sum(scale * bsum) (the quants are stored +32).
    __m128i part[R];
    for (int r = 0; r < R; ++r) part[r] = Fold256(_mm256_madd_epi16(sc16[r], bsums));
    const __m256i offset = _mm256_castsi128_si256(_mm_mullo_epi32(
        _mm_hadd_epi32(_mm_hadd_epi32(part[0], part[1]), _mm_hadd_epi32(part[2], part[3])),
        _mm_set1_epi32(-32)));
    for (int r = 0; r < R; ++r) {
      // -32 * offset_sum into lane 0 only.
      const __m256i lane0 = _mm256_maskz_permutexvar_epi32(0x01, _mm256_set1_epi32(r), offset);
      const __m256i lanes = _mm256_add_epi32(Fold(s[r]), lane0);
      const __m256 dr = _mm256_permutexvar_ps(_mm256_set1_epi32(r), dxy);
      acc[r] = _mm256_fmadd_ps(dr, _mm256_cvtepi32_ps(lanes), acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) out[r] = HorizontalSum(acc[r]);
}

// ---- AVX2: the same kernels with the AVX2 dot's lane sums (maddubs + madd) -----------------

#define EXO_GEMV_AVX2 __attribute__((target("avx2,fma,f16c")))

struct Q4_0Avx2 {
  using Block = BlockQ4_0;
  static constexpr bool kTwoAccumulators = false;
  EXO_GEMV_AVX2 static __m256i Signed(const Block& b) {
    return _mm256_sub_epi8(UnpackNibbles(b.qs), _mm256_set1_epi8(8));
  }
};

struct Q5_0Avx2 {
  using Block = BlockQ5_0;
  static constexpr bool kTwoAccumulators = false;
  EXO_GEMV_AVX2 static __m256i Signed(const Block& b) {
    return _mm256_sub_epi8(_mm256_or_si256(UnpackNibbles(b.qs), HighBitsQ5(b.qh)),
                           _mm256_set1_epi8(16));
  }
};

struct Q8_0Avx2 {
  using Block = BlockQ8_0;
  static constexpr bool kTwoAccumulators = true;
  EXO_GEMV_AVX2 static __m256i Signed(const Block& b) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs));
  }
};

template <typename W>
EXO_GEMV_AVX2 inline __m256 StepAvx2(const typename W::Block& x, const BlockQ8_0& y, __m256 acc) {
  const __m256i w = W::Signed(x);
  const __m256i ys =
      _mm256_sign_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(y.qs)), w);
  const __m256i dot16 = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), ys);
  const __m256 lanes = _mm256_cvtepi32_ps(_mm256_madd_epi16(dot16, _mm256_set1_epi16(1)));
  return _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(x.d) * _cvtsh_ss(y.d)), lanes, acc);
}

template <typename W>
EXO_GEMV_AVX2 void GemvRowsAvx2(const void* vw, int64_t row_bytes, const void* vy,
                                const void* /*prepared*/, int64_t n, float* out) {
  using Block = typename W::Block;
  const uint8_t* base = static_cast<const uint8_t*>(vw);
  const Block* x[R];
  for (int r = 0; r < R; ++r) x[r] = reinterpret_cast<const Block*>(base + r * row_bytes);
  const BlockQ8_0* y = static_cast<const BlockQ8_0*>(vy);
  const int64_t nb = n / kQk32;
  const int64_t ahead = kPrefetchGroups * R * row_bytes;
  __m256 acc0[R], acc1[R];
  for (int r = 0; r < R; ++r) acc0[r] = acc1[r] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 2 <= nb; i += 2) {
    for (int r = 0; r < R; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(x[r] + i) + ahead, _MM_HINT_T0);
      acc0[r] = StepAvx2<W>(x[r][i], y[i], acc0[r]);
      if constexpr (W::kTwoAccumulators) {
        acc1[r] = StepAvx2<W>(x[r][i + 1], y[i + 1], acc1[r]);
      } else {
        acc0[r] = StepAvx2<W>(x[r][i + 1], y[i + 1], acc0[r]);
      }
    }
  }
  for (; i < nb; ++i) {
    for (int r = 0; r < R; ++r) acc0[r] = StepAvx2<W>(x[r][i], y[i], acc0[r]);
  }
  for (int r = 0; r < R; ++r) {
    out[r] = W::kTwoAccumulators ? HorizontalSum(_mm256_add_ps(acc0[r], acc1[r]))
                                 : HorizontalSum(acc0[r]);
  }
}

// ---- Q4_1 / Q5_1 against Q8_1 (AVX2) ---------------------------------------------------------
// Per row exactly the single dot (see GemvRowPairsMin above), four rows interleaved with the
// (d, m) conversion and the sum_mins updates done for the four rows at once.

struct Q4_1Avx2 {
  using Block = BlockQ4_1;
  EXO_GEMV_AVX2 static __m256i Unsigned(const Block& b) { return UnpackNibbles(b.qs); }
};

struct Q5_1Avx2 {
  using Block = BlockQ5_1;
  EXO_GEMV_AVX2 static __m256i Unsigned(const Block& b) {
    return _mm256_or_si256(UnpackNibbles(b.qs), HighBitsQ5(b.qh));
  }
};

template <typename W>
EXO_GEMV_AVX2 void GemvRowsMinAvx2(const void* vw, int64_t row_bytes, const void* vy,
                                   const void* /*prepared*/, int64_t n, float* out) {
  using Block = typename W::Block;
  const uint8_t* base = static_cast<const uint8_t*>(vw);
  const Block* x[R];
  for (int r = 0; r < R; ++r) x[r] = reinterpret_cast<const Block*>(base + r * row_bytes);
  const BlockQ8_1* y = static_cast<const BlockQ8_1*>(vy);
  const int64_t nb = n / kQk32;
  const int64_t ahead = kPrefetchGroups * R * row_bytes;
  const __m256i odd = _mm256_setr_epi32(1, 3, 5, 7, 1, 3, 5, 7);
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  __m128 sum_mins = _mm_setzero_ps();  // lane r: row r's
  for (int64_t i = 0; i < nb; ++i) {
    if ((i & 1) == 0) {  // every other block: >= 40 bytes, so every line of the stream is met
      for (int r = 0; r < R; ++r) {
        _mm_prefetch(reinterpret_cast<const char*>(x[r] + i) + ahead, _MM_HINT_T0);
      }
    }
    // Lanes 2r, 2r + 1: Half(d_r) * Half(d_y), Half(m_r) * Half(s_y).
    const __m256 prod = _mm256_mul_ps(_mm256_cvtph_ps(DmOfRows(x, i)), DsOfToken(y[i]));
    const __m256i yq = Load256(y[i].qs);
    for (int r = 0; r < R; ++r) {
      const __m256i dot16 = _mm256_maddubs_epi16(W::Unsigned(x[r][i]), yq);
      const __m256 lanes = _mm256_cvtepi32_ps(_mm256_madd_epi16(dot16, _mm256_set1_epi16(1)));
      const __m256 d = _mm256_permutevar8x32_ps(prod, _mm256_set1_epi32(2 * r));
      acc[r] = _mm256_fmadd_ps(d, lanes, acc[r]);
    }
    sum_mins = _mm_add_ps(sum_mins, _mm256_castps256_ps128(_mm256_permutevar8x32_ps(prod, odd)));
  }
  float mins_out[R];
  _mm_storeu_ps(mins_out, sum_mins);
  for (int r = 0; r < R; ++r) out[r] = HorizontalSum(acc[r]) + mins_out[r];
}

// ---- Q4_K / Q5_K against Q8_K (AVX2; also the AVX-512 level's Q4_K and Q5_K dots) ---------
// Per row exactly vec_dot_q4_k_q8_k_avx2: the same int32 lane sums per super-block (integer
// arithmetic, any order), acc = fma(d * dy, float(lanes), acc), sum_mins += (dmin * dy) *
// float(mins . bsums), HorizontalSum(acc) - sum_mins. What changes is how the integers are made:
// the 6-bit scales and mins are unpacked with a few 32-bit operations instead of per byte, each
// chunk's scale pair comes from one byte shuffle of them, the mins term is one madd against the
// activation's 16-sums added in pairs once per super-block for all rows, and four rows'
// independent work is interleaved with their streams prefetched.

// Scales (bytes 0..7) and mins (bytes 8..15) of a Q4_K / Q5_K super-block, as GetScaleMinK4,
// from its 12 scale bytes at q (16 bytes are read: the 4 after them are the block's quants).
// As 32-bit words u0..u2: scales 0-3 = u0 & 0x3f.., scales 4-7 = (u2 & 0x0f..) | top two bits of
// u0's bytes << 4, mins 0-3 = u1 & 0x3f.., mins 4-7 = (u2 >> 4 & 0x0f..) | top bits of u1 << 4.
EXO_GEMV_AVX2 inline __m128i ScalesMinsK(const uint8_t* q) {
  const __m128i u = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
  const __m128i low = _mm_and_si128(
      _mm_srlv_epi32(_mm_shuffle_epi32(u, _MM_SHUFFLE(2, 1, 2, 0)), _mm_setr_epi32(0, 0, 0, 4)),
      _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
  // (u >> 2) & 0x30.. is ((u >> 6) & 0x03..) << 4 per byte.
  const __m128i top =
      _mm_and_si128(_mm_srli_epi32(_mm_shuffle_epi32(u, _MM_SHUFFLE(1, 1, 0, 0)), 2),
                    _mm_setr_epi32(0, 0x30303030, 0, 0x30303030));
  return _mm_or_si128(low, top);
}

// Bit b of every byte of qh moved to bit 4, other bits cleared: Q5_K's fifth bit of a quant.
// The 16-bit shifts (by at most 4) never bring a bit across a byte into bit 4.
EXO_GEMV_AVX2 inline __m256i FifthBit(__m256i qh, int b) {
  const __m256i moved = b < 4    ? _mm256_slli_epi16(qh, 4 - b)
                        : b == 4 ? qh
                                 : _mm256_srli_epi16(qh, b - 4);
  return _mm256_and_si256(moved, _mm256_set1_epi8(0x10));
}

// Q4_K (kFiveBit false) and Q5_K (true, vec_dot_q5_k_q8_k_avx2: the same arithmetic with bit
// 2c / 2c + 1 of each qh byte as the fifth bit of chunk c's low / high nibble quants).
template <bool kFiveBit>
EXO_GEMV_AVX2 void GemvRowsK4(const void* vw, int64_t row_bytes, const void* vy,
                              const void* /*prepared*/, int64_t n, float* out) {
  static_assert(R == 4, "four rows' d/dmin in one register below");
  using Block = std::conditional_t<kFiveBit, BlockQ5_K, BlockQ4_K>;
  const uint8_t* base = static_cast<const uint8_t*>(vw);
  const Block* x[R];
  for (int r = 0; r < R; ++r) x[r] = reinterpret_cast<const Block*>(base + r * row_bytes);
  const BlockQ8_K* y = static_cast<const BlockQ8_K*>(vy);
  const int64_t nb = n / kQkK;
  const int64_t ahead = kPrefetchGroups * R * row_bytes;
  const __m256i low_mask = _mm256_set1_epi8(0x0F);
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  __m128 sum_mins = _mm_setzero_ps();  // lane r: row r's sum_mins
  for (int64_t i = 0; i < nb; ++i) {
    // bsums[2j] + bsums[2j + 1] (|sum| <= 2 * 16 * 128: no int16 overflow).
    const __m128i bsum_pairs =
        _mm_hadd_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(y[i].bsums)),
                       _mm_loadu_si128(reinterpret_cast<const __m128i*>(y[i].bsums + 8)));
    // (d, dmin) of the four rows, times the activation scale: lanes 2r, 2r + 1 hold row r's
    // Half(d) * d_y and Half(dmin) * d_y, the same f32 products as the single dot's.
    uint32_t d_dmin[R];
    for (int r = 0; r < R; ++r) std::memcpy(&d_dmin[r], &x[r][i].d, sizeof(uint32_t));
    const __m256 dxy = _mm256_mul_ps(
        _mm256_cvtph_ps(_mm_setr_epi32(static_cast<int>(d_dmin[0]), static_cast<int>(d_dmin[1]),
                                       static_cast<int>(d_dmin[2]), static_cast<int>(d_dmin[3]))),
        _mm256_set1_ps(y[i].d));
    __m128i mins[R];
    for (int r = 0; r < R; ++r) {
      const Block& b = x[r][i];
      const char* next = reinterpret_cast<const char*>(&b) + ahead;
      for (int line = 0; line < static_cast<int>(sizeof(Block)); line += 64) {
        _mm_prefetch(next + line, _MM_HINT_T0);
      }
      const __m256i scales_mins = _mm256_cvtepu8_epi16(ScalesMinsK(b.scales));
      mins[r] = _mm_madd_epi16(_mm256_extracti128_si256(scales_mins, 1), bsum_pairs);
      // The eight int16 scales in both 128-bit lanes; scale j is byte pair (2j, 2j + 1).
      const __m256i scales = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(scales_mins));
      __m256i sumi = _mm256_setzero_si256();
      __m256i qh = _mm256_setzero_si256();
      if constexpr (kFiveBit) qh = Load256(b.qh);
#pragma GCC unroll 4
      for (int chunk = 0; chunk < 4; ++chunk) {
        const __m256i q4 = Load256(b.qs + 32 * chunk);
        __m256i lo = _mm256_and_si256(q4, low_mask);
        __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), low_mask);
        if constexpr (kFiveBit) {
          lo = _mm256_or_si256(lo, FifthBit(qh, 2 * chunk));
          hi = _mm256_or_si256(hi, FifthBit(qh, 2 * chunk + 1));
        }
        const __m256i p0 = _mm256_maddubs_epi16(lo, Load256(y[i].qs + 64 * chunk));
        const __m256i p1 = _mm256_maddubs_epi16(hi, Load256(y[i].qs + 64 * chunk + 32));
        const __m256i s0 = _mm256_shuffle_epi8(
            scales, _mm256_set1_epi16(static_cast<short>((4 * chunk + 1) << 8 | 4 * chunk)));
        const __m256i s1 = _mm256_shuffle_epi8(
            scales, _mm256_set1_epi16(static_cast<short>((4 * chunk + 3) << 8 | (4 * chunk + 2))));
        sumi = _mm256_add_epi32(
            sumi, _mm256_add_epi32(_mm256_madd_epi16(p0, s0), _mm256_madd_epi16(p1, s1)));
      }
      const __m256 d = _mm256_permutevar8x32_ps(dxy, _mm256_set1_epi32(2 * r));
      acc[r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc[r]);
    }
    // Lane r: row r's mins . bsum pairs (exact integers), then sum_mins += (dmin * d_y) *
    // float(that), lane by lane as the single dot's scalar code.
    const __m128i mins_total =
        _mm_hadd_epi32(_mm_hadd_epi32(mins[0], mins[1]), _mm_hadd_epi32(mins[2], mins[3]));
    const __m128 dmin = _mm256_castps256_ps128(
        _mm256_permutevar8x32_ps(dxy, _mm256_setr_epi32(1, 3, 5, 7, 1, 3, 5, 7)));
    sum_mins = _mm_add_ps(sum_mins, _mm_mul_ps(dmin, _mm_cvtepi32_ps(mins_total)));
  }
  float mins_out[R];
  _mm_storeu_ps(mins_out, sum_mins);
  for (int r = 0; r < R; ++r) out[r] = HorizontalSum(acc[r]) - mins_out[r];
}

// ---- Q6_K against Q8_K (AVX2) ----------------------------------------------------------------
// Per row exactly vec_dot_q6_k_q8_k_avx2: per super-block, lane l of the int32 sums holds, over
// the eight 32-byte chunks, scale(chunk, l) * (products of bytes 4l..4l + 3), with scale 2k of
// the half in lanes 0-3 and 2k + 1 in lanes 4-7 for chunk k; lane 0 also holds -32 * sum(scale *
// bsum) (the quants are stored +32); then acc = fma(d * d_y, float(lanes), acc) and
// HorizontalSum(acc). The integers are made more cheaply than in the single dot: the 16 scales
// are sign-extended once and each chunk's scale pair is one byte shuffle of them (not two
// broadcasts from scalars), the offset sum is one madd against bsums with the four rows' sums
// reduced together, and the four rows' d are converted and scaled in one go.
EXO_GEMV_AVX2 void GemvRowsQ6KAvx2(const void* vw, int64_t row_bytes, const void* vy,
                                   const void* /*prepared*/, int64_t n, float* out) {
  static_assert(R == 4, "four rows' d in one register below");
  const uint8_t* base = static_cast<const uint8_t*>(vw);
  const BlockQ6_K* x[R];
  for (int r = 0; r < R; ++r) x[r] = reinterpret_cast<const BlockQ6_K*>(base + r * row_bytes);
  const BlockQ8_K* y = static_cast<const BlockQ8_K*>(vy);
  const int64_t nb = n / kQkK;
  const int64_t ahead = kPrefetchGroups * R * row_bytes;
  const __m256i low_mask = _mm256_set1_epi8(0x0F);
  const __m256i high_mask = _mm256_set1_epi8(0x30);
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    const __m128 dxy = FourRowScales(x, i, y[i].d);
    const __m256i bsums = Load256(y[i].bsums);
    __m128i part[R];
    __m256i sumi[R];
    for (int r = 0; r < R; ++r) {
      const BlockQ6_K& b = x[r][i];
      const char* next = reinterpret_cast<const char*>(&b) + ahead;
      for (int line = 0; line < static_cast<int>(sizeof(BlockQ6_K)); line += 64) {
        _mm_prefetch(next + line, _MM_HINT_T0);
      }
      const __m256i sc16 =
          _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b.scales)));
      const __m256i sb = _mm256_madd_epi16(sc16, bsums);
      part[r] = _mm_add_epi32(_mm256_castsi256_si128(sb), _mm256_extracti128_si256(sb, 1));
      __m256i s = _mm256_setzero_si256();
      for (int half = 0; half < 2; ++half) {
        // Scales 8 * half .. 8 * half + 7 as int16 in both 128-bit lanes.
        const __m256i scales = half == 0 ? _mm256_permute2x128_si256(sc16, sc16, 0x00)
                                         : _mm256_permute2x128_si256(sc16, sc16, 0x11);
        const __m256i ql0 = Load256(b.ql + 64 * half);
        const __m256i ql1 = Load256(b.ql + 64 * half + 32);
        const __m256i qh = Load256(b.qh + 32 * half);
#pragma GCC unroll 4
        for (int k = 0; k < 4; ++k) {
          // The single dot's q[k]: the low (k < 2) or high nibbles of ql0 (k even) / ql1 (k
          // odd), with bits 2k, 2k + 1 of qh as bits 4, 5.
          const __m256i ql = (k & 1) ? ql1 : ql0;
          const __m256i low4 = k < 2 ? _mm256_and_si256(ql, low_mask)
                                     : _mm256_and_si256(_mm256_srli_epi16(ql, 4), low_mask);
          // Bits 2k, 2k + 1 to bits 4, 5 with one 16-bit shift (by at most 4, so no bit crosses
          // into another byte's bits 4, 5).
          const __m256i moved = k < 2    ? _mm256_slli_epi16(qh, 4 - 2 * k)
                                : k == 2 ? qh
                                         : _mm256_srli_epi16(qh, 2);
          const __m256i q = _mm256_or_si256(low4, _mm256_and_si256(moved, high_mask));
          const __m256i p = _mm256_maddubs_epi16(q, Load256(y[i].qs + 128 * half + 32 * k));
          // int16 scale 2k in the low 128-bit lane, 2k + 1 in the high one.
          const __m256i pick =
              _mm256_set_m128i(_mm_set1_epi16(static_cast<short>((4 * k + 3) << 8 | (4 * k + 2))),
                               _mm_set1_epi16(static_cast<short>((4 * k + 1) << 8 | (4 * k))));
          s = _mm256_add_epi32(s, _mm256_madd_epi16(p, _mm256_shuffle_epi8(scales, pick)));
        }
      }
      sumi[r] = s;
    }
    // Lane r: -32 * row r's sum(scale * bsum).
    const __m128i offset = _mm_mullo_epi32(
        _mm_hadd_epi32(_mm_hadd_epi32(part[0], part[1]), _mm_hadd_epi32(part[2], part[3])),
        _mm_set1_epi32(-32));
    int32_t offsets[R];
    _mm_storeu_si128(reinterpret_cast<__m128i*>(offsets), offset);
    float dr[R];
    _mm_storeu_ps(dr, dxy);
    for (int r = 0; r < R; ++r) {
      const __m256i lanes =
          _mm256_add_epi32(sumi[r], _mm256_setr_epi32(offsets[r], 0, 0, 0, 0, 0, 0, 0));
      acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(dr[r]), _mm256_cvtepi32_ps(lanes), acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) out[r] = HorizontalSum(acc[r]);
}

}  // namespace

GemvRowsFn GetGemvRows(TensorType type) {
  if (CpuHasAvx512Vnni()) {
    switch (type) {
      case TensorType::kQ4_0:
        return GemvRowPairs<Q4_0Pair>;
      case TensorType::kQ5_0:
        return GemvRowPairs<Q5_0Pair>;
      case TensorType::kQ8_0:
        return GemvRowPairs<Q8_0Pair>;
      case TensorType::kQ4_1:
        return GemvRowPairsMin<Q4_1Pair>;
      case TensorType::kQ5_1:
        return GemvRowPairsMin<Q5_1Pair>;
      case TensorType::kQ4_K:  // the AVX-512 level's Q4_K and Q5_K dots are the AVX2 ones
        return GemvRowsK4<false>;
      case TensorType::kQ5_K:
        return GemvRowsK4<true>;
      case TensorType::kQ6_K:
        return GemvRowsQ6K;
      default:
        return nullptr;
    }
  }
  if (CpuHasAvx2Fma()) {
    switch (type) {
      case TensorType::kQ4_0:
        return GemvRowsAvx2<Q4_0Avx2>;
      case TensorType::kQ5_0:
        return GemvRowsAvx2<Q5_0Avx2>;
      case TensorType::kQ8_0:
        return GemvRowsAvx2<Q8_0Avx2>;
      case TensorType::kQ4_1:
        return GemvRowsMinAvx2<Q4_1Avx2>;
      case TensorType::kQ5_1:
        return GemvRowsMinAvx2<Q5_1Avx2>;
      case TensorType::kQ4_K:
        return GemvRowsK4<false>;
      case TensorType::kQ5_K:
        return GemvRowsK4<true>;
      case TensorType::kQ6_K:
        return GemvRowsQ6KAvx2;
      default:
        return nullptr;
    }
  }
  return nullptr;
}

namespace {

// The offset that makes `type`'s weight quants unsigned in GemvRowPairs, 0 for other types.
int32_t PairOffset(TensorType type) {
  switch (type) {
    case TensorType::kQ4_0:
      return Q4_0Pair::kOffset;
    case TensorType::kQ5_0:
      return Q5_0Pair::kOffset;
    case TensorType::kQ8_0:
      return Q8_0Pair::kOffset;
    default:
      return 0;
  }
}

}  // namespace

int64_t GemvPreparedBytes(TensorType type, int64_t n) {
  if (!CpuHasAvx512Vnni() || PairOffset(type) == 0) return 0;
  return (n / kQk32) * (8 * sizeof(int32_t) + sizeof(float));
}

void PrepareGemv(TensorType type, const void* activations, int64_t n, void* prepared) {
  if (GemvPreparedBytes(type, n) == 0) return;
  PrepareGemv32(PairOffset(type), static_cast<const BlockQ8_0*>(activations), n / kQk32, prepared);
}

#else  // !EXO_GEMV_X86

GemvRowsFn GetGemvRows(TensorType) { return nullptr; }
int64_t GemvPreparedBytes(TensorType, int64_t) { return 0; }
void PrepareGemv(TensorType, const void*, int64_t, void*) {}

#endif

}  // namespace exo::kernels::internal
