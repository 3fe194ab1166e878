// The single-node CLI commands, run in-process: good inputs work, and every bad input ends with a
// one-line error and a non-zero exit code.
#include "node/cli.h"

#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "kernels/types.h"
#include "nlohmann/json.hpp"
#include "runtime/gguf.h"
#include "synthetic_model_testlib.h"

namespace exo::node {
namespace {

// Unique per process: ctest runs tests in parallel, and rewriting a file another process has
// mapped would crash it.
std::string TempPath(const std::string& name) {
  return ::testing::TempDir() + "/cli_test." + std::to_string(getpid()) + "." + name;
}

std::string WriteModel(const std::string& name, int n_embd = 64) {
  runtime::synthetic::SyntheticModelOptions options;
  options.n_embd = n_embd;
  options.n_ff = n_embd == 256 ? 256 : 96;
  absl::StatusOr<std::string> path =
      runtime::synthetic::WriteSyntheticModel(options, TempPath(name));
  EXPECT_TRUE(path.ok()) << path.status();
  return *path;
}

// Copies a GGUF file, replacing one metadata value and/or one tensor's type (with zero bytes of
// the right size), to make valid files the runtime must refuse.
std::string Rewrite(const std::string& source, const std::string& name, const std::string& key,
                    const runtime::GgufValue* value, const std::string& tensor,
                    kernels::TensorType type) {
  auto file = runtime::GgufFile::Open(source);
  EXPECT_TRUE(file.ok()) << file.status();
  runtime::GgufWriter writer;
  for (const auto& [k, v] : (*file)->metadata()) {
    writer.SetValue(k, k == key && value != nullptr ? *value : v);
  }
  for (const runtime::GgufTensorInfo& t : (*file)->tensors()) {
    if (t.name == tensor) {
      int64_t rows = t.num_elements() / t.dims[0];
      writer.AddTensor(t.name, type, t.dims,
                       std::vector<uint8_t>(kernels::RowBytes(type, t.dims[0]) * rows, 0));
    } else {
      writer.AddTensor(t.name, t.type, t.dims, std::vector<uint8_t>(t.data, t.data + t.nbytes));
    }
  }
  EXPECT_TRUE(writer.WriteFile(TempPath(name)).ok());
  return TempPath(name);
}

struct Result {
  int code;
  std::string out;
  std::string err;
};

Result Generate(const std::string& model, const std::string& prompt = "ab ba",
                const std::string& json_out = "") {
  GenerateCommand command;
  command.model.model_path = model;
  command.model.context = 64;
  command.model.threads = 1;
  command.prompt = prompt;
  command.max_tokens = 6;
  command.sampling.temperature = 0;
  command.json_out = json_out;
  std::ostringstream out, err;
  int code = RunGenerate(command, out, err);
  return {code, out.str(), err.str()};
}

Result Inspect(const std::string& path) {
  std::ostringstream out, err;
  int code = RunInspect(path, false, out, err);
  return {code, out.str(), err.str()};
}

// A failing command prints exactly one line, starting "exo-node: error:", containing `what`.
void ExpectOneLineError(const Result& r, const std::string& what) {
  EXPECT_NE(r.code, 0);
  ASSERT_FALSE(r.err.empty());
  EXPECT_EQ(r.err.rfind("exo-node: error: ", 0), 0u) << r.err;
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "more than one line: " << r.err;
  EXPECT_NE(r.err.find(what), std::string::npos) << r.err;
}

TEST(Generate, GreedyIsDeterministicAndWritesJson) {
  const std::string model = WriteModel("good.gguf");
  const std::string json_path = TempPath("out.json");
  Result first = Generate(model, "ab ba", json_path);
  ASSERT_EQ(first.code, 0) << first.err;
  EXPECT_NE(first.err.find("tok/s"), std::string::npos) << first.err;
  std::ifstream in(json_path);
  nlohmann::json json = nlohmann::json::parse(in);
  EXPECT_EQ(json["tokens"].size(), 6u);
  EXPECT_GT(json["prompt_tokens"].size(), 1u);
  Result second = Generate(model);
  EXPECT_EQ(first.out, second.out);
}

TEST(Generate, MissingFile) { ExpectOneLineError(Generate(TempPath("nope.gguf")), "nope.gguf"); }

TEST(Generate, NotAGguf) {
  std::ofstream(TempPath("text.gguf")) << "hello, this is not a model\n";
  ExpectOneLineError(Generate(TempPath("text.gguf")), "not a GGUF");
}

TEST(Generate, TruncatedFile) {
  const std::string model = WriteModel("full.gguf");
  std::ifstream in(model, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::ofstream(TempPath("half.gguf"), std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  ExpectOneLineError(Generate(TempPath("half.gguf")), "GGUF");
}

TEST(Generate, UnsupportedTensorType) {
  const std::string model = WriteModel("wide.gguf", 256);
  const std::string bad =
      Rewrite(model, "q2k.gguf", "", nullptr, "blk.0.ffn_up.weight", kernels::TensorType::kQ2_K);
  ExpectOneLineError(Generate(bad), "Q2_K");
}

TEST(Generate, UnknownArchitecture) {
  const std::string model = WriteModel("arch.gguf");
  runtime::GgufValue mamba = runtime::GgufValue::String("mamba");
  const std::string bad =
      Rewrite(model, "mamba.gguf", "general.architecture", &mamba, "", kernels::TensorType::kF32);
  ExpectOneLineError(Generate(bad), "mamba");
}

TEST(Generate, PromptLongerThanContext) {
  const std::string model = WriteModel("ctx.gguf");
  ExpectOneLineError(Generate(model, std::string(200, 'a')), "context");
}

TEST(Inspect, PrintsMetadataAndTensorTable) {
  Result r = Inspect(WriteModel("inspect.gguf"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("general.architecture"), std::string::npos);
  EXPECT_NE(r.out.find("blk.0.attn_q.weight"), std::string::npos);
  EXPECT_NE(r.out.find("model: "), std::string::npos);
}

TEST(Inspect, BadInputs) {
  ExpectOneLineError(Inspect(TempPath("missing.gguf")), "missing.gguf");
  std::ofstream(TempPath("junk.bin")) << "GGUF\x03";
  ExpectOneLineError(Inspect(TempPath("junk.bin")), "GGUF");
}

}  // namespace
}  // namespace exo::node
