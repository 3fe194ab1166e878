// Block layouts, fp16/bf16 conversions, hand-built blocks with known values, quantise/dequantise
// round trips and dot products against dequantise-then-dot for every supported type.
#include "kernels/quants.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/internal/blocks.h"
#include "kernels/internal/quants_impl.h"
#include "kernels/types.h"
#include "tests/kernels/test_util.h"

namespace exo::kernels {
namespace {

using internal::BlockQ4_0;
using internal::BlockQ4_1;
using internal::BlockQ4_K;
using internal::BlockQ5_0;
using internal::BlockQ5_1;
using internal::BlockQ5_K;
using internal::BlockQ6_K;
using internal::BlockQ8_0;
using internal::BlockQ8_1;
using internal::BlockQ8_K;
using testing::Dequantize;
using testing::Quantize;
using testing::RandomValues;

constexpr TensorType kWeightTypes[] = {
    TensorType::kF32,  TensorType::kF16,  TensorType::kBF16, TensorType::kQ4_0,
    TensorType::kQ4_1, TensorType::kQ5_0, TensorType::kQ5_1, TensorType::kQ8_0,
    TensorType::kQ4_K, TensorType::kQ5_K, TensorType::kQ6_K,
};

float ToFloat(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// ---- Layouts ----------------------------------------------------------------------------------

TEST(BlockLayout, SizesMatchTypeTable) {
  EXPECT_EQ(sizeof(BlockQ4_0), GetTypeInfo(TensorType::kQ4_0).block_bytes);
  EXPECT_EQ(sizeof(BlockQ4_1), GetTypeInfo(TensorType::kQ4_1).block_bytes);
  EXPECT_EQ(sizeof(BlockQ5_0), GetTypeInfo(TensorType::kQ5_0).block_bytes);
  EXPECT_EQ(sizeof(BlockQ5_1), GetTypeInfo(TensorType::kQ5_1).block_bytes);
  EXPECT_EQ(sizeof(BlockQ8_0), GetTypeInfo(TensorType::kQ8_0).block_bytes);
  EXPECT_EQ(sizeof(BlockQ8_1), GetTypeInfo(TensorType::kQ8_1).block_bytes);
  EXPECT_EQ(sizeof(BlockQ4_K), GetTypeInfo(TensorType::kQ4_K).block_bytes);
  EXPECT_EQ(sizeof(BlockQ5_K), GetTypeInfo(TensorType::kQ5_K).block_bytes);
  EXPECT_EQ(sizeof(BlockQ6_K), GetTypeInfo(TensorType::kQ6_K).block_bytes);
  EXPECT_EQ(sizeof(BlockQ8_K), GetTypeInfo(TensorType::kQ8_K).block_bytes);
  EXPECT_EQ(offsetof(BlockQ6_K, d), 208u);
  EXPECT_EQ(offsetof(BlockQ5_K, qh), 16u);
  EXPECT_EQ(offsetof(BlockQ8_K, bsums), 260u);
}

TEST(VecDotTypeTest, FollowsGgml) {
  EXPECT_EQ(VecDotType(TensorType::kQ4_0), TensorType::kQ8_0);
  EXPECT_EQ(VecDotType(TensorType::kQ5_0), TensorType::kQ8_0);
  EXPECT_EQ(VecDotType(TensorType::kQ8_0), TensorType::kQ8_0);
  EXPECT_EQ(VecDotType(TensorType::kQ4_1), TensorType::kQ8_1);
  EXPECT_EQ(VecDotType(TensorType::kQ5_1), TensorType::kQ8_1);
  EXPECT_EQ(VecDotType(TensorType::kQ4_K), TensorType::kQ8_K);
  EXPECT_EQ(VecDotType(TensorType::kQ5_K), TensorType::kQ8_K);
  EXPECT_EQ(VecDotType(TensorType::kQ6_K), TensorType::kQ8_K);
  EXPECT_EQ(VecDotType(TensorType::kF16), TensorType::kF16);
  EXPECT_EQ(VecDotType(TensorType::kBF16), TensorType::kBF16);
  EXPECT_EQ(VecDotType(TensorType::kF32), TensorType::kF32);
}

// ---- fp16 / bf16 ------------------------------------------------------------------------------

TEST(Fp16, KnownValues) {
  EXPECT_EQ(Fp32ToFp16(1.0f), 0x3c00);
  EXPECT_EQ(Fp32ToFp16(-2.0f), 0xc000);
  EXPECT_EQ(Fp32ToFp16(0.0f), 0x0000);
  EXPECT_EQ(Fp32ToFp16(-0.0f), 0x8000);
  EXPECT_EQ(Fp32ToFp16(65504.0f), 0x7bff);
  EXPECT_EQ(Fp32ToFp16(65519.0f), 0x7bff);
  EXPECT_EQ(Fp32ToFp16(65520.0f), 0x7c00);  // tie rounds to even: infinity
  EXPECT_EQ(Fp32ToFp16(1e9f), 0x7c00);
  EXPECT_EQ(Fp32ToFp16(-std::numeric_limits<float>::infinity()), 0xfc00);
  EXPECT_EQ(Fp32ToFp16(0.1f), 0x2e66);
  EXPECT_EQ(Fp32ToFp16(std::ldexp(1.0f, -24)), 0x0001);         // smallest subnormal
  EXPECT_EQ(Fp32ToFp16(std::ldexp(1.0f, -25)), 0x0000);         // tie between 0 and 2^-24: even
  EXPECT_EQ(Fp32ToFp16(std::ldexp(3.0f, -26)), 0x0001);         // 0.75 ulp rounds up
  EXPECT_EQ(Fp32ToFp16(std::ldexp(3.0f, -25)), 0x0002);         // 1.5 ulp: tie to even (2)
  EXPECT_EQ(Fp32ToFp16(std::ldexp(1023.0f, -24)), 0x03ff);      // largest subnormal
  EXPECT_EQ(Fp32ToFp16(std::ldexp(2047.0f, -25)), 0x0400);      // rounds up into the normals
  EXPECT_EQ(Fp32ToFp16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie: even
  EXPECT_EQ(Fp32ToFp16(1.0f + std::ldexp(3.0f, -11)), 0x3c02);  // tie: even (up)
  EXPECT_EQ(Fp32ToFp16(1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -20)), 0x3c01);
  const uint16_t nan = Fp32ToFp16(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(nan & 0x7c00, 0x7c00);
  EXPECT_NE(nan & 0x03ff, 0);

  EXPECT_EQ(Fp16ToFp32(0x3c00), 1.0f);
  EXPECT_EQ(Fp16ToFp32(0xc000), -2.0f);
  EXPECT_EQ(Fp16ToFp32(0x7bff), 65504.0f);
  EXPECT_EQ(Fp16ToFp32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(Fp16ToFp32(0x03ff), std::ldexp(1023.0f, -24));
  EXPECT_EQ(Fp16ToFp32(0x8000), 0.0f);
  EXPECT_TRUE(std::signbit(Fp16ToFp32(0x8000)));
  EXPECT_TRUE(std::isinf(Fp16ToFp32(0x7c00)));
  EXPECT_TRUE(std::isnan(Fp16ToFp32(0x7e00)));
}

TEST(Fp16, EveryHalfRoundTrips) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = Fp16ToFp32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(Fp32ToFp16(f), h) << "half 0x" << std::hex << h;
  }
}

TEST(Fp16, RoundsToNearestAgainstDoubleReference) {
  // For random floats in the normal fp16 range, the result must be one of the two neighbours
  // and the nearer one.
  std::vector<float> values = RandomValues(20000, 7, 300.0f);
  for (float f : values) {
    const uint16_t h = Fp32ToFp16(f);
    const double got = Fp16ToFp32(h);
    const double below = Fp16ToFp32(static_cast<uint16_t>(h - 1));
    const double above = Fp16ToFp32(static_cast<uint16_t>(h + 1));
    EXPECT_LE(std::fabs(got - f), std::fabs(below - f)) << f;
    EXPECT_LE(std::fabs(got - f), std::fabs(above - f)) << f;
  }
}

TEST(Bf16, KnownValues) {
  EXPECT_EQ(Fp32ToBf16(1.0f), 0x3f80);
  EXPECT_EQ(Bf16ToFp32(0x3f80), 1.0f);
  EXPECT_EQ(Bf16ToFp32(0x4049), 3.140625f);
  EXPECT_EQ(Fp32ToBf16(ToFloat(0x3f808000u)), 0x3f80);  // tie: even
  EXPECT_EQ(Fp32ToBf16(ToFloat(0x3f818000u)), 0x3f82);  // tie: even (up)
  EXPECT_EQ(Fp32ToBf16(ToFloat(0x3f808001u)), 0x3f81);
  EXPECT_EQ(Fp32ToBf16(-0.0f), 0x8000);
  EXPECT_TRUE(std::isnan(Bf16ToFp32(Fp32ToBf16(std::numeric_limits<float>::quiet_NaN()))));
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = Bf16ToFp32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(Fp32ToBf16(f), h);
  }
}

// ---- Hand-built blocks ------------------------------------------------------------------------

// Packs 8 six-bit scales and mins following the bit diagram of the Q4_K/Q5_K `scales` field:
// bytes 0-3 = sc[0..3] | sc[4..7] bits 4-5 in bits 6-7; bytes 4-7 likewise for the mins;
// bytes 8-11 = sc[4..7] low nibble | m[4..7] low nibble << 4.
void PackKScales(const uint8_t sc[8], const uint8_t m[8], uint8_t out[12]) {
  for (int j = 0; j < 4; ++j) {
    out[j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
    out[j + 4] = static_cast<uint8_t>(m[j] | ((m[j + 4] >> 4) << 6));
    out[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4));
  }
}

TEST(DequantizeRowTest, F16AndBf16AndF32) {
  const uint16_t half[3] = {0x3c00, 0xc000, 0x3800};
  float out[3];
  DequantizeRow(TensorType::kF16, half, out, 3);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -2.0f);
  EXPECT_EQ(out[2], 0.5f);
  const uint16_t bf[2] = {0x3f80, 0xc040};
  DequantizeRow(TensorType::kBF16, bf, out, 2);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -3.0f);
  const float f[2] = {1.5f, -7.25f};
  DequantizeRow(TensorType::kF32, f, out, 2);
  EXPECT_EQ(out[0], 1.5f);
  EXPECT_EQ(out[1], -7.25f);
}

