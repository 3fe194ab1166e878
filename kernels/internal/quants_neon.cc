// NEON (AArch64 Advanced SIMD, baseline: no dot-product extension needed) dot products and
// activation quantisers. Each dot computes the same integer sums as its scalar reference in
// quants_ref.cc; float accumulation order differs (tested against the reference with a
// tolerance). The quantisers are byte-identical to the reference.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "kernels/internal/blocks.h"
#include "kernels/internal/fp16.h"
#include "kernels/internal/quants_impl.h"

#if defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
#define EXO_HAVE_NEON 1
#else
#define EXO_HAVE_NEON 0
#endif

namespace exo::kernels::internal {

#if EXO_HAVE_NEON

bool CpuHasNeon() {
  static const bool enabled = [] {
    const char* disable = std::getenv("EXO_DISABLE_SIMD");
    if (disable != nullptr && disable[0] != '\0' && disable[0] != '0') return false;
    const char* level = std::getenv("EXO_SIMD");
    return level == nullptr || std::strcmp(level, "scalar") != 0;
  }();
  return enabled;
}

namespace {

// acc += pairwise sums of the 16 products a[j] * b[j] (int8 x int8 fits int16 exactly).
inline int32x4_t Dot16(int32x4_t acc, int8x16_t a, int8x16_t b) {
  acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
  return vpadalq_s16(acc, vmull_high_s8(a, b));
}

inline int8x16_t Load16(const int8_t* p) { return vld1q_s8(p); }

// Low / high nibbles of 16 packed bytes.
inline int8x16_t LowNibbles(uint8x16_t v) {
  return vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0F)));
}
inline int8x16_t HighNibbles(uint8x16_t v) { return vreinterpretq_s8_u8(vshrq_n_u8(v, 4)); }

// 0x10 in byte j (0..15) when bit j of `bits` is set.
inline uint8x16_t FifthBits(uint32_t bits) {
  static const uint8_t kBit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
  const uint8x16_t spread = vcombine_u8(vdup_n_u8(static_cast<uint8_t>(bits)),
                                        vdup_n_u8(static_cast<uint8_t>(bits >> 8)));
  return vandq_u8(vtstq_u8(spread, vld1q_u8(kBit)), vdupq_n_u8(0x10));
}

float VecDotF32Neon(const void* vx, const void* vy, int64_t n) {
  const float* x = static_cast<const float*>(vx);
  const float* y = static_cast<const float*>(vy);
  float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = vdupq_n_f32(0.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    acc0 = vfmaq_f32(acc0, vld1q_f32(x + i), vld1q_f32(y + i));
    acc1 = vfmaq_f32(acc1, vld1q_f32(x + i + 4), vld1q_f32(y + i + 4));
  }
  float sum = vaddvq_f32(vaddq_f32(acc0, acc1));
  for (; i < n; ++i) sum += x[i] * y[i];
  return sum;
}

float VecDotQ8_0Neon(const void* vx, const void* vy, int64_t n) {
  const BlockQ8_0* x = static_cast<const BlockQ8_0*>(vx);
  const BlockQ8_0* y = static_cast<const BlockQ8_0*>(vy);
  float32x4_t acc = vdupq_n_f32(0.0f);
  for (int64_t i = 0; i < n / kQk32; ++i) {
    int32x4_t s = Dot16(vdupq_n_s32(0), Load16(x[i].qs), Load16(y[i].qs));
    s = Dot16(s, Load16(x[i].qs + 16), Load16(y[i].qs + 16));
    acc = vmlaq_n_f32(acc, vcvtq_f32_s32(s), HalfToFloat(x[i].d) * HalfToFloat(y[i].d));
  }
  return vaddvq_f32(acc);
}

