// Helpers shared by the kernel tests: deterministic random data and block builders.
#ifndef EXO_TESTS_KERNELS_TEST_UTIL_H_
#define EXO_TESTS_KERNELS_TEST_UTIL_H_

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/quants.h"
#include "kernels/types.h"

namespace exo::kernels::testing {

// The 64-bit LCG also used by make_golden.py: each step yields the top byte.
inline std::vector<uint8_t> LcgBytes(uint64_t seed, size_t n) {
  std::vector<uint8_t> out(n);
  uint64_t x = seed;
  for (size_t i = 0; i < n; ++i) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    out[i] = static_cast<uint8_t>(x >> 56);
  }
  return out;
}

// Values with a spread of magnitudes: mostly N(0, scale), a few outliers of 8x.
inline std::vector<float> RandomValues(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::uniform_int_distribution<int> pick(0, 63);
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) {
    v[i] = normal(rng);
    if (pick(rng) == 0) v[i] *= 8.0f;
  }
  return v;
}

// Whether two floats have the same bits (what the bit-identity promises are about; also tells
// -0 from +0 and compares NaNs).
inline bool SameBits(float a, float b) { return std::memcmp(&a, &b, sizeof(float)) == 0; }

inline std::vector<uint8_t> Quantize(TensorType type, const std::vector<float>& values) {
  const int64_t n = static_cast<int64_t>(values.size());
  std::vector<uint8_t> out(static_cast<size_t>(RowBytes(type, n)));
  QuantizeRow(type, values.data(), out.data(), n);
  return out;
}

inline std::vector<float> Dequantize(TensorType type, const std::vector<uint8_t>& data, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  DequantizeRow(type, data.data(), out.data(), n);
  return out;
}

inline void PutHalf(std::vector<uint8_t>* bytes, size_t offset, float value) {
  const uint16_t h = Fp32ToFp16(value);
  std::memcpy(bytes->data() + offset, &h, sizeof(h));
}

// Random weight bytes for `blocks` blocks with every fp16 scale replaced by a sane value and
// int8 quants kept in [-127, 127] (the range every quantiser produces).
inline std::vector<uint8_t> RandomWeightBytes(TensorType type, int64_t blocks, uint64_t seed) {
  const TypeInfo& info = GetTypeInfo(type);
  std::vector<uint8_t> bytes = LcgBytes(seed, static_cast<size_t>(blocks * info.block_bytes));
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::uniform_real_distribution<float> scale(-0.05f, 0.05f);
  for (int64_t b = 0; b < blocks; ++b) {
    const size_t base = static_cast<size_t>(b * info.block_bytes);
    switch (type) {
      case TensorType::kQ4_0:
      case TensorType::kQ5_0:
        PutHalf(&bytes, base, scale(rng));
        break;
      case TensorType::kQ4_1:
      case TensorType::kQ5_1:
      case TensorType::kQ4_K:
      case TensorType::kQ5_K:
        PutHalf(&bytes, base, scale(rng));
        PutHalf(&bytes, base + 2, scale(rng));
        break;
      case TensorType::kQ8_0:
        PutHalf(&bytes, base, scale(rng));
        for (int j = 0; j < 32; ++j) {
          if (bytes[base + 2 + j] == 0x80) bytes[base + 2 + j] = 0x81;
        }
        break;
      case TensorType::kQ6_K:
        PutHalf(&bytes, base + 208, scale(rng));
        break;
      default:
        break;
    }
  }
  return bytes;
}

}  // namespace exo::kernels::testing

#endif  // EXO_TESTS_KERNELS_TEST_UTIL_H_
