#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "kernels/internal/fp16.h"
#include "kernels/internal/quants_impl.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define EXO_ATTENTION_X86 1
#else
#define EXO_ATTENTION_X86 0
#endif

// GCC 12's AVX-512 headers trip -W(maybe-)uninitialized on their own _mm512_undefined_*() values.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace exo::kernels {
namespace {

// Heads whose output accumulates in one pass over the values (each value row is loaded once for
// all of them).
constexpr int kHeadsPerPass = 4;

// Calls f(std::integral_constant<int, m>()) with m = min(n, 4), for n >= 1: a kernel's template
// count (heads of a pass, registers of a chunk) from a run-time one.
template <typename F>
inline void WithUpTo4(int n, F&& f) {
  switch (n) {
    case 1:
      f(std::integral_constant<int, 1>());
      break;
    case 2:
      f(std::integral_constant<int, 2>());
      break;
    case 3:
      f(std::integral_constant<int, 3>());
      break;
    default:
      f(std::integral_constant<int, 4>());
      break;
  }
}

// Per-thread scratch of one call: the scores of every head, then the softmax weights of one pass's
// heads.
struct Scratch {
  std::vector<float> scores;      // heads x n_keys
  std::vector<float> weights;     // kHeadsPerPass x n_keys
  std::vector<float> rescale;     // kHeadsPerPass x n_keys: factor applied before p enters
  std::vector<uint8_t> rescaled;  // n_keys: bit h set where position p raised head h's maximum
  int32_t n = 0;                  // n_keys of the current call (row stride of weights/rescale)