TEST(DequantizeRowTest, Q4_0KnownBlock) {
  BlockQ4_0 b[2];
  for (int k = 0; k < 2; ++k) {
    b[k].d = Fp32ToFp16(k == 0 ? 0.5f : -2.0f);
    for (int j = 0; j < 16; ++j) b[k].qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  }
  float y[64];
  DequantizeRow(TensorType::kQ4_0, b, y, 64);
  for (int k = 0; k < 2; ++k) {
    const float d = k == 0 ? 0.5f : -2.0f;
    for (int j = 0; j < 16; ++j) {
      EXPECT_EQ(y[32 * k + j], (j - 8) * d);
      EXPECT_EQ(y[32 * k + j + 16], (7 - j) * d);
    }
  }
}

TEST(DequantizeRowTest, Q4_1KnownBlock) {
  BlockQ4_1 b;
  b.d = Fp32ToFp16(0.25f);
  b.m = Fp32ToFp16(-1.0f);
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  float y[32];
  DequantizeRow(TensorType::kQ4_1, &b, y, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], j * 0.25f - 1.0f);
    EXPECT_EQ(y[j + 16], (15 - j) * 0.25f - 1.0f);
  }
}

TEST(DequantizeRowTest, Q5_0KnownBlock) {
  BlockQ5_0 b;
  b.d = Fp32ToFp16(1.0f);
  const uint32_t qh = 0x0000FFFFu;  // bit 4 set for elements 0..15 only
  std::memcpy(b.qh, &qh, 4);
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  float y[32];
  DequantizeRow(TensorType::kQ5_0, &b, y, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], static_cast<float>(j));                 // (j | 16) - 16
    EXPECT_EQ(y[j + 16], static_cast<float>(15 - j - 16));  // no high bit
  }
}

