// The continuous-batching engine: batched answers equal one-at-a-time ones, cancellation frees
// the slot, the queue is bounded, prompts are chunked between decode steps, and stop conditions.
#include "node/engine.h"

#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "runtime/generator.h"
#include "runtime/gguf.h"
#include "runtime/stage.h"
#include "synthetic_model_testlib.h"

namespace exo::node {
namespace {

using runtime::SamplingParams;

SamplingParams Greedy() {
  SamplingParams p;
  p.temperature = 0;
  return p;
}

// Collects every token of a sequence until it finishes.
std::vector<int32_t> Drain(Sequence& sequence) {
  std::vector<TokenEvent> events;
  while (sequence.Wait(&events, absl::Seconds(60)) != Sequence::State::kFinished) {
  }
  std::vector<int32_t> tokens;
  for (const TokenEvent& e : events) tokens.push_back(e.token);
  return tokens;
}

// ---- With a synthetic model through Stage::ForwardBatch -----------------------------------------

class StageEngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    runtime::synthetic::SyntheticModelOptions options;
    options.context_length = 256;
    path_ = new std::string(::testing::TempDir() + "/engine_test." + std::to_string(getpid()) +
                            ".gguf");
    ASSERT_TRUE(runtime::synthetic::WriteSyntheticModel(options, *path_).ok());
  }

  void Load(int32_t slots, int32_t batch = 64) {
    auto file = runtime::GgufFile::Open(*path_);
    ASSERT_TRUE(file.ok()) << file.status();
    file_ = std::move(*file);
    runtime::StageOptions options;
    options.layers = {0, 3};
    options.context = 64;
    options.num_slots = slots;
    options.max_logit_rows = slots;
    options.max_batch_tokens = batch;
    auto stage = runtime::Stage::Create(*file_, options);
    ASSERT_TRUE(stage.ok()) << stage.status();
    stage_ = std::move(*stage);
    model_ = StageBatchModel(*stage_);
  }

  // The answer runtime::Generate gives for `prompt` alone, on a fresh single-slot stage.
  std::vector<int32_t> Reference(const std::vector<int32_t>& prompt, int32_t max_tokens) {
    runtime::StageOptions options;
    options.layers = {0, 3};
    options.context = 64;
    auto stage = runtime::Stage::Create(*file_, options);
    EXPECT_TRUE(stage.ok());
    std::vector<int32_t> history = prompt;
    runtime::GenerateOptions generate;
    generate.max_tokens = max_tokens;
    generate.sampling = Greedy();
    std::vector<int32_t> out;
    EXPECT_TRUE(runtime::Generate(**stage, 0, history, generate, [&](int32_t t) {
                  out.push_back(t);
                  return true;
                }).ok());
    return out;
  }

  static std::string* path_;
  std::unique_ptr<runtime::GgufFile> file_;
  std::unique_ptr<runtime::Stage> stage_;
  std::unique_ptr<BatchModel> model_;
};
std::string* StageEngineTest::path_ = nullptr;

TEST_F(StageEngineTest, BatchedGreedyTokensEqualSequentialOnes) {
  Load(/*slots=*/4, /*batch=*/8);  // small batch: the longer prompts are split into chunks
  const std::vector<std::vector<int32_t>> prompts = {
      {1, 17, 42, 5}, {1, 9, 33, 60, 2, 8, 11, 12, 13, 14, 15}, {1, 50}, {1, 7, 7, 7, 7, 7, 7}};
  EngineOptions options;
  options.prefill_chunk = 5;
  auto engine = Engine::Create(*model_, options);
  ASSERT_TRUE(engine.ok());
  std::vector<std::shared_ptr<Sequence>> sequences;
  for (const auto& prompt : prompts) {
    EngineRequest request;
    request.prompt = prompt;
    request.max_tokens = 12;
    request.sampling = Greedy();
    auto sequence = (*engine)->Submit(request);
    ASSERT_TRUE(sequence.ok()) << sequence.status();
    sequences.push_back(*sequence);
  }
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(Drain(*sequences[i]), Reference(prompts[i], 12)) << "prompt " << i;
    EXPECT_EQ(sequences[i]->finish_reason(), FinishReason::kLength);
    EXPECT_EQ(sequences[i]->generated_tokens(), 12);
  }
  const EngineStats stats = (*engine)->stats();
  EXPECT_EQ(stats.generated_tokens, 4 * 12);
  // Sharing steps: far fewer forward passes than one per token per sequence.
  EXPECT_LT(stats.steps, 4 * 12);
  EXPECT_EQ(stats.running, 0);
}

TEST_F(StageEngineTest, MoreRequestsThanSlotsQueueAndAllFinish) {
  Load(/*slots=*/2);
  auto engine = Engine::Create(*model_, EngineOptions());
  ASSERT_TRUE(engine.ok());
  std::vector<std::shared_ptr<Sequence>> sequences;
  for (int i = 0; i < 6; ++i) {
    EngineRequest request;
    request.prompt = {1, 10 + i, 20 + i};
    request.max_tokens = 5;
    request.sampling = Greedy();
    auto sequence = (*engine)->Submit(request);
    ASSERT_TRUE(sequence.ok()) << sequence.status();
    sequences.push_back(*sequence);
  }
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(Drain(*sequences[i]), Reference({1, 10 + i, 20 + i}, 5)) << i;
  }
}