  const float* weights_of(int h) const { return weights.data() + int64_t{h} * n; }
  const float* rescale_of(int h) const { return rescale.data() + int64_t{h} * n; }
};

Scratch& ThreadScratch(int32_t heads, int32_t n_keys) {
  thread_local Scratch s;
  const size_t n = static_cast<size_t>(n_keys);
  if (s.scores.size() < static_cast<size_t>(heads) * n) s.scores.resize(size_t(heads) * n);
  if (s.rescaled.size() < n) {
    s.weights.resize(kHeadsPerPass * n);
    s.rescale.resize(kHeadsPerPass * n);
    s.rescaled.resize(n);
  }
  s.n = n_keys;
  return s;
}

// The online softmax over head h's scores (h < kHeadsPerPass within the pass), in position order:
// weights[p] = exp(score - running max), and where position p raises the maximum, rescale[p] is
// the factor applied to everything before it and bit h of rescaled[p] is set. Returns the sum.
float OnlineSoftmax(const float* scores, int h, Scratch& s) {
  float running_max = -std::numeric_limits<float>::infinity();
  float sum = 0.0f;
  float* weights = s.weights.data() + int64_t{h} * s.n;
  float* rescale = s.rescale.data() + int64_t{h} * s.n;
  const uint8_t bit = static_cast<uint8_t>(1u << h);
  for (int32_t p = 0; p < s.n; ++p) {
    const float score = scores[p];
    if (score > running_max) {
      const float r = std::exp(running_max - score);
      sum *= r;
      rescale[p] = r;
      s.rescaled[p] |= bit;
      running_max = score;
    }
    const float w = std::exp(score - running_max);
    sum += w;
    weights[p] = w;
  }
  return sum;
}

// ---- Where the positions live -------------------------------------------------------------

// The rows of positions [pos, pos + count) are [row, row + count): one run, or two where the
// positions wrap around the end of the ring.
struct Run {
  int32_t row;
  int32_t count;
  int32_t pos;
};

int Runs(const AttentionKeys& k, Run runs[2]) {
  const int32_t first = std::min(k.n_keys, k.rows - k.first_row);
  runs[0] = {k.first_row, first, 0};
  if (first == k.n_keys) return 1;
  runs[1] = {0, k.n_keys - first, first};
  return 2;
}

inline int32_t RowOf(const AttentionKeys& k, int32_t p) {
  const int32_t r = k.first_row + p;
  return r >= k.rows ? r - k.rows : r;
}

inline const uint16_t* KeyBlock(const AttentionKeys& k, int32_t hd, int32_t block) {
  return k.keys + int64_t{block} * kKeyBlockRows * hd;
}

// ---- Scalar reference -----------------------------------------------------------------------

void ScoresRef(const float* q, int32_t hd, const AttentionKeys& k, float scale, float* scores) {
  std::fill(scores, scores + k.n_keys, 0.0f);
  for (int32_t i = 0; i < hd; ++i) {
    const float qi = q[i];
    for (int32_t p = 0; p < k.n_keys; ++p) {
      const int32_t r = RowOf(k, p);
      const uint16_t key =
          KeyBlock(k, hd, r / kKeyBlockRows)[i * kKeyBlockRows + r % kKeyBlockRows];
      scores[p] += qi * internal::HalfToFloat(key);
    }
  }
  for (int32_t p = 0; p < k.n_keys; ++p) scores[p] *= scale;
}

// Head h of the pass: out = (sum over p, in order, of w * v, rescaled where flagged) * inv.
void ValuesRef(const Scratch& s, int h, const AttentionKeys& k, int32_t hdv, float inv,
               float* out) {
  std::fill(out, out + hdv, 0.0f);
  const float* weights = s.weights_of(h);
  const float* rescale = s.rescale_of(h);
  for (int32_t p = 0; p < k.n_keys; ++p) {
    if (s.rescaled[p] >> h & 1) {
      for (int32_t i = 0; i < hdv; ++i) out[i] *= rescale[p];
    }
    const float w = weights[p];
    const uint16_t* v = k.values + RowOf(k, p) * k.ld_values;
    for (int32_t i = 0; i < hdv; ++i) out[i] += w * internal::HalfToFloat(v[i]);
  }
  for (int32_t i = 0; i < hdv; ++i) out[i] *= inv;
}

#if EXO_ATTENTION_X86

#define EXO_ATTN_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl")))
#define EXO_ATTN_AVX2 __attribute__((target("avx2,fma,f16c")))

// Calls block_fn(block, lo, hi, dst) over every run of k's positions, where rows [lo, hi) of the
// `blocks` key blocks from `block` on hold the scores dst[0 .. hi - lo): whole groups of `group`
// blocks where the run covers them, single (possibly partial) blocks at its edges.
template <typename GroupFn, typename BlockFn>
inline void ForEachKeyBlock(const AttentionKeys& k, int32_t group, float* scores, GroupFn group_fn,
                            BlockFn block_fn) {
  Run runs[2];
  const int n_runs = Runs(k, runs);
  for (int i = 0; i < n_runs; ++i) {
    int32_t r = runs[i].row;
    const int32_t end = runs[i].row + runs[i].count;
    float* dst = scores + runs[i].pos;
    while (r < end) {
      const int32_t block = r / kKeyBlockRows;
      const int32_t lo = r % kKeyBlockRows;
      if (lo == 0 && r + group * kKeyBlockRows <= end) {
        group_fn(block, dst);
        r += group * kKeyBlockRows;
        dst += group * kKeyBlockRows;
      } else {
        const int32_t hi = std::min(kKeyBlockRows, end - block * kKeyBlockRows);
        block_fn(block, lo, hi, dst);
        dst += hi - lo;
        r = block * kKeyBlockRows + hi;
      }
    }
  }
}

// ---- AVX-512: 16 positions (scores) or 16 output elements (values) per register -------------

// Scores of H heads for the V key blocks at kb (16 V rows); rows [lo, hi) of them go to
// scores[0 .. hi - lo) of each head (head stride n_keys).
template <int H, int V>
EXO_ATTN_AVX512 void ScoreBlocks512(const float* q, int32_t hd, const uint16_t* kb, int lo, int hi,
                                    float scale, float* scores, int32_t n_keys) {
  __m512 acc[H][V];
  for (int h = 0; h < H; ++h) {
    for (int v = 0; v < V; ++v) acc[h][v] = _mm512_setzero_ps();
  }
  for (int32_t i = 0; i < hd; ++i) {
    __m512 key[V];
    for (int v = 0; v < V; ++v) {
      key[v] = _mm512_cvtph_ps(_mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(kb + (int64_t{v} * hd + i) * kKeyBlockRows)));
    }
    for (int h = 0; h < H; ++h) {
      const __m512 qi = _mm512_set1_ps(q[h * hd + i]);
      for (int v = 0; v < V; ++v) acc[h][v] = _mm512_add_ps(acc[h][v], _mm512_mul_ps(qi, key[v]));
    }
  }
  const __m512 s = _mm512_set1_ps(scale);
  for (int h = 0; h < H; ++h) {
    float* out = scores + int64_t{h} * n_keys;
    if (lo == 0 && hi == V * kKeyBlockRows) {
      for (int v = 0; v < V; ++v) _mm512_storeu_ps(out + 16 * v, _mm512_mul_ps(acc[h][v], s));
    } else {
      alignas(64) float tmp[V * kKeyBlockRows];
      for (int v = 0; v < V; ++v) _mm512_store_ps(tmp + 16 * v, _mm512_mul_ps(acc[h][v], s));
      std::copy(tmp + lo, tmp + hi, out);
    }
  }
}

