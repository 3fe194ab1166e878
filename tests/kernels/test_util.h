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

}  // namespace exo::kernels::testing

#endif  // EXO_TESTS_KERNELS_TEST_UTIL_H_