TEST_F(StageEngineTest, ContextFullEndsWithLengthAndLongPromptsAreRefused) {
  Load(/*slots=*/1);
  auto engine = Engine::Create(*model_, EngineOptions());
  ASSERT_TRUE(engine.ok());
  EngineRequest request;
  request.prompt = std::vector<int32_t>(64, 5);  // the context is 64
  request.sampling = Greedy();
  EXPECT_TRUE(absl::IsInvalidArgument((*engine)->Submit(request).status()));
  request.prompt = std::vector<int32_t>(60, 5);
  request.max_tokens = -1;
  auto sequence = (*engine)->Submit(request);
  ASSERT_TRUE(sequence.ok());
  // Positions 60..63 take the generated tokens 1..4; the 5th is sampled from position 63.
  EXPECT_EQ(Drain(**sequence).size(), 5u);
  EXPECT_EQ((*sequence)->finish_reason(), FinishReason::kLength);
  request.prompt = {1, 200};  // outside the 96-token vocabulary
  EXPECT_TRUE(absl::IsInvalidArgument((*engine)->Submit(request).status()));
}

// ---- With a fake model, to control timing and see each batch ------------------------------------

// Logits make token (last input token + 1) % vocab the most likely, so answers are predictable.
// Forward blocks while the gate is closed.
class FakeModel : public BatchModel {
 public:
  FakeModel(int32_t slots, int32_t batch) : slots_(slots), batch_(batch) {}

  absl::StatusOr<absl::Span<const float>> Forward(absl::Span<const Segment> segments,
                                                  absl::Span<const int32_t> tokens) override {
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(&open_));
      batches_.emplace_back(segments.begin(), segments.end());
    }
    rows_.assign(segments.size() * kVocab, 0.0f);
    size_t offset = 0;
    for (size_t i = 0; i < segments.size(); ++i) {
      offset += segments[i].n_tokens;
      rows_[i * kVocab + (tokens[offset - 1] + 1) % kVocab] = 10.0f;
    }
    return absl::Span<const float>(rows_);
  }
  void ResetSlot(int32_t slot) override {
    absl::MutexLock lock(&mu_);
    resets_.push_back(slot);
  }
  int32_t num_slots() const override { return slots_; }
  int32_t context() const override { return 1 << 20; }  // never the limit here
  int32_t max_batch_tokens() const override { return batch_; }
  int32_t max_segments() const override { return slots_; }
  int32_t vocab_size() const override { return kVocab; }

  void SetOpen(bool open) {
    absl::MutexLock lock(&mu_);
    open_ = open;
  }
  std::vector<std::vector<Segment>> batches() {
    absl::MutexLock lock(&mu_);
    return batches_;
  }

  static constexpr int32_t kVocab = 50;

 private:
  const int32_t slots_, batch_;
  absl::Mutex mu_;
  bool open_ ABSL_GUARDED_BY(mu_) = true;
  std::vector<std::vector<Segment>> batches_ ABSL_GUARDED_BY(mu_);
  std::vector<int32_t> resets_ ABSL_GUARDED_BY(mu_);
  std::vector<float> rows_;
};

EngineRequest Request(std::vector<int32_t> prompt, int32_t max_tokens) {
  EngineRequest r;
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  r.sampling = Greedy();
  return r;
}

TEST(EngineTest, CancellingFreesTheSlotForTheNextRequest) {
  FakeModel model(/*slots=*/1, /*batch=*/16);
  auto engine = Engine::Create(model, EngineOptions());
  ASSERT_TRUE(engine.ok());
  auto first = (*engine)->Submit(Request({1}, /*max_tokens=*/100000));
  ASSERT_TRUE(first.ok());
  std::vector<TokenEvent> events;
  (*first)->Wait(&events, absl::Seconds(30));
  ASSERT_FALSE(events.empty());
  auto second = (*engine)->Submit(Request({7}, 3));
  ASSERT_TRUE(second.ok());
  (*first)->Cancel();
  Drain(**first);
  EXPECT_EQ((*first)->finish_reason(), FinishReason::kCancelled);
  // The second request gets the only slot and runs to the end.
  EXPECT_EQ(Drain(**second), (std::vector<int32_t>{8, 9, 10}));
  EXPECT_EQ((*second)->finish_reason(), FinishReason::kLength);
  const EngineStats stats = (*engine)->stats();
  EXPECT_EQ(stats.cancelled_sequences, 1);
  EXPECT_EQ(stats.running, 0);
}