TEST(DequantizeRowTest, Q5_1KnownBlock) {
  BlockQ5_1 b;
  b.d = Fp32ToFp16(0.5f);
  b.m = Fp32ToFp16(2.0f);
  const uint32_t qh = 0xA5A50000u;  // high bits for elements 16 + {0,2,5,7,8,10,13,15}
  std::memcpy(b.qh, &qh, 4);
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  float y[32];
  DequantizeRow(TensorType::kQ5_1, &b, y, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], j * 0.5f + 2.0f);
    const int high = (qh >> (16 + j)) & 1;
    EXPECT_EQ(y[j + 16], ((15 - j) + 16 * high) * 0.5f + 2.0f) << j;
  }
}

TEST(DequantizeRowTest, Q8_0KnownBlock) {
  BlockQ8_0 b;
  b.d = Fp32ToFp16(2.0f);
  for (int j = 0; j < 32; ++j) b.qs[j] = static_cast<int8_t>(j * 8 - 127);
  float y[32];
  DequantizeRow(TensorType::kQ8_0, &b, y, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], 2.0f * (j * 8 - 127));
}

constexpr uint8_t kScales[8] = {1, 2, 3, 4, 17, 33, 47, 63};
constexpr uint8_t kMins[8] = {0, 5, 10, 63, 16, 32, 48, 1};

