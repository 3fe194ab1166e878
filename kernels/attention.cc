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

// Per-thread scratch of one call: the scores of every head, then one head's softmax weights.
struct Scratch {
  std::vector<float> scores;      // heads x n_keys
  std::vector<float> weights;     // n_keys
  std::vector<float> rescale;     // n_keys: factor applied before position p enters
  std::vector<uint8_t> rescaled;  // n_keys: 1 where position p raised the maximum
};

Scratch& ThreadScratch(int32_t heads, int32_t n_keys) {
  thread_local Scratch s;
  const size_t n = static_cast<size_t>(n_keys);
  if (s.scores.size() < static_cast<size_t>(heads) * n) s.scores.resize(size_t(heads) * n);
  if (s.weights.size() < n) {
    s.weights.resize(n);
    s.rescale.resize(n);
    s.rescaled.resize(n);
  }
  return s;
}

// The online softmax over one head's scores, in position order: weights[p] = exp(score - running
// max), with rescale[p] the factor that position p's new maximum applied to everything before it.
// Returns the running sum.
float OnlineSoftmax(const float* scores, int32_t n, Scratch& s) {
  float running_max = -std::numeric_limits<float>::infinity();
  float sum = 0.0f;
  for (int32_t p = 0; p < n; ++p) {
    const float score = scores[p];
    s.rescaled[p] = 0;
    if (score > running_max) {
      const float r = std::exp(running_max - score);
      sum *= r;
      s.rescale[p] = r;
      s.rescaled[p] = 1;
      running_max = score;
    }
    const float w = std::exp(score - running_max);
    sum += w;
    s.weights[p] = w;
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

void ValuesRef(const Scratch& s, const AttentionKeys& k, int32_t hdv, float inv, float* out) {
  std::fill(out, out + hdv, 0.0f);
  for (int32_t p = 0; p < k.n_keys; ++p) {
    if (s.rescaled[p]) {
      for (int32_t i = 0; i < hdv; ++i) out[i] *= s.rescale[p];
    }
    const float w = s.weights[p];
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

// Output elements [c0, c0 + 16J) of one head; the last register keeps only `tail` lanes.
template <int J>
EXO_ATTN_AVX512 void Values512(const Scratch& s, const AttentionKeys& k, int32_t c0, __mmask16 tail,
                               float inv, float* out) {
  __m512 acc[J];
  for (int j = 0; j < J; ++j) acc[j] = _mm512_setzero_ps();
  for (int32_t p = 0; p < k.n_keys; ++p) {
    if (s.rescaled[p]) {
      const __m512 r = _mm512_set1_ps(s.rescale[p]);
      for (int j = 0; j < J; ++j) acc[j] = _mm512_mul_ps(acc[j], r);
    }
    const __m512 w = _mm512_set1_ps(s.weights[p]);
    const float* v = k.values + p * k.ld_values + c0;
    for (int j = 0; j < J; ++j) {
      const __m512 x =
          j + 1 < J ? _mm512_loadu_ps(v + 16 * j) : _mm512_maskz_loadu_ps(tail, v + 16 * j);
      acc[j] = _mm512_add_ps(acc[j], _mm512_mul_ps(w, x));
    }
  }
  const __m512 scale = _mm512_set1_ps(inv);
  for (int j = 0; j < J; ++j) {
    _mm512_mask_storeu_ps(out + c0 + 16 * j, j + 1 < J ? __mmask16(0xFFFF) : tail,
                          _mm512_mul_ps(acc[j], scale));
  }
}

EXO_ATTN_AVX512 void Values512All(const Scratch& s, const AttentionKeys& k, int32_t hdv, float inv,
                                  float* out) {
  // Up to 8 registers (128 elements) of output stay in registers while the positions stream by.
  for (int32_t c = 0; c < hdv; c += 128) {
    const int32_t width = std::min(128, hdv - c);
    const int j = (width + 15) / 16;
    const int left = width - 16 * (j - 1);
    const __mmask16 tail = static_cast<__mmask16>((1u << left) - 1);
    switch (j) {
      case 1:
        Values512<1>(s, k, c, tail, inv, out);
        break;
      case 2:
        Values512<2>(s, k, c, tail, inv, out);
        break;
      case 3:
        Values512<3>(s, k, c, tail, inv, out);
        break;
      case 4:
        Values512<4>(s, k, c, tail, inv, out);
        break;
      case 5:
        Values512<5>(s, k, c, tail, inv, out);
        break;
      case 6:
        Values512<6>(s, k, c, tail, inv, out);
        break;
      case 7:
        Values512<7>(s, k, c, tail, inv, out);
        break;
      default:
        Values512<8>(s, k, c, tail, inv, out);
        break;
    }
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

template <int J>
EXO_ATTN_AVX2 void Values256(const Scratch& s, const AttentionKeys& k, int32_t c0, int left,
                             float inv, float* out) {
  const __m256i tail = LaneMask(left);
  __m256 acc[J];
  for (int j = 0; j < J; ++j) acc[j] = _mm256_setzero_ps();
  for (int32_t p = 0; p < k.n_keys; ++p) {
    if (s.rescaled[p]) {
      const __m256 r = _mm256_set1_ps(s.rescale[p]);
      for (int j = 0; j < J; ++j) acc[j] = _mm256_mul_ps(acc[j], r);
    }
    const __m256 w = _mm256_set1_ps(s.weights[p]);
    const float* v = k.values + p * k.ld_values + c0;
    for (int j = 0; j < J; ++j) {
      const __m256 x = j + 1 < J ? _mm256_loadu_ps(v + 8 * j) : _mm256_maskload_ps(v + 8 * j, tail);
      acc[j] = _mm256_add_ps(acc[j], _mm256_mul_ps(w, x));
    }
  }
  const __m256 scale = _mm256_set1_ps(inv);
  for (int j = 0; j < J; ++j) {
    const __m256 x = _mm256_mul_ps(acc[j], scale);
    if (j + 1 < J) {
      _mm256_storeu_ps(out + c0 + 8 * j, x);
    } else {
      _mm256_maskstore_ps(out + c0 + 8 * j, tail, x);
    }
  }
}

EXO_ATTN_AVX2 void Values256All(const Scratch& s, const AttentionKeys& k, int32_t hdv, float inv,
                                float* out) {
  for (int32_t c = 0; c < hdv; c += 64) {
    const int32_t width = std::min(64, hdv - c);
    const int j = (width + 7) / 8;
    const int left = width - 8 * (j - 1);
    switch (j) {
      case 1:
        Values256<1>(s, k, c, left, inv, out);
        break;
      case 2:
        Values256<2>(s, k, c, left, inv, out);
        break;
      case 3:
        Values256<3>(s, k, c, left, inv, out);
        break;
      case 4:
        Values256<4>(s, k, c, left, inv, out);
        break;
      case 5:
        Values256<5>(s, k, c, left, inv, out);
        break;
      case 6:
        Values256<6>(s, k, c, left, inv, out);
        break;
      case 7:
        Values256<7>(s, k, c, left, inv, out);
        break;
      default:
        Values256<8>(s, k, c, left, inv, out);
        break;
    }
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
  for (int32_t h = 0; h < heads; ++h) {
    const float* head_scores = scores + int64_t{h} * k.n_keys;
    if (level == Level::kScalar)
      ScoresRef(q + int64_t{h} * hd, hd, k, scale, scores + int64_t{h} * k.n_keys);
    const float inv = 1.0f / OnlineSoftmax(head_scores, k.n_keys, s);
    float* o = out + int64_t{h} * hdv;
#if EXO_ATTENTION_X86
    if (level == Level::kAvx512) {
      Values512All(s, k, hdv, inv, o);
      continue;
    }
    if (level == Level::kAvx2) {
      Values256All(s, k, hdv, inv, o);
      continue;
    }
#endif
    ValuesRef(s, k, hdv, inv, o);
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
