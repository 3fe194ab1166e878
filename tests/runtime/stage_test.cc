// The layer-range executor against the independent double-precision reference forward pass
// (tests/runtime/synthetic_model_testlib.h), on tiny synthetic models of every architecture.
#include "runtime/stage.h"

#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/thread_pool.h"
#include "runtime/gguf.h"
#include "synthetic_model_testlib.h"

namespace exo::runtime {
namespace {

using synthetic::LogitsNear;
using synthetic::ReferenceForward;
using synthetic::SyntheticModelOptions;
using synthetic::WriteSyntheticModel;

// f32 weights; the KV cache is f16 (as llama.cpp's), which bounds agreement at about 1e-3.
constexpr double kF32Tolerance = 3e-3;
// Quantised weights: activations are quantised to 8 bits before the integer dot products (as
// llama.cpp does). Measured worst cases on these models: Q8_0 1.6e-2, Q5_0 2.3e-2, Q6_K 1.7e-2,
// Q4_K 1.7e-3 of the largest |logit|. The f32 cases check the maths tightly; these check that
// every weight type is wired through the kernels.
constexpr double kQuantizedTolerance = 3e-2;

const std::vector<int32_t> kTokens = {1, 17, 42, 5, 9, 33, 60, 2, 11, 70, 3, 44};

struct Model {
  std::unique_ptr<GgufFile> file;
  std::string path;
};

// A file name of this test's own: ctest runs tests in parallel processes, and rewriting a file
// another process has mapped would crash it.
std::string UniquePath(const std::string& name) {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string test = std::string(info->test_suite_name()) + "." + info->name();
  for (char& c : test) {
    if (c == '/') c = '_';
  }
  return ::testing::TempDir() + "/" + test + "." + std::to_string(getpid()) + "." + name + ".gguf";
}

Model Write(const SyntheticModelOptions& options, const std::string& name) {
  Model m;
  absl::StatusOr<std::string> path = WriteSyntheticModel(options, UniquePath(name));
  EXPECT_TRUE(path.ok()) << path.status();
  m.path = *path;
  absl::StatusOr<std::unique_ptr<GgufFile>> file = GgufFile::Open(m.path);
  EXPECT_TRUE(file.ok()) << file.status();
  m.file = std::move(*file);
  return m;
}

StageOptions WholeModel(const GgufFile& file, int32_t max_batch = 64) {
  StageOptions o;
  o.layers = {0, static_cast<int32_t>(
                     *file.GetInt(*file.GetString("general.architecture") + ".block_count"))};
  o.context = 64;
  o.max_batch_tokens = max_batch;
  o.max_logit_rows = max_batch;
  return o;
}

// Runs `tokens` through `stage` in batches of `batch`, collecting logits for every position.
std::vector<std::vector<float>> RunAll(Stage& stage, const std::vector<int32_t>& tokens,
                                       int32_t batch, int32_t first_position = 0) {
  std::vector<std::vector<float>> logits;
  const int32_t vocab = stage.config().n_vocab;
  for (size_t start = 0; start < tokens.size(); start += batch) {
    const size_t n = std::min<size_t>(batch, tokens.size() - start);
    StageInput in;
    in.first_position = first_position + static_cast<int32_t>(start);
    in.tokens = absl::MakeConstSpan(tokens).subspan(start, n);
    absl::StatusOr<absl::Span<const float>> out = stage.Forward(in, LogitsMode::kAll);
    EXPECT_TRUE(out.ok()) << out.status();
    if (!out.ok()) return {};
    for (size_t r = 0; r < n; ++r) {
      logits.emplace_back(out->begin() + r * vocab, out->begin() + (r + 1) * vocab);
    }
  }
  return logits;
}

struct ArchCase {
  std::string arch;
  kernels::TensorType type;
  int n_embd;
  int n_ff;
  int head_dim;
  double tolerance;
};

void PrintTo(const ArchCase& c, std::ostream* os) {
  *os << c.arch << " with " << kernels::TypeName(c.type) << " weights";
}

std::string CaseName(const ::testing::TestParamInfo<ArchCase>& info) {
  return info.param.arch + "_" + kernels::TypeName(info.param.type);
}

class StageMatchesReference : public ::testing::TestWithParam<ArchCase> {
 protected:
  SyntheticModelOptions Options() const {
    SyntheticModelOptions o;
    o.arch = GetParam().arch;
    o.weight_type = GetParam().type;
    o.n_embd = GetParam().n_embd;
    o.n_ff = GetParam().n_ff;
    o.head_dim = GetParam().head_dim;
    o.n_layer = o.arch == "gemma3" ? 6 : 3;  // gemma3: layers 0-4 slide, layer 5 is global
    o.sliding_window = 4;
    return o;
  }
};

TEST_P(StageMatchesReference, PrefillInOneBatch) {
  Model m = Write(Options(), "prefill");
  auto stage = Stage::Create(*m.file, WholeModel(*m.file));
  ASSERT_TRUE(stage.ok()) << stage.status();
  EXPECT_TRUE(LogitsNear(ReferenceForward(m.path, kTokens), RunAll(**stage, kTokens, 64),
                         GetParam().tolerance));
}

TEST_P(StageMatchesReference, TokenByTokenDecode) {
  Model m = Write(Options(), "decode");
  // A batch of one also shrinks the sliding-window ring to window rows: it must wrap correctly.
  auto stage = Stage::Create(*m.file, WholeModel(*m.file, /*max_batch=*/1));
  ASSERT_TRUE(stage.ok()) << stage.status();
  EXPECT_TRUE(LogitsNear(ReferenceForward(m.path, kTokens), RunAll(**stage, kTokens, 1),
                         GetParam().tolerance));
}

TEST_P(StageMatchesReference, OddBatches) {
  Model m = Write(Options(), "odd");
  auto stage = Stage::Create(*m.file, WholeModel(*m.file, /*max_batch=*/5));
  ASSERT_TRUE(stage.ok()) << stage.status();
  EXPECT_TRUE(LogitsNear(ReferenceForward(m.path, kTokens), RunAll(**stage, kTokens, 5),
                         GetParam().tolerance));
}

TEST_P(StageMatchesReference, TwoStagePipelineEqualsWholeModel) {
  SyntheticModelOptions options = Options();
  Model m = Write(options, "split");
  StageOptions first = WholeModel(*m.file);
  first.layers.end = 2;
  first.has_head = false;
  StageOptions second = WholeModel(*m.file);
  second.layers.begin = 2;
  second.has_embedding = false;
  auto a = Stage::Create(*m.file, first);
  auto b = Stage::Create(*m.file, second);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  StageInput in;
  in.tokens = kTokens;
  auto hidden = (*a)->Forward(in, LogitsMode::kAll);
  ASSERT_TRUE(hidden.ok()) << hidden.status();
  ASSERT_EQ(hidden->size(), kTokens.size() * (*a)->config().n_embd);
  StageInput next;
  next.hidden = *hidden;
  auto logits = (*b)->Forward(next, LogitsMode::kAll);
  ASSERT_TRUE(logits.ok()) << logits.status();
  // Against the same model run whole: the split must not change a single bit.
  auto whole = Stage::Create(*m.file, WholeModel(*m.file));
  ASSERT_TRUE(whole.ok());
  auto expected = (*whole)->Forward(in, LogitsMode::kAll);
  ASSERT_TRUE(expected.ok());
  EXPECT_EQ(std::vector<float>(logits->begin(), logits->end()),
            std::vector<float>(expected->begin(), expected->end()));
}

TEST_P(StageMatchesReference, RollBackAndContinueDifferently) {
  Model m = Write(Options(), "rollback");
  auto stage = Stage::Create(*m.file, WholeModel(*m.file, /*max_batch=*/4));
  ASSERT_TRUE(stage.ok()) << stage.status();
  RunAll(**stage, std::vector<int32_t>(kTokens.begin(), kTokens.begin() + 8), 4);
  // Replace the last two tokens: positions 6 and 7 are recomputed from the cache at 6.
  std::vector<int32_t> changed(kTokens.begin(), kTokens.begin() + 8);
  changed[6] = 50;
  changed[7] = 51;
  std::vector<std::vector<float>> tail =
      RunAll(**stage, std::vector<int32_t>(changed.begin() + 6, changed.end()), 4, 6);
  std::vector<std::vector<double>> expected = ReferenceForward(m.path, changed);
  ASSERT_EQ(expected.size(), 8u);
  EXPECT_TRUE(LogitsNear({expected[6], expected[7]}, tail, GetParam().tolerance));
}

// Several sequences in one ForwardBatch: each sequence's rows must come out bit-identical to
// running that sequence alone, whatever else shares the batch (decode rows, a prefill chunk and a
// verification chunk with logits for every row).
TEST_P(StageMatchesReference, BatchedSequencesMatchRunningAlone) {
  Model m = Write(Options(), "batched");
  StageOptions options = WholeModel(*m.file, /*max_batch=*/16);
  options.num_slots = 4;
  auto batched = Stage::Create(*m.file, options);
  // The stage running sequences alone has more threads than a decode step has (sequence, kv head)
  // pairs, so its decode attention runs one job per query head; the batched one (no pool) runs
  // one per kv head. The two must agree bit for bit too.
  kernels::ThreadPool pool(3);
  options.pool = &pool;
  auto alone = Stage::Create(*m.file, options);
  ASSERT_TRUE(batched.ok()) << batched.status();
  ASSERT_TRUE(alone.ok()) << alone.status();
  const int32_t vocab = (*batched)->config().n_vocab;
  // Prefixes already in the cache: slot 0 has 6 tokens (longer than the sliding window), slot 1
  // has 3, slot 2 and slot 3 are empty.
  const std::vector<std::vector<int32_t>> prefixes = {{1, 17, 42, 5, 9, 33}, {60, 2, 11}, {}, {}};
  for (int32_t slot = 0; slot < 4; ++slot) {
    if (prefixes[slot].empty()) continue;
    for (Stage* stage : {batched->get(), alone->get()}) {
      StageInput in;
      in.slot = slot;
      in.tokens = prefixes[slot];
      ASSERT_TRUE(stage->Forward(in, LogitsMode::kLast).ok());
    }
  }
  // One batch: decode on slot 0, a verification chunk on slot 1, a prefill on slot 3 (kLast) and
  // a single-token prefill on slot 2.
  const std::vector<BatchSegment> segments = {
      {0, 6, 1, LogitsMode::kLast},
      {1, 3, 3, LogitsMode::kAll},
      {3, 0, 5, LogitsMode::kLast},
      {2, 0, 1, LogitsMode::kLast},
  };
  const std::vector<std::vector<int32_t>> rows = {{70}, {3, 44, 7}, {5, 6, 7, 8, 9}, {12}};
  std::vector<int32_t> tokens;
  for (const auto& r : rows) tokens.insert(tokens.end(), r.begin(), r.end());
  auto out = (*batched)->ForwardBatch(segments, tokens, {});
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), size_t(1 + 3 + 1 + 1) * vocab);
  std::vector<float> expected;
  for (size_t i = 0; i < segments.size(); ++i) {
    StageInput in;
    in.slot = segments[i].slot;
    in.first_position = segments[i].first_position;
    in.tokens = rows[i];
    auto one = (*alone)->Forward(in, segments[i].logits);
    ASSERT_TRUE(one.ok()) << one.status();
    expected.insert(expected.end(), one->begin(), one->end());
  }
  EXPECT_EQ(std::vector<float>(out->begin(), out->end()), expected);
  for (const BatchSegment& seg : segments) {
    EXPECT_EQ((*batched)->cached_length(seg.slot), seg.first_position + seg.n_tokens);
  }
  // And the caches they left behind are the same: one more decode step on every slot agrees.
  const std::vector<BatchSegment> next = {{0, 7, 1, LogitsMode::kLast},
                                          {1, 6, 1, LogitsMode::kLast},
                                          {2, 1, 1, LogitsMode::kLast},
                                          {3, 5, 1, LogitsMode::kLast}};
  const std::vector<int32_t> next_tokens = {4, 8, 15, 16};
  auto step = (*batched)->ForwardBatch(next, next_tokens, {});
  ASSERT_TRUE(step.ok()) << step.status();
  expected.clear();
  for (size_t i = 0; i < next.size(); ++i) {
    StageInput in;
    in.slot = next[i].slot;
    in.first_position = next[i].first_position;
    in.tokens = absl::MakeConstSpan(&next_tokens[i], 1);
    auto one = (*alone)->Forward(in, LogitsMode::kLast);
    ASSERT_TRUE(one.ok()) << one.status();
    expected.insert(expected.end(), one->begin(), one->end());
  }
  EXPECT_EQ(std::vector<float>(step->begin(), step->end()), expected);
}