TEST(DequantizeRowTest, Q4_KKnownBlock) {
  BlockQ4_K b;
  b.d = Fp32ToFp16(0.5f);
  b.dmin = Fp32ToFp16(0.25f);
  PackKScales(kScales, kMins, b.scales);
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) {
      b.qs[32 * c + l] = static_cast<uint8_t>((l & 0xF) | (((l + c) & 0xF) << 4));
    }
  }
  float y[256];
  DequantizeRow(TensorType::kQ4_K, &b, y, 256);
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) {
      EXPECT_EQ(y[64 * c + l], 0.5f * kScales[2 * c] * (l & 0xF) - 0.25f * kMins[2 * c]);
      EXPECT_EQ(y[64 * c + 32 + l],
                0.5f * kScales[2 * c + 1] * ((l + c) & 0xF) - 0.25f * kMins[2 * c + 1]);
    }
  }
}

TEST(DequantizeRowTest, Q5_KKnownBlock) {
  BlockQ5_K b;
  b.d = Fp32ToFp16(0.5f);
  b.dmin = Fp32ToFp16(0.25f);
  PackKScales(kScales, kMins, b.scales);
  for (int l = 0; l < 32; ++l) b.qh[l] = (l % 2) ? 0x55 : 0xAA;  // odd l: low-half bits set
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) {
      b.qs[32 * c + l] = static_cast<uint8_t>((l & 0xF) | (((l + c) & 0xF) << 4));
    }
  }
  float y[256];
  DequantizeRow(TensorType::kQ5_K, &b, y, 256);
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) {
      const int low = (l & 0xF) + ((l % 2) ? 16 : 0);
      const int high = ((l + c) & 0xF) + ((l % 2) ? 0 : 16);
      EXPECT_EQ(y[64 * c + l], 0.5f * kScales[2 * c] * low - 0.25f * kMins[2 * c]);
      EXPECT_EQ(y[64 * c + 32 + l], 0.5f * kScales[2 * c + 1] * high - 0.25f * kMins[2 * c + 1]);
    }
  }
}

