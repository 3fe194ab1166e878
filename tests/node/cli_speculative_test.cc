// `generate` with speculative decoding, run in-process on synthetic models: same text as without
// it, a summary with the acceptance figures, and one-line errors for bad speculative options.
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "node/cli.h"
#include "synthetic_model_testlib.h"

namespace exo::node {
namespace {

std::string TempPath(const std::string& name) {
  return ::testing::TempDir() + "/cli_speculative_test." + std::to_string(getpid()) + "." + name;
}

std::string WriteModel(const std::string& name, uint64_t seed, int vocab_size = 96,
                       int n_layer = 3) {
  runtime::synthetic::SyntheticModelOptions options;
  options.seed = seed;
  options.vocab_size = vocab_size;
  options.n_layer = n_layer;
  absl::StatusOr<std::string> path =
      runtime::synthetic::WriteSyntheticModel(options, TempPath(name));
  EXPECT_TRUE(path.ok()) << path.status();
  return path.ok() ? *path : "";
}

struct Result {
  int code;
  std::string out;
  std::string err;
};

Result Generate(const std::string& model, const SpeculativeCommand& speculative,
                const std::string& json_out = "") {
  GenerateCommand command;
  command.model.model_path = model;
  command.model.context = 64;
  command.model.threads = 1;
  command.prompt = "ab ba ab ba ab";
  command.max_tokens = 12;
  command.sampling.temperature = 0;
  command.json_out = json_out;
  command.speculative = speculative;
  std::ostringstream out, err;
  const int code = RunGenerate(command, out, err);
  return {code, out.str(), err.str()};
}

void ExpectOneLineError(const Result& r, const std::string& what) {
  EXPECT_NE(r.code, 0);
  EXPECT_EQ(r.err.rfind("exo-node: error: ", 0), 0u) << r.err;
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "more than one line: " << r.err;
  EXPECT_NE(r.err.find(what), std::string::npos) << r.err;
}

TEST(GenerateSpeculative, SameTextWithEveryModeAndReportsAcceptance) {
  const std::string target = WriteModel("target.gguf", 42);
  const std::string draft = WriteModel("draft.gguf", 43, 96, 1);
  const Result plain = Generate(target, SpeculativeCommand{});
  ASSERT_EQ(plain.code, 0) << plain.err;
  EXPECT_EQ(plain.err.find("speculative"), std::string::npos) << plain.err;

  SpeculativeCommand ngram;
  ngram.mode = SpeculativeMode::kNgram;
  ngram.ngram_min = 1;
  const Result with_ngram = Generate(target, ngram);
  ASSERT_EQ(with_ngram.code, 0) << with_ngram.err;
  EXPECT_EQ(with_ngram.out, plain.out);
  EXPECT_NE(with_ngram.err.find("speculative (n-gram)"), std::string::npos) << with_ngram.err;
  EXPECT_NE(with_ngram.err.find("tokens/pass"), std::string::npos) << with_ngram.err;

  SpeculativeCommand model;
  model.mode = SpeculativeMode::kDraftModel;
  model.draft_model_path = draft;
  model.draft_min_confidence = 0.0f;
  model.draft_min = model.draft_max = 3;  // fixed length: every pass drafts
  const std::string json_path = TempPath("out.json");
  const Result with_draft = Generate(target, model, json_path);
  ASSERT_EQ(with_draft.code, 0) << with_draft.err;
  EXPECT_EQ(with_draft.out, plain.out);
  EXPECT_NE(with_draft.err.find("speculative (draft model)"), std::string::npos) << with_draft.err;
  std::ifstream in(json_path);
  const nlohmann::json json = nlohmann::json::parse(in);
  EXPECT_GT(json["speculative"]["passes"].get<int>(), 0);
  EXPECT_GT(json["speculative"]["drafted_tokens"].get<int>(), 0);
  EXPECT_GE(json["speculative"]["tokens_per_pass"].get<double>(), 1.0);
}

TEST(GenerateSpeculative, BadOptionsEndWithOneLineErrors) {
  const std::string target = WriteModel("target_bad.gguf", 42);
  SpeculativeCommand no_path;
  no_path.mode = SpeculativeMode::kDraftModel;
  ExpectOneLineError(Generate(target, no_path), "--draft_model");

  SpeculativeCommand missing = no_path;
  missing.draft_model_path = TempPath("nope.gguf");
  ExpectOneLineError(Generate(target, missing), "draft model: ");

  // 300 tokens against 96: more than 128 apart.
  SpeculativeCommand other_vocab = no_path;
  other_vocab.draft_model_path = WriteModel("other_vocab.gguf", 43, 300, 1);
  ExpectOneLineError(Generate(target, other_vocab), "differ by more than 128");

  SpeculativeCommand too_long;
  too_long.mode = SpeculativeMode::kNgram;
  too_long.draft_max = 16;
  ExpectOneLineError(Generate(target, too_long), "--draft_max");
}

}  // namespace
}  // namespace exo::node
