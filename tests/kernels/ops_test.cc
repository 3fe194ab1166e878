#include "kernels/ops.h"

#include <cmath>
#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/quants.h"
#include "kernels/thread_pool.h"
#include "kernels/types.h"
#include "tests/kernels/test_util.h"

namespace exo::kernels {
namespace {

using testing::RandomValues;

constexpr TensorType kWeightTypes[] = {
    TensorType::kF32,  TensorType::kF16,  TensorType::kBF16, TensorType::kQ4_0,
    TensorType::kQ4_1, TensorType::kQ5_0, TensorType::kQ5_1, TensorType::kQ8_0,
    TensorType::kQ4_K, TensorType::kQ5_K, TensorType::kQ6_K,
};

struct Matrix {
  std::vector<uint8_t> bytes;  // rows * RowBytes(type, cols)
  std::vector<float> dequantized;
};

Matrix MakeMatrix(TensorType type, int64_t rows, int64_t cols, uint32_t seed) {
  const std::vector<float> values = RandomValues(static_cast<size_t>(rows * cols), seed, 0.5f);
  const int64_t row_bytes = RowBytes(type, cols);
  Matrix m;
  m.bytes.resize(static_cast<size_t>(rows * row_bytes));
  m.dequantized.resize(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    QuantizeRow(type, values.data() + r * cols, m.bytes.data() + r * row_bytes, cols);
    DequantizeRow(type, m.bytes.data() + r * row_bytes, m.dequantized.data() + r * cols, cols);
  }
  return m;
}

class MatMulTest : public ::testing::TestWithParam<TensorType> {};

TEST_P(MatMulTest, EqualsPerRowDotAndApproximatesNaiveProduct) {
  const TensorType type = GetParam();
  const int64_t rows = 37, cols = 512;
  const Matrix w = MakeMatrix(type, rows, cols, 17);
  const TensorType act_type = VecDotType(type);
  ThreadPool pool(3);
  for (int64_t n : {1, 3, 20}) {
    const std::vector<float> x = RandomValues(static_cast<size_t>(n * cols), 23 + n);
    for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
      std::vector<float> y(static_cast<size_t>(n * rows), std::nanf(""));
      MatMul(type, w.bytes.data(), rows, cols, x.data(), n, y.data(), p);
      std::vector<uint8_t> act(static_cast<size_t>(RowBytes(act_type, cols)));
      for (int64_t t = 0; t < n; ++t) {
        QuantizeRow(act_type, x.data() + t * cols, act.data(), cols);
        double norm_x = 0.0;
        for (int64_t c = 0; c < cols; ++c)
          norm_x += static_cast<double>(x[t * cols + c]) * x[t * cols + c];
        for (int64_t r = 0; r < rows; ++r) {
          const float got = y[t * rows + r];
          // Same kernel on the same quantised activations: bit-identical, threads or not.
          const float dot =
              VecDot(type, w.bytes.data() + r * RowBytes(type, cols), act.data(), cols);
          ASSERT_EQ(got, dot) << TypeName(type) << " t=" << t << " r=" << r;
          double naive = 0.0, norm_w = 0.0;
          for (int64_t c = 0; c < cols; ++c) {
            const double wv = w.dequantized[r * cols + c];
            naive += wv * x[t * cols + c];
            norm_w += wv * wv;
          }
          // Only the activation quantisation separates them (8 bits, or f16/bf16 rounding).
          const double tolerance = 0.02 * std::sqrt(norm_w * norm_x);
          ASSERT_NEAR(got, naive, tolerance) << TypeName(type) << " t=" << t << " r=" << r;
        }
      }
    }
  }
}

TEST_P(MatMulTest, GetRowDequantizesOneRow) {
  const TensorType type = GetParam();
  const int64_t rows = 5, cols = 256;
  const Matrix w = MakeMatrix(type, rows, cols, 3);
  std::vector<float> row(cols);
  for (int64_t r = 0; r < rows; ++r) {
    GetRow(type, w.bytes.data(), cols, r, row.data());
    for (int64_t c = 0; c < cols; ++c) ASSERT_EQ(row[c], w.dequantized[r * cols + c]);
  }
}

INSTANTIATE_TEST_SUITE_P(AllWeightTypes, MatMulTest, ::testing::ValuesIn(kWeightTypes),
                         [](const ::testing::TestParamInfo<TensorType>& info) {
                           return std::string(TypeName(info.param));
                         });

TEST(MatMul, LargeMatrixWithPoolMatchesSingleThread) {
  // Big enough that the pool really splits rows (the small cases may run inline).
  const TensorType type = TensorType::kQ4_K;
  const int64_t rows = 1000, cols = 1024, n = 2;
  const Matrix w = MakeMatrix(type, rows, cols, 9);
  const std::vector<float> x = RandomValues(static_cast<size_t>(n * cols), 10);
  std::vector<float> single(n * rows), multi(n * rows);
  MatMul(type, w.bytes.data(), rows, cols, x.data(), n, single.data(), nullptr);
  ThreadPool pool(4);
  MatMul(type, w.bytes.data(), rows, cols, x.data(), n, multi.data(), &pool);
  EXPECT_EQ(single, multi);
}

TEST(MatMul, ManyTokensQuantisedInParallelMatchSingleThread) {
  // Enough tokens that the activation quantisation is split across the pool too.
  const TensorType type = TensorType::kQ8_0;
  const int64_t rows = 40, cols = 512, n = 160;
  const Matrix w = MakeMatrix(type, rows, cols, 31);
  const std::vector<float> x = RandomValues(static_cast<size_t>(n * cols), 32);
  std::vector<float> single(n * rows), multi(n * rows);
  MatMul(type, w.bytes.data(), rows, cols, x.data(), n, single.data(), nullptr);
  ThreadPool pool(3);
  MatMul(type, w.bytes.data(), rows, cols, x.data(), n, multi.data(), &pool);
  EXPECT_EQ(single, multi);
  // Spot-check against the per-row dot product.
  std::vector<uint8_t> act(static_cast<size_t>(RowBytes(TensorType::kQ8_0, cols)));
  QuantizeRow(TensorType::kQ8_0, x.data() + 150 * cols, act.data(), cols);
  EXPECT_EQ(multi[150 * rows + 7],
            VecDot(type, w.bytes.data() + 7 * RowBytes(type, cols), act.data(), cols));
}

TEST(RmsNorm, MatchesDoubleReference) {
  const int64_t n = 1000;
  const std::vector<float> x = RandomValues(n, 1, 3.0f);
  const std::vector<float> w = RandomValues(n, 2);
  const float eps = 1e-6f;
  double mean_sq = 0.0;
  for (float v : x) mean_sq += static_cast<double>(v) * v;
  mean_sq /= n;
  const double scale = 1.0 / std::sqrt(mean_sq + eps);
  std::vector<float> y(n);
  RmsNorm(x.data(), w.data(), y.data(), n, eps);
  for (int64_t i = 0; i < n; ++i) {
    const double expected = x[i] * scale * w[i];
    ASSERT_NEAR(y[i], expected, 1e-5 * std::fabs(expected) + 1e-7) << i;
  }
  RmsNorm(x.data(), nullptr, y.data(), n, eps);
  for (int64_t i = 0; i < n; ++i)
    ASSERT_NEAR(y[i], x[i] * scale, 1e-5 * std::fabs(x[i] * scale) + 1e-7);
  // In place.
  std::vector<float> z = x;
  RmsNorm(z.data(), w.data(), z.data(), n, eps);
  for (int64_t i = 0; i < n; ++i)
    ASSERT_NEAR(z[i], x[i] * scale * w[i], 1e-5 * std::fabs(x[i] * scale * w[i]) + 1e-7);
}

TEST(RmsNorm, EpsilonDominatesForZeroInput) {
  std::vector<float> x(16, 0.0f), y(16, 1.0f);
  RmsNorm(x.data(), nullptr, y.data(), 16, 1e-5f);
  for (float v : y) EXPECT_EQ(v, 0.0f);
}

std::vector<double> RopeReference(const std::vector<float>& head, int64_t rot_dim, int64_t pos,
                                  double base, double freq_scale, RopeStyle style) {
  std::vector<double> out(head.begin(), head.end());
  const int64_t half = rot_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const double theta = pos * freq_scale * std::pow(base, -2.0 * i / rot_dim);
    const int64_t a = style == RopeStyle::kNormal ? 2 * i : i;
    const int64_t b = style == RopeStyle::kNormal ? 2 * i + 1 : i + half;
    out[a] = head[a] * std::cos(theta) - head[b] * std::sin(theta);
    out[b] = head[a] * std::sin(theta) + head[b] * std::cos(theta);
  }
  return out;
}

