// Multi-token dot products (one weight row against a group of tokens) must give, for every
// token, exactly the bits of the single-token VecDot; MatMul uses them for batches of tokens.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/internal/quants_impl.h"
#include "kernels/ops.h"
#include "kernels/quants.h"
#include "kernels/types.h"
#include "tests/kernels/test_util.h"

namespace exo::kernels {
namespace {

using testing::Quantize;
using testing::RandomValues;
using testing::RandomWeightBytes;

// The types with a multi-token kernel (the default model's four, plus Q4_0 and Q5_K).
constexpr TensorType kMultiTypes[] = {TensorType::kQ5_0, TensorType::kQ8_0, TensorType::kQ4_K,
                                      TensorType::kQ6_K, TensorType::kQ4_0, TensorType::kQ5_K};
// The AVX-512 GEMM kernels: K-quants (GemmKRowFn) and the 32-element types (Gemm32RowFn), both
// on transposed groups of 16 tokens.
constexpr TensorType kGemmKTypes[] = {TensorType::kQ4_K, TensorType::kQ6_K, TensorType::kQ5_K};
constexpr TensorType kGemm32Types[] = {TensorType::kQ5_0, TensorType::kQ8_0, TensorType::kQ4_0};

// `tokens` activation rows of `n` values, quantised to VecDotType(type), back to back.
std::vector<uint8_t> ActivationRows(TensorType type, int64_t n, int tokens, uint32_t seed) {
  std::vector<uint8_t> rows;
  for (int t = 0; t < tokens; ++t) {
    std::vector<float> a = RandomValues(static_cast<size_t>(n), seed + 31 * t, 2.0f);
    // Extremes so the activation quants reach +-127.
    for (int64_t i = t; i < n; i += 37) a[i] = (i % 2) ? 30.0f : -30.0f;
    const std::vector<uint8_t> q = Quantize(VecDotType(type), a);
    rows.insert(rows.end(), q.begin(), q.end());
  }
  return rows;
}

// Weight rows of the GEMM tests: seeds 1-2 from the quantiser, 3-4 raw random block bytes, 5
// extreme bytes (RandomWeightBytes' sane scales, every other byte cycling through 0x00, 0xFF,
// 0x80, 0x7F, 0xF0, 0x0F: -128 and 127 Q8_0 quants, 15 / 31 / 63 unsigned quants, 63 K-quant
// scales and mins, -128 / 127 Q6_K scales), against which an unsigned 8-bit weight in
// vpmaddubsw would saturate int16.
std::vector<uint8_t> GemmWeights(TensorType type, int64_t blocks, uint32_t seed) {
  const int64_t n = blocks * GetTypeInfo(type).block_size;
  if (seed <= 2) return Quantize(type, RandomValues(static_cast<size_t>(n), seed * 1000 + n));
  std::vector<uint8_t> w = RandomWeightBytes(type, blocks, seed * 7919 + static_cast<uint64_t>(n));
  if (seed <= 4) return w;
  // Where RandomWeightBytes put the fp16 scales: kept.
  const size_t block_bytes = GetTypeInfo(type).block_bytes;
  size_t scale_begin = 0, scale_end = 2;
  if (type == TensorType::kQ4_K || type == TensorType::kQ5_K) scale_end = 4;
  if (type == TensorType::kQ6_K) scale_begin = 208, scale_end = 210;
  constexpr uint8_t kPattern[] = {0x00, 0xFF, 0x80, 0x7F, 0xF0, 0x0F};
  for (size_t i = 0; i < w.size(); ++i) {
    const size_t k = i % block_bytes;
    if (k < scale_begin || k >= scale_end) w[i] = kPattern[(i * 5 + i / 7) % 6];
  }
  return w;
}

// Activation rows of the GEMM tests; seed 5: every quant +-127.
std::vector<uint8_t> GemmActivations(TensorType type, int64_t n, int tokens, uint32_t seed,
                                     uint32_t salt) {
  if (seed != 5) return ActivationRows(type, n, tokens, seed * 13 + salt);
  std::vector<uint8_t> rows;
  for (int t = 0; t < tokens; ++t) {
    std::vector<float> a(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) a[i] = ((i * 3 + t) % 4 < 2) ? 1.5f : -1.5f;
    const std::vector<uint8_t> q = Quantize(VecDotType(type), a);
    rows.insert(rows.end(), q.begin(), q.end());
  }
  return rows;
}

using testing::SameBits;

// A Gemm32RowFn against the single dot, bit for bit: one and two groups with 1..32 real tokens
// (the rest padding), odd block counts, the weights of GemmWeights.
void CheckGemm32(TensorType type, internal::Gemm32RowFn gemm) {
  constexpr int kG = internal::kGemm32Tokens;
  constexpr int kMaxTokens = kG * internal::kGemm32MaxGroups;
  for (int64_t blocks : {1, 2, 3, 5, 7, 13}) {
    const int64_t n = blocks * 32;
    const int64_t act_row_bytes = RowBytes(TensorType::kQ8_0, n);
    const int64_t group_bytes = internal::Gemm32GroupBytes(blocks);
    std::vector<uint8_t> groups(static_cast<size_t>(internal::kGemm32MaxGroups * group_bytes));
    for (uint32_t seed = 1; seed <= 5; ++seed) {
      const std::vector<uint8_t> w = GemmWeights(type, blocks, seed);
      const std::vector<uint8_t> act =
          GemmActivations(type, n, kMaxTokens, seed, static_cast<uint32_t>(blocks));
      // 1..kG tokens: one group (the rest padding); beyond: two groups.
      for (int tokens = 1; tokens <= kMaxTokens; ++tokens) {
        const int count = (tokens + kG - 1) / kG;
        std::fill(groups.begin(), groups.end(), 0xA5);  // no stale zeros from an earlier round
        for (int t = 0; t < count * kG; ++t) {
          uint8_t* group = groups.data() + (t / kG) * group_bytes;
          if (t < tokens) {
            internal::PackGemm32Token(type, act.data() + t * act_row_bytes, blocks, t % kG, group);
          } else {
            internal::PadGemm32Token(blocks, t % kG, group);
          }
        }
        float got[kMaxTokens];
        gemm(w.data(), groups.data(), n, count, got);
        for (int t = 0; t < tokens; ++t) {
          const float want = VecDot(type, w.data(), act.data() + t * act_row_bytes, n);
          ASSERT_TRUE(SameBits(got[t], want))
              << TypeName(type) << " blocks=" << blocks << " seed=" << seed << " tokens=" << tokens
              << " t=" << t << ": " << got[t] << " vs " << want;
        }
      }
    }
  }
}

// A GemmKRowFn against the single dot, bit for bit: 1..16 real tokens (the rest padding), odd
// super-block counts, the weights of GemmWeights (extreme scales and mins, negative Q6_K
// scales).
void CheckGemmK(TensorType type, internal::GemmKRowFn gemm) {
  constexpr int kG = internal::kGemm32Tokens;
  for (int64_t blocks : {1, 2, 3, 5}) {
    const int64_t n = blocks * 256;
    const int64_t act_row_bytes = RowBytes(TensorType::kQ8_K, n);
    std::vector<uint8_t> group(static_cast<size_t>(internal::GemmKGroupBytes(blocks)));
    for (uint32_t seed = 1; seed <= 5; ++seed) {
      const std::vector<uint8_t> w = GemmWeights(type, blocks, seed);
      const std::vector<uint8_t> act =
          GemmActivations(type, n, kG, seed, static_cast<uint32_t>(blocks));
      for (int tokens = 1; tokens <= kG; ++tokens) {
        std::fill(group.begin(), group.end(), 0xA5);  // no stale zeros from an earlier round
        for (int t = 0; t < kG; ++t) {
          if (t < tokens) {
            internal::PackGemmKToken(act.data() + t * act_row_bytes, blocks, t, group.data());
          } else {
            internal::PadGemmKToken(blocks, t, group.data());
          }
        }
        float got[kG];
        gemm(w.data(), group.data(), n, got);
        for (int t = 0; t < tokens; ++t) {
          const float want = VecDot(type, w.data(), act.data() + t * act_row_bytes, n);
          ASSERT_TRUE(SameBits(got[t], want))
              << TypeName(type) << " blocks=" << blocks << " seed=" << seed << " tokens=" << tokens
              << " t=" << t << ": " << got[t] << " vs " << want;
        }
      }
    }
  }
}

class VecDotMultiTest : public ::testing::TestWithParam<TensorType> {
 protected:
  void SetUp() override {
    if (!internal::CpuHasAvx2Fma()) GTEST_SKIP() << "CPU lacks AVX2/FMA/F16C (scalar path)";
  }
};

TEST_P(VecDotMultiTest, IsAvailableWithSimd) {
  EXPECT_NE(internal::GetVecDotMulti(GetParam()), nullptr);
  EXPECT_NE(internal::GetVecDotMultiAvx2(GetParam()), nullptr);
}

TEST_P(VecDotMultiTest, BitIdenticalToVecDotForEveryTokenCount) {
  const TensorType type = GetParam();
  internal::VecDotMultiFn multi = internal::GetVecDotMulti(type);
  ASSERT_NE(multi, nullptr);
  const int64_t block = GetTypeInfo(type).block_size;
  const TensorType act_type = VecDotType(type);
  for (int64_t blocks : {1, 3, 5, 7, 13}) {
    const int64_t n = blocks * block;
    const int64_t act_row_bytes = RowBytes(act_type, n);
    for (uint32_t seed = 1; seed <= 4; ++seed) {
      // Seeds 1-2: weights from the quantiser; 3-4: raw random block bytes.
      const std::vector<uint8_t> w =
          seed <= 2 ? Quantize(type, RandomValues(static_cast<size_t>(n), seed * 1000 + n))
                    : RandomWeightBytes(type, blocks, seed * 7919 + static_cast<uint64_t>(n));
      for (int tokens = 1; tokens <= 9; ++tokens) {
        const std::vector<uint8_t> act =
            ActivationRows(type, n, tokens, seed * 101 + static_cast<uint32_t>(tokens));
        // Every group size 1..kMaxDotTokens over the same rows: groups of g, then the rest.
        for (int g = 1; g <= internal::kMaxDotTokens; ++g) {
          std::vector<float> got(static_cast<size_t>(tokens), std::nanf(""));
          for (int t = 0; t < tokens; t += g) {
            const int count = std::min(g, tokens - t);
            multi(w.data(), act.data() + t * act_row_bytes, act_row_bytes, n, count,
                  got.data() + t);
          }
          for (int t = 0; t < tokens; ++t) {
            const float want = VecDot(type, w.data(), act.data() + t * act_row_bytes, n);
            ASSERT_TRUE(SameBits(got[t], want))
                << TypeName(type) << " blocks=" << blocks << " seed=" << seed
                << " tokens=" << tokens << " group=" << g << " t=" << t << ": " << got[t] << " vs "
                << want;
          }
        }
      }
    }
  }
}

// Runs on the scalar path too (EXO_DISABLE_SIMD=1), where MatMul falls back to the single dot.
class MatMulBatchTest : public ::testing::TestWithParam<TensorType> {};

TEST_P(MatMulBatchTest, BitIdenticalToVecDotForSmallBatches) {
  const TensorType type = GetParam();
  const int64_t block = GetTypeInfo(type).block_size;
  const int64_t rows = 37, cols = 5 * block;
  const std::vector<float> wv = RandomValues(static_cast<size_t>(rows * cols), 77, 0.5f);
  const int64_t row_bytes = RowBytes(type, cols);
  std::vector<uint8_t> w(static_cast<size_t>(rows * row_bytes));
  for (int64_t r = 0; r < rows; ++r) {
    QuantizeRow(type, wv.data() + r * cols, w.data() + r * row_bytes, cols);
  }
  const TensorType act_type = VecDotType(type);
  std::vector<uint8_t> act(static_cast<size_t>(RowBytes(act_type, cols)));
  ThreadPool pool(2);
  // Past 16: several gemm32 groups, the last one full, even or odd.
  for (int64_t n : {1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 21, 31, 32, 34, 47, 48, 50, 67}) {
    const std::vector<float> x = RandomValues(static_cast<size_t>(n * cols), 5 + n);
    for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
      std::vector<float> y(static_cast<size_t>(n * rows), std::nanf(""));
      MatMul(type, w.data(), rows, cols, x.data(), n, y.data(), p);
      for (int64_t t = 0; t < n; ++t) {
        QuantizeRow(act_type, x.data() + t * cols, act.data(), cols);
        for (int64_t r = 0; r < rows; ++r) {
          const float want = VecDot(type, w.data() + r * row_bytes, act.data(), cols);
          ASSERT_TRUE(SameBits(y[t * rows + r], want))
              << TypeName(type) << " n=" << n << " t=" << t << " r=" << r;
        }
      }
    }
  }
}

// The AVX-512 16-token kernels of the 32-element types against the AVX2 single dot, bit for bit:
// one and two groups with 1..32 real tokens (the rest padding), odd block counts, raw random
// weight bytes (extreme scales, -128 Q8_0 quants).
class Gemm32RowTest : public ::testing::TestWithParam<TensorType> {
 protected:
  void SetUp() override {
    if (!internal::CpuHasAvx512Vnni()) GTEST_SKIP() << "CPU lacks AVX-512 VNNI (or EXO_SIMD)";
  }
};

TEST_P(Gemm32RowTest, DispatchedOnThisCpu) {
  EXPECT_NE(internal::GetGemm32RowAvx512(GetParam()), nullptr);
  EXPECT_EQ(internal::GetGemm32Row(GetParam()), internal::GetGemm32RowAvx512(GetParam()));
  EXPECT_EQ(internal::GetGemmKRow(GetParam()), nullptr);
}

TEST_P(Gemm32RowTest, BitIdenticalToVecDot) {
  internal::Gemm32RowFn gemm = internal::GetGemm32Row(GetParam());
  ASSERT_NE(gemm, nullptr);
  CheckGemm32(GetParam(), gemm);
}

// The AVX-512 16-token K-quant kernels against the AVX2 single dot, bit for bit: 1..16 real
// tokens (the rest padding), odd super-block counts, raw random weight bytes (extreme scales and
// mins, negative Q6_K scales).
class GemmKRowTest : public ::testing::TestWithParam<TensorType> {
 protected:
  void SetUp() override {
    if (!internal::CpuHasAvx512Vnni()) GTEST_SKIP() << "CPU lacks AVX-512 VNNI (or EXO_SIMD)";
  }
};

TEST_P(GemmKRowTest, DispatchedOnThisCpu) {
  EXPECT_NE(internal::GetGemmKRowAvx512(GetParam()), nullptr);
  EXPECT_EQ(internal::GetGemmKRow(GetParam()), internal::GetGemmKRowAvx512(GetParam()));
}

TEST_P(GemmKRowTest, BitIdenticalToVecDot) {
  internal::GemmKRowFn gemm = internal::GetGemmKRow(GetParam());
  ASSERT_NE(gemm, nullptr);
  CheckGemmK(GetParam(), gemm);
}

// The AVX2 kernels on the same groups (gemm_avx2.cc), plain and AVX-VNNI, called directly so
// that both are checked at every level where the CPU runs them (the plain one wherever AVX2 is
// on; EXO_SIMD=avx2-novnni then also runs MatMul on it).
class GemmAvx2Test : public ::testing::TestWithParam<std::tuple<TensorType, bool>> {
 protected:
  void SetUp() override {
    if (!internal::CpuHasAvx2Fma()) GTEST_SKIP() << "CPU lacks AVX2/FMA/F16C (or EXO_SIMD)";
    if (std::get<1>(GetParam()) && !internal::CpuHasAvxVnni()) {
      GTEST_SKIP() << "CPU lacks AVX-VNNI (or EXO_SIMD=avx2-novnni)";
    }
  }
  TensorType type() const { return std::get<0>(GetParam()); }
  bool vnni() const { return std::get<1>(GetParam()); }
  bool is_k() const {
    return type() == TensorType::kQ4_K || type() == TensorType::kQ5_K ||
           type() == TensorType::kQ6_K;
  }
};

TEST_P(GemmAvx2Test, DispatchedAtTheAvx2Level) {
  if (is_k()) {
    EXPECT_NE(internal::GetGemmKRowAvx2(type(), vnni()), nullptr);
    EXPECT_EQ(internal::GetGemm32RowAvx2(type(), vnni()), nullptr);
  } else {
    EXPECT_NE(internal::GetGemm32RowAvx2(type(), vnni()), nullptr);
    EXPECT_EQ(internal::GetGemmKRowAvx2(type(), vnni()), nullptr);
  }
  if (internal::CpuHasAvx512Vnni() || vnni() != internal::CpuHasAvxVnni()) return;
  EXPECT_EQ(internal::GetGemm32Row(type()), internal::GetGemm32RowAvx2(type(), vnni()));
  EXPECT_EQ(internal::GetGemmKRow(type()), internal::GetGemmKRowAvx2(type(), vnni()));
}

TEST_P(GemmAvx2Test, BitIdenticalToVecDot) {
  if (is_k()) {
    CheckGemmK(type(), internal::GetGemmKRowAvx2(type(), vnni()));
  } else {
    CheckGemm32(type(), internal::GetGemm32RowAvx2(type(), vnni()));
  }
}

INSTANTIATE_TEST_SUITE_P(MultiTokenTypes, GemmAvx2Test,
                         ::testing::Combine(::testing::ValuesIn(kMultiTypes), ::testing::Bool()),
                         [](const ::testing::TestParamInfo<std::tuple<TensorType, bool>>& info) {
                           return std::string(TypeName(std::get<0>(info.param))) +
                                  (std::get<1>(info.param) ? "_AvxVnni" : "_Plain");
                         });
INSTANTIATE_TEST_SUITE_P(MultiTokenTypes, GemmKRowTest, ::testing::ValuesIn(kGemmKTypes),
                         [](const ::testing::TestParamInfo<TensorType>& info) {
                           return std::string(TypeName(info.param));
                         });
INSTANTIATE_TEST_SUITE_P(MultiTokenTypes, Gemm32RowTest, ::testing::ValuesIn(kGemm32Types),
                         [](const ::testing::TestParamInfo<TensorType>& info) {
                           return std::string(TypeName(info.param));
                         });
INSTANTIATE_TEST_SUITE_P(MultiTokenTypes, VecDotMultiTest, ::testing::ValuesIn(kMultiTypes),
                         [](const ::testing::TestParamInfo<TensorType>& info) {
                           return std::string(TypeName(info.param));
                         });
INSTANTIATE_TEST_SUITE_P(MultiTokenTypes, MatMulBatchTest, ::testing::ValuesIn(kMultiTypes),
                         [](const ::testing::TestParamInfo<TensorType>& info) {
                           return std::string(TypeName(info.param));
                         });

}  // namespace
}  // namespace exo::kernels
