#include "kernels/attention.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "gtest/gtest.h"
#include "tests/kernels/test_util.h"

namespace exo::kernels {
namespace {

using testing::RandomValues;

// Keys, values and queries of one kv head, with the keys both row-major (for the plain reference
// below) and transposed with a padded stride (as AttendHeads reads them). Padding holds NaN, so a
// kernel that reads past n_keys poisons its output.
struct Problem {
  int32_t heads, hd, hdv, n;
  int64_t ld_keys, ld_values;
  std::vector<float> q, keys, keys_t, values;

  Problem(int32_t heads_, int32_t hd_, int32_t hdv_, int32_t n_, uint32_t seed, bool rising = false)
      : heads(heads_), hd(hd_), hdv(hdv_), n(n_), ld_keys(n_ + 5), ld_values(hdv_ + 3) {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    q = RandomValues(size_t(heads) * hd, seed, 1.0f);
    keys = RandomValues(size_t(n) * hd, seed + 1, 1.0f);
    if (rising) {  // later keys align more with every query: the running maximum keeps moving
      for (int32_t p = 0; p < n; ++p) {
        for (int32_t i = 0; i < hd; ++i) keys[size_t(p) * hd + i] += 0.05f * p * q[i];
      }
    }
    keys_t.assign(size_t(hd) * ld_keys, nan);
    for (int32_t p = 0; p < n; ++p) {
      for (int32_t i = 0; i < hd; ++i) keys_t[i * ld_keys + p] = keys[size_t(p) * hd + i];
    }
    const std::vector<float> v = RandomValues(size_t(n) * hdv, seed + 2, 1.0f);
    values.assign(size_t(n) * ld_values, nan);
    for (int32_t p = 0; p < n; ++p) {
      std::memcpy(&values[p * ld_values], &v[size_t(p) * hdv], sizeof(float) * hdv);
    }
  }

  AttentionKeys view() const { return {keys_t.data(), ld_keys, values.data(), ld_values, n}; }
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
      const float* value = &pr.values[p * pr.ld_values];
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
            const Problem pr(heads, hd, hdv, n, static_cast<uint32_t>(heads * 1000 + hd + n),
                             rising);
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
        want += s[p] / sum * pr.values[p * pr.ld_values + i];
        magnitude += std::fabs(s[p] / sum * pr.values[p * pr.ld_values + i]);
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
