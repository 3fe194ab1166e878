// Scalar reference kernels for every supported block format. These define the semantics the SIMD
// variants are tested against; they follow ggml's dequantize_row_* / quantize_row_*_ref /
// ggml_vec_dot_*_generic arithmetic so results line up with llama.cpp.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "kernels/internal/blocks.h"
#include "kernels/internal/fp16.h"
#include "kernels/internal/quants_impl.h"

namespace exo::kernels::internal {
namespace {

[[noreturn]] void Unsupported(const char* what, TensorType type) {
  std::fprintf(stderr, "exo: internal error: %s does not support tensor type %u\n", what,
               static_cast<unsigned>(type));
  std::abort();
}

// Round half to even, as ggml's nearest_int.
inline int NearestInt(float x) { return static_cast<int>(std::lrintf(x)); }

// The smallest fp16 value h with HalfToFloat(h) >= x (x >= 0, finite, below the fp16 range).
uint16_t HalfAtLeast(float x) {
  uint16_t h = FloatToHalf(x);
  while (HalfToFloat(h) < x && h < 0x7bffu) ++h;
  return h;
}

// ---- Dequantisation ---------------------------------------------------------------------------

void DequantizeQ4_0(const BlockQ4_0* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = HalfToFloat(x[i].d);
    for (int j = 0; j < kQk32 / 2; ++j) {
      const int x0 = (x[i].qs[j] & 0x0F) - 8;
      const int x1 = (x[i].qs[j] >> 4) - 8;
      y[i * kQk32 + j] = static_cast<float>(x0) * d;
      y[i * kQk32 + j + kQk32 / 2] = static_cast<float>(x1) * d;
    }
  }
}

void DequantizeQ4_1(const BlockQ4_1* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = HalfToFloat(x[i].d);
    const float m = HalfToFloat(x[i].m);
    for (int j = 0; j < kQk32 / 2; ++j) {
      const int x0 = x[i].qs[j] & 0x0F;
      const int x1 = x[i].qs[j] >> 4;
      y[i * kQk32 + j] = static_cast<float>(x0) * d + m;
      y[i * kQk32 + j + kQk32 / 2] = static_cast<float>(x1) * d + m;
    }
  }
}

inline uint32_t LoadQh(const uint8_t* qh) {
  uint32_t v;
  std::memcpy(&v, qh, sizeof(v));
  return v;
}

void DequantizeQ5_0(const BlockQ5_0* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = HalfToFloat(x[i].d);
    const uint32_t qh = LoadQh(x[i].qh);
    for (int j = 0; j < kQk32 / 2; ++j) {
      const int high0 = static_cast<int>((qh >> j) & 1u) << 4;
      const int high1 = static_cast<int>((qh >> (j + 16)) & 1u) << 4;
      const int x0 = ((x[i].qs[j] & 0x0F) | high0) - 16;
      const int x1 = ((x[i].qs[j] >> 4) | high1) - 16;
      y[i * kQk32 + j] = static_cast<float>(x0) * d;
      y[i * kQk32 + j + kQk32 / 2] = static_cast<float>(x1) * d;
    }
  }
}

void DequantizeQ5_1(const BlockQ5_1* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = HalfToFloat(x[i].d);
    const float m = HalfToFloat(x[i].m);
    const uint32_t qh = LoadQh(x[i].qh);
    for (int j = 0; j < kQk32 / 2; ++j) {
      const int high0 = static_cast<int>((qh >> j) & 1u) << 4;
      const int high1 = static_cast<int>((qh >> (j + 16)) & 1u) << 4;
      const int x0 = (x[i].qs[j] & 0x0F) | high0;
      const int x1 = (x[i].qs[j] >> 4) | high1;
      y[i * kQk32 + j] = static_cast<float>(x0) * d + m;
      y[i * kQk32 + j + kQk32 / 2] = static_cast<float>(x1) * d + m;
    }
  }
}

void DequantizeQ8_0(const BlockQ8_0* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = HalfToFloat(x[i].d);
    for (int j = 0; j < kQk32; ++j) y[i * kQk32 + j] = static_cast<float>(x[i].qs[j]) * d;
  }
}