// A stage without the embedding takes the hidden rows of several sequences at once.
TEST_P(StageMatchesReference, BatchedHiddenStatesThroughTwoStages) {
  Model m = Write(Options(), "batched_split");
  StageOptions first = WholeModel(*m.file, 16);
  first.layers.end = 2;
  first.has_head = false;
  first.num_slots = 2;
  StageOptions second = WholeModel(*m.file, 16);
  second.layers.begin = 2;
  second.has_embedding = false;
  second.num_slots = 2;
  StageOptions whole_options = WholeModel(*m.file, 16);
  whole_options.num_slots = 2;
  auto a = Stage::Create(*m.file, first);
  auto b = Stage::Create(*m.file, second);
  auto whole = Stage::Create(*m.file, whole_options);
  ASSERT_TRUE(a.ok() && b.ok() && whole.ok());
  const std::vector<BatchSegment> segments = {{1, 0, 4, LogitsMode::kLast},
                                              {0, 0, 2, LogitsMode::kAll}};
  const std::vector<int32_t> tokens = {1, 17, 42, 5, 9, 33};
  auto hidden = (*a)->ForwardBatch(segments, tokens, {});
  ASSERT_TRUE(hidden.ok()) << hidden.status();
  ASSERT_EQ(hidden->size(), tokens.size() * (*a)->config().n_embd);
  auto logits = (*b)->ForwardBatch(segments, {}, *hidden);
  ASSERT_TRUE(logits.ok()) << logits.status();
  auto expected = (*whole)->ForwardBatch(segments, tokens, {});
  ASSERT_TRUE(expected.ok()) << expected.status();
  EXPECT_EQ(std::vector<float>(logits->begin(), logits->end()),
            std::vector<float>(expected->begin(), expected->end()));
}

