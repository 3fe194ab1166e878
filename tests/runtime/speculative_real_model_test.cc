// Speculative decoding on the real models scripts/setup.sh installs: the default Gemma 3 270M
// (prompt lookup) and SmolLM2 135M drafting for a second instance of itself (the package index
// holds no smaller model of either family; docs/speculative.md). Each test skips,
// saying why, when its model is missing. The suite names start with "RealModel" so the sanitizer
// run leaves these slow tests out.
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/thread_pool.h"
#include "runtime/generator.h"
#include "runtime/gguf.h"
#include "runtime/model_config.h"
#include "runtime/speculative.h"
#include "runtime/stage.h"
#include "runtime/tokenizer.h"

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

struct Model {
  std::unique_ptr<GgufFile> file;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<Stage> stage;
};

// Loads a whole model, or returns an empty Model with `skip` set when the file is missing.
Model Load(const std::string& file_name, kernels::ThreadPool* pool, std::string& skip) {
  Model model;
  const std::string path = ModelPath(file_name);
  if (!std::ifstream(path).good()) {
    skip = path + " is not installed (run scripts/setup.sh)";
    return model;
  }
  auto file = GgufFile::Open(path);
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return model;
  model.file = std::move(*file);
  auto tokenizer = Tokenizer::FromGguf(*model.file);
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  if (tokenizer.ok()) model.tokenizer = std::move(*tokenizer);
  auto config = ReadModelConfig(*model.file);
  EXPECT_TRUE(config.ok()) << config.status();
  if (!config.ok()) return model;
  StageOptions options;
  options.layers = {0, config->n_layer};
  options.context = 512;
  options.max_batch_tokens = 64;
  options.max_logit_rows = 9;
  options.pool = pool;
  auto stage = Stage::Create(*model.file, options);
  EXPECT_TRUE(stage.ok()) << stage.status();
  if (stage.ok()) model.stage = std::move(*stage);
  return model;
}

const char kPassage[] =
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. How "
    "vexingly quick daft zebras jump. The five boxing wizards jump quickly.";

std::vector<int32_t> GenerateTokens(Stage& stage, const std::vector<int32_t>& prompt,
                                    const GenerateOptions& options, GenerateStats* stats_out) {
  std::vector<int32_t> history = prompt;
  auto stats = Generate(stage, 0, history, options, [](int32_t) { return true; });
  EXPECT_TRUE(stats.ok()) << stats.status();
  if (stats.ok() && stats_out != nullptr) *stats_out = *stats;
  return std::vector<int32_t>(history.begin() + prompt.size(), history.end());
}

class RealModelSpeculative : public ::testing::Test {
 protected:
  kernels::ThreadPool pool_{2};
};

TEST_F(RealModelSpeculative, GemmaPromptLookupIsIdenticalAndAcceptsCopiedText) {
  std::string skip;
  Model gemma = Load("gemma-3-270m-q4_k_m.gguf", &pool_, skip);
  if (!skip.empty()) GTEST_SKIP() << skip;
  ASSERT_TRUE(gemma.stage && gemma.tokenizer);
  const std::string text =
      std::string("Text: ") + kPassage + "\nCopy the text exactly.\nText: " + kPassage + "\nText:";
  const std::vector<int32_t> prompt =
      gemma.tokenizer->Encode(text, gemma.tokenizer->add_bos(), /*parse_special=*/false);
  GenerateOptions options;
  options.max_tokens = 32;
  options.sampling.temperature = 0.0f;
  const std::vector<int32_t> expected = GenerateTokens(*gemma.stage, prompt, options, nullptr);
  NgramDrafter ngram(NgramOptions{});
  options.drafter = &ngram;
  options.speculative.adaptive = false;  // timing-independent: always draft 8
  GenerateStats stats;
  EXPECT_EQ(GenerateTokens(*gemma.stage, prompt, options, &stats), expected);
  EXPECT_GT(stats.speculative.AcceptanceRate(), 0.5);
  EXPECT_GT(stats.speculative.TokensPerPass(), 3.0);
}

// The draft-model path on real weights: SmolLM2 Q4_1 drafts for a second Stage of itself (or for
// its F16 expansion when scripts/make_draft_pair.py made one). The draft runs one token at a time
// and the target verifies rows in batches, whose float rounding may differ, so acceptance is
// high but not asserted to be total; the output must be identical all the same.
TEST_F(RealModelSpeculative, SmolLmDraftModelIsIdenticalAndMostlyAccepted) {
  std::string skip;
  const std::string f16 = "SmolLM2-135M-Instruct.F16.gguf";
  Model target = Load(
      std::ifstream(ModelPath(f16)).good() ? f16 : "SmolLM2-135M-Instruct.Q4_1.gguf", &pool_, skip);
  if (!skip.empty()) GTEST_SKIP() << skip;
  Model draft = Load("SmolLM2-135M-Instruct.Q4_1.gguf", &pool_, skip);
  if (!skip.empty()) GTEST_SKIP() << skip;
  ASSERT_TRUE(target.stage && draft.stage);
  ASSERT_TRUE(CheckDraftVocabulary(*target.tokenizer, *draft.tokenizer).ok());
  const std::vector<int32_t> prompt = target.tokenizer->Encode(
      "Once upon a time, in a small village", target.tokenizer->add_bos(), false);
  GenerateOptions options;
  options.max_tokens = 32;
  options.sampling.temperature = 0.0f;
  const std::vector<int32_t> expected = GenerateTokens(*target.stage, prompt, options, nullptr);
  DraftModelOptions draft_options;
  draft_options.min_confidence = 0.0f;
  auto drafter = DraftModelDrafter::Create(*draft.stage, 0, options.sampling, draft_options);
  ASSERT_TRUE(drafter.ok()) << drafter.status();
  options.drafter = drafter->get();
  options.speculative.draft_max = 4;
  options.speculative.adaptive = false;
  GenerateStats stats;
  EXPECT_EQ(GenerateTokens(*target.stage, prompt, options, &stats), expected);
  EXPECT_GT(stats.speculative.AcceptanceRate(), 0.7);
  EXPECT_GT(stats.speculative.TokensPerPass(), 2.5);
}

TEST_F(RealModelSpeculative, MismatchedVocabulariesAreRefusedWithAReason) {
  std::string skip;
  Model gemma = Load("gemma-3-270m-q4_k_m.gguf", nullptr, skip);
  if (!skip.empty()) GTEST_SKIP() << skip;
  Model smol = Load("SmolLM2-135M-Instruct.Q4_1.gguf", nullptr, skip);
  if (!skip.empty()) GTEST_SKIP() << skip;
  const absl::Status status = CheckDraftVocabulary(*gemma.tokenizer, *smol.tokenizer);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("same family"), std::string::npos) << status;
}

}  // namespace
}  // namespace exo::runtime