void DequantizeQ8_1(const BlockQ8_1* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = HalfToFloat(x[i].d);
    for (int j = 0; j < kQk32; ++j) y[i * kQk32 + j] = static_cast<float>(x[i].qs[j]) * d;
  }
}

void DequantizeQ4_K(const BlockQ4_K* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = HalfToFloat(x[i].d);
    const float dmin = HalfToFloat(x[i].dmin);
    const uint8_t* q = x[i].qs;
    for (int chunk = 0; chunk < 4; ++chunk) {
      uint8_t sc, m;
      GetScaleMinK4(2 * chunk, x[i].scales, &sc, &m);
      const float d1 = d * sc, m1 = dmin * m;
      GetScaleMinK4(2 * chunk + 1, x[i].scales, &sc, &m);
      const float d2 = d * sc, m2 = dmin * m;
      for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] & 0xF) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>(q[l] >> 4) - m2;
      q += 32;
    }
  }
}

void DequantizeQ5_K(const BlockQ5_K* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = HalfToFloat(x[i].d);
    const float dmin = HalfToFloat(x[i].dmin);
    const uint8_t* ql = x[i].qs;
    const uint8_t* qh = x[i].qh;
    for (int chunk = 0; chunk < 4; ++chunk) {
      uint8_t sc, m;
      GetScaleMinK4(2 * chunk, x[i].scales, &sc, &m);
      const float d1 = d * sc, m1 = dmin * m;
      GetScaleMinK4(2 * chunk + 1, x[i].scales, &sc, &m);
      const float d2 = d * sc, m2 = dmin * m;
      const uint8_t bit_low = static_cast<uint8_t>(1u << (2 * chunk));
      const uint8_t bit_high = static_cast<uint8_t>(2u << (2 * chunk));
      for (int l = 0; l < 32; ++l) {
        *y++ = d1 * static_cast<float>((ql[l] & 0xF) + ((qh[l] & bit_low) ? 16 : 0)) - m1;
      }
      for (int l = 0; l < 32; ++l) {
        *y++ = d2 * static_cast<float>((ql[l] >> 4) + ((qh[l] & bit_high) ? 16 : 0)) - m2;
      }
      ql += 32;
    }
  }
}

