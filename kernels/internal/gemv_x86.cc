// Multi-row decode kernels (x86, AVX-512 VNNI and AVX2) for the 32-element block types against
// Q8_0 activations. Per row they do exactly what the single-row dot of the same level does
// (VecDot32 in quants_avx512.cc, the AVX2 dots in quants_avx2.cc, which agree bit for bit): the
// same int32 lane sums, the same acc = fma(dx * dy, float(lanes), acc) per block with the same
// accumulator pattern, the same horizontal sum. Only the order in which the rows' independent
// operations are issued differs, which cannot change a bit. gemv_test checks this.
#include <cstring>

#include "kernels/internal/blocks.h"
#include "kernels/internal/gemv.h"
#include "kernels/internal/quants_impl.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define EXO_GEMV_X86 1
#else
#define EXO_GEMV_X86 0
#endif

namespace exo::kernels::internal {

#if EXO_GEMV_X86

#define EXO_GEMV_AVX512 \
  __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))

namespace {

constexpr int R = kGemvRows;
// How far ahead of the current block each row's stream is prefetched: the same block of the row
// group after next, so the prefetches run one group ahead of the hardware's own.
constexpr int kPrefetchGroups = 2;

EXO_GEMV_AVX512 inline float HorizontalSum(__m256 v) {  // as quants_avx2.cc
  __m128 sum = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
  sum = _mm_add_ss(sum, _mm_movehdup_ps(sum));
  return _mm_cvtss_f32(sum);
}

EXO_GEMV_AVX512 inline float Half(uint16_t h) { return _cvtsh_ss(h); }

EXO_GEMV_AVX512 inline __m256i Load256(const void* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

EXO_GEMV_AVX512 inline __m256i UnpackNibbles(const uint8_t* p) {
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m256i both = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

EXO_GEMV_AVX512 inline __m256i HighBitsQ5(const uint8_t* p) {
  uint32_t bits;
  std::memcpy(&bits, p, sizeof(bits));
  return _mm256_maskz_mov_epi8(_cvtu32_mask32(bits), _mm256_set1_epi8(0x10));
}

struct Q4_0Rows {
  using Block = BlockQ4_0;
  static constexpr bool kTwoAccumulators = false;
  EXO_GEMV_AVX512 static __m256i Signed(const Block& b) {
    return _mm256_sub_epi8(UnpackNibbles(b.qs), _mm256_set1_epi8(8));
  }
};

struct Q5_0Rows {
  using Block = BlockQ5_0;
  static constexpr bool kTwoAccumulators = false;
  EXO_GEMV_AVX512 static __m256i Signed(const Block& b) {
    return _mm256_sub_epi8(_mm256_or_si256(UnpackNibbles(b.qs), HighBitsQ5(b.qh)),
                           _mm256_set1_epi8(16));
  }
};

struct Q8_0Rows {
  using Block = BlockQ8_0;
  static constexpr bool kTwoAccumulators = true;  // even blocks into acc0, odd into acc1
  EXO_GEMV_AVX512 static __m256i Signed(const Block& b) { return Load256(b.qs); }
};

// acc += dx * dy * float(lanes(x, y)): one block of one row.
template <typename W>
EXO_GEMV_AVX512 inline __m256 Step(const typename W::Block& x, const BlockQ8_0& y, __m256 acc) {
  const __m256i w = W::Signed(x);
  const __m256i ys = _mm256_sign_epi8(Load256(y.qs), w);
  const __m256i lanes = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(w, w), ys);
  return _mm256_fmadd_ps(_mm256_set1_ps(Half(x.d) * Half(y.d)), _mm256_cvtepi32_ps(lanes), acc);
}

template <typename W>
EXO_GEMV_AVX512 void GemvRows(const void* vw, int64_t row_bytes, const void* vy, int64_t n,
                              float* out) {
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
  if constexpr (W::kTwoAccumulators) {
    for (; i + 2 <= nb; i += 2) {
      for (int r = 0; r < R; ++r) {
        _mm_prefetch(reinterpret_cast<const char*>(x[r] + i) + ahead, _MM_HINT_T0);
        acc0[r] = Step<W>(x[r][i], y[i], acc0[r]);
        acc1[r] = Step<W>(x[r][i + 1], y[i + 1], acc1[r]);
      }
    }
  } else {
    for (; i + 2 <= nb; i += 2) {  // two blocks per prefetch (>= one cache line)
      for (int r = 0; r < R; ++r) {
        _mm_prefetch(reinterpret_cast<const char*>(x[r] + i) + ahead, _MM_HINT_T0);
        acc0[r] = Step<W>(x[r][i], y[i], acc0[r]);
        acc0[r] = Step<W>(x[r][i + 1], y[i + 1], acc0[r]);
      }
    }
  }
  for (; i < nb; ++i) {
    for (int r = 0; r < R; ++r) acc0[r] = Step<W>(x[r][i], y[i], acc0[r]);
  }
  for (int r = 0; r < R; ++r) {
    out[r] = W::kTwoAccumulators ? HorizontalSum(_mm256_add_ps(acc0[r], acc1[r]))
                                 : HorizontalSum(acc0[r]);
  }
}

// ---- AVX2: the same kernels with the AVX2 dot's lane sums (maddubs + madd) -----------------

#define EXO_GEMV_AVX2 __attribute__((target("avx2,fma,f16c")))

EXO_GEMV_AVX2 inline __m256i UnpackNibbles2(const uint8_t* p) {
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m256i both = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

// 0x10 in byte j when bit j of the little-endian uint32 at `p` is set, else 0.
EXO_GEMV_AVX2 inline __m256i HighBitsQ5Avx2(const uint8_t* p) {
  uint32_t bits;
  std::memcpy(&bits, p, sizeof(bits));
  const __m256i select = _mm256_set_epi64x(0x0303030303030303LL, 0x0202020202020202LL,
                                           0x0101010101010101LL, 0x0000000000000000LL);
  const __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(bits)), select);
  const __m256i bit = _mm256_set1_epi64x(static_cast<long long>(0x8040201008040201ULL));
  return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit),
                          _mm256_set1_epi8(0x10));
}

