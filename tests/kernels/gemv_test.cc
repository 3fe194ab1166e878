// The multi-row decode kernels (kernels/internal/gemv.h) against the single-row dot, bit for bit.
#include "kernels/internal/gemv.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/internal/quants_impl.h"
#include "kernels/ops.h"
#include "kernels/quants.h"
#include "kernels/thread_pool.h"
#include "tests/kernels/test_util.h"

namespace exo::kernels {
namespace {

using testing::RandomValues;
using testing::RandomWeightBytes;

using testing::SameBits;

constexpr TensorType kGemvTypes[] = {TensorType::kQ4_0, TensorType::kQ4_1, TensorType::kQ5_0,
                                     TensorType::kQ5_1, TensorType::kQ8_0, TensorType::kQ4_K,
                                     TensorType::kQ5_K, TensorType::kQ6_K};

// Byte offsets of a block's fp16 scales (d, and m / dmin where the type has one).
std::vector<size_t> HalfOffsets(TensorType type) {
  switch (type) {
    case TensorType::kQ4_1:
    case TensorType::kQ5_1:
    case TensorType::kQ4_K:
    case TensorType::kQ5_K:
      return {0, 2};
    case TensorType::kQ6_K:
      return {208};
    default:
      return {0};
  }
}

// RandomWeightBytes with the fp16 scales of the blocks replaced, in turn, by extremes: the
// largest finite halves, the smallest subnormals, signed zeros, ordinary values in between (so
// that sums overflow to infinity and cancel along a row), and with `non_finite` also infinities
// and a NaN.
std::vector<uint8_t> ExtremeScaleBytes(TensorType type, int64_t blocks, uint64_t seed,
                                       bool non_finite) {
  static constexpr uint16_t kExtremes[] = {0x7BFF, 0xFBFF, 0x0001, 0x8001, 0x0000, 0x8000, 0x3C00,
                                           0x2E66, 0x03FF, 0x5BFF, 0xB800, 0x7C00, 0xFC00, 0x7E00};
  constexpr size_t kFinite = 11;  // the first 11 above
  const size_t count = non_finite ? sizeof(kExtremes) / sizeof(kExtremes[0]) : kFinite;
  std::vector<uint8_t> bytes = RandomWeightBytes(type, blocks, seed);
  const int64_t block_bytes = GetTypeInfo(type).block_bytes;
  size_t k = static_cast<size_t>(seed);
  for (int64_t b = 0; b < blocks; ++b) {
    for (size_t offset : HalfOffsets(type)) {
      // Every third block keeps its ordinary scale.
      if ((b + static_cast<int64_t>(offset)) % 3 == 0) continue;
      const uint16_t h = kExtremes[k++ % count];
      std::memcpy(bytes.data() + b * block_bytes + offset, &h, sizeof(h));
    }
  }
  return bytes;
}

// SameBits, except that any two NaNs are equal: which NaN payload survives an addition depends
// on the operand order the compiler picks for a commutative operation, not on the kernel.
bool SameBitsOrBothNan(float a, float b) { return SameBits(a, b) || (a != a && b != b); }

// The kernel's prepared activation data (PrepareGemv), 64-byte aligned as MatMul's scratch.
class Prepared {
 public:
  Prepared(TensorType type, const uint8_t* act, int64_t n)
      : lines_(static_cast<size_t>(internal::GemvPreparedBytes(type, n) + 63) / 64) {
    internal::PrepareGemv(type, act, n, data());
  }
  void* data() { return lines_.empty() ? nullptr : lines_.data()->bytes; }