template <int H>
EXO_ATTN_AVX512 void ScoresHeads512(const float* q, int32_t hd, const AttentionKeys& k, float scale,
                                    float* scores) {
  ForEachKeyBlock(
      k, 4, scores,
      [&](int32_t block, float* dst) {
        ScoreBlocks512<H, 4>(q, hd, KeyBlock(k, hd, block), 0, 64, scale, dst, k.n_keys);
      },
      [&](int32_t block, int lo, int hi, float* dst) {
        ScoreBlocks512<H, 1>(q, hd, KeyBlock(k, hd, block), lo, hi, scale, dst, k.n_keys);
      });
}

// Output elements [c0, c0 + 16J) of the pass's H heads; the last register keeps only `tail`
// lanes. Each value register is loaded (and converted from f16) once and used by every head.
template <int H, int J>
EXO_ATTN_AVX512 void Values512(const Scratch& s, const AttentionKeys& k, int32_t c0, __mmask16 tail,
                               const float* inv, float* out, int32_t hdv) {
  __m512 acc[H][J];
  for (int h = 0; h < H; ++h) {
    for (int j = 0; j < J; ++j) acc[h][j] = _mm512_setzero_ps();
  }
  Run runs[2];
  const int n_runs = Runs(k, runs);
  for (int run = 0; run < n_runs; ++run) {
    const uint16_t* v = k.values + runs[run].row * k.ld_values + c0;
    const int32_t end = runs[run].pos + runs[run].count;
    for (int32_t p = runs[run].pos; p < end; ++p, v += k.ld_values) {
      if (const uint8_t flags = s.rescaled[p]) {
        for (int h = 0; h < H; ++h) {
          if (!(flags >> h & 1)) continue;
          const __m512 r = _mm512_set1_ps(s.rescale_of(h)[p]);
          for (int j = 0; j < J; ++j) acc[h][j] = _mm512_mul_ps(acc[h][j], r);
        }
      }
      __m512 x[J];
      for (int j = 0; j < J; ++j) {
        const __m256i halves =
            j + 1 < J ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + 16 * j))
                      : _mm256_maskz_loadu_epi16(tail, v + 16 * j);
        x[j] = _mm512_cvtph_ps(halves);
      }
      for (int h = 0; h < H; ++h) {
        const __m512 w = _mm512_set1_ps(s.weights_of(h)[p]);
        for (int j = 0; j < J; ++j) acc[h][j] = _mm512_add_ps(acc[h][j], _mm512_mul_ps(w, x[j]));
      }
    }
  }
  for (int h = 0; h < H; ++h) {
    const __m512 scale = _mm512_set1_ps(inv[h]);
    for (int j = 0; j < J; ++j) {
      _mm512_mask_storeu_ps(out + int64_t{h} * hdv + c0 + 16 * j,
                            j + 1 < J ? __mmask16(0xFFFF) : tail, _mm512_mul_ps(acc[h][j], scale));
    }
  }
}

