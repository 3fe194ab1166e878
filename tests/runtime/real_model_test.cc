// Tests on the default model (Gemma 3 270M, Q4_K_M), installed by scripts/setup.sh. Each test
// skips, saying why, when the model is not installed. The suite name contains "RealModel" so the
// sanitizer run (scripts/test.sh) can leave these slow tests out.
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/thread_pool.h"
#include "nlohmann/json.hpp"
#include "runtime/chat_template.h"
#include "runtime/generator.h"
#include "runtime/gguf.h"
#include "runtime/model_config.h"
#include "runtime/stage.h"
#include "runtime/tokenizer.h"
#include "synthetic_model_testlib.h"

namespace exo::runtime {
namespace {

std::string ModelPath(const std::string& file) {
  const char* home = std::getenv("EXO_HOME");
  std::string dir =
      home != nullptr && home[0] != '\0'
          ? std::string(home)
          : std::string(std::getenv("HOME") ? std::getenv("HOME") : ".") + "/.cache/exo-node";
  return dir + "/models/" + file;
}

class RealModel : public ::testing::Test {
 protected:
  virtual std::string ModelFile() const { return "gemma-3-270m-q4_k_m.gguf"; }
  int32_t LayerCount() const { return static_cast<int32_t>(stage_layers_); }

  void SetUp() override {
    path_ = ModelPath(ModelFile());
    if (!std::ifstream(path_).good()) {
      GTEST_SKIP() << "default model not installed at " << path_ << " (run scripts/setup.sh)";
    }
    auto file = GgufFile::Open(path_);
    ASSERT_TRUE(file.ok()) << file.status();
    file_ = std::move(*file);
    auto tokenizer = Tokenizer::FromGguf(*file_);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = std::move(*tokenizer);
    auto config = ReadModelConfig(*file_);
    ASSERT_TRUE(config.ok()) << config.status();
    stage_layers_ = config->n_layer;
  }

  std::unique_ptr<Stage> MakeStage(LayerRange layers, bool embedding, bool head) {
    StageOptions o;
    o.layers = layers;
    o.has_embedding = embedding;
    o.has_head = head;
    o.context = 256;
    o.max_batch_tokens = 64;
    o.pool = &pool_;
    auto stage = Stage::Create(*file_, o);
    EXPECT_TRUE(stage.ok()) << stage.status();
    return stage.ok() ? std::move(*stage) : nullptr;
  }

  std::vector<int32_t> Greedy(const std::string& prompt, int32_t n) {
    std::unique_ptr<Stage> stage = MakeStage({0, LayerCount()}, true, true);
    std::vector<int32_t> history = tokenizer_->Encode(prompt, tokenizer_->add_bos(), false);
    const size_t prompt_size = history.size();
    GenerateOptions options;
    options.max_tokens = n;
    options.sampling.temperature = 0;
    auto stats = Generate(*stage, 0, history, options, [](int32_t) { return true; });
    EXPECT_TRUE(stats.ok()) << stats.status();
    return std::vector<int32_t>(history.begin() + prompt_size, history.end());
  }