INSTANTIATE_TEST_SUITE_P(
    AllArchitectures, StageMatchesReference,
    ::testing::Values(
        ArchCase{"llama", kernels::TensorType::kF32, 64, 96, 0, kF32Tolerance},
        ArchCase{"qwen2", kernels::TensorType::kF32, 64, 96, 0, kF32Tolerance},
        ArchCase{"gemma3", kernels::TensorType::kF32, 64, 96, 32, kF32Tolerance},
        ArchCase{"llama", kernels::TensorType::kF16, 64, 96, 0, kF32Tolerance},
        ArchCase{"llama", kernels::TensorType::kQ8_0, 64, 96, 0, kQuantizedTolerance},
        ArchCase{"qwen2", kernels::TensorType::kQ5_0, 64, 96, 0, kQuantizedTolerance},
        ArchCase{"gemma3", kernels::TensorType::kQ4_K, 256, 256, 64, kQuantizedTolerance},
        ArchCase{"llama", kernels::TensorType::kQ6_K, 256, 256, 0, kQuantizedTolerance}),
    CaseName);

class StageErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = Write(SyntheticModelOptions{}, "errors");
    StageOptions o = WholeModel(*model_.file, 4);
    o.context = 8;
    o.num_slots = 2;
    auto stage = Stage::Create(*model_.file, o);
    ASSERT_TRUE(stage.ok()) << stage.status();
    stage_ = std::move(*stage);
  }
  Model model_;
  std::unique_ptr<Stage> stage_;
};