// Every output element of the pass's H heads, in chunks of up to 4 registers (64 elements):
// H x 4 accumulators stay in registers while the positions stream by.
template <int H>
EXO_ATTN_AVX512 void ValuesHeads512(const Scratch& s, const AttentionKeys& k, int32_t hdv,
                                    const float* inv, float* out) {
  for (int32_t c = 0; c < hdv; c += 64) {
    const int32_t width = std::min(64, hdv - c);
    const int j = (width + 15) / 16;
    const __mmask16 tail = static_cast<__mmask16>((1u << (width - 16 * (j - 1))) - 1);
    WithUpTo4(j, [&](auto J) { Values512<H, J>(s, k, c, tail, inv, out, hdv); });
  }
}

EXO_ATTN_AVX512 void ValuesAll512(const Scratch& s, int heads, const AttentionKeys& k, int32_t hdv,
                                  const float* inv, float* out) {
  WithUpTo4(heads, [&](auto H) { ValuesHeads512<H>(s, k, hdv, inv, out); });
}

EXO_ATTN_AVX512 void ScoresAll512(const float* q, int32_t heads, int32_t hd, const AttentionKeys& k,
                                  float scale, float* scores) {
  int32_t h = 0;
  for (; h + 4 <= heads; h += 4) ScoresHeads512<4>(q + h * hd, hd, k, scale, scores + h * k.n_keys);
  if (h < heads) {
    WithUpTo4(heads - h, [&](auto H) {
      ScoresHeads512<H>(q + h * hd, hd, k, scale, scores + int64_t{h} * k.n_keys);
    });
  }
}

// ---- AVX2: 8 lanes per register -------------------------------------------------------------

EXO_ATTN_AVX2 inline __m256i LaneMask(int left) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(left), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// Eight f16 values from p as f32; only the first `left` are read (the rest are zero).
EXO_ATTN_AVX2 inline __m256 LoadHalves8(const uint16_t* p, int left) {
  if (left >= 8) return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  alignas(16) uint16_t part[8] = {};
  std::copy(p, p + left, part);
  return _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(part)));
}

// As ScoreBlocks512 for one key block: two registers of eight rows.
template <int H>
EXO_ATTN_AVX2 void ScoreBlock256(const float* q, int32_t hd, const uint16_t* kb, int lo, int hi,
                                 float scale, float* scores, int32_t n_keys) {
  __m256 acc[H][2];
  for (int h = 0; h < H; ++h) acc[h][0] = acc[h][1] = _mm256_setzero_ps();
  for (int32_t i = 0; i < hd; ++i) {
    const uint16_t* row = kb + int64_t{i} * kKeyBlockRows;
    const __m256 key0 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row)));
    const __m256 key1 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 8)));
    for (int h = 0; h < H; ++h) {
      const __m256 qi = _mm256_set1_ps(q[h * hd + i]);
      acc[h][0] = _mm256_add_ps(acc[h][0], _mm256_mul_ps(qi, key0));
      acc[h][1] = _mm256_add_ps(acc[h][1], _mm256_mul_ps(qi, key1));
    }
  }
  const __m256 s = _mm256_set1_ps(scale);
  for (int h = 0; h < H; ++h) {
    float* out = scores + int64_t{h} * n_keys;
    if (lo == 0 && hi == kKeyBlockRows) {
      _mm256_storeu_ps(out, _mm256_mul_ps(acc[h][0], s));
      _mm256_storeu_ps(out + 8, _mm256_mul_ps(acc[h][1], s));
    } else {
      alignas(32) float tmp[kKeyBlockRows];
      _mm256_store_ps(tmp, _mm256_mul_ps(acc[h][0], s));
      _mm256_store_ps(tmp + 8, _mm256_mul_ps(acc[h][1], s));
      std::copy(tmp + lo, tmp + hi, out);
    }
  }
}