TEST(Rope, MatchesDoubleReference) {
  const int64_t head_dim = 64;
  for (RopeStyle style : {RopeStyle::kNormal, RopeStyle::kNeox}) {
    for (int64_t rot_dim : {64, 32}) {
      for (int64_t pos : {0, 1, 7, 100, 1000}) {
        for (float freq_scale : {1.0f, 0.25f}) {
          const std::vector<float> head = RandomValues(head_dim, 5 + static_cast<uint32_t>(pos));
          std::vector<float> got = head;
          Rope(got.data(), head_dim, rot_dim, pos, 10000.0f, freq_scale, style);
          const std::vector<double> expected =
              RopeReference(head, rot_dim, pos, 10000.0, freq_scale, style);
          // f32 angles: error grows with the angle (ggml computes them the same way).
          const double tolerance = 2e-6 * (1.0 + pos * freq_scale);
          for (int64_t i = 0; i < head_dim; ++i) {
            ASSERT_NEAR(got[i], expected[i], tolerance)
                << "style " << static_cast<int>(style) << " rot " << rot_dim << " pos " << pos
                << " i " << i;
          }
          for (int64_t i = rot_dim; i < head_dim; ++i) ASSERT_EQ(got[i], head[i]);
          if (pos == 0) {
            EXPECT_EQ(got, head);
          }
        }
      }
    }
  }
}