// Unpacks the 256 6-bit quants of a Q6_K block into values in [-32, 31], in element order.
void UnpackQ6_K(const BlockQ6_K& b, int8_t* q) {
  for (int half = 0; half < 2; ++half) {
    const uint8_t* ql = b.ql + 64 * half;
    const uint8_t* qh = b.qh + 32 * half;
    int8_t* out = q + 128 * half;
    for (int l = 0; l < 32; ++l) {
      out[l] = static_cast<int8_t>(((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
      out[l + 32] = static_cast<int8_t>(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
      out[l + 64] = static_cast<int8_t>(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
      out[l + 96] = static_cast<int8_t>(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
    }
  }
}

void DequantizeQ6_K(const BlockQ6_K* x, float* y, int64_t nb) {
  int8_t q[kQkK];
  for (int64_t i = 0; i < nb; ++i) {
    const float d = HalfToFloat(x[i].d);
    UnpackQ6_K(x[i], q);
    for (int j = 0; j < kQkK; ++j) {
      // ggml evaluates d * scale * q left to right.
      y[i * kQkK + j] = d * static_cast<float>(x[i].scales[j / 16]) * static_cast<float>(q[j]);
    }
  }
}

void DequantizeQ8_K(const BlockQ8_K* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    for (int j = 0; j < kQkK; ++j) y[i * kQkK + j] = x[i].d * static_cast<float>(x[i].qs[j]);
  }
}

// ---- Quantisation -----------------------------------------------------------------------------

// Largest |v| in x[0..n) and the signed value that has it (first one on ties).
void SignedAbsMax(const float* x, int n, float* amax, float* max) {
  *amax = 0.0f;
  *max = 0.0f;
  for (int j = 0; j < n; ++j) {
    if (*amax < std::fabs(x[j])) {
      *amax = std::fabs(x[j]);
      *max = x[j];
    }
  }
}

void QuantizeQ4_0(const float* x, BlockQ4_0* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQk32) {
    float amax, max;
    SignedAbsMax(x, kQk32, &amax, &max);
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = FloatToHalf(d);
    for (int j = 0; j < kQk32 / 2; ++j) {
      const int q0 = std::min(15, static_cast<int>(x[j] * id + 8.5f));
      const int q1 = std::min(15, static_cast<int>(x[j + kQk32 / 2] * id + 8.5f));
      y[i].qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
  }
}

void MinMax(const float* x, int n, float* min, float* max) {
  *min = x[0];
  *max = x[0];
  for (int j = 1; j < n; ++j) {
    *min = std::min(*min, x[j]);
    *max = std::max(*max, x[j]);
  }
}

void QuantizeQ4_1(const float* x, BlockQ4_1* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQk32) {
    float min, max;
    MinMax(x, kQk32, &min, &max);
    const float d = (max - min) / 15.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = FloatToHalf(d);
    y[i].m = FloatToHalf(min);
    for (int j = 0; j < kQk32 / 2; ++j) {
      const int q0 = std::min(15, static_cast<int>((x[j] - min) * id + 0.5f));
      const int q1 = std::min(15, static_cast<int>((x[j + kQk32 / 2] - min) * id + 0.5f));
      y[i].qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
  }
}

void PackQ5(const int* q, uint8_t* qs, uint8_t* qh_bytes) {
  uint32_t qh = 0;
  for (int j = 0; j < kQk32 / 2; ++j) {
    const int q0 = q[j], q1 = q[j + kQk32 / 2];
    qs[j] = static_cast<uint8_t>((q0 & 0x0F) | ((q1 & 0x0F) << 4));
    qh |= static_cast<uint32_t>((q0 >> 4) & 1) << j;
    qh |= static_cast<uint32_t>((q1 >> 4) & 1) << (j + kQk32 / 2);
  }
  std::memcpy(qh_bytes, &qh, sizeof(qh));
}

void QuantizeQ5_0(const float* x, BlockQ5_0* y, int64_t nb) {
  int q[kQk32];
  for (int64_t i = 0; i < nb; ++i, x += kQk32) {
    float amax, max;
    SignedAbsMax(x, kQk32, &amax, &max);
    const float d = max / -16.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = FloatToHalf(d);
    for (int j = 0; j < kQk32; ++j) q[j] = std::min(31, static_cast<int>(x[j] * id + 16.5f));
    PackQ5(q, y[i].qs, y[i].qh);
  }
}

void QuantizeQ5_1(const float* x, BlockQ5_1* y, int64_t nb) {
  int q[kQk32];
  for (int64_t i = 0; i < nb; ++i, x += kQk32) {
    float min, max;
    MinMax(x, kQk32, &min, &max);
    const float d = (max - min) / 31.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = FloatToHalf(d);
    y[i].m = FloatToHalf(min);
    for (int j = 0; j < kQk32; ++j) {
      q[j] = std::min(31, static_cast<int>((x[j] - min) * id + 0.5f));
    }
    PackQ5(q, y[i].qs, y[i].qh);
  }
}

// ggml quantize_row_q8_0_ref: d = amax / 127, q = roundf(x / d) (ties away from zero).
void QuantizeQ8_0(const float* x, BlockQ8_0* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQk32) {
    float amax = 0.0f;
    for (int j = 0; j < kQk32; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = FloatToHalf(d);
    for (int j = 0; j < kQk32; ++j) y[i].qs[j] = static_cast<int8_t>(std::round(x[j] * id));
  }
}

// ggml quantize_row_q8_1_ref: as Q8_0 plus s = d * sum(q) (with the unrounded d).
void QuantizeQ8_1(const float* x, BlockQ8_1* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQk32) {
    float amax = 0.0f;
    for (int j = 0; j < kQk32; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = FloatToHalf(d);
    int sum = 0;
    for (int j = 0; j < kQk32; ++j) {
      y[i].qs[j] = static_cast<int8_t>(std::round(x[j] * id));
      sum += y[i].qs[j];
    }
    y[i].s = FloatToHalf(static_cast<float>(sum) * d);
  }
}

// ggml quantize_row_q8_K_ref: scale -127 / (signed max), round half to even, bsums per 16.
void QuantizeQ8_K(const float* x, BlockQ8_K* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQkK) {
    float amax, max;
    SignedAbsMax(x, kQkK, &amax, &max);
    if (amax == 0.0f) {
      std::memset(&y[i], 0, sizeof(y[i]));
      continue;
    }
    const float iscale = -127.0f / max;
    for (int j = 0; j < kQkK; ++j) {
      y[i].qs[j] = static_cast<int8_t>(std::min(127, NearestInt(iscale * x[j])));
    }
    for (int g = 0; g < kQkK / 16; ++g) {
      int sum = 0;
      for (int l = 0; l < 16; ++l) sum += y[i].qs[16 * g + l];
      y[i].bsums[g] = static_cast<int16_t>(sum);
    }
    y[i].d = 1.0f / iscale;
  }
}

// Packs 8 six-bit scales and mins the way GetScaleMinK4 unpacks them.
void PackScaleMinK4(const uint8_t* sc, const uint8_t* m, uint8_t* out) {
  for (int j = 0; j < 4; ++j) {
    out[j] = static_cast<uint8_t>((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    out[j + 4] = static_cast<uint8_t>((m[j] & 63) | ((m[j + 4] >> 4) << 6));
    out[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4));
  }
}

// Reference K-quant quantiser with mins (Q4_K: levels = 15, Q5_K: levels = 31). Not ggml's
// iterative search: sub-block scales and mins are rounded up so that every value lies inside the
// representable range, which bounds the error by half a quantisation step.
void QuantizeAffineK(const float* x, int levels, uint16_t* d_out, uint16_t* dmin_out,
                     uint8_t* scales, uint8_t* q) {
  float min_needed[8], top[8];
  float max_min = 0.0f;
  for (int j = 0; j < 8; ++j) {
    float lo, hi;
    MinMax(x + 32 * j, 32, &lo, &hi);
    min_needed[j] = std::max(0.0f, -lo);
    top[j] = hi;
    max_min = std::max(max_min, min_needed[j]);
  }
  const uint16_t dmin_half = HalfAtLeast(max_min / 63.0f);
  const float dmin = HalfToFloat(dmin_half);
  uint8_t m_q[8], sc_q[8];
  float offset[8], scale_needed[8];
  float max_scale = 0.0f;
  for (int j = 0; j < 8; ++j) {
    m_q[j] =
        dmin > 0.0f ? static_cast<uint8_t>(std::min(63.0f, std::ceil(min_needed[j] / dmin))) : 0;
    offset[j] = dmin * m_q[j];
    scale_needed[j] = std::max(0.0f, (top[j] + offset[j]) / static_cast<float>(levels));
    max_scale = std::max(max_scale, scale_needed[j]);
  }
  const uint16_t d_half = HalfAtLeast(max_scale / 63.0f);
  const float d = HalfToFloat(d_half);
  for (int j = 0; j < 8; ++j) {
    sc_q[j] = d > 0.0f ? static_cast<uint8_t>(std::min(63.0f, std::ceil(scale_needed[j] / d))) : 0;
    const float step = d * sc_q[j];
    const float inv_step = step > 0.0f ? 1.0f / step : 0.0f;
    for (int l = 0; l < 32; ++l) {
      const int v = NearestInt((x[32 * j + l] + offset[j]) * inv_step);
      q[32 * j + l] = static_cast<uint8_t>(std::clamp(v, 0, levels));
    }
  }
  *d_out = d_half;
  *dmin_out = dmin_half;
  PackScaleMinK4(sc_q, m_q, scales);
}

void QuantizeQ4_K(const float* x, BlockQ4_K* y, int64_t nb) {
  uint8_t q[kQkK];
  for (int64_t i = 0; i < nb; ++i, x += kQkK) {
    QuantizeAffineK(x, 15, &y[i].d, &y[i].dmin, y[i].scales, q);
    for (int chunk = 0; chunk < 4; ++chunk) {
      for (int l = 0; l < 32; ++l) {
        y[i].qs[32 * chunk + l] =
            static_cast<uint8_t>(q[64 * chunk + l] | (q[64 * chunk + 32 + l] << 4));
      }
    }
  }
}

void QuantizeQ5_K(const float* x, BlockQ5_K* y, int64_t nb) {
  uint8_t q[kQkK];
  for (int64_t i = 0; i < nb; ++i, x += kQkK) {
    QuantizeAffineK(x, 31, &y[i].d, &y[i].dmin, y[i].scales, q);
    std::memset(y[i].qh, 0, sizeof(y[i].qh));
    for (int chunk = 0; chunk < 4; ++chunk) {
      for (int l = 0; l < 32; ++l) {
        const uint8_t lo = q[64 * chunk + l], hi = q[64 * chunk + 32 + l];
        y[i].qs[32 * chunk + l] = static_cast<uint8_t>((lo & 0xF) | ((hi & 0xF) << 4));
        y[i].qh[l] |=
            static_cast<uint8_t>(((lo >> 4) << (2 * chunk)) | ((hi >> 4) << (2 * chunk + 1)));
      }
    }
  }
}

// Reference Q6_K quantiser: symmetric per-16 scales (q - 32 in [-31, 31]) rounded up to 8 bits.
void QuantizeQ6_K(const float* x, BlockQ6_K* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQkK) {
    float needed[16];
    float max_needed = 0.0f;
    for (int g = 0; g < 16; ++g) {
      float amax = 0.0f;
      for (int l = 0; l < 16; ++l) amax = std::max(amax, std::fabs(x[16 * g + l]));
      needed[g] = amax / 31.0f;
      max_needed = std::max(max_needed, needed[g]);
    }
    y[i].d = HalfAtLeast(max_needed / 127.0f);
    const float d = HalfToFloat(y[i].d);
    uint8_t q[kQkK];
    for (int g = 0; g < 16; ++g) {
      const int sc = d > 0.0f ? static_cast<int>(std::min(127.0f, std::ceil(needed[g] / d))) : 0;
      y[i].scales[g] = static_cast<int8_t>(sc);
      const float step = d * static_cast<float>(sc);
      const float inv_step = step > 0.0f ? 1.0f / step : 0.0f;
      for (int l = 0; l < 16; ++l) {
        const int v = std::clamp(NearestInt(x[16 * g + l] * inv_step), -32, 31);
        q[16 * g + l] = static_cast<uint8_t>(v + 32);
      }
    }
    for (int half = 0; half < 2; ++half) {
      uint8_t* ql = y[i].ql + 64 * half;
      uint8_t* qh = y[i].qh + 32 * half;
      const uint8_t* in = q + 128 * half;
      for (int l = 0; l < 32; ++l) {
        const uint8_t q1 = in[l], q2 = in[l + 32], q3 = in[l + 64], q4 = in[l + 96];
        ql[l] = static_cast<uint8_t>((q1 & 0xF) | ((q3 & 0xF) << 4));
        ql[l + 32] = static_cast<uint8_t>((q2 & 0xF) | ((q4 & 0xF) << 4));
        qh[l] = static_cast<uint8_t>((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) |
                                     ((q4 >> 4) << 6));
      }
    }
  }
}

// ---- Dot products -----------------------------------------------------------------------------

float VecDotF32(const void* vx, const void* vy, int64_t n) {
  const float* x = static_cast<const float*>(vx);
  const float* y = static_cast<const float*>(vy);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i] * y[i]);
  return static_cast<float>(sum);
}

float VecDotF16(const void* vx, const void* vy, int64_t n) {
  const uint16_t* x = static_cast<const uint16_t*>(vx);
  const uint16_t* y = static_cast<const uint16_t*>(vy);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(HalfToFloat(x[i]) * HalfToFloat(y[i]));
  return static_cast<float>(sum);
}

float VecDotBf16(const void* vx, const void* vy, int64_t n) {
  const uint16_t* x = static_cast<const uint16_t*>(vx);
  const uint16_t* y = static_cast<const uint16_t*>(vy);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(Bf16ToFloat(x[i]) * Bf16ToFloat(y[i]));
  return static_cast<float>(sum);
}

float VecDotQ4_0Q8_0(const void* vx, const void* vy, int64_t n) {
  const BlockQ4_0* x = static_cast<const BlockQ4_0*>(vx);
  const BlockQ8_0* y = static_cast<const BlockQ8_0*>(vy);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQk32; ++i) {
    int sumi = 0;
    for (int j = 0; j < kQk32 / 2; ++j) {
      sumi += ((x[i].qs[j] & 0x0F) - 8) * y[i].qs[j];
      sumi += ((x[i].qs[j] >> 4) - 8) * y[i].qs[j + kQk32 / 2];
    }
    sum += static_cast<float>(sumi) * HalfToFloat(x[i].d) * HalfToFloat(y[i].d);
  }
  return sum;
}

float VecDotQ4_1Q8_1(const void* vx, const void* vy, int64_t n) {
  const BlockQ4_1* x = static_cast<const BlockQ4_1*>(vx);
  const BlockQ8_1* y = static_cast<const BlockQ8_1*>(vy);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQk32; ++i) {
    int sumi = 0;
    for (int j = 0; j < kQk32 / 2; ++j) {
      sumi += (x[i].qs[j] & 0x0F) * y[i].qs[j];
      sumi += (x[i].qs[j] >> 4) * y[i].qs[j + kQk32 / 2];
    }
    sum += (HalfToFloat(x[i].d) * HalfToFloat(y[i].d)) * static_cast<float>(sumi) +
           HalfToFloat(x[i].m) * HalfToFloat(y[i].s);
  }
  return sum;
}

