#include "kernels/attention.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/internal/fp16.h"
#include "tests/kernels/test_util.h"

namespace exo::kernels {
namespace {

using testing::RandomValues;

// Keys, values and queries of one kv head. The keys and values are rounded to f16 (as the cache
// holds them) and kept row-major for the plain reference below, and also laid out as AttendHeads
// reads them: keys in blocks of 16 rows, values in rows of a padded stride, both in a ring of
// `rows` rows that position 0 enters at `first_row` (so the positions may wrap around its end).
// Every other entry holds NaN, so a kernel that reads a row or element it should not poisons its
// output.
struct Problem {
  int32_t heads, hd, hdv, n, rows, first_row;
  int64_t ld_values;
  std::vector<float> q, keys, values;
  std::vector<uint16_t> key_blocks, value_rows;

  Problem(int32_t heads_, int32_t hd_, int32_t hdv_, int32_t n_, uint32_t seed, bool rising = false,
          int32_t first_row_ = 0, int32_t spare_rows = 16)
      : heads(heads_), hd(hd_), hdv(hdv_), n(n_), ld_values(hdv_ + 3) {
    rows = (n + spare_rows + kKeyBlockRows - 1) / kKeyBlockRows * kKeyBlockRows;
    first_row = first_row_ % rows;
    q = RandomValues(size_t(heads) * hd, seed, 1.0f);
    keys = RandomValues(size_t(n) * hd, seed + 1, 1.0f);
    if (rising) {  // later keys align more with every query: the running maximum keeps moving
      for (int32_t p = 0; p < n; ++p) {
        for (int32_t i = 0; i < hd; ++i) keys[size_t(p) * hd + i] += 0.05f * p * q[i];
      }
    }
    values = RandomValues(size_t(n) * hdv, seed + 2, 1.0f);
    for (float& x : keys) x = internal::HalfToFloat(internal::FloatToHalf(x));
    for (float& x : values) x = internal::HalfToFloat(internal::FloatToHalf(x));
    constexpr uint16_t kNan = 0x7E00;
    key_blocks.assign(size_t(rows) * hd, kNan);
    value_rows.assign(size_t(rows) * ld_values, kNan);
    for (int32_t p = 0; p < n; ++p) {
      const int32_t r = (first_row + p) % rows;
      for (int32_t i = 0; i < hd; ++i) {
        key_blocks[(size_t(r / kKeyBlockRows) * hd + i) * kKeyBlockRows + r % kKeyBlockRows] =
            internal::FloatToHalf(keys[size_t(p) * hd + i]);
      }
      for (int32_t i = 0; i < hdv; ++i) {
        value_rows[r * ld_values + i] = internal::FloatToHalf(values[size_t(p) * hdv + i]);
      }
    }
  }

  AttentionKeys view() const {
    return {key_blocks.data(), value_rows.data(), ld_values, first_row, rows, n};
  }
};

// The arithmetic AttendHeads promises, written as plainly as possible: an in-order dot product per
// position and an online softmax step per position.
std::vector<float> PlainAttention(const Problem& pr, float scale) {
  std::vector<float> out(size_t(pr.heads) * pr.hdv);
  for (int32_t h = 0; h < pr.heads; ++h) {
    std::vector<float> acc(pr.hdv, 0.0f);
    float running_max = -std::numeric_limits<float>::infinity();
    float running_sum = 0.0f;
    for (int32_t p = 0; p < pr.n; ++p) {
      float dot = 0.0f;
      for (int32_t i = 0; i < pr.hd; ++i) {
        const float product = pr.q[size_t(h) * pr.hd + i] * pr.keys[size_t(p) * pr.hd + i];
        dot += product;
      }
      const float score = dot * scale;
      if (score > running_max) {
        const float rescale = std::exp(running_max - score);
        running_sum *= rescale;
        for (float& a : acc) a *= rescale;
        running_max = score;
      }
      const float weight = std::exp(score - running_max);
      running_sum += weight;
      const float* value = &pr.values[size_t(p) * pr.hdv];
      for (int32_t i = 0; i < pr.hdv; ++i) {
        const float product = weight * value[i];
        acc[i] += product;
      }
    }
    const float inv = 1.0f / running_sum;
    for (int32_t i = 0; i < pr.hdv; ++i) out[size_t(h) * pr.hdv + i] = acc[i] * inv;
  }
  return out;
}

void ExpectSameBits(const std::vector<float>& a, const std::vector<float>& b, const char* what) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_TRUE(testing::SameBits(a[i], b[i]))
        << what << ": element " << i << " " << a[i] << " vs " << b[i];
  }
}

using AttendFn = bool (*)(const float*, int32_t, int32_t, const AttentionKeys&, int32_t, float,
                          float*);

bool Ref(const float* q, int32_t heads, int32_t hd, const AttentionKeys& k, int32_t hdv,
         float scale, float* out) {
  internal::AttendHeadsRef(q, heads, hd, k, hdv, scale, out);
  return true;
}

struct Level {
  const char* name;
  AttendFn fn;
};
const Level kLevels[] = {
    {"scalar", Ref}, {"avx2", internal::AttendHeadsAvx2}, {"avx512", internal::AttendHeadsAvx512}};