float VecDotQ4_0Neon(const void* vx, const void* vy, int64_t n) {
  const BlockQ4_0* x = static_cast<const BlockQ4_0*>(vx);
  const BlockQ8_0* y = static_cast<const BlockQ8_0*>(vy);
  const int8x16_t eight = vdupq_n_s8(8);
  float32x4_t acc = vdupq_n_f32(0.0f);
  for (int64_t i = 0; i < n / kQk32; ++i) {
    const uint8x16_t q = vld1q_u8(x[i].qs);
    int32x4_t s = Dot16(vdupq_n_s32(0), vsubq_s8(LowNibbles(q), eight), Load16(y[i].qs));
    s = Dot16(s, vsubq_s8(HighNibbles(q), eight), Load16(y[i].qs + 16));
    acc = vmlaq_n_f32(acc, vcvtq_f32_s32(s), HalfToFloat(x[i].d) * HalfToFloat(y[i].d));
  }
  return vaddvq_f32(acc);
}

float VecDotQ5_0Neon(const void* vx, const void* vy, int64_t n) {
  const BlockQ5_0* x = static_cast<const BlockQ5_0*>(vx);
  const BlockQ8_0* y = static_cast<const BlockQ8_0*>(vy);
  const int8x16_t sixteen = vdupq_n_s8(16);
  float32x4_t acc = vdupq_n_f32(0.0f);
  for (int64_t i = 0; i < n / kQk32; ++i) {
    uint32_t qh;
    std::memcpy(&qh, x[i].qh, sizeof(qh));
    const uint8x16_t q = vld1q_u8(x[i].qs);
    const int8x16_t lo = vsubq_s8(
        vreinterpretq_s8_u8(vorrq_u8(vreinterpretq_u8_s8(LowNibbles(q)), FifthBits(qh))), sixteen);
    const int8x16_t hi = vsubq_s8(
        vreinterpretq_s8_u8(vorrq_u8(vreinterpretq_u8_s8(HighNibbles(q)), FifthBits(qh >> 16))),
        sixteen);
    int32x4_t s = Dot16(vdupq_n_s32(0), lo, Load16(y[i].qs));
    s = Dot16(s, hi, Load16(y[i].qs + 16));
    acc = vmlaq_n_f32(acc, vcvtq_f32_s32(s), HalfToFloat(x[i].d) * HalfToFloat(y[i].d));
  }
  return vaddvq_f32(acc);
}

// The mins term of a Q4_K / Q5_K block from the Q8_K 16-sums.
int SumMinsK(const uint8_t* mins, const int16_t* bsums) {
  int sum = 0;
  for (int j = 0; j < 8; ++j) sum += mins[j] * (bsums[2 * j] + bsums[2 * j + 1]);
  return sum;
}

template <bool kFiveBit>
float VecDotQ45KNeon(const void* vx, const void* vy, int64_t n) {
  using Block = std::conditional_t<kFiveBit, BlockQ5_K, BlockQ4_K>;
  const Block* x = static_cast<const Block*>(vx);
  const BlockQ8_K* y = static_cast<const BlockQ8_K*>(vy);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQkK; ++i) {
    uint8_t scales[8], mins[8];
    for (int j = 0; j < 8; ++j) GetScaleMinK4(j, x[i].scales, &scales[j], &mins[j]);
    int32x4_t sumi = vdupq_n_s32(0);
    for (int c = 0; c < 4; ++c) {
      for (int h = 0; h < 2; ++h) {  // the two 16-byte halves of the 32 packed bytes
        const uint8x16_t q = vld1q_u8(x[i].qs + 32 * c + 16 * h);
        int8x16_t lo = LowNibbles(q);
        int8x16_t hi = HighNibbles(q);
        if constexpr (kFiveBit) {
          const uint8x16_t qh = vld1q_u8(x[i].qh + 16 * h);
          const uint8x16_t one = vdupq_n_u8(1);
          const uint8x16_t b0 = vshlq_n_u8(vandq_u8(vshlq_u8(qh, vdupq_n_s8(-2 * c)), one), 4);
          const uint8x16_t b1 = vshlq_n_u8(vandq_u8(vshlq_u8(qh, vdupq_n_s8(-2 * c - 1)), one), 4);
          lo = vreinterpretq_s8_u8(vorrq_u8(vreinterpretq_u8_s8(lo), b0));
          hi = vreinterpretq_s8_u8(vorrq_u8(vreinterpretq_u8_s8(hi), b1));
        }
        const int32x4_t p_lo = Dot16(vdupq_n_s32(0), lo, Load16(y[i].qs + 64 * c + 16 * h));
        const int32x4_t p_hi = Dot16(vdupq_n_s32(0), hi, Load16(y[i].qs + 64 * c + 32 + 16 * h));
        sumi = vmlaq_n_s32(sumi, p_lo, scales[2 * c]);
        sumi = vmlaq_n_s32(sumi, p_hi, scales[2 * c + 1]);
      }
    }
    const float d = HalfToFloat(x[i].d) * y[i].d;
    const float dmin = HalfToFloat(x[i].dmin) * y[i].d;
    sum += d * static_cast<float>(vaddvq_s32(sumi)) -
           dmin * static_cast<float>(SumMinsK(mins, y[i].bsums));
  }
  return sum;
}