float VecDotQ5_0Q8_0(const void* vx, const void* vy, int64_t n) {
  const BlockQ5_0* x = static_cast<const BlockQ5_0*>(vx);
  const BlockQ8_0* y = static_cast<const BlockQ8_0*>(vy);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQk32; ++i) {
    const uint32_t qh = LoadQh(x[i].qh);
    int sumi = 0;
    for (int j = 0; j < kQk32 / 2; ++j) {
      const int x0 = ((x[i].qs[j] & 0x0F) | (static_cast<int>((qh >> j) & 1u) << 4)) - 16;
      const int x1 = ((x[i].qs[j] >> 4) | (static_cast<int>((qh >> (j + 16)) & 1u) << 4)) - 16;
      sumi += x0 * y[i].qs[j] + x1 * y[i].qs[j + kQk32 / 2];
    }
    sum += (HalfToFloat(x[i].d) * HalfToFloat(y[i].d)) * static_cast<float>(sumi);
  }
  return sum;
}

float VecDotQ5_1Q8_1(const void* vx, const void* vy, int64_t n) {
  const BlockQ5_1* x = static_cast<const BlockQ5_1*>(vx);
  const BlockQ8_1* y = static_cast<const BlockQ8_1*>(vy);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQk32; ++i) {
    const uint32_t qh = LoadQh(x[i].qh);
    int sumi = 0;
    for (int j = 0; j < kQk32 / 2; ++j) {
      const int x0 = (x[i].qs[j] & 0x0F) | (static_cast<int>((qh >> j) & 1u) << 4);
      const int x1 = (x[i].qs[j] >> 4) | (static_cast<int>((qh >> (j + 16)) & 1u) << 4);
      sumi += x0 * y[i].qs[j] + x1 * y[i].qs[j + kQk32 / 2];
    }
    sum += (HalfToFloat(x[i].d) * HalfToFloat(y[i].d)) * static_cast<float>(sumi) +
           HalfToFloat(x[i].m) * HalfToFloat(y[i].s);
  }
  return sum;
}

