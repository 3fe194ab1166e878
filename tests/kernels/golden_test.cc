// Dequantisation of pseudo-random blocks against values produced by llama.cpp's gguf-py numpy
// dequantisers (see make_golden.py), which reproduce ggml's dequantize_row_* bit for bit.
#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/quants.h"
#include "kernels/types.h"
#include "tests/kernels/test_util.h"

namespace exo::kernels {
namespace {

#include "tests/kernels/golden_data.inc"

using testing::LcgBytes;
using testing::PutHalf;

struct HalfField {
  size_t offset;
  float value;
};

void ExpectGolden(TensorType type, uint64_t seed, std::vector<HalfField> halves,
                  const float* expected, size_t count) {
  const TypeInfo& info = GetTypeInfo(type);
  ASSERT_EQ(static_cast<size_t>(info.block_size), count);
  std::vector<uint8_t> block = LcgBytes(seed, static_cast<size_t>(info.block_bytes));
  for (const HalfField& h : halves) PutHalf(&block, h.offset, h.value);
  std::vector<float> out(count);
  DequantizeRow(type, block.data(), out.data(), static_cast<int64_t>(count));
  for (size_t i = 0; i < count; ++i) {
    // Bit-exact: compare as floats with EXPECT_EQ (no tolerance).
    EXPECT_EQ(out[i], expected[i]) << TypeName(type) << " element " << i;
  }
}

TEST(GoldenDequantize, Q4_0MatchesGgml) {
  ExpectGolden(TensorType::kQ4_0, kSeedQ4_0, {{0, 0.375f}}, kExpectedQ4_0, 32);
}
TEST(GoldenDequantize, Q4_1MatchesGgml) {
  ExpectGolden(TensorType::kQ4_1, kSeedQ4_1, {{0, 0.125f}, {2, -1.5f}}, kExpectedQ4_1, 32);
}
TEST(GoldenDequantize, Q5_0MatchesGgml) {
  ExpectGolden(TensorType::kQ5_0, kSeedQ5_0, {{0, -0.0625f}}, kExpectedQ5_0, 32);
}
TEST(GoldenDequantize, Q5_1MatchesGgml) {
  ExpectGolden(TensorType::kQ5_1, kSeedQ5_1, {{0, 0.03125f}, {2, 0.75f}}, kExpectedQ5_1, 32);
}
TEST(GoldenDequantize, Q8_0MatchesGgml) {
  ExpectGolden(TensorType::kQ8_0, kSeedQ8_0, {{0, 0.01171875f}}, kExpectedQ8_0, 32);
}
TEST(GoldenDequantize, Q4_KMatchesGgml) {
  ExpectGolden(TensorType::kQ4_K, kSeedQ4_K, {{0, 0.0123f}, {2, 0.0456f}}, kExpectedQ4_K, 256);
}
TEST(GoldenDequantize, Q5_KMatchesGgml) {
  ExpectGolden(TensorType::kQ5_K, kSeedQ5_K, {{0, 0.00789f}, {2, 0.0321f}}, kExpectedQ5_K, 256);
}
TEST(GoldenDequantize, Q6_KMatchesGgml) {
  ExpectGolden(TensorType::kQ6_K, kSeedQ6_K, {{208, 0.00234f}}, kExpectedQ6_K, 256);
}

}  // namespace
}  // namespace exo::kernels
