// Hyperparameters from GGUF metadata: defaults, per-architecture facts, and clear errors.
#include "runtime/model_config.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/gguf.h"

namespace exo::runtime {
namespace {

class ModelConfigTest : public ::testing::Test {
 protected:
  // A metadata-only model (plus the embedding, whose rows give the vocabulary size).
  void SetArch(const std::string& arch, int layers) {
    arch_ = arch;
    writer_.SetValue("general.architecture", GgufValue::String(arch));
    Set("block_count", GgufValue::U32(layers));
    Set("embedding_length", GgufValue::U32(64));
    Set("feed_forward_length", GgufValue::U32(128));
    Set("attention.head_count", GgufValue::U32(4));
  }
  void Set(const std::string& key, GgufValue value) {
    writer_.SetValue(arch_ + "." + key, std::move(value));
  }
  absl::StatusOr<ModelConfig> Read() {
    writer_.AddTensor("token_embd.weight", kernels::TensorType::kF32, {64, 10},
                      std::vector<uint8_t>(64 * 10 * 4, 0));
    bytes_ = writer_.Serialize();
    auto file = GgufFile::FromBuffer(bytes_.data(), bytes_.size());
    if (!file.ok()) return file.status();
    file_ = std::move(*file);
    return ReadModelConfig(*file_);
  }

  std::string arch_;
  GgufWriter writer_;
  std::vector<uint8_t> bytes_;
  std::unique_ptr<GgufFile> file_;
};

TEST_F(ModelConfigTest, LlamaDefaults) {
  SetArch("llama", 2);
  auto c = Read();
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->n_head_kv, 4);
  EXPECT_EQ(c->head_dim, 16);
  EXPECT_EQ(c->head_dim_v, 16);
  EXPECT_EQ(c->rope_dim, 16);
  EXPECT_EQ(c->n_vocab, 10);
  EXPECT_EQ(c->rope_style, kernels::RopeStyle::kNormal);
  EXPECT_FALSE(c->has_qkv_bias);
  EXPECT_FLOAT_EQ(c->attention_scale, 0.25f);
}

TEST_F(ModelConfigTest, Qwen2UsesBiasesAndNeoxRope) {
  SetArch("qwen2", 2);
  auto c = Read();
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->has_qkv_bias);
  EXPECT_EQ(c->rope_style, kernels::RopeStyle::kNeox);
}

TEST_F(ModelConfigTest, Gemma3EverySixthLayerIsGlobal) {
  SetArch("gemma3", 12);
  Set("attention.sliding_window", GgufValue::U32(512));
  auto c = Read();
  ASSERT_TRUE(c.ok()) << c.status();
  std::vector<bool> expected = {true, true, true, true, true, false,
                                true, true, true, true, true, false};
  EXPECT_EQ(c->layer_is_swa, expected);
  EXPECT_EQ(c->sliding_window, 512);
  EXPECT_FLOAT_EQ(c->embedding_scale, 8.0f);
  EXPECT_EQ(c->activation, FeedForwardActivation::kGeluTanh);
}

TEST_F(ModelConfigTest, Gemma3PatternAsPerLayerFlags) {
  SetArch("gemma3", 3);
  Set("attention.sliding_window", GgufValue::U32(8));
  GgufValue flags;
  flags.type = GgufValueType::kArray;
  GgufValue::Array array;
  array.element_type = GgufValueType::kBool;
  for (bool b : {false, true, false}) array.elements.push_back(GgufValue::Bool(b));
  flags.data = array;
  Set("attention.sliding_window_pattern", flags);
  auto c = Read();
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->layer_is_swa, (std::vector<bool>{false, true, false}));
}

TEST_F(ModelConfigTest, Gemma3PatternWithWrongLengthIsRefused) {
  SetArch("gemma3", 3);
  Set("attention.sliding_window", GgufValue::U32(8));
  GgufValue flags;
  flags.type = GgufValueType::kArray;
  GgufValue::Array array;
  array.element_type = GgufValueType::kBool;
  array.elements.push_back(GgufValue::Bool(true));
  flags.data = array;
  Set("attention.sliding_window_pattern", flags);
  auto c = Read();
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("sliding_window_pattern"), std::string::npos);
}

TEST_F(ModelConfigTest, MissingKeyIsNamed) {
  arch_ = "llama";
  writer_.SetValue("general.architecture", GgufValue::String("llama"));
  Set("embedding_length", GgufValue::U32(64));
  auto c = Read();
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("llama.block_count"), std::string::npos) << c.status();
}

TEST_F(ModelConfigTest, UnknownArchitectureIsUnimplemented) {
  SetArch("mamba", 2);
  auto c = Read();
  EXPECT_EQ(c.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(c.status().message().find("'mamba'"), std::string::npos) << c.status();
}

TEST_F(ModelConfigTest, HeadsMustDivideEvenly) {
  SetArch("llama", 2);
  Set("attention.head_count_kv", GgufValue::U32(3));
  auto c = Read();
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ModelConfigTest, UnsupportedRopeScalingIsRefused) {
  SetArch("llama", 2);
  Set("rope.scaling.type", GgufValue::String("yarn"));
  auto c = Read();
  EXPECT_EQ(c.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(c.status().message().find("yarn"), std::string::npos);
}

}  // namespace
}  // namespace exo::runtime