template <int H>
EXO_ATTN_AVX2 void ScoresHeads256(const float* q, int32_t hd, const AttentionKeys& k, float scale,
                                  float* scores) {
  ForEachKeyBlock(
      k, 1, scores,
      [&](int32_t block, float* dst) {
        ScoreBlock256<H>(q, hd, KeyBlock(k, hd, block), 0, kKeyBlockRows, scale, dst, k.n_keys);
      },
      [&](int32_t block, int lo, int hi, float* dst) {
        ScoreBlock256<H>(q, hd, KeyBlock(k, hd, block), lo, hi, scale, dst, k.n_keys);
      });
}

EXO_ATTN_AVX2 void ScoresAll256(const float* q, int32_t heads, int32_t hd, const AttentionKeys& k,
                                float scale, float* scores) {
  int32_t h = 0;
  for (; h + 4 <= heads; h += 4) ScoresHeads256<4>(q + h * hd, hd, k, scale, scores + h * k.n_keys);
  if (h < heads) {
    WithUpTo4(heads - h, [&](auto H) {
      ScoresHeads256<H>(q + h * hd, hd, k, scale, scores + int64_t{h} * k.n_keys);
    });
  }
}

// As Values512, eight lanes per register.
template <int H, int J>
EXO_ATTN_AVX2 void Values256(const Scratch& s, const AttentionKeys& k, int32_t c0, int left,
                             const float* inv, float* out, int32_t hdv) {
  const __m256i tail = LaneMask(left);
  __m256 acc[H][J];
  for (int h = 0; h < H; ++h) {
    for (int j = 0; j < J; ++j) acc[h][j] = _mm256_setzero_ps();
  }
  Run runs[2];
  const int n_runs = Runs(k, runs);
  for (int run = 0; run < n_runs; ++run) {
    const uint16_t* v = k.values + runs[run].row * k.ld_values + c0;
    const int32_t end = runs[run].pos + runs[run].count;
    for (int32_t p = runs[run].pos; p < end; ++p, v += k.ld_values) {
      if (const uint8_t flags = s.rescaled[p]) {
        for (int h = 0; h < H; ++h) {
          if (!(flags >> h & 1)) continue;
          const __m256 r = _mm256_set1_ps(s.rescale_of(h)[p]);
          for (int j = 0; j < J; ++j) acc[h][j] = _mm256_mul_ps(acc[h][j], r);
        }
      }
      __m256 x[J];
      for (int j = 0; j < J; ++j) x[j] = LoadHalves8(v + 8 * j, j + 1 < J ? 8 : left);
      for (int h = 0; h < H; ++h) {
        const __m256 w = _mm256_set1_ps(s.weights_of(h)[p]);
        for (int j = 0; j < J; ++j) acc[h][j] = _mm256_add_ps(acc[h][j], _mm256_mul_ps(w, x[j]));
      }
    }
  }
  for (int h = 0; h < H; ++h) {
    const __m256 scale = _mm256_set1_ps(inv[h]);
    for (int j = 0; j < J; ++j) {
      float* o = out + int64_t{h} * hdv + c0 + 8 * j;
      const __m256 y = _mm256_mul_ps(acc[h][j], scale);
      if (j + 1 < J) {
        _mm256_storeu_ps(o, y);
      } else {
        _mm256_maskstore_ps(o, tail, y);
      }
    }
  }
}

template <int H>
EXO_ATTN_AVX2 void ValuesHeads256(const Scratch& s, const AttentionKeys& k, int32_t hdv,
                                  const float* inv, float* out) {
  for (int32_t c = 0; c < hdv; c += 32) {
    const int32_t width = std::min(32, hdv - c);
    const int j = (width + 7) / 8;
    const int left = width - 8 * (j - 1);
    WithUpTo4(j, [&](auto J) { Values256<H, J>(s, k, c, left, inv, out, hdv); });
  }
}

EXO_ATTN_AVX2 void ValuesAll256(const Scratch& s, int heads, const AttentionKeys& k, int32_t hdv,
                                const float* inv, float* out) {
  WithUpTo4(heads, [&](auto H) { ValuesHeads256<H>(s, k, hdv, inv, out); });
}