  std::string path_;
  int64_t stage_layers_ = 0;
  std::unique_ptr<GgufFile> file_;
  std::unique_ptr<Tokenizer> tokenizer_;
  kernels::ThreadPool pool_{0};
};

// Recorded from llama.cpp (llama-cpp-python 0.3.36 built from source, greedy argmax, one token
// at a time; tests/e2e/reference/ has the live comparison and the script that made these).
TEST_F(RealModel, GreedyMatchesLlamaCppRecording) {
  const std::vector<int32_t> expected = {
      107,    140,    584,    538,    1251,  236743, 236771, 236787, 107,    144,    2060,
      236743, 236771, 107,    140,    36208, 538,    1251,   236743, 236770, 236787, 107,
      144,    2060,   236743, 236770, 107,   140,    36208,  538,    1251,   236743};
  EXPECT_EQ(tokenizer_->Encode("def fibonacci(n):", true, false),
            (std::vector<int32_t>{2, 2063, 10779, 78113, 236769, 236749, 1473}));
  EXPECT_EQ(Greedy("def fibonacci(n):", 32), expected);
}

TEST_F(RealModel, ContinuesAFactualPromptOnTopic) {
  std::vector<int32_t> tokens = Greedy("The capital of France is", 12);
  EXPECT_NE(tokenizer_->Decode(tokens).find("France"), std::string::npos)
      << tokenizer_->Decode(tokens);
}

// The promise behind the cluster: splitting the layers over stages changes no bit of the output.
TEST_F(RealModel, ThreeStagePipelineIsBitIdenticalToOneStage) {
  std::unique_ptr<Stage> whole = MakeStage({0, LayerCount()}, true, true);
  std::unique_ptr<Stage> a = MakeStage({0, 5}, true, false);
  std::unique_ptr<Stage> b = MakeStage({5, 12}, false, false);
  std::unique_ptr<Stage> c = MakeStage({12, LayerCount()}, false, true);
  ASSERT_TRUE(whole && a && b && c);
  std::vector<int32_t> tokens =
      tokenizer_->Encode("Once upon a time, in a small village,", true, false);
  int32_t position = 0;
  for (int step = 0; step < 8; ++step) {
    StageInput in;
    in.first_position = position;
    in.tokens = absl::MakeConstSpan(tokens).subspan(position);
    auto expected = whole->Forward(in, LogitsMode::kLast);
    ASSERT_TRUE(expected.ok()) << expected.status();
    auto h1 = a->Forward(in, LogitsMode::kLast);
    ASSERT_TRUE(h1.ok()) << h1.status();
    StageInput in_b;
    in_b.first_position = position;
    in_b.hidden = *h1;
    auto h2 = b->Forward(in_b, LogitsMode::kLast);
    ASSERT_TRUE(h2.ok()) << h2.status();
    StageInput in_c = in_b;
    in_c.hidden = *h2;
    auto logits = c->Forward(in_c, LogitsMode::kLast);
    ASSERT_TRUE(logits.ok()) << logits.status();
    ASSERT_EQ(std::vector<float>(logits->begin(), logits->end()),
              std::vector<float>(expected->begin(), expected->end()))
        << "step " << step;
    position = static_cast<int32_t>(tokens.size());
    tokens.push_back(static_cast<int32_t>(std::max_element(expected->begin(), expected->end()) -
                                          expected->begin()));
  }
}

// Against the independent double-precision forward pass over the same (dequantised) weights. The
// difference is the 8-bit activation quantisation of the integer dot products, which llama.cpp
// has as well (measured: ours 3.3%, llama.cpp 2.9% relative RMS from this reference).
TEST_F(RealModel, LogitsAgreeWithDoublePrecisionReference) {
  const std::vector<int32_t> tokens = {2, 818, 5279, 529, 7001, 563};
  auto reference = synthetic::TryReferenceForward(path_, tokens);
  ASSERT_TRUE(reference.ok()) << reference.status();
  std::unique_ptr<Stage> stage = MakeStage({0, LayerCount()}, true, true);
  StageInput in;
  in.tokens = tokens;
  auto logits = stage->Forward(in, LogitsMode::kLast);
  ASSERT_TRUE(logits.ok()) << logits.status();
  const std::vector<double>& expected = reference->back();
  double mean_diff = 0, mean_ref = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    mean_diff += (*logits)[i] - expected[i];
    mean_ref += expected[i];
  }
  mean_diff /= expected.size();
  mean_ref /= expected.size();
  double diff_sq = 0, ref_sq = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    const double d = (*logits)[i] - expected[i] - mean_diff;
    diff_sq += d * d;
    ref_sq += (expected[i] - mean_ref) * (expected[i] - mean_ref);
  }
  const double relative_rms = std::sqrt(diff_sq / ref_sq);
  EXPECT_LT(relative_rms, 0.06);
  const auto top = [](auto begin, auto end) { return std::max_element(begin, end) - begin; };
  EXPECT_EQ(top(logits->begin(), logits->end()), top(expected.begin(), expected.end()));
}

// SmolLM2 135M Instruct (Q4_1): the llama architecture, a byte-level BPE vocabulary with the
// "smollm" pre-tokenizer, and a chat template carried in the GGUF.
class RealModelSmolLM : public RealModel {
 protected:
  std::string ModelFile() const override { return "SmolLM2-135M-Instruct.Q4_1.gguf"; }
};

TEST_F(RealModelSmolLM, ChatPromptTokenizesLikeLlamaCpp) {
  auto source = ChatTemplateSourceFor(*file_);
  ASSERT_TRUE(source.ok()) << source.status();
  auto chat_template = ChatTemplate::Parse(*source);
  ASSERT_TRUE(chat_template.ok()) << chat_template.status();
  nlohmann::json messages =
      nlohmann::json::array({{{"role", "user"}, {"content", "What is the capital of France?"}}});
  auto rendered = chat_template->Render(messages, true, "<|im_start|>", "<|im_end|>");
  ASSERT_TRUE(rendered.ok()) << rendered.status();
  // llama.cpp's tokenize(special=True) of the same rendering.
  EXPECT_EQ(tokenizer_->Encode(*rendered, false, true),
            (std::vector<int32_t>{1,    9690, 198,   2683, 359,  253,  5356, 5646,  11173, 3365,
                                  3511, 308,  34519, 28,   7018, 411,  407,  19712, 8182,  2,
                                  198,  1,    4093,  198,  1780, 314,  260,  3575,  282,   4649,
                                  47,   2,    198,   1,    520,  9531, 198}));
}

// Recorded from llama.cpp as above. The 15th token is a near tie in llama.cpp itself (top-two
// margin 0.19), so the comparison stops before it; every earlier step has a margin of 0.33 or
// more.
TEST_F(RealModelSmolLM, GreedyMatchesLlamaCppRecording) {
  EXPECT_EQ(Greedy("The capital of France is", 14),
            (std::vector<int32_t>{7042, 30, 198, 198, 504, 1797, 1918, 553, 253, 2155, 282, 4723,
                                  216, 35}));
}

}  // namespace
}  // namespace exo::runtime