TEST(AttentionTest, EveryLevelMatchesThePlainArithmeticBitForBit) {
  int checked = 0;
  for (int32_t heads : {1, 2, 3, 4, 5, 8}) {
    for (int32_t hd : {1, 7, 64, 256}) {
      for (int32_t hdv : {1, 17, 64, 130, 256}) {
        for (int32_t n : {1, 7, 8, 15, 16, 17, 63, 64, 65, 129}) {
          for (bool rising : {false, true}) {
            // Where position 0 sits in the ring: at a block start, mid-block, or so close to the
            // end that the positions wrap around (rotating through the cases).
            const int32_t offsets[] = {0, 5, 16, n + 16 - 3};
            const int32_t first_row = offsets[(heads + hd + hdv + n + rising) % 4];
            const Problem pr(heads, hd, hdv, n, static_cast<uint32_t>(heads * 1000 + hd + n),
                             rising, first_row);
            const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
            const std::vector<float> want = PlainAttention(pr, scale);
            for (const Level& level : kLevels) {
              std::vector<float> got(want.size(), -1.0f);
              if (!level.fn(pr.q.data(), heads, hd, pr.view(), hdv, scale, got.data())) continue;
              ExpectSameBits(got, want, level.name);
              ++checked;
            }
          }
        }
      }
    }
  }
  EXPECT_GE(checked, 6 * 4 * 5 * 10 * 2);  // at least the scalar level ran every case
}

// Every start row of a ring, for long and short runs: the score kernels take whole groups of
// blocks inside a run and single partial blocks at its edges and at the wrap.
TEST(AttentionTest, PositionsWrappingAroundTheRingKeepTheirOrder) {
  int checked = 0;
  for (int32_t n : {1, 16, 33, 70, 150}) {
    for (int32_t spare : {0, 9, 40}) {
      const int32_t rows = (n + spare + kKeyBlockRows - 1) / kKeyBlockRows * kKeyBlockRows;
      for (int32_t first_row = 0; first_row < rows; first_row += (n > 40 ? 3 : 1)) {
        const Problem pr(4, 32, 40, n, static_cast<uint32_t>(n * 7 + spare), /*rising=*/true,
                         first_row, spare);
        const std::vector<float> want = PlainAttention(pr, 0.2f);
        for (const Level& level : kLevels) {
          std::vector<float> got(want.size(), -1.0f);
          if (!level.fn(pr.q.data(), 4, 32, pr.view(), 40, 0.2f, got.data())) continue;
          ExpectSameBits(got, want, level.name);
          ++checked;
        }
      }
    }
  }
  EXPECT_GT(checked, 100);
}

TEST(AttentionTest, PublicEntryPointMatchesTheReference) {
  const Problem pr(4, 256, 256, 300, 7, /*rising=*/true);
  std::vector<float> want(size_t(4) * 256), got(want.size());
  internal::AttendHeadsRef(pr.q.data(), 4, 256, pr.view(), 256, 0.0625f, want.data());
  AttendHeads(pr.q.data(), 4, 256, pr.view(), 256, 0.0625f, got.data());
  ExpectSameBits(got, want, "AttendHeads");
}

TEST(AttentionTest, CloseToSoftmaxInDoublePrecision) {
  const Problem pr(3, 64, 48, 97, 11, /*rising=*/true);
  const float scale = 0.125f;
  std::vector<float> got(size_t(3) * 48);
  AttendHeads(pr.q.data(), 3, 64, pr.view(), 48, scale, got.data());
  for (int32_t h = 0; h < 3; ++h) {
    std::vector<double> s(pr.n);
    double max = -1e300;
    for (int32_t p = 0; p < pr.n; ++p) {
      double dot = 0;
      for (int32_t i = 0; i < 64; ++i) dot += double(pr.q[h * 64 + i]) * pr.keys[p * 64 + i];
      s[p] = dot * scale;
      max = std::max(max, s[p]);
    }
    double sum = 0;
    for (double& x : s) sum += (x = std::exp(x - max));
    for (int32_t i = 0; i < 48; ++i) {
      double want = 0, magnitude = 0;
      for (int32_t p = 0; p < pr.n; ++p) {
        want += s[p] / sum * pr.values[size_t(p) * 48 + i];
        magnitude += std::fabs(s[p] / sum * pr.values[size_t(p) * 48 + i]);
      }
      EXPECT_NEAR(got[h * 48 + i], want, 1e-5 * magnitude + 1e-7) << "head " << h << " dim " << i;
    }
  }
}

TEST(AttentionTest, OnePositionGivesItsValueExactly) {
  const Problem pr(2, 16, 33, 1, 5);
  std::vector<float> got(size_t(2) * 33);
  AttendHeads(pr.q.data(), 2, 16, pr.view(), 33, 0.25f, got.data());
  for (int32_t h = 0; h < 2; ++h) {
    for (int32_t i = 0; i < 33; ++i) EXPECT_EQ(got[h * 33 + i], pr.values[i]);
  }
}

TEST(AttentionTest, NoPositionsGiveZeros) {
  const Problem pr(2, 16, 8, 0, 5);
  std::vector<float> got(16, 1.0f);
  AttendHeads(pr.q.data(), 2, 16, pr.view(), 8, 0.25f, got.data());
  for (float x : got) EXPECT_EQ(x, 0.0f);
}

}  // namespace
}  // namespace exo::kernels
