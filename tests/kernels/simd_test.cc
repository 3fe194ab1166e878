// The run-time selected AVX2 kernels against the scalar references, on odd block counts and on
// random bit patterns (not only what our quantiser produces).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/internal/blocks.h"
#include "kernels/internal/quants_impl.h"
#include "kernels/quants.h"
#include "kernels/types.h"
#include "tests/kernels/test_util.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace exo::kernels {
namespace {

using testing::Quantize;
using testing::RandomValues;
using testing::RandomWeightBytes;

constexpr TensorType kSimdTypes[] = {
    TensorType::kF32,  TensorType::kF16,  TensorType::kBF16, TensorType::kQ4_0,
    TensorType::kQ4_1, TensorType::kQ5_0, TensorType::kQ5_1, TensorType::kQ8_0,
    TensorType::kQ4_K, TensorType::kQ5_K, TensorType::kQ6_K,
};

// Activations: quantised random values with extremes (so quants reach +-127).
std::vector<uint8_t> RandomActivations(TensorType type, int64_t n, uint32_t seed) {
  std::vector<float> a = RandomValues(static_cast<size_t>(n), seed, 2.0f);
  for (int64_t i = 0; i < n; i += 37) a[i] = (i % 2) ? 30.0f : -30.0f;
  return Quantize(VecDotType(type), a);
}

double Magnitude(TensorType type, const void* w, const void* a, int64_t n) {
  std::vector<float> wd(n), ad(n);
  DequantizeRow(type, w, wd.data(), n);
  DequantizeRow(VecDotType(type), a, ad.data(), n);
  double m = 0.0;
  for (int64_t i = 0; i < n; ++i) m += std::fabs(static_cast<double>(wd[i]) * ad[i]);
  return m;
}

class SimdVecDotTest : public ::testing::TestWithParam<TensorType> {
 protected:
  void SetUp() override {
    if (!internal::CpuHasAvx2Fma()) GTEST_SKIP() << "CPU lacks AVX2/FMA/F16C";
  }
};

TEST_P(SimdVecDotTest, DispatchUsesSimd) {
  const TensorType type = GetParam();
  ASSERT_NE(internal::GetVecDotAvx2(type), nullptr);
  internal::VecDotFn avx512 =
      internal::CpuHasAvx512Vnni() ? internal::GetVecDotAvx512(type) : nullptr;
  EXPECT_EQ(internal::GetVecDot(type), avx512 != nullptr ? avx512 : internal::GetVecDotAvx2(type));
}

TEST_P(SimdVecDotTest, MatchesScalarOnOddSizes) {
  const TensorType type = GetParam();
  const int64_t block = GetTypeInfo(type).block_size;
  internal::VecDotFn simd = internal::GetVecDotAvx2(type);
  internal::VecDotFn ref = internal::GetVecDotRef(type);
  ASSERT_NE(simd, nullptr);
  ASSERT_NE(ref, nullptr);
  std::vector<int64_t> sizes;
  if (block == 1) {
    sizes = {1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 65, 100, 257, 1000};
  } else {
    for (int64_t blocks : {1, 2, 3, 5, 7, 13, 31}) sizes.push_back(blocks * block);
  }
  for (int64_t n : sizes) {
    for (uint32_t seed = 1; seed <= 4; ++seed) {
      // Seeds 1-2: weights from the quantiser; 3-4: raw random block bytes.
      std::vector<uint8_t> w;
      if (seed <= 2 || block == 1) {
        w = Quantize(type, RandomValues(static_cast<size_t>(n), seed * 1000 + n));
      } else {
        w = RandomWeightBytes(type, n / block, seed * 7919 + static_cast<uint64_t>(n));
      }
      const std::vector<uint8_t> a = RandomActivations(type, n, seed + static_cast<uint32_t>(n));
      const double expected = ref(w.data(), a.data(), n);
      const double got = simd(w.data(), a.data(), n);
      const double tolerance = 1e-5 * Magnitude(type, w.data(), a.data(), n) + 1e-30;
      ASSERT_NEAR(got, expected, tolerance) << TypeName(type) << " n=" << n << " seed " << seed;
    }
  }
}

// The AVX-512 decode dots promise the AVX2 dots' bits (so that decode, prompt processing and
// machines of either level agree).
TEST_P(SimdVecDotTest, Avx512BitIdenticalToAvx2) {
  const TensorType type = GetParam();
  if (!internal::CpuHasAvx512Vnni()) GTEST_SKIP() << "CPU lacks AVX-512 VNNI (or EXO_SIMD)";
  internal::VecDotFn avx512 = internal::GetVecDotAvx512(type);
  if (avx512 == nullptr) GTEST_SKIP() << "no AVX-512 dot for " << TypeName(type);
  internal::VecDotFn avx2 = internal::GetVecDotAvx2(type);
  const int64_t block = GetTypeInfo(type).block_size;
  for (int64_t blocks : {1, 2, 3, 5, 7, 13, 31, 64}) {
    const int64_t n = blocks * block;
    for (uint32_t seed = 1; seed <= 4; ++seed) {
      const std::vector<uint8_t> w =
          seed <= 2 ? Quantize(type, RandomValues(static_cast<size_t>(n), seed * 1000 + n))
                    : RandomWeightBytes(type, blocks, seed * 7919 + static_cast<uint64_t>(n));
      const std::vector<uint8_t> a = RandomActivations(type, n, seed + static_cast<uint32_t>(n));
      const float want = avx2(w.data(), a.data(), n);
      const float got = avx512(w.data(), a.data(), n);
      ASSERT_EQ(std::memcmp(&want, &got, sizeof(float)), 0)
          << TypeName(type) << " n=" << n << " seed=" << seed << ": " << got << " vs " << want;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllSimdTypes, SimdVecDotTest, ::testing::ValuesIn(kSimdTypes),
                         [](const ::testing::TestParamInfo<TensorType>& info) {
                           return std::string(TypeName(info.param));
                         });

// F16 / BF16 rows (the KV cache) convert exactly: every non-NaN bit pattern, odd lengths.
TEST(SimdDequantize, HalfRowsMatchReference) {
  if (!internal::CpuHasAvx2Fma()) GTEST_SKIP() << "CPU lacks AVX2/FMA/F16C";
  for (TensorType type : {TensorType::kF16, TensorType::kBF16}) {
    std::vector<uint16_t> all;
    for (uint32_t h = 0; h < 0x10000; ++h) {
      const float f = type == TensorType::kF16 ? Fp16ToFp32(static_cast<uint16_t>(h))
                                               : Bf16ToFp32(static_cast<uint16_t>(h));
      if (!std::isnan(f)) all.push_back(static_cast<uint16_t>(h));
    }
    for (int64_t n :
         {int64_t{1}, int64_t{7}, int64_t{8}, int64_t{13}, static_cast<int64_t>(all.size())}) {
      std::vector<float> want(static_cast<size_t>(n)), got(static_cast<size_t>(n), -1.0f);
      internal::DequantizeRowRef(type, all.data(), want.data(), n);
      ASSERT_TRUE(internal::DequantizeRowAvx2(type, all.data(), got.data(), n));
      ASSERT_EQ(std::memcmp(want.data(), got.data(), want.size() * sizeof(float)), 0)
          << TypeName(type) << " n=" << n;
    }
  }
  float out[8];
  const uint16_t in[8] = {};
  EXPECT_FALSE(internal::DequantizeRowAvx2(TensorType::kQ8_0, in, out, 8));
}

// The SIMD activation quantisers must write exactly the reference bytes: random rows, rows whose
// products land exactly on .5 (both rounding rules' ties), zero rows, and +-max ties.
TEST(SimdQuantize, ActivationQuantisersMatchReferenceBytes) {
  if (!internal::CpuHasAvx2Fma()) GTEST_SKIP() << "CPU lacks AVX2/FMA/F16C";
  for (TensorType type : {TensorType::kQ8_0, TensorType::kQ8_K}) {
    const int64_t block = GetTypeInfo(type).block_size;
    for (int64_t blocks : {1, 2, 3, 7}) {
      const int64_t n = blocks * block;
      for (uint32_t seed = 0; seed < 40; ++seed) {
        std::vector<float> x = RandomValues(static_cast<size_t>(n), seed * 17 + n, 3.0f);
        if (seed % 4 == 1) {
          // amax 127 gives a scale of exactly 1: halves are exact ties.
          for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(i % 254) - 126.5f;
          for (int64_t b = 0; b < blocks; ++b)
            x[b * block + 3] = (seed % 8 == 1) ? 127.0f : -127.0f;
        } else if (seed % 4 == 2) {
          std::fill(x.begin(), x.begin() + block, 0.0f);  // an all-zero block
          x[block - 1 + (n > block ? 1 : 0)] = -x[0];
        } else if (seed % 4 == 3) {
          x[5] = 9.0f;
          x[9] = -9.0f;  // equal magnitudes: the first one's sign decides the Q8_K scale
        }
        std::vector<uint8_t> want(static_cast<size_t>(RowBytes(type, n)), 0xAA);
        std::vector<uint8_t> got(want.size(), 0x55);
        internal::QuantizeRowRef(type, x.data(), want.data(), n);
        ASSERT_TRUE(internal::QuantizeRowAvx2(type, x.data(), got.data(), n));
        ASSERT_EQ(want, got) << TypeName(type) << " n=" << n << " seed=" << seed;
      }
    }
  }
  // Non-finite input is left to the reference.
  std::vector<float> x(32, 1.0f);
  x[7] = std::nanf("");
  std::vector<uint8_t> out(static_cast<size_t>(RowBytes(TensorType::kQ8_0, 32)));
  EXPECT_FALSE(internal::QuantizeRowAvx2(TensorType::kQ8_0, x.data(), out.data(), 32));
}

#if defined(__x86_64__)

__attribute__((target("f16c"))) uint16_t HardwareFloatToHalf(float f) {
  return static_cast<uint16_t>(_cvtss_sh(f, 0));  // 0 = round to nearest even
}
__attribute__((target("f16c"))) float HardwareHalfToFloat(uint16_t h) { return _cvtsh_ss(h); }

TEST(SimdFp16, ScalarConversionsMatchF16c) {
  if (!internal::CpuHasAvx2Fma()) GTEST_SKIP() << "CPU lacks F16C";
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float hw = HardwareHalfToFloat(static_cast<uint16_t>(h));
    const float sw = Fp16ToFp32(static_cast<uint16_t>(h));
    if (std::isnan(hw)) {
      ASSERT_TRUE(std::isnan(sw));
      continue;
    }
    ASSERT_EQ(std::memcmp(&hw, &sw, sizeof(float)), 0) << std::hex << h;
  }
  std::mt19937 rng(42);
  for (int i = 0; i < 2000000; ++i) {
    uint32_t bits = rng();
    // Concentrate half of the samples on the fp16 exponent range (incl. subnormals).
    if (i % 2) bits = (bits & 0x807fffffu) | ((100u + (bits >> 23) % 45u) << 23);
    float f;
    std::memcpy(&f, &bits, sizeof(f));
    if (std::isnan(f)) continue;
    ASSERT_EQ(Fp32ToFp16(f), HardwareFloatToHalf(f)) << std::hex << bits;
  }
}

#endif

}  // namespace
}  // namespace exo::kernels
