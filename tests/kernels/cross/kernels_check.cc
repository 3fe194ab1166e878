// Self-contained check of the SIMD kernels against the scalar references, for cross builds that
// run under qemu-user (no GTest for the target): the dispatched dot products on odd block
// counts, quantiser-made and raw random weights; the activation quantisers byte for byte; and
// MatMul through a thread pool. Prints each failure and exits 1 if there was any.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "kernels/internal/quants_impl.h"
#include "kernels/ops.h"
#include "kernels/quants.h"
#include "kernels/thread_pool.h"
#include "kernels/types.h"
#include "tests/kernels/test_util.h"

namespace exo::kernels {
namespace {

using testing::Quantize;
using testing::RandomValues;
using testing::RandomWeightBytes;

int g_failures = 0;
int g_checks = 0;

void Check(bool ok, const char* what, TensorType type, int64_t n, uint32_t seed, double got,
           double want) {
  ++g_checks;
  if (ok) return;
  ++g_failures;
  std::printf("FAIL %s %s n=%lld seed=%u: got %.9g want %.9g\n", what, TypeName(type),
              static_cast<long long>(n), seed, got, want);
}

double Magnitude(TensorType type, const void* w, const void* a, int64_t n) {
  std::vector<float> wd(static_cast<size_t>(n)), ad(static_cast<size_t>(n));
  DequantizeRow(type, w, wd.data(), n);
  DequantizeRow(VecDotType(type), a, ad.data(), n);
  double m = 0.0;
  for (int64_t i = 0; i < n; ++i) m += std::fabs(static_cast<double>(wd[i]) * ad[i]);
  return m;
}

constexpr TensorType kTypes[] = {TensorType::kF32,  TensorType::kF16,  TensorType::kBF16,
                                 TensorType::kQ4_0, TensorType::kQ4_1, TensorType::kQ5_0,
                                 TensorType::kQ5_1, TensorType::kQ8_0, TensorType::kQ4_K,
                                 TensorType::kQ5_K, TensorType::kQ6_K};

void CheckDots() {
  for (TensorType type : kTypes) {
    internal::VecDotFn dispatched = internal::GetVecDot(type);
    // On ARM the NEON kernels must be the ones dispatched where they exist.
    if (internal::CpuHasNeon() && internal::GetVecDotNeon(type) != nullptr) {
      Check(dispatched == internal::GetVecDotNeon(type), "dispatch", type, 0, 0, 0, 0);
    }
    internal::VecDotFn ref = internal::GetVecDotRef(type);
    const int64_t block = GetTypeInfo(type).block_size;
    for (int64_t blocks : {1, 2, 3, 5, 7, 13}) {
      const int64_t n = block == 1 ? 8 * blocks + 3 : blocks * block;
      for (uint32_t seed = 1; seed <= 4; ++seed) {
        const std::vector<uint8_t> w =
            (seed <= 2 || block == 1)
                ? Quantize(type, RandomValues(static_cast<size_t>(n), seed * 1000 + n))
                : RandomWeightBytes(type, n / block, seed * 7919 + static_cast<uint64_t>(n));
        std::vector<float> a = RandomValues(static_cast<size_t>(n), seed + n, 2.0f);
        for (int64_t i = 0; i < n; i += 37) a[i] = (i % 2) ? 30.0f : -30.0f;
        const std::vector<uint8_t> act = Quantize(VecDotType(type), a);
        const double want = ref(w.data(), act.data(), n);
        const double got = dispatched(w.data(), act.data(), n);
        const double tolerance = 1e-5 * Magnitude(type, w.data(), act.data(), n) + 1e-30;
        Check(std::fabs(got - want) <= tolerance, "dot", type, n, seed, got, want);
      }
    }
  }
}

void CheckQuantisers() {
  for (TensorType type : {TensorType::kQ8_0, TensorType::kQ8_K, TensorType::kQ8_1}) {
    const int64_t block = GetTypeInfo(type).block_size;
    for (int64_t blocks : {1, 3, 4}) {
      const int64_t n = blocks * block;
      for (uint32_t seed = 0; seed < 12; ++seed) {
        std::vector<float> x = RandomValues(static_cast<size_t>(n), seed * 17 + n, 3.0f);
        if (seed % 3 == 1) {  // scale exactly 1: every product a tie
          for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(i % 254) - 126.5f;
          for (int64_t b = 0; b < blocks; ++b) x[b * block + 3] = (seed % 2) ? 127.0f : -127.0f;
        } else if (seed % 3 == 2) {
          std::fill(x.begin(), x.begin() + block, 0.0f);
        }
        std::vector<uint8_t> want(static_cast<size_t>(RowBytes(type, n)), 0xAA);
        std::vector<uint8_t> got(want.size(), 0x55);
        internal::QuantizeRowRef(type, x.data(), want.data(), n);
        QuantizeRow(type, x.data(), got.data(), n);
        Check(want == got, "quantise", type, n, seed, 0, 0);
      }
    }
  }
}

void CheckHalfRows() {
  for (TensorType type : {TensorType::kF16, TensorType::kBF16}) {
    std::vector<uint16_t> all;
    for (uint32_t h = 0; h < 0x10000; ++h) {
      const float f = type == TensorType::kF16 ? Fp16ToFp32(static_cast<uint16_t>(h))
                                               : Bf16ToFp32(static_cast<uint16_t>(h));
      if (!std::isnan(f)) all.push_back(static_cast<uint16_t>(h));
    }
    for (size_t n : {size_t{3}, size_t{9}, all.size()}) {
      std::vector<float> want(n), got(n, -1.0f);
      internal::DequantizeRowRef(type, all.data(), want.data(), static_cast<int64_t>(n));
      DequantizeRow(type, all.data(), got.data(), static_cast<int64_t>(n));
      Check(std::memcmp(want.data(), got.data(), n * sizeof(float)) == 0, "dequantise", type,
            static_cast<int64_t>(n), 0, 0, 0);
    }
  }
}

void CheckMatMul() {
  ThreadPool pool(2);
  for (TensorType type : kTypes) {
    const int64_t block = GetTypeInfo(type).block_size;
    const int64_t rows = 19, cols = block == 1 ? 67 : 3 * block;
    const int64_t row_bytes = RowBytes(type, cols);
    std::vector<uint8_t> w(static_cast<size_t>(rows * row_bytes));
    const std::vector<float> wv = RandomValues(static_cast<size_t>(rows * cols), 3, 0.5f);
    for (int64_t r = 0; r < rows; ++r) {
      QuantizeRow(type, wv.data() + r * cols, w.data() + r * row_bytes, cols);
    }
    for (int64_t n : {1, 5, 9}) {
      const std::vector<float> x = RandomValues(static_cast<size_t>(n * cols), 11 + n);
      std::vector<float> y(static_cast<size_t>(n * rows));
      MatMul(type, w.data(), rows, cols, x.data(), n, y.data(), &pool);
      std::vector<uint8_t> act(static_cast<size_t>(RowBytes(VecDotType(type), cols)));
      for (int64_t t = 0; t < n; ++t) {
        internal::QuantizeRowRef(VecDotType(type), x.data() + t * cols, act.data(), cols);
        for (int64_t r = 0; r < rows; ++r) {
          const float want =
              internal::GetVecDotRef(type)(w.data() + r * row_bytes, act.data(), cols);
          const double tolerance =
              1e-5 * Magnitude(type, w.data() + r * row_bytes, act.data(), cols) + 1e-30;
          Check(std::fabs(y[t * rows + r] - want) <= tolerance, "matmul", type, cols,
                static_cast<uint32_t>(t * 100 + r), y[t * rows + r], want);
        }
      }
    }
  }
}

}  // namespace
}  // namespace exo::kernels

int main() {
  using namespace exo::kernels;
  const char* level = SimdLevelName();
  std::printf("kernels_check: %s kernels\n", level);
  CheckDots();
  CheckQuantisers();
  CheckHalfRows();
  CheckMatMul();
  std::printf("kernels_check: %d checks, %d failures\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