float VecDotQ8_0Q8_0(const void* vx, const void* vy, int64_t n) {
  const BlockQ8_0* x = static_cast<const BlockQ8_0*>(vx);
  const BlockQ8_0* y = static_cast<const BlockQ8_0*>(vy);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQk32; ++i) {
    int sumi = 0;
    for (int j = 0; j < kQk32; ++j) sumi += x[i].qs[j] * y[i].qs[j];
    sum += static_cast<float>(sumi) * (HalfToFloat(x[i].d) * HalfToFloat(y[i].d));
  }
  return sum;
}

// Shared by Q4_K / Q5_K: q holds the 256 unsigned quants in element order.
float DotAffineK(const uint8_t* q, const uint8_t* packed_scales, float d, float dmin,
                 const BlockQ8_K& y) {
  int sum_scaled = 0, sum_mins = 0;
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    GetScaleMinK4(j, packed_scales, &sc, &m);
    int dot = 0;
    for (int l = 0; l < 32; ++l) dot += q[32 * j + l] * y.qs[32 * j + l];
    sum_scaled += sc * dot;
    sum_mins += m * (y.bsums[2 * j] + y.bsums[2 * j + 1]);
  }
  return d * y.d * static_cast<float>(sum_scaled) - dmin * y.d * static_cast<float>(sum_mins);
}