#endif  // EXO_ATTENTION_X86

enum class Level { kScalar, kAvx2, kAvx512 };

Level ChosenLevel() {
#if EXO_ATTENTION_X86
  static const Level level = internal::CpuHasAvx512Vnni() ? Level::kAvx512
                             : internal::CpuHasAvx2Fma()  ? Level::kAvx2
                                                          : Level::kScalar;
  return level;
#else
  return Level::kScalar;
#endif
}

void Attend(Level level, const float* q, int32_t heads, int32_t hd, const AttentionKeys& k,
            int32_t hdv, float scale, float* out) {
  if (heads <= 0 || hdv <= 0) return;
  if (k.n_keys <= 0) {  // nothing to attend to: the softmax of no scores is taken as zero output
    std::fill(out, out + int64_t{heads} * hdv, 0.0f);
    return;
  }
  Scratch& s = ThreadScratch(heads, k.n_keys);
  float* scores = s.scores.data();
#if EXO_ATTENTION_X86
  if (level == Level::kAvx512) {
    ScoresAll512(q, heads, hd, k, scale, scores);
  } else if (level == Level::kAvx2) {
    ScoresAll256(q, heads, hd, k, scale, scores);
  }
#endif
  if (level == Level::kScalar) {
    for (int32_t h = 0; h < heads; ++h) {
      ScoresRef(q + int64_t{h} * hd, hd, k, scale, scores + int64_t{h} * k.n_keys);
    }
  }
  for (int32_t h0 = 0; h0 < heads; h0 += kHeadsPerPass) {
    const int pass = std::min<int>(kHeadsPerPass, heads - h0);
    std::fill(s.rescaled.begin(), s.rescaled.begin() + k.n_keys, uint8_t{0});
    float inv[kHeadsPerPass];
    for (int h = 0; h < pass; ++h) {
      inv[h] = 1.0f / OnlineSoftmax(scores + int64_t{h0 + h} * k.n_keys, h, s);
    }
    float* o = out + int64_t{h0} * hdv;
#if EXO_ATTENTION_X86
    if (level == Level::kAvx512) {
      ValuesAll512(s, pass, k, hdv, inv, o);
      continue;
    }
    if (level == Level::kAvx2) {
      ValuesAll256(s, pass, k, hdv, inv, o);
      continue;
    }
#endif
    for (int h = 0; h < pass; ++h) ValuesRef(s, h, k, hdv, inv[h], o + int64_t{h} * hdv);
  }
}

}  // namespace

void AttendHeads(const float* q, int32_t heads, int32_t head_dim, const AttentionKeys& keys,
                 int32_t head_dim_v, float scale, float* out) {
  Attend(ChosenLevel(), q, heads, head_dim, keys, head_dim_v, scale, out);
}

namespace internal {

void AttendHeadsRef(const float* q, int32_t heads, int32_t head_dim, const AttentionKeys& keys,
                    int32_t head_dim_v, float scale, float* out) {
  Attend(Level::kScalar, q, heads, head_dim, keys, head_dim_v, scale, out);
}

bool AttendHeadsAvx2(const float* q, int32_t heads, int32_t head_dim, const AttentionKeys& keys,
                     int32_t head_dim_v, float scale, float* out) {
#if EXO_ATTENTION_X86
  if (!CpuHasAvx2Fma()) return false;
  Attend(Level::kAvx2, q, heads, head_dim, keys, head_dim_v, scale, out);
  return true;
#else
  return false;
#endif
}

bool AttendHeadsAvx512(const float* q, int32_t heads, int32_t head_dim, const AttentionKeys& keys,
                       int32_t head_dim_v, float scale, float* out) {
#if EXO_ATTENTION_X86
  if (!CpuHasAvx512Vnni()) return false;
  Attend(Level::kAvx512, q, heads, head_dim, keys, head_dim_v, scale, out);
  return true;
#else
  return false;
#endif
}

}  // namespace internal

}  // namespace exo::kernels