TEST(DequantizeRowTest, Q6_KKnownBlock) {
  BlockQ6_K b;
  b.d = Fp32ToFp16(0.125f);
  for (int g = 0; g < 16; ++g) b.scales[g] = static_cast<int8_t>(g - 8);
  auto q = [](int e) { return (e * 7) % 64; };  // stored quant (value + 32) of element e
  for (int h = 0; h < 2; ++h) {
    for (int l = 0; l < 32; ++l) {
      const int q1 = q(128 * h + l), q2 = q(128 * h + 32 + l);
      const int q3 = q(128 * h + 64 + l), q4 = q(128 * h + 96 + l);
      b.ql[64 * h + l] = static_cast<uint8_t>((q1 & 0xF) | ((q3 & 0xF) << 4));
      b.ql[64 * h + 32 + l] = static_cast<uint8_t>((q2 & 0xF) | ((q4 & 0xF) << 4));
      b.qh[32 * h + l] =
          static_cast<uint8_t>((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
    }
  }
  float y[256];
  DequantizeRow(TensorType::kQ6_K, &b, y, 256);
  for (int e = 0; e < 256; ++e) {
    EXPECT_EQ(y[e], 0.125f * static_cast<float>(e / 16 - 8) * static_cast<float>(q(e) - 32)) << e;
  }
}

TEST(DequantizeRowTest, Q8_KIsScaleTimesQuant) {
  BlockQ8_K b{};
  b.d = -0.03125f;
  for (int j = 0; j < 256; ++j) b.qs[j] = static_cast<int8_t>((j % 255) - 127);
  std::vector<float> y(256);
  DequantizeRow(TensorType::kQ8_K, &b, y.data(), 256);
  for (int j = 0; j < 256; ++j) EXPECT_EQ(y[j], -0.03125f * ((j % 255) - 127));
}

// ---- Quantisers --------------------------------------------------------------------------------

TEST(QuantizeRowTest, Q8_0FollowsGgmlReference) {
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = (j - 10) * 0.3f;
  x[5] = -12.7f;  // the absolute maximum: d = 0.1
  const std::vector<uint8_t> q = Quantize(TensorType::kQ8_0, x);
  BlockQ8_0 b;
  std::memcpy(&b, q.data(), sizeof(b));
  EXPECT_EQ(b.d, Fp32ToFp16(12.7f / 127.0f));
  const float id = 1.0f / (12.7f / 127.0f);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(b.qs[j], static_cast<int8_t>(std::round(x[j] * id)));
  EXPECT_EQ(b.qs[5], -127);
}

TEST(QuantizeRowTest, Q8_1StoresScaledSum) {
  const std::vector<float> x = RandomValues(64, 3);
  const std::vector<uint8_t> q = Quantize(TensorType::kQ8_1, x);
  for (int k = 0; k < 2; ++k) {
    BlockQ8_1 b;
    std::memcpy(&b, q.data() + k * sizeof(b), sizeof(b));
    int sum = 0;
    for (int j = 0; j < 32; ++j) sum += b.qs[j];
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[32 * k + j]));
    EXPECT_EQ(b.s, Fp32ToFp16(static_cast<float>(sum) * (amax / 127.0f)));
  }
}

TEST(QuantizeRowTest, Q8_KFollowsGgmlReference) {
  std::vector<float> x = RandomValues(512, 11);
  x[300] = 40.0f;  // signed max of the second block is positive: d is negative
  const std::vector<uint8_t> q = Quantize(TensorType::kQ8_K, x);
  for (int k = 0; k < 2; ++k) {
    BlockQ8_K b;
    std::memcpy(&b, q.data() + k * sizeof(b), sizeof(b));
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 256; ++j) {
      if (std::fabs(x[256 * k + j]) > amax) {
        amax = std::fabs(x[256 * k + j]);
        max = x[256 * k + j];
      }
    }
    const float iscale = -127.0f / max;
    EXPECT_EQ(b.d, 1.0f / iscale);
    for (int j = 0; j < 256; ++j) {
      EXPECT_EQ(b.qs[j], std::min(127, static_cast<int>(std::nearbyint(iscale * x[256 * k + j]))));
    }
    for (int g = 0; g < 16; ++g) {
      int sum = 0;
      for (int l = 0; l < 16; ++l) sum += b.qs[16 * g + l];
      EXPECT_EQ(b.bsums[g], sum);
    }
  }
  // An all-zero block quantises to zeros (scale 0, sums 0).
  const std::vector<uint8_t> zero = Quantize(TensorType::kQ8_K, std::vector<float>(256, 0.0f));
  EXPECT_TRUE(std::all_of(zero.begin(), zero.end(), [](uint8_t v) { return v == 0; }));
}