float VecDotQ4_KQ8_K(const void* vx, const void* vy, int64_t n) {
  const BlockQ4_K* x = static_cast<const BlockQ4_K*>(vx);
  const BlockQ8_K* y = static_cast<const BlockQ8_K*>(vy);
  uint8_t q[kQkK];
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQkK; ++i) {
    for (int chunk = 0; chunk < 4; ++chunk) {
      for (int l = 0; l < 32; ++l) {
        q[64 * chunk + l] = x[i].qs[32 * chunk + l] & 0xF;
        q[64 * chunk + 32 + l] = x[i].qs[32 * chunk + l] >> 4;
      }
    }
    sum += DotAffineK(q, x[i].scales, HalfToFloat(x[i].d), HalfToFloat(x[i].dmin), y[i]);
  }
  return sum;
}

float VecDotQ5_KQ8_K(const void* vx, const void* vy, int64_t n) {
  const BlockQ5_K* x = static_cast<const BlockQ5_K*>(vx);
  const BlockQ8_K* y = static_cast<const BlockQ8_K*>(vy);
  uint8_t q[kQkK];
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQkK; ++i) {
    for (int chunk = 0; chunk < 4; ++chunk) {
      for (int l = 0; l < 32; ++l) {
        const uint8_t packed = x[i].qs[32 * chunk + l];
        const uint8_t high = x[i].qh[l];
        q[64 * chunk + l] =
            static_cast<uint8_t>((packed & 0xF) | (((high >> (2 * chunk)) & 1) << 4));
        q[64 * chunk + 32 + l] =
            static_cast<uint8_t>((packed >> 4) | (((high >> (2 * chunk + 1)) & 1) << 4));
      }
    }
    sum += DotAffineK(q, x[i].scales, HalfToFloat(x[i].d), HalfToFloat(x[i].dmin), y[i]);
  }
  return sum;
}

