// The planner's model profile agrees with what the runtime really allocates and maps.
#include "node/model_profile.h"

#include <unistd.h>

#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "partition/plan.h"
#include "partition/profile.h"
#include "runtime/gguf.h"
#include "runtime/kv_cache.h"
#include "runtime/model_config.h"
#include "runtime/stage.h"
#include "synthetic_model_testlib.h"

namespace exo::node {
namespace {

struct Loaded {
  std::unique_ptr<runtime::GgufFile> file;
  runtime::ModelConfig config;
};

Loaded Load(const runtime::synthetic::SyntheticModelOptions& options, const std::string& name) {
  const std::string path =
      ::testing::TempDir() + "/model_profile_test." + std::to_string(getpid()) + "." + name;
  absl::StatusOr<std::string> written = runtime::synthetic::WriteSyntheticModel(options, path);
  EXPECT_TRUE(written.ok()) << written.status();
  Loaded loaded;
  absl::StatusOr<std::unique_ptr<runtime::GgufFile>> file = runtime::GgufFile::Open(path);
  EXPECT_TRUE(file.ok()) << file.status();
  loaded.file = std::move(*file);
  absl::StatusOr<runtime::ModelConfig> config = runtime::ReadModelConfig(*loaded.file);
  EXPECT_TRUE(config.ok()) << config.status();
  loaded.config = *config;
  return loaded;
}

// A runtime stage over [begin, end) with the profile's settings.
std::unique_ptr<runtime::Stage> MakeStage(const Loaded& m, const ModelProfileOptions& options,
                                          int32_t begin, int32_t end) {
  runtime::StageOptions stage;
  stage.layers = {begin, end};
  stage.has_embedding = begin == 0;
  stage.has_head = end == m.config.n_layer;
  stage.context = std::min(options.context, m.config.context_length);
  stage.max_batch_tokens = options.max_batch_tokens;
  stage.max_logit_rows = options.max_logit_rows;
  stage.num_slots = options.num_slots;
  absl::StatusOr<std::unique_ptr<runtime::Stage>> created = runtime::Stage::Create(*m.file, stage);
  EXPECT_TRUE(created.ok()) << created.status();
  return std::move(*created);
}

// Weight and KV bytes of every stage split match the runtime's own counts.
void ExpectMatchesRuntime(const Loaded& m, const ModelProfileOptions& options) {
  absl::StatusOr<partition::ModelProfile> profile = BuildModelProfile(*m.file, m.config, options);
  ASSERT_TRUE(profile.ok()) << profile.status();
  ASSERT_TRUE(partition::ValidateModelProfile(*profile).ok());
  const int32_t n = m.config.n_layer;
  for (int32_t begin = 0; begin < n; ++begin) {
    for (int32_t end = begin + 1; end <= n; ++end) {
      std::unique_ptr<runtime::Stage> stage = MakeStage(m, options, begin, end);
      uint64_t weights = 0;
      uint64_t kv = 0;
      for (int32_t layer = begin; layer < end; ++layer) {
        weights += profile->layer_bytes[layer];
        kv += partition::LayerKvBytes(*profile, layer);
      }
      const bool head = end == n;
      if (begin == 0 && !(head && profile->head_shares_embedding)) {
        weights += profile->embedding_bytes;
      }
      if (head) weights += profile->head_bytes;
      EXPECT_EQ(weights, stage->weight_bytes()) << "[" << begin << ", " << end << ")";
      EXPECT_EQ(kv, stage->kv_cache_bytes()) << "[" << begin << ", " << end << ")";
      const partition::Stage planned{.node_id = "x",
                                     .layer_begin = begin,
                                     .layer_end = end,
                                     .has_embedding = begin == 0,
                                     .has_head = head};
      EXPECT_EQ(partition::StageMemoryBytes(planned, *profile),
                weights + kv + profile->scratch_bytes);
    }
  }
}

TEST(BuildModelProfile, MatchesTheRuntimeForTiedLlama) {
  runtime::synthetic::SyntheticModelOptions options;
  options.n_layer = 4;
  const Loaded m = Load(options, "tied.gguf");
  ModelProfileOptions profile_options;
  profile_options.context = 64;
  profile_options.max_batch_tokens = 8;
  absl::StatusOr<partition::ModelProfile> profile =
      BuildModelProfile(*m.file, m.config, profile_options);
  ASSERT_TRUE(profile.ok()) << profile.status();
  EXPECT_TRUE(profile->head_shares_embedding);
  EXPECT_EQ(profile->n_layers, 4);
  EXPECT_EQ(profile->context_length, 64);
  EXPECT_EQ(profile->hidden_bytes_per_token, 64u * 4);
  // K and V rows of 2 heads x 16 as f16, for 64 positions.
  EXPECT_EQ(profile->kv_bytes_per_token_per_layer, 2u * 2 * 16 * 2);
  EXPECT_EQ(partition::LayerKvBytes(*profile, 0), 64u * 2 * 2 * 16 * 2);
  EXPECT_GT(profile->scratch_bytes, 0u);
  ExpectMatchesRuntime(m, profile_options);
}

TEST(BuildModelProfile, MatchesTheRuntimeForAnUntiedHead) {
  runtime::synthetic::SyntheticModelOptions options;
  options.separate_output = true;
  const Loaded m = Load(options, "untied.gguf");
  ModelProfileOptions profile_options;
  profile_options.context = 32;
  profile_options.num_slots = 2;
  absl::StatusOr<partition::ModelProfile> profile =
      BuildModelProfile(*m.file, m.config, profile_options);
  ASSERT_TRUE(profile.ok()) << profile.status();
  EXPECT_FALSE(profile->head_shares_embedding);
  ExpectMatchesRuntime(m, profile_options);
}

TEST(BuildModelProfile, SlidingWindowLayersHoldOnlyTheirWindow) {
  runtime::synthetic::SyntheticModelOptions options;
  options.arch = "gemma3";
  options.n_layer = 6;  // layer 5 is global, the others slide over a window of 4
  const Loaded m = Load(options, "gemma3.gguf");
  ModelProfileOptions profile_options;
  profile_options.context = 100;
  profile_options.max_batch_tokens = 3;
  absl::StatusOr<partition::ModelProfile> profile =
      BuildModelProfile(*m.file, m.config, profile_options);
  ASSERT_TRUE(profile.ok()) << profile.status();
  const uint64_t row = profile->kv_bytes_per_token_per_layer;
  // window + max_batch - 1 = 6 rows for a sliding layer, the context for the global one, each
  // rounded up to whole 16-row key blocks (the cache's layout).
  EXPECT_EQ(partition::LayerKvBytes(*profile, 0), 16 * row);
  EXPECT_EQ(partition::LayerKvBytes(*profile, 5), 112 * row);
  ExpectMatchesRuntime(m, profile_options);
}

TEST(BuildModelProfile, CapsTheContextAtTheModelsOwn) {
  runtime::synthetic::SyntheticModelOptions options;
  options.context_length = 128;
  const Loaded m = Load(options, "cap.gguf");
  ModelProfileOptions profile_options;
  profile_options.context = 100000;
  absl::StatusOr<partition::ModelProfile> profile =
      BuildModelProfile(*m.file, m.config, profile_options);
  ASSERT_TRUE(profile.ok());
  EXPECT_EQ(profile->context_length, 128);
}

TEST(BuildModelProfile, RejectsBadOptionsAndMismatchedConfigs) {
  runtime::synthetic::SyntheticModelOptions options;
  const Loaded m = Load(options, "bad.gguf");
  ModelProfileOptions bad;
  bad.context = 0;
  EXPECT_EQ(BuildModelProfile(*m.file, m.config, bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  runtime::ModelConfig fewer = m.config;
  fewer.n_layer = 2;
  fewer.layer_is_swa.resize(2);
  absl::Status status = BuildModelProfile(*m.file, fewer, ModelProfileOptions{}).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("blk.2"), std::string::npos) << status;
}

}  // namespace
}  // namespace exo::node