// Largest allowed |x - dequant(quant(x))| for element i, derived from the block's own scales.
double ErrorBound(TensorType type, const std::vector<uint8_t>& q, const std::vector<float>& x,
                  int64_t i) {
  const float v = std::fabs(x[i]);
  switch (type) {
    case TensorType::kF32:
      return 0.0;
    case TensorType::kF16:
      return v * std::ldexp(1.0, -11) + std::ldexp(1.0, -25);  // subnormals: half of 2^-24
    case TensorType::kBF16:
      return v * std::ldexp(1.0, -8);
    case TensorType::kQ4_0: {
      // The end opposite to the signed maximum is clamped: up to one step.
      BlockQ4_0 b;
      std::memcpy(&b, q.data() + (i / 32) * sizeof(b), sizeof(b));
      return std::fabs(Fp16ToFp32(b.d)) * 1.01;
    }
    case TensorType::kQ5_0: {
      BlockQ5_0 b;
      std::memcpy(&b, q.data() + (i / 32) * sizeof(b), sizeof(b));
      return std::fabs(Fp16ToFp32(b.d)) * 1.01;
    }
    case TensorType::kQ4_1: {
      BlockQ4_1 b;
      std::memcpy(&b, q.data() + (i / 32) * sizeof(b), sizeof(b));
      const double d = Fp16ToFp32(b.d), m = std::fabs(Fp16ToFp32(b.m));
      return 0.5 * d + (m + 15 * d) * 1e-3;
    }
    case TensorType::kQ5_1: {
      BlockQ5_1 b;
      std::memcpy(&b, q.data() + (i / 32) * sizeof(b), sizeof(b));
      const double d = Fp16ToFp32(b.d), m = std::fabs(Fp16ToFp32(b.m));
      return 0.5 * d + (m + 31 * d) * 1e-3;
    }
    case TensorType::kQ8_0: {
      BlockQ8_0 b;
      std::memcpy(&b, q.data() + (i / 32) * sizeof(b), sizeof(b));
      return Fp16ToFp32(b.d) * (0.5 + 128.0 / 2048.0);
    }
    case TensorType::kQ8_1: {
      BlockQ8_1 b;
      std::memcpy(&b, q.data() + (i / 32) * sizeof(b), sizeof(b));
      return Fp16ToFp32(b.d) * (0.5 + 128.0 / 2048.0);
    }
    case TensorType::kQ8_K: {
      BlockQ8_K b;
      std::memcpy(&b, q.data() + (i / 256) * sizeof(b), sizeof(b));
      return std::fabs(b.d) * 0.5 * (1 + 1e-5);
    }
    case TensorType::kQ4_K:
    case TensorType::kQ5_K: {
      const size_t block_bytes = type == TensorType::kQ4_K ? sizeof(BlockQ4_K) : sizeof(BlockQ5_K);
      // d, dmin and scales are at the same offsets in both layouts.
      BlockQ4_K b;
      std::memcpy(&b, q.data() + (i / 256) * block_bytes, 16);
      uint8_t sc, m;
      internal::GetScaleMinK4(static_cast<int>((i % 256) / 32), b.scales, &sc, &m);
      const double step = static_cast<double>(Fp16ToFp32(b.d)) * sc;
      return 0.5 * step + 1e-6 * (v + step);
    }
    case TensorType::kQ6_K: {
      BlockQ6_K b;
      std::memcpy(&b, q.data() + (i / 256) * sizeof(b), sizeof(b));
      const double step =
          std::fabs(static_cast<double>(Fp16ToFp32(b.d)) * b.scales[(i % 256) / 16]);
      return 0.5 * step + 1e-6 * (v + step);
    }
    default:
      ADD_FAILURE() << "no bound for " << TypeName(type);
      return 0.0;
  }
}

// A loose bound relative to the super-block's largest magnitude, so that a quantiser cannot pass
// ErrorBound by choosing needlessly coarse scales.
double CoarseBound(TensorType type, double amax) {
  switch (type) {
    case TensorType::kQ4_0:
    case TensorType::kQ4_1:
      return amax / 7.0;
    case TensorType::kQ5_0:
    case TensorType::kQ5_1:
      return amax / 15.0;
    case TensorType::kQ8_0:
    case TensorType::kQ8_1:
    case TensorType::kQ8_K:
      return amax / 200.0;
    case TensorType::kQ4_K:
      return amax / 12.0;
    case TensorType::kQ5_K:
      return amax / 25.0;
    case TensorType::kQ6_K:
      return amax / 50.0;
    default:
      return amax;  // float types are covered by ErrorBound
  }
}

class RoundTripTest : public ::testing::TestWithParam<TensorType> {};