float VecDotQ6_KQ8_K(const void* vx, const void* vy, int64_t n) {
  const BlockQ6_K* x = static_cast<const BlockQ6_K*>(vx);
  const BlockQ8_K* y = static_cast<const BlockQ8_K*>(vy);
  int8_t q[kQkK];
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQkK; ++i) {
    UnpackQ6_K(x[i], q);
    int sum_scaled = 0;
    for (int g = 0; g < kQkK / 16; ++g) {
      int dot = 0;
      for (int l = 0; l < 16; ++l) dot += q[16 * g + l] * y[i].qs[16 * g + l];
      sum_scaled += x[i].scales[g] * dot;
    }
    sum += HalfToFloat(x[i].d) * y[i].d * static_cast<float>(sum_scaled);
  }
  return sum;
}

}  // namespace

void DequantizeRowRef(TensorType type, const void* src, float* dst, int64_t n) {
  switch (type) {
    case TensorType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case TensorType::kF16: {
      const uint16_t* h = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = HalfToFloat(h[i]);
      return;
    }
    case TensorType::kBF16: {
      const uint16_t* h = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = Bf16ToFloat(h[i]);
      return;
    }
    case TensorType::kQ4_0:
      return DequantizeQ4_0(static_cast<const BlockQ4_0*>(src), dst, n / kQk32);
    case TensorType::kQ4_1:
      return DequantizeQ4_1(static_cast<const BlockQ4_1*>(src), dst, n / kQk32);
    case TensorType::kQ5_0:
      return DequantizeQ5_0(static_cast<const BlockQ5_0*>(src), dst, n / kQk32);
    case TensorType::kQ5_1:
      return DequantizeQ5_1(static_cast<const BlockQ5_1*>(src), dst, n / kQk32);
    case TensorType::kQ8_0:
      return DequantizeQ8_0(static_cast<const BlockQ8_0*>(src), dst, n / kQk32);
    case TensorType::kQ8_1:
      return DequantizeQ8_1(static_cast<const BlockQ8_1*>(src), dst, n / kQk32);
    case TensorType::kQ4_K:
      return DequantizeQ4_K(static_cast<const BlockQ4_K*>(src), dst, n / kQkK);
    case TensorType::kQ5_K:
      return DequantizeQ5_K(static_cast<const BlockQ5_K*>(src), dst, n / kQkK);
    case TensorType::kQ6_K:
      return DequantizeQ6_K(static_cast<const BlockQ6_K*>(src), dst, n / kQkK);
    case TensorType::kQ8_K:
      return DequantizeQ8_K(static_cast<const BlockQ8_K*>(src), dst, n / kQkK);
    default:
      Unsupported("DequantizeRow", type);
  }
}