float VecDotQ6KNeon(const void* vx, const void* vy, int64_t n) {
  const BlockQ6_K* x = static_cast<const BlockQ6_K*>(vx);
  const BlockQ8_K* y = static_cast<const BlockQ8_K*>(vy);
  const uint8x16_t low_mask = vdupq_n_u8(0x0F);
  const uint8x16_t two_bits = vdupq_n_u8(0x03);
  const int8x16_t thirty_two = vdupq_n_s8(32);
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQkK; ++i) {
    int32x4_t sumi = vdupq_n_s32(0);
    for (int half = 0; half < 2; ++half) {
      const uint8_t* ql = x[i].ql + 64 * half;
      const uint8_t* qh = x[i].qh + 32 * half;
      const int8_t* sc = x[i].scales + 8 * half;
      const int8_t* q8 = y[i].qs + 128 * half;
      for (int l = 0; l < 2; ++l) {  // elements 16l..16l+15 of each 32-run; scale index l
        const uint8x16_t l0 = vld1q_u8(ql + 16 * l);
        const uint8x16_t l1 = vld1q_u8(ql + 32 + 16 * l);
        const uint8x16_t h = vld1q_u8(qh + 16 * l);
        uint8x16_t q[4];
        q[0] = vorrq_u8(vandq_u8(l0, low_mask), vshlq_n_u8(vandq_u8(h, two_bits), 4));
        q[1] =
            vorrq_u8(vandq_u8(l1, low_mask), vshlq_n_u8(vandq_u8(vshrq_n_u8(h, 2), two_bits), 4));
        q[2] = vorrq_u8(vshrq_n_u8(l0, 4), vshlq_n_u8(vandq_u8(vshrq_n_u8(h, 4), two_bits), 4));
        q[3] = vorrq_u8(vshrq_n_u8(l1, 4), vshlq_n_u8(vshrq_n_u8(h, 6), 4));
        for (int k = 0; k < 4; ++k) {
          const int8x16_t qs = vsubq_s8(vreinterpretq_s8_u8(q[k]), thirty_two);
          const int32x4_t p = Dot16(vdupq_n_s32(0), qs, Load16(q8 + 32 * k + 16 * l));
          sumi = vmlaq_n_s32(sumi, p, sc[2 * k + l]);
        }
      }
    }
    sum += HalfToFloat(x[i].d) * y[i].d * static_cast<float>(vaddvq_s32(sumi));
  }
  return sum;
}

// True when every value of x[0..n) is finite (n % 4 == 0).
bool AllFinite(const float* x, int n) {
  uint32x4_t ok = vdupq_n_u32(~0u);
  const float32x4_t big = vdupq_n_f32(3.4028235e38f);
  for (int j = 0; j < n; j += 4) ok = vandq_u32(ok, vcaleq_f32(vld1q_f32(x + j), big));
  return vminvq_u32(ok) != 0;
}

float MaxAbs(const float* x, int n) {
  float32x4_t m = vdupq_n_f32(0.0f);
  for (int j = 0; j < n; j += 4) m = vmaxq_f32(m, vabsq_f32(vld1q_f32(x + j)));
  return vmaxvq_f32(m);
}