TEST_F(StageErrors, RejectsTokenOutsideVocabulary) {
  std::vector<int32_t> tokens = {1, 96};
  StageInput in;
  in.tokens = tokens;
  auto out = stage_->Forward(in, LogitsMode::kLast);
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(out.status().message().find("vocabulary"), std::string::npos) << out.status();
  EXPECT_EQ(stage_->cached_length(0), 0);  // nothing was half-done
}

TEST_F(StageErrors, RejectsOversizedBatchBadSlotAndGap) {
  std::vector<int32_t> five = {1, 2, 3, 4, 5};
  StageInput in;
  in.tokens = five;
  EXPECT_EQ(stage_->Forward(in, LogitsMode::kLast).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<int32_t> one = {1};
  in.tokens = one;
  in.slot = 2;
  EXPECT_EQ(stage_->Forward(in, LogitsMode::kLast).status().code(),
            absl::StatusCode::kInvalidArgument);
  in.slot = 1;
  in.first_position = 3;  // the slot holds nothing yet
  EXPECT_EQ(stage_->Forward(in, LogitsMode::kLast).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(StageErrors, RejectsSequencePastContext) {
  std::vector<int32_t> four = {1, 2, 3, 4};
  StageInput in;
  in.tokens = four;
  ASSERT_TRUE(stage_->Forward(in, LogitsMode::kLast).ok());
  in.first_position = 4;
  ASSERT_TRUE(stage_->Forward(in, LogitsMode::kLast).ok());
  std::vector<int32_t> one = {1};
  in.tokens = one;
  in.first_position = 8;
  auto out = stage_->Forward(in, LogitsMode::kLast);
  EXPECT_EQ(out.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(out.status().message().find("context"), std::string::npos) << out.status();
}

TEST_F(StageErrors, SlotsAreIndependent) {
  std::vector<int32_t> a = {1, 2, 3};
  std::vector<int32_t> b = {7, 8};
  StageInput in;
  in.tokens = a;
  auto first = stage_->Forward(in, LogitsMode::kLast);
  ASSERT_TRUE(first.ok());
  std::vector<float> expected(first->begin(), first->end());
  in.slot = 1;
  in.tokens = b;
  ASSERT_TRUE(stage_->Forward(in, LogitsMode::kLast).ok());
  // Recomputing slot 0's last token from its cache gives the same logits as before.
  in.slot = 0;
  in.first_position = 2;
  std::vector<int32_t> last = {3};
  in.tokens = last;
  auto again = stage_->Forward(in, LogitsMode::kLast);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(std::vector<float>(again->begin(), again->end()), expected);
}

TEST_F(StageErrors, RefusesBadBatchesWithoutTouchingAnySlot) {
  std::vector<int32_t> prefix = {1, 2};
  StageInput in;
  in.tokens = prefix;
  ASSERT_TRUE(stage_->Forward(in, LogitsMode::kLast).ok());
  auto refused = [&](const std::vector<BatchSegment>& segments, const std::vector<int32_t>& tokens,
                     absl::StatusCode code, const std::string& words) {
    auto out = stage_->ForwardBatch(segments, tokens, {});
    EXPECT_EQ(out.status().code(), code) << out.status();
    EXPECT_NE(out.status().message().find(words), std::string::npos) << out.status();
    EXPECT_EQ(stage_->cached_length(0), 2);
    EXPECT_EQ(stage_->cached_length(1), 0);
  };
  refused({}, {}, absl::StatusCode::kInvalidArgument, "at least one");
  refused({{0, 2, 1, LogitsMode::kLast}, {0, 2, 1, LogitsMode::kLast}}, {3, 4},
          absl::StatusCode::kInvalidArgument, "twice");
  refused({{0, 2, 1, LogitsMode::kLast}, {1, 0, 2, LogitsMode::kLast}}, {3, 4},
          absl::StatusCode::kInvalidArgument, "3 tokens but 2");
  refused({{0, 2, 2, LogitsMode::kLast}, {1, 0, 3, LogitsMode::kLast}}, {3, 4, 5, 6, 7},
          absl::StatusCode::kInvalidArgument, "1 to 4 tokens");
  refused({{0, 2, 1, LogitsMode::kLast}, {1, 1, 1, LogitsMode::kLast}}, {3, 4},
          absl::StatusCode::kFailedPrecondition, "holds 0");
  refused({{0, 2, 1, LogitsMode::kLast}, {1, 0, 1, LogitsMode::kLast}}, {3, 99},
          absl::StatusCode::kInvalidArgument, "vocabulary");
  refused({{0, 2, 1, LogitsMode::kLast}}, {}, absl::StatusCode::kInvalidArgument, "token ids");
  // A stage with the embedding ignores `hidden`; hidden-state stages are checked the other way.
}

TEST(StageCreate, BatchedLogitRowsAreCapped) {
  Model m = Write(SyntheticModelOptions{}, "logit_cap");
  StageOptions o = WholeModel(*m.file, 8);
  o.max_logit_rows = 2;
  o.num_slots = 3;
  auto stage = Stage::Create(*m.file, o);
  ASSERT_TRUE(stage.ok()) << stage.status();
  EXPECT_EQ((*stage)->max_logit_rows(), 2);
  const std::vector<BatchSegment> three = {
      {0, 0, 1, LogitsMode::kLast}, {1, 0, 1, LogitsMode::kLast}, {2, 0, 1, LogitsMode::kLast}};
  const std::vector<int32_t> tokens = {1, 2, 3};
  auto out = (*stage)->ForwardBatch(three, tokens, {});
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(out.status().message().find("at most 2"), std::string::npos) << out.status();
  auto two = (*stage)->ForwardBatch(absl::MakeConstSpan(three).subspan(0, 2), {1, 2}, {});
  EXPECT_TRUE(two.ok()) << two.status();
}

TEST(StageCreate, RejectsLayerRangeOutsideModel) {
  Model m = Write(SyntheticModelOptions{}, "range");
  StageOptions o = WholeModel(*m.file);
  o.layers = {1, 9};
  auto stage = Stage::Create(*m.file, o);
  EXPECT_EQ(stage.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(stage.status().message().find("outside"), std::string::npos) << stage.status();
}

}  // namespace
}  // namespace exo::runtime