TEST(Rope, PairsDifferBetweenStyles) {
  const int64_t head_dim = 8;
  std::vector<float> normal(head_dim, 0.0f), neox(head_dim, 0.0f);
  normal[0] = neox[0] = 1.0f;
  Rope(normal.data(), head_dim, head_dim, 1, 10000.0f, 1.0f, RopeStyle::kNormal);
  Rope(neox.data(), head_dim, head_dim, 1, 10000.0f, 1.0f, RopeStyle::kNeox);
  // Dimension 0 rotates with 1 in kNormal and with head_dim / 2 in kNeox, by theta_0 = 1 rad.
  EXPECT_NEAR(normal[0], std::cos(1.0), 1e-6);
  EXPECT_NEAR(normal[1], std::sin(1.0), 1e-6);
  EXPECT_EQ(normal[4], 0.0f);
  EXPECT_NEAR(neox[0], std::cos(1.0), 1e-6);
  EXPECT_NEAR(neox[4], std::sin(1.0), 1e-6);
  EXPECT_EQ(neox[1], 0.0f);
}

TEST(Softmax, MatchesDoubleReference) {
  for (int64_t n : {1, 5, 1000}) {
    std::vector<float> x = RandomValues(n, 8 + static_cast<uint32_t>(n), 4.0f);
    const std::vector<float> original = x;
    Softmax(x.data(), n);
    double max = original[0];
    for (float v : original) max = std::max<double>(max, v);
    double sum = 0.0;
    for (float v : original) sum += std::exp(v - max);
    double total = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      const double expected = std::exp(original[i] - max) / sum;
      ASSERT_NEAR(x[i], expected, 1e-6 * expected + 1e-9) << i;
      total += x[i];
    }
    EXPECT_NEAR(total, 1.0, 1e-5);
  }
}

TEST(Softmax, StableForLargeInputs) {
  std::vector<float> x = {1000.0f, 1001.0f, -1e30f};
  Softmax(x.data(), 3);
  EXPECT_NEAR(x[0], 1.0 / (1.0 + std::exp(1.0)), 1e-6);
  EXPECT_NEAR(x[1], std::exp(1.0) / (1.0 + std::exp(1.0)), 1e-6);
  EXPECT_EQ(x[2], 0.0f);
}

TEST(Activations, SiluMulMatchesDoubleReference) {
  std::vector<float> x = RandomValues(500, 12, 4.0f);
  x.push_back(-100.0f);
  x.push_back(100.0f);
  x.push_back(0.0f);
  const std::vector<float> g = RandomValues(x.size(), 13);
  std::vector<float> y = x;
  SiluMul(y.data(), g.data(), static_cast<int64_t>(y.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    const double v = x[i];
    const double expected = v / (1.0 + std::exp(-v)) * g[i];
    ASSERT_NEAR(y[i], expected, 1e-6 * std::fabs(expected) + 1e-7) << "x=" << v;
  }
}

TEST(Activations, GeluTanhMulMatchesDoubleReference) {
  std::vector<float> x = RandomValues(500, 14, 3.0f);
  x.push_back(-20.0f);
  x.push_back(20.0f);
  const std::vector<float> g = RandomValues(x.size(), 15);
  std::vector<float> y = x;
  GeluTanhMul(y.data(), g.data(), static_cast<int64_t>(y.size()));
  const double k = std::sqrt(2.0 / M_PI);
  for (size_t i = 0; i < x.size(); ++i) {
    const double v = x[i];
    const double gelu = 0.5 * v * (1.0 + std::tanh(k * (v + 0.044715 * v * v * v)));
    ASSERT_NEAR(y[i], gelu * g[i], 2e-6 * std::fabs(gelu * g[i]) + 1e-7) << "x=" << v;
  }
  // Known values of the tanh approximation.
  std::vector<float> known = {0.0f, 1.0f, -1.0f};
  const std::vector<float> ones(3, 1.0f);
  GeluTanhMul(known.data(), ones.data(), 3);
  EXPECT_EQ(known[0], 0.0f);
  EXPECT_NEAR(known[1], 0.8411920, 1e-6);
  EXPECT_NEAR(known[2], -0.1588080, 1e-6);
}

TEST(Add, AddsElementwise) {
  std::vector<float> y = {1.0f, -2.0f, 3.5f};
  const std::vector<float> x = {0.5f, 2.0f, -1.0f};
  Add(y.data(), x.data(), 3);
  EXPECT_EQ(y, (std::vector<float>{1.5f, 0.0f, 2.5f}));
}

}  // namespace
}  // namespace exo::kernels