void QuantizeRowRef(TensorType type, const float* src, void* dst, int64_t n) {
  switch (type) {
    case TensorType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case TensorType::kF16: {
      uint16_t* h = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) h[i] = FloatToHalf(src[i]);
      return;
    }
    case TensorType::kBF16: {
      uint16_t* h = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) h[i] = FloatToBf16(src[i]);
      return;
    }
    case TensorType::kQ4_0:
      return QuantizeQ4_0(src, static_cast<BlockQ4_0*>(dst), n / kQk32);
    case TensorType::kQ4_1:
      return QuantizeQ4_1(src, static_cast<BlockQ4_1*>(dst), n / kQk32);
    case TensorType::kQ5_0:
      return QuantizeQ5_0(src, static_cast<BlockQ5_0*>(dst), n / kQk32);
    case TensorType::kQ5_1:
      return QuantizeQ5_1(src, static_cast<BlockQ5_1*>(dst), n / kQk32);
    case TensorType::kQ8_0:
      return QuantizeQ8_0(src, static_cast<BlockQ8_0*>(dst), n / kQk32);
    case TensorType::kQ8_1:
      return QuantizeQ8_1(src, static_cast<BlockQ8_1*>(dst), n / kQk32);
    case TensorType::kQ4_K:
      return QuantizeQ4_K(src, static_cast<BlockQ4_K*>(dst), n / kQkK);
    case TensorType::kQ5_K:
      return QuantizeQ5_K(src, static_cast<BlockQ5_K*>(dst), n / kQkK);
    case TensorType::kQ6_K:
      return QuantizeQ6_K(src, static_cast<BlockQ6_K*>(dst), n / kQkK);
    case TensorType::kQ8_K:
      return QuantizeQ8_K(src, static_cast<BlockQ8_K*>(dst), n / kQkK);
    default:
      Unsupported("QuantizeRow", type);
  }
}

VecDotFn GetVecDotRef(TensorType type) {
  switch (type) {
    case TensorType::kF32:
      return VecDotF32;
    case TensorType::kF16:
      return VecDotF16;
    case TensorType::kBF16:
      return VecDotBf16;
    case TensorType::kQ4_0:
      return VecDotQ4_0Q8_0;
    case TensorType::kQ4_1:
      return VecDotQ4_1Q8_1;
    case TensorType::kQ5_0:
      return VecDotQ5_0Q8_0;
    case TensorType::kQ5_1:
      return VecDotQ5_1Q8_1;
    case TensorType::kQ8_0:
      return VecDotQ8_0Q8_0;
    case TensorType::kQ4_K:
      return VecDotQ4_KQ8_K;
    case TensorType::kQ5_K:
      return VecDotQ5_KQ8_K;
    case TensorType::kQ6_K:
      return VecDotQ6_KQ8_K;
    default:
      return nullptr;
  }
}

}  // namespace exo::kernels::internal