bool QuantizeQ8_0Neon(const float* x, BlockQ8_0* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQk32) {
    if (!AllFinite(x, kQk32)) return false;
    const float amax = MaxAbs(x, kQk32);
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = FloatToHalf(d);
    for (int k = 0; k < kQk32; k += 8) {
      // vcvtaq: round to nearest, ties away from zero (roundf).
      const int32x4_t a = vcvtaq_s32_f32(vmulq_n_f32(vld1q_f32(x + k), id));
      const int32x4_t b = vcvtaq_s32_f32(vmulq_n_f32(vld1q_f32(x + k + 4), id));
      vst1_s8(y[i].qs + k, vqmovn_s16(vcombine_s16(vqmovn_s32(a), vqmovn_s32(b))));
    }
  }
  return true;
}

bool QuantizeQ8_KNeon(const float* x, BlockQ8_K* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQkK) {
    if (!AllFinite(x, kQkK)) return false;
    const float amax = MaxAbs(x, kQkK);
    if (amax == 0.0f) {
      std::memset(&y[i], 0, sizeof(y[i]));
      continue;
    }
    float max = 0.0f;  // the first element of largest magnitude, as the reference
    for (int j = 0; j < kQkK; ++j) {
      if (std::fabs(x[j]) == amax) {
        max = x[j];
        break;
      }
    }
    const float iscale = -127.0f / max;
    const int32x4_t top = vdupq_n_s32(127);
    for (int k = 0; k < kQkK; k += 8) {
      // vcvtnq: round to nearest, ties to even (lrintf in the default rounding mode).
      const int32x4_t a = vminq_s32(vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + k), iscale)), top);
      const int32x4_t b = vminq_s32(vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + k + 4), iscale)), top);
      vst1_s8(y[i].qs + k, vqmovn_s16(vcombine_s16(vqmovn_s32(a), vqmovn_s32(b))));
    }
    for (int g = 0; g < kQkK / 16; ++g) {
      y[i].bsums[g] = static_cast<int16_t>(vaddlvq_s8(vld1q_s8(y[i].qs + 16 * g)));
    }
    y[i].d = 1.0f / iscale;
  }
  return true;
}

}  // namespace

VecDotFn GetVecDotNeon(TensorType type) {
  switch (type) {
    case TensorType::kF32:
      return VecDotF32Neon;
    case TensorType::kQ4_0:
      return VecDotQ4_0Neon;
    case TensorType::kQ5_0:
      return VecDotQ5_0Neon;
    case TensorType::kQ8_0:
      return VecDotQ8_0Neon;
    case TensorType::kQ4_K:
      return VecDotQ45KNeon<false>;
    case TensorType::kQ5_K:
      return VecDotQ45KNeon<true>;
    case TensorType::kQ6_K:
      return VecDotQ6KNeon;
    default:
      return nullptr;
  }
}

bool DequantizeRowNeon(TensorType type, const void* src, float* dst, int64_t n) {
  if (type != TensorType::kF16 && type != TensorType::kBF16) return false;
  const uint16_t* x = static_cast<const uint16_t*>(src);
  int64_t i = 0;
  if (type == TensorType::kF16) {
    for (; i + 4 <= n; i += 4) {
      vst1q_f32(dst + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(x + i))));
    }
    for (; i < n; ++i) dst[i] = HalfToFloat(x[i]);
  } else {
    for (; i + 4 <= n; i += 4) {
      vst1q_f32(dst + i, vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(x + i), 16)));
    }
    for (; i < n; ++i) dst[i] = Bf16ToFloat(x[i]);
  }
  return true;
}

bool QuantizeRowNeon(TensorType type, const float* src, void* dst, int64_t n) {
  switch (type) {
    case TensorType::kQ8_0:
      return QuantizeQ8_0Neon(src, static_cast<BlockQ8_0*>(dst), n / kQk32);
    case TensorType::kQ8_K:
      return QuantizeQ8_KNeon(src, static_cast<BlockQ8_K*>(dst), n / kQkK);
    default:
      return false;
  }
}

#else  // !EXO_HAVE_NEON

bool CpuHasNeon() { return false; }
VecDotFn GetVecDotNeon(TensorType) { return nullptr; }
bool QuantizeRowNeon(TensorType, const float*, void*, int64_t) { return false; }
bool DequantizeRowNeon(TensorType, const void*, float*, int64_t) { return false; }

#endif

}  // namespace exo::kernels::internal