 private:
  struct alignas(64) Line {
    uint8_t bytes[64];
  };
  std::vector<Line> lines_;
};

class GemvRowsTest : public ::testing::TestWithParam<TensorType> {
 protected:
  void SetUp() override {
    if (!internal::CpuHasAvx2Fma()) GTEST_SKIP() << "CPU lacks AVX2 (or EXO_SIMD=scalar)";
  }
};

TEST_P(GemvRowsTest, DispatchedOnThisCpu) { EXPECT_NE(internal::GetGemvRows(GetParam()), nullptr); }

TEST_P(GemvRowsTest, BitIdenticalToVecDotForOddBlockCounts) {
  const TensorType type = GetParam();
  const internal::GemvRowsFn gemv = internal::GetGemvRows(type);
  ASSERT_NE(gemv, nullptr);
  constexpr int kR = internal::kGemvRows;
  const int64_t block_size = GetTypeInfo(type).block_size;
  for (int64_t blocks : {1, 2, 3, 5, 20, 33}) {
    const int64_t n = blocks * block_size;
    const int64_t row_bytes = RowBytes(type, n);
    // Raw random blocks (every bit pattern a file may hold) for the weights, and a quantised
    // activation row with outliers.
    const std::vector<uint8_t> w = RandomWeightBytes(type, blocks * kR, 1000 + blocks);
    const std::vector<float> x = RandomValues(static_cast<size_t>(n), 7 + blocks, 1.0f);
    std::vector<uint8_t> act(static_cast<size_t>(RowBytes(VecDotType(type), n)));
    QuantizeRow(VecDotType(type), x.data(), act.data(), n);
    Prepared prepared(type, act.data(), n);
    float got[kR];
    gemv(w.data(), row_bytes, act.data(), prepared.data(), n, got);
    for (int r = 0; r < kR; ++r) {
      const float want = VecDot(type, w.data() + r * row_bytes, act.data(), n);
      EXPECT_TRUE(SameBits(got[r], want)) << TypeName(type) << " blocks " << blocks << " row " << r
                                          << ": " << got[r] << " vs " << want;
    }
  }
}

// Raw weight bytes with extreme fp16 scales (inf, NaN, the largest and smallest halves): the
// kernels' shared scale conversions and lane-wise products must still be the single dot's.
TEST_P(GemvRowsTest, BitIdenticalToVecDotWithExtremeScales) {
  const TensorType type = GetParam();
  const internal::GemvRowsFn gemv = internal::GetGemvRows(type);
  ASSERT_NE(gemv, nullptr);
  constexpr int kR = internal::kGemvRows;
  const int64_t block_size = GetTypeInfo(type).block_size;
  int finite = 0;  // results that are numbers (most should be, or the test says little)
  for (int64_t blocks : {1, 2, 3, 7, 16}) {
    for (uint64_t seed = 1; seed <= 6; ++seed) {
      const int64_t n = blocks * block_size;
      const int64_t row_bytes = RowBytes(type, n);
      const std::vector<uint8_t> w =
          ExtremeScaleBytes(type, blocks * kR, seed * 100 + blocks, /*non_finite=*/seed > 4);
      const std::vector<float> x = RandomValues(static_cast<size_t>(n), 3 + seed, 1.0f);
      std::vector<uint8_t> act(static_cast<size_t>(RowBytes(VecDotType(type), n)));
      QuantizeRow(VecDotType(type), x.data(), act.data(), n);
      Prepared prepared(type, act.data(), n);
      float got[kR];
      gemv(w.data(), row_bytes, act.data(), prepared.data(), n, got);
      for (int r = 0; r < kR; ++r) {
        const float want = VecDot(type, w.data() + r * row_bytes, act.data(), n);
        finite += std::isfinite(want) ? 1 : 0;
        EXPECT_TRUE(SameBitsOrBothNan(got[r], want))
            << TypeName(type) << " blocks " << blocks << " seed " << seed << " row " << r << ": "
            << got[r] << " vs " << want;
      }
    }
  }
  EXPECT_GT(finite, 5 * 6 * kR / 2);
}

// MatMul's decode path: rows not a multiple of kGemvRows, split over a pool.
TEST_P(GemvRowsTest, MatMulDecodeMatchesVecDotPerRow) {
  const TensorType type = GetParam();
  ThreadPool pool(2);
  // Odd block counts (the kernels' one-block tails).
  const int64_t block_size = GetTypeInfo(type).block_size;
  const int64_t cols = (block_size == 256 ? 3 : 7) * block_size;
  for (int64_t rows : {1, 3, 4, 5, 7, 61, 1027}) {
    const int64_t row_bytes = RowBytes(type, cols);
    std::vector<uint8_t> w(static_cast<size_t>(rows * row_bytes));
    const std::vector<float> wv = RandomValues(static_cast<size_t>(rows * cols), 31, 0.5f);
    for (int64_t r = 0; r < rows; ++r) {
      QuantizeRow(type, wv.data() + r * cols, w.data() + r * row_bytes, cols);
    }
    const std::vector<float> x = RandomValues(static_cast<size_t>(cols), 5, 1.0f);
    std::vector<uint8_t> act(static_cast<size_t>(RowBytes(VecDotType(type), cols)));
    QuantizeRow(VecDotType(type), x.data(), act.data(), cols);
    for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
      std::vector<float> y(static_cast<size_t>(rows), std::nanf(""));
      MatMul(type, w.data(), rows, cols, x.data(), 1, y.data(), p);
      for (int64_t r = 0; r < rows; ++r) {
        ASSERT_TRUE(SameBits(y[r], VecDot(type, w.data() + r * row_bytes, act.data(), cols)))
            << TypeName(type) << " rows " << rows << " row " << r;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Types, GemvRowsTest, ::testing::ValuesIn(kGemvTypes),
                         [](const ::testing::TestParamInfo<TensorType>& info) {
                           return std::string(TypeName(info.param));
                         });

TEST(GemvRows, NoKernelForOtherTypes) {
  EXPECT_EQ(internal::GetGemvRows(TensorType::kF32), nullptr);
  EXPECT_EQ(internal::GetGemvRows(TensorType::kF16), nullptr);
  EXPECT_EQ(internal::GetGemvRows(TensorType::kBF16), nullptr);
  EXPECT_EQ(internal::GemvPreparedBytes(TensorType::kQ4_1, 256), 0);
}

// The AVX-512 kernels start each lane from -offset * (sum of its 4 activation bytes): the
// extremes of every quant (raw random weights hold them; activations here are +-127 and mixed)
// must still give the single dot's bits.
TEST(GemvRows, ExtremeActivations) {
  if (!internal::CpuHasAvx2Fma()) GTEST_SKIP() << "CPU lacks AVX2 (or EXO_SIMD=scalar)";
  constexpr int kR = internal::kGemvRows;
  for (TensorType type : kGemvTypes) {
    const int64_t n = 9 * GetTypeInfo(type).block_size;
    const int64_t row_bytes = RowBytes(type, n);
    const std::vector<uint8_t> w = RandomWeightBytes(type, 9 * kR, 77);
    std::vector<float> x(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      x[static_cast<size_t>(i)] = (i / 32) % 3 == 0   ? 1.0f
                                  : (i / 32) % 3 == 1 ? -1.0f
                                                      : (i % 2 ? 1.0f : -1.0f);
    }
    std::vector<uint8_t> act(static_cast<size_t>(RowBytes(VecDotType(type), n)));
    QuantizeRow(VecDotType(type), x.data(), act.data(), n);
    Prepared prepared(type, act.data(), n);
    float got[kR];
    internal::GetGemvRows(type)(w.data(), row_bytes, act.data(), prepared.data(), n, got);
    for (int r = 0; r < kR; ++r) {
      EXPECT_TRUE(SameBits(got[r], VecDot(type, w.data() + r * row_bytes, act.data(), n)))
          << TypeName(type) << " row " << r;
    }
  }
}

}  // namespace
}  // namespace exo::kernels