TEST(EngineTest, QueueIsBoundedAndCancelledQueuedRequestsNeverRun) {
  FakeModel model(/*slots=*/1, /*batch=*/16);
  model.SetOpen(false);  // the engine stalls in its first step
  EngineOptions options;
  options.max_queue = 2;
  auto engine = Engine::Create(model, options);
  ASSERT_TRUE(engine.ok());
  auto running = (*engine)->Submit(Request({1}, 2));
  ASSERT_TRUE(running.ok());
  while ((*engine)->stats().running == 0) absl::SleepFor(absl::Milliseconds(1));
  auto queued1 = (*engine)->Submit(Request({2}, 2));
  auto queued2 = (*engine)->Submit(Request({3}, 2));
  ASSERT_TRUE(queued1.ok() && queued2.ok());
  auto refused = (*engine)->Submit(Request({4}, 2));
  EXPECT_TRUE(absl::IsResourceExhausted(refused.status())) << refused.status();
  EXPECT_EQ((*engine)->stats().rejected_sequences, 1);
  (*queued1)->Cancel();
  model.SetOpen(true);
  EXPECT_EQ(Drain(**running), (std::vector<int32_t>{2, 3}));
  EXPECT_TRUE(Drain(**queued1).empty());
  EXPECT_EQ((*queued1)->finish_reason(), FinishReason::kCancelled);
  EXPECT_EQ(Drain(**queued2), (std::vector<int32_t>{4, 5}));
}

TEST(EngineTest, LongPromptsAreChunkedBetweenDecodeSteps) {
  FakeModel model(/*slots=*/2, /*batch=*/16);
  EngineOptions options;
  options.prefill_chunk = 4;
  // The model stalls until both requests are in, so the first sequence is still decoding when the
  // prompt arrives (a fake model would otherwise finish all 40 tokens before the second Submit on
  // a busy machine, and the prompt would take slot 0 alone).
  model.SetOpen(false);
  auto engine = Engine::Create(model, options);
  ASSERT_TRUE(engine.ok());
  auto decoding = (*engine)->Submit(Request({1}, 40));
  ASSERT_TRUE(decoding.ok());
  std::vector<int32_t> long_prompt(10, 3);
  auto prefilling = (*engine)->Submit(Request(long_prompt, 2));
  ASSERT_TRUE(prefilling.ok());
  model.SetOpen(true);
  EXPECT_EQ(Drain(**prefilling), (std::vector<int32_t>{4, 5}));
  Drain(**decoding);
  // Some step carried a decode row of the first sequence and a 4-token chunk of the prompt.
  bool mixed = false;
  int32_t prompt_rows = 0;
  for (const auto& batch : model.batches()) {
    if (batch.size() == 2 && batch[0].n_tokens == 1 && batch[1].n_tokens == 4) mixed = true;
    for (const auto& s : batch) {
      EXPECT_LE(s.n_tokens, 4);
      if (s.slot == 1 && s.first_position < 10) prompt_rows += s.n_tokens;
    }
  }
  EXPECT_TRUE(mixed);
  EXPECT_EQ(prompt_rows, 10);
}

TEST(EngineTest, EndOfGenerationTokenStopsWithoutBeingEmitted) {
  FakeModel model(/*slots=*/1, /*batch=*/16);
  EngineOptions options;
  options.is_end_of_generation = [](int32_t id) { return id == 5; };
  auto engine = Engine::Create(model, options);
  ASSERT_TRUE(engine.ok());
  auto sequence = (*engine)->Submit(Request({1}, 100));
  ASSERT_TRUE(sequence.ok());
  EXPECT_EQ(Drain(**sequence), (std::vector<int32_t>{2, 3, 4}));
  EXPECT_EQ((*sequence)->finish_reason(), FinishReason::kStop);
}

TEST(EngineTest, LogprobsComeWithTheirAlternatives) {
  FakeModel model(/*slots=*/1, /*batch=*/16);
  auto engine = Engine::Create(model, EngineOptions());
  ASSERT_TRUE(engine.ok());
  EngineRequest request = Request({1}, 2);
  request.top_logprobs = 3;
  auto sequence = (*engine)->Submit(request);
  ASSERT_TRUE(sequence.ok());
  std::vector<TokenEvent> events;
  while ((*sequence)->Wait(&events, absl::Seconds(30)) != Sequence::State::kFinished) {
  }
  ASSERT_EQ(events.size(), 2u);
  for (const TokenEvent& e : events) {
    ASSERT_EQ(e.top.size(), 3u);
    EXPECT_EQ(e.top[0].id, e.token);
    EXPECT_LE(e.logprob, 0.0f);
    EXPECT_GE(e.top[0].logprob, e.top[1].logprob);
  }
}

TEST(EngineTest, DestroyingTheEngineFinishesEverySequence) {
  FakeModel model(/*slots=*/1, /*batch=*/16);
  std::shared_ptr<Sequence> running, queued;
  {
    auto engine = Engine::Create(model, EngineOptions());
    ASSERT_TRUE(engine.ok());
    running = *(*engine)->Submit(Request({1}, 1000000));
    queued = *(*engine)->Submit(Request({1}, 10));
  }
  EXPECT_EQ(running->finish_reason(), FinishReason::kCancelled);
  EXPECT_EQ(queued->finish_reason(), FinishReason::kCancelled);
}

}  // namespace
}  // namespace exo::node
