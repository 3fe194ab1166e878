#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/internal/quants_impl.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define EXO_ATTENTION_X86 1
#else
#define EXO_ATTENTION_X86 0
#endif

namespace exo::kernels {
namespace {

// Heads whose output accumulates in one pass over the values (each value row is loaded once for
// all of them).
constexpr int kHeadsPerPass = 4;

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

// ---- Scalar reference -----------------------------------------------------------------------

void ScoresRef(const float* q, int32_t hd, const AttentionKeys& k, float scale, float* scores) {
  std::fill(scores, scores + k.n_keys, 0.0f);
  for (int32_t i = 0; i < hd; ++i) {
    const float qi = q[i];
    const float* row = k.keys_t + i * k.ld_keys;
    for (int32_t p = 0; p < k.n_keys; ++p) scores[p] += qi * row[p];
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
    const float* v = k.values + p * k.ld_values;
    for (int32_t i = 0; i < hdv; ++i) out[i] += w * v[i];
  }
  for (int32_t i = 0; i < hdv; ++i) out[i] *= inv;
}

#if EXO_ATTENTION_X86

#define EXO_ATTN_AVX512 __attribute__((target("avx2,fma,f16c,avx512f")))
#define EXO_ATTN_AVX2 __attribute__((target("avx2,fma,f16c")))

// ---- AVX-512: 16 positions (scores) or 16 output elements (values) per register -------------

// Scores of H heads for positions [p0, p0 + 16V); the last register keeps only `tail` lanes.
template <int H, int V>
EXO_ATTN_AVX512 void Scores512(const float* q, int32_t hd, const AttentionKeys& k, int32_t p0,
                               __mmask16 tail, float scale, float* scores) {
  __m512 acc[H][V];
  for (int h = 0; h < H; ++h) {
    for (int v = 0; v < V; ++v) acc[h][v] = _mm512_setzero_ps();
  }
  for (int32_t i = 0; i < hd; ++i) {
    const float* row = k.keys_t + i * k.ld_keys + p0;
    __m512 key[V];
    for (int v = 0; v < V; ++v) {
      key[v] =
          v + 1 < V ? _mm512_loadu_ps(row + 16 * v) : _mm512_maskz_loadu_ps(tail, row + 16 * v);
    }
    for (int h = 0; h < H; ++h) {
      const __m512 qi = _mm512_set1_ps(q[h * hd + i]);
      for (int v = 0; v < V; ++v) acc[h][v] = _mm512_add_ps(acc[h][v], _mm512_mul_ps(qi, key[v]));
    }
  }
  const __m512 s = _mm512_set1_ps(scale);
  for (int h = 0; h < H; ++h) {
    float* out = scores + h * k.n_keys + p0;
    for (int v = 0; v < V; ++v) {
      _mm512_mask_storeu_ps(out + 16 * v, v + 1 < V ? __mmask16(0xFFFF) : tail,
                            _mm512_mul_ps(acc[h][v], s));
    }
  }
}

template <int H>
EXO_ATTN_AVX512 void ScoresHeads512(const float* q, int32_t hd, const AttentionKeys& k, float scale,
                                    float* scores) {
  int32_t p = 0;
  for (; p + 64 <= k.n_keys; p += 64) Scores512<H, 4>(q, hd, k, p, 0xFFFF, scale, scores);
  for (; p < k.n_keys; p += 16) {
    const int32_t left = std::min(16, k.n_keys - p);
    Scores512<H, 1>(q, hd, k, p, static_cast<__mmask16>((1u << left) - 1), scale, scores);
  }
}

// Output elements [c0, c0 + 16J) of the pass's H heads; the last register keeps only `tail`
// lanes. Each value register is loaded once and used by every head.
template <int H, int J>
EXO_ATTN_AVX512 void Values512(const Scratch& s, const AttentionKeys& k, int32_t c0, __mmask16 tail,
                               const float* inv, float* out, int32_t hdv) {
  __m512 acc[H][J];
  for (int h = 0; h < H; ++h) {
    for (int j = 0; j < J; ++j) acc[h][j] = _mm512_setzero_ps();
  }
  for (int32_t p = 0; p < k.n_keys; ++p) {
    if (const uint8_t flags = s.rescaled[p]) {
      for (int h = 0; h < H; ++h) {
        if (!(flags >> h & 1)) continue;
        const __m512 r = _mm512_set1_ps(s.rescale_of(h)[p]);
        for (int j = 0; j < J; ++j) acc[h][j] = _mm512_mul_ps(acc[h][j], r);
      }
    }
    const float* v = k.values + p * k.ld_values + c0;
    __m512 x[J];
    for (int j = 0; j < J; ++j) {
      x[j] = j + 1 < J ? _mm512_loadu_ps(v + 16 * j) : _mm512_maskz_loadu_ps(tail, v + 16 * j);
    }
    for (int h = 0; h < H; ++h) {
      const __m512 w = _mm512_set1_ps(s.weights_of(h)[p]);
      for (int j = 0; j < J; ++j) acc[h][j] = _mm512_add_ps(acc[h][j], _mm512_mul_ps(w, x[j]));
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
    switch (j) {
      case 1:
        Values512<H, 1>(s, k, c, tail, inv, out, hdv);
        break;
      case 2:
        Values512<H, 2>(s, k, c, tail, inv, out, hdv);
        break;
      case 3:
        Values512<H, 3>(s, k, c, tail, inv, out, hdv);
        break;
      default:
        Values512<H, 4>(s, k, c, tail, inv, out, hdv);
        break;
    }
  }
}

EXO_ATTN_AVX512 void ValuesAll512(const Scratch& s, int heads, const AttentionKeys& k, int32_t hdv,
                                  const float* inv, float* out) {
  switch (heads) {
    case 1:
      ValuesHeads512<1>(s, k, hdv, inv, out);
      break;
    case 2:
      ValuesHeads512<2>(s, k, hdv, inv, out);
      break;
    case 3:
      ValuesHeads512<3>(s, k, hdv, inv, out);
      break;
    default:
      ValuesHeads512<4>(s, k, hdv, inv, out);
      break;
  }
}

EXO_ATTN_AVX512 void ScoresAll512(const float* q, int32_t heads, int32_t hd, const AttentionKeys& k,
                                  float scale, float* scores) {
  int32_t h = 0;
  for (; h + 4 <= heads; h += 4) ScoresHeads512<4>(q + h * hd, hd, k, scale, scores + h * k.n_keys);
  const float* qh = q + h * hd;
  float* sh = scores + int64_t{h} * k.n_keys;
  switch (heads - h) {
    case 3:
      ScoresHeads512<3>(qh, hd, k, scale, sh);
      break;
    case 2:
      ScoresHeads512<2>(qh, hd, k, scale, sh);
      break;
    case 1:
      ScoresHeads512<1>(qh, hd, k, scale, sh);
      break;
    default:
      break;
  }
}

// ---- AVX2: 8 lanes per register -------------------------------------------------------------

EXO_ATTN_AVX2 inline __m256i LaneMask(int left) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(left), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

template <int H, int V>
EXO_ATTN_AVX2 void Scores256(const float* q, int32_t hd, const AttentionKeys& k, int32_t p0,
                             int left, float scale, float* scores) {
  const __m256i tail = LaneMask(left);
  __m256 acc[H][V];
  for (int h = 0; h < H; ++h) {
    for (int v = 0; v < V; ++v) acc[h][v] = _mm256_setzero_ps();
  }
  for (int32_t i = 0; i < hd; ++i) {
    const float* row = k.keys_t + i * k.ld_keys + p0;
    __m256 key[V];
    for (int v = 0; v < V; ++v) {
      key[v] = v + 1 < V ? _mm256_loadu_ps(row + 8 * v) : _mm256_maskload_ps(row + 8 * v, tail);
    }
    for (int h = 0; h < H; ++h) {
      const __m256 qi = _mm256_set1_ps(q[h * hd + i]);
      for (int v = 0; v < V; ++v) acc[h][v] = _mm256_add_ps(acc[h][v], _mm256_mul_ps(qi, key[v]));
    }
  }
  const __m256 s = _mm256_set1_ps(scale);
  for (int h = 0; h < H; ++h) {
    float* out = scores + h * k.n_keys + p0;
    for (int v = 0; v < V; ++v) {
      const __m256 x = _mm256_mul_ps(acc[h][v], s);
      if (v + 1 < V) {
        _mm256_storeu_ps(out + 8 * v, x);
      } else {
        _mm256_maskstore_ps(out + 8 * v, tail, x);
      }
    }
  }
}

template <int H>
EXO_ATTN_AVX2 void ScoresHeads256(const float* q, int32_t hd, const AttentionKeys& k, float scale,
                                  float* scores) {
  int32_t p = 0;
  for (; p + 16 <= k.n_keys; p += 16) Scores256<H, 2>(q, hd, k, p, 8, scale, scores);
  for (; p < k.n_keys; p += 8)
    Scores256<H, 1>(q, hd, k, p, std::min(8, k.n_keys - p), scale, scores);
}

EXO_ATTN_AVX2 void ScoresAll256(const float* q, int32_t heads, int32_t hd, const AttentionKeys& k,
                                float scale, float* scores) {
  int32_t h = 0;
  for (; h + 4 <= heads; h += 4) ScoresHeads256<4>(q + h * hd, hd, k, scale, scores + h * k.n_keys);
  const float* qh = q + h * hd;
  float* sh = scores + int64_t{h} * k.n_keys;
  switch (heads - h) {
    case 3:
      ScoresHeads256<3>(qh, hd, k, scale, sh);
      break;
    case 2:
      ScoresHeads256<2>(qh, hd, k, scale, sh);
      break;
    case 1:
      ScoresHeads256<1>(qh, hd, k, scale, sh);
      break;
    default:
      break;
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
  for (int32_t p = 0; p < k.n_keys; ++p) {
    if (const uint8_t flags = s.rescaled[p]) {
      for (int h = 0; h < H; ++h) {
        if (!(flags >> h & 1)) continue;
        const __m256 r = _mm256_set1_ps(s.rescale_of(h)[p]);
        for (int j = 0; j < J; ++j) acc[h][j] = _mm256_mul_ps(acc[h][j], r);
      }
    }
    const float* v = k.values + p * k.ld_values + c0;
    __m256 x[J];
    for (int j = 0; j < J; ++j) {
      x[j] = j + 1 < J ? _mm256_loadu_ps(v + 8 * j) : _mm256_maskload_ps(v + 8 * j, tail);
    }
    for (int h = 0; h < H; ++h) {
      const __m256 w = _mm256_set1_ps(s.weights_of(h)[p]);
      for (int j = 0; j < J; ++j) acc[h][j] = _mm256_add_ps(acc[h][j], _mm256_mul_ps(w, x[j]));
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
    switch (j) {
      case 1:
        Values256<H, 1>(s, k, c, left, inv, out, hdv);
        break;
      case 2:
        Values256<H, 2>(s, k, c, left, inv, out, hdv);
        break;
      case 3:
        Values256<H, 3>(s, k, c, left, inv, out, hdv);
        break;
      default:
        Values256<H, 4>(s, k, c, left, inv, out, hdv);
        break;
    }
  }
}

EXO_ATTN_AVX2 void ValuesAll256(const Scratch& s, int heads, const AttentionKeys& k, int32_t hdv,
                                const float* inv, float* out) {
  switch (heads) {
    case 1:
      ValuesHeads256<1>(s, k, hdv, inv, out);
      break;
    case 2:
      ValuesHeads256<2>(s, k, hdv, inv, out);
      break;
    case 3:
      ValuesHeads256<3>(s, k, hdv, inv, out);
      break;
    default:
      ValuesHeads256<4>(s, k, hdv, inv, out);
      break;
  }
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