struct Q4_0Avx2 {
  using Block = BlockQ4_0;
  static constexpr bool kTwoAccumulators = false;
  EXO_GEMV_AVX2 static __m256i Signed(const Block& b) {
    return _mm256_sub_epi8(UnpackNibbles2(b.qs), _mm256_set1_epi8(8));
  }
};

struct Q5_0Avx2 {
  using Block = BlockQ5_0;
  static constexpr bool kTwoAccumulators = false;
  EXO_GEMV_AVX2 static __m256i Signed(const Block& b) {
    return _mm256_sub_epi8(_mm256_or_si256(UnpackNibbles2(b.qs), HighBitsQ5Avx2(b.qh)),
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

EXO_GEMV_AVX2 inline float HorizontalSumAvx2(__m256 v) {
  __m128 sum = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
  sum = _mm_add_ss(sum, _mm_movehdup_ps(sum));
  return _mm_cvtss_f32(sum);
}

template <typename W>
EXO_GEMV_AVX2 void GemvRowsAvx2(const void* vw, int64_t row_bytes, const void* vy, int64_t n,
                                float* out) {
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
    out[r] = W::kTwoAccumulators ? HorizontalSumAvx2(_mm256_add_ps(acc0[r], acc1[r]))
                                 : HorizontalSumAvx2(acc0[r]);
  }
}

}  // namespace

GemvRowsFn GetGemvRows(TensorType type) {
  if (CpuHasAvx512Vnni()) {
    switch (type) {
      case TensorType::kQ4_0:
        return GemvRows<Q4_0Rows>;
      case TensorType::kQ5_0:
        return GemvRows<Q5_0Rows>;
      case TensorType::kQ8_0:
        return GemvRows<Q8_0Rows>;
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
      default:
        return nullptr;
    }
  }
  return nullptr;
}

#else  // !EXO_GEMV_X86

GemvRowsFn GetGemvRows(TensorType) { return nullptr; }

#endif

}  // namespace exo::kernels::internal