TEST_P(RoundTripTest, ErrorWithinFormatBound) {
  const TensorType type = GetParam();
  const int64_t block = GetTypeInfo(type).block_size;
  const int64_t n = 1024;
  for (uint32_t seed = 1; seed <= 3; ++seed) {
    std::vector<float> x = RandomValues(n, seed, seed == 2 ? 0.01f : 1.0f);
    // Awkward blocks: all zeros, all equal, all negative, one outlier.
    std::fill(x.begin(), x.begin() + 32, 0.0f);
    if (n >= 512) std::fill(x.begin() + 256, x.begin() + 288, 0.75f);
    for (int64_t i = 512; i < 768; ++i) x[i] = -std::fabs(x[i]) - 0.5f;
    x[900] = 50.0f;
    const std::vector<uint8_t> q = Quantize(type, x);
    const std::vector<float> y = Dequantize(type, q, n);
    for (int64_t i = 0; i < n; ++i) {
      const double err = std::fabs(static_cast<double>(x[i]) - y[i]);
      ASSERT_LE(err, ErrorBound(type, q, x, i) + 1e-30)
          << TypeName(type) << " seed " << seed << " element " << i << " x=" << x[i]
          << " y=" << y[i];
      const int64_t sb = std::max<int64_t>(block, 256);
      double amax = 0.0;
      for (int64_t j = i / sb * sb; j < (i / sb + 1) * sb; ++j) {
        amax = std::max(amax, std::fabs(static_cast<double>(x[j])));
      }
      ASSERT_LE(err, CoarseBound(type, amax)) << TypeName(type) << " element " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllTypes, RoundTripTest,
                         ::testing::Values(TensorType::kF32, TensorType::kF16, TensorType::kBF16,
                                           TensorType::kQ4_0, TensorType::kQ4_1, TensorType::kQ5_0,
                                           TensorType::kQ5_1, TensorType::kQ8_0, TensorType::kQ8_1,
                                           TensorType::kQ4_K, TensorType::kQ5_K, TensorType::kQ6_K,
                                           TensorType::kQ8_K),
                         [](const ::testing::TestParamInfo<TensorType>& info) {
                           return std::string(TypeName(info.param));
                         });

// ---- Dot products ------------------------------------------------------------------------------

class VecDotTest : public ::testing::TestWithParam<TensorType> {};

TEST_P(VecDotTest, MatchesDequantizedDot) {
  const TensorType type = GetParam();
  const TensorType act_type = VecDotType(type);
  for (int64_t n : {256, 512, 1280}) {
    const std::vector<float> w = RandomValues(n, 100 + static_cast<uint32_t>(n));
    const std::vector<float> a = RandomValues(n, 200 + static_cast<uint32_t>(n), 3.0f);
    const std::vector<uint8_t> wq = Quantize(type, w);
    const std::vector<uint8_t> aq = Quantize(act_type, a);
    const std::vector<float> wd = Dequantize(type, wq, n);
    const std::vector<float> ad = Dequantize(act_type, aq, n);
    double expected = 0.0, magnitude = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      expected += static_cast<double>(wd[i]) * ad[i];
      magnitude += std::fabs(static_cast<double>(wd[i]) * ad[i]);
    }
    // Q8_1's s = fp16(d * sum(q)) adds an fp16 rounding per block to the min term.
    const bool has_sum_term = act_type == TensorType::kQ8_1;
    const double tolerance = magnitude * (has_sum_term ? 2e-3 : 2e-5);
    EXPECT_NEAR(VecDot(type, wq.data(), aq.data(), n), expected, tolerance)
        << TypeName(type) << " n=" << n;
    internal::VecDotFn ref = internal::GetVecDotRef(type);
    ASSERT_NE(ref, nullptr);
    EXPECT_NEAR(ref(wq.data(), aq.data(), n), expected, tolerance) << TypeName(type) << " n=" << n;
  }
}

TEST_P(VecDotTest, ApproximatesFloatDot) {
  // End to end: the quantised dot product stays near the exact f32 one.
  const TensorType type = GetParam();
  const int64_t n = 2048;
  const std::vector<float> w = RandomValues(n, 5);
  const std::vector<float> a = RandomValues(n, 6);
  double exact = 0.0, norm_w = 0.0, norm_a = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    exact += static_cast<double>(w[i]) * a[i];
    norm_w += static_cast<double>(w[i]) * w[i];
    norm_a += static_cast<double>(a[i]) * a[i];
  }
  const std::vector<uint8_t> wq = Quantize(type, w);
  const std::vector<uint8_t> aq = Quantize(VecDotType(type), a);
  const double got = VecDot(type, wq.data(), aq.data(), n);
  // Relative to |w||a|: 4-bit formats lose the most.
  EXPECT_NEAR(got, exact, 0.1 * std::sqrt(norm_w * norm_a)) << TypeName(type);
}

INSTANTIATE_TEST_SUITE_P(AllWeightTypes, VecDotTest, ::testing::ValuesIn(kWeightTypes),
                         [](const ::testing::TestParamInfo<TensorType>& info) {
                           return std::string(TypeName(info.param));
                         });

}  // namespace
}  // namespace exo::kernels
