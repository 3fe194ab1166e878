// Kernel micro-benchmark: MatMul on the weight shapes of one gemma-3-270m layer (Q4_K_M mix), for
// a prompt batch (--tokens, default 512) and for decode (1 token), plus the Q8_0 output head at
// decode. Prints the best-of-N time per shape and the implied multiply-adds per second, so that
// kernel changes can be compared without the rest of the runtime (attention, norms) in the way.
//   kernels_bench [--threads N] [--tokens N] [--reps N] [--type NAME]
// --type Q5_K (any supported type name) gives every layer shape that weight type instead of the
// Q4_K_M mix, for kernels no local model file exercises.
// EXO_SIMD=scalar|avx2|avx512 forces a kernel level (see docs/kernels.md).
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "kernels/internal/quants_impl.h"
#include "kernels/ops.h"
#include "kernels/quants.h"
#include "kernels/thread_pool.h"
#include "kernels/types.h"

namespace {

using exo::kernels::TensorType;

struct Shape {
  const char* name;
  TensorType type;
  int64_t rows;
  int64_t cols;
};

constexpr Shape kLayer[] = {
    {"attn_q", TensorType::kQ5_0, 1024, 640},   {"attn_k", TensorType::kQ5_0, 256, 640},
    {"attn_v", TensorType::kQ8_0, 256, 640},    {"attn_out", TensorType::kQ4_K, 640, 1024},
    {"ffn_gate", TensorType::kQ5_0, 2048, 640}, {"ffn_up", TensorType::kQ5_0, 2048, 640},
    {"ffn_down", TensorType::kQ6_K, 640, 2048},
};

std::vector<uint8_t> RandomWeights(TensorType type, int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 0.05f);
  std::vector<float> row(static_cast<size_t>(cols));
  const int64_t row_bytes = exo::kernels::RowBytes(type, cols);
  std::vector<uint8_t> out(static_cast<size_t>(rows * row_bytes));
  for (int64_t r = 0; r < rows; ++r) {
    for (float& v : row) v = dist(rng);
    exo::kernels::QuantizeRow(type, row.data(), out.data() + r * row_bytes, cols);
  }
  return out;
}

// CPU time of the calling thread: with --threads 1 every kernel runs on it, and time spent
// descheduled (a busy shared machine) does not count.
double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

bool g_cpu_time = false;

double BestSeconds(int reps, const std::function<void()>& fn) {
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    const auto start = std::chrono::steady_clock::now();
    const double cpu_start = ThreadCpuSeconds();
    fn();
    const double wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::min(best, g_cpu_time ? ThreadCpuSeconds() - cpu_start : wall);
  }
  return best;
}

}  // namespace

// The supported type named `name` ("Q5_K"), or false.
bool ParseType(const std::string& name, TensorType* type) {
  for (uint32_t id = 0; id < 64; ++id) {
    const exo::kernels::TypeInfo* info = exo::kernels::FindTypeInfo(id);
    if (info != nullptr && info->supported && name == info->name) {
      *type = static_cast<TensorType>(id);
      return true;
    }
  }
  return false;
}

int main(int argc, char** argv) {
  int threads = 0, tokens = 512, reps = 5;
  bool one_type = false;
  TensorType layer_type = TensorType::kF32;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const int value = std::atoi(argv[i + 1]);
    if (flag == "--type") {
      one_type = ParseType(argv[i + 1], &layer_type);
      if (!one_type) {
        std::fprintf(stderr, "kernels_bench: unknown or unsupported type %s\n", argv[i + 1]);
        return 2;
      }
    } else if (flag == "--threads") {
      threads = value;
    } else if (flag == "--tokens") {
      tokens = value;
    } else if (flag == "--reps") {
      reps = value;
    } else {
      std::fprintf(stderr,
                   "usage: kernels_bench [--threads N] [--tokens N] [--reps N] [--type NAME]\n");
      return 2;
    }
  }
  if (tokens < 1 || reps < 1 || threads < 0) {
    std::fprintf(stderr, "kernels_bench: --tokens and --reps must be positive\n");
    return 2;
  }
  exo::kernels::ThreadPool pool(threads);
  g_cpu_time = pool.num_threads() == 1;
  const char* level = exo::kernels::SimdLevelName();
  std::printf("kernels_bench: %d threads, %s kernels, best of %d, %s\n", pool.num_threads(), level,
              reps, g_cpu_time ? "thread CPU time" : "wall time");
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  double layer_pp = 0, layer_tg = 0;
  for (Shape s : kLayer) {
    if (one_type) s.type = layer_type;
    const std::vector<uint8_t> w = RandomWeights(s.type, s.rows, s.cols, 1);
    std::vector<float> x(static_cast<size_t>(tokens * s.cols));
    for (float& v : x) v = dist(rng);
    std::vector<float> y(static_cast<size_t>(tokens * s.rows));
    const double pp = BestSeconds(reps, [&] {
      exo::kernels::MatMul(s.type, w.data(), s.rows, s.cols, x.data(), tokens, y.data(), &pool);
    });
    const double tg = BestSeconds(reps * 20, [&] {
      exo::kernels::MatMul(s.type, w.data(), s.rows, s.cols, x.data(), 1, y.data(), &pool);
    });
    layer_pp += pp;
    layer_tg += tg;
    std::printf(
        "  %-9s %-5s %5lldx%-5lld  pp%d %8.3f ms (%6.1f GMAC/s)   tg %7.1f us (%5.1f GB/s)\n",
        s.name, exo::kernels::TypeName(s.type), static_cast<long long>(s.rows),
        static_cast<long long>(s.cols), tokens, pp * 1e3, s.rows * s.cols * tokens / pp / 1e9,
        tg * 1e6, w.size() / tg / 1e9);
  }
  std::printf("  one layer: pp%d %.3f ms (%.0f tok/s for 18 layers of matmuls), tg %.1f us\n",
              tokens, layer_pp * 1e3, tokens / (18 * layer_pp), layer_tg * 1e6);
  // The tied Q8_0 output head: the largest single read of a decode step.
  const Shape head = {"output", TensorType::kQ8_0, 262144, 640};
  const std::vector<uint8_t> w = RandomWeights(head.type, head.rows, head.cols, 2);
  std::vector<float> x(static_cast<size_t>(head.cols), 0.5f), y(static_cast<size_t>(head.rows));
  const double tg = BestSeconds(reps, [&] {
    exo::kernels::MatMul(head.type, w.data(), head.rows, head.cols, x.data(), 1, y.data(), &pool);
  });
  std::printf("  output head Q8_0 262144x640 decode: %.2f ms (%.1f GB/s)\n", tg * 1e3,
              w.size() / tg / 1e9);
  return 0;
}
