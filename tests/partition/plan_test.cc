#include "partition/plan.h"

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "partition/profile.h"

namespace exo::partition {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kGiB = uint64_t{1} << 30;

// A made-up home fleet: a 64 GB Mac, a 24 GB GPU box (fast), an 8 GB Raspberry Pi (slow).
std::vector<DeviceProfile> Fleet() {
  return {
      {.node_id = "mac",
       .memory_bytes = 64 * kGiB,
       .decode_bytes_per_second = 400e9,
       .device_kind = "apple-m2-max"},
      {.node_id = "gpu",
       .memory_bytes = 24 * kGiB,
       .decode_bytes_per_second = 1000e9,
       .device_kind = "cuda-rtx4090"},
      {.node_id = "pi",
       .memory_bytes = 8 * kGiB,
       .decode_bytes_per_second = 17e9,
       .device_kind = "cpu-a76"},
  };
}

// n_layers layers of `layer` bytes, 8 KiB of KV per token per layer, 8192 tokens of context
// (64 MiB of KV per layer), 512 MiB embedding and head, 256 MiB scratch.
ModelProfile Model(int32_t n_layers, uint64_t layer) {
  ModelProfile model;
  model.n_layers = n_layers;
  model.layer_bytes.assign(n_layers, layer);
  model.embedding_bytes = 512 * kMiB;
  model.head_bytes = 512 * kMiB;
  model.kv_bytes_per_token_per_layer = 8 * 1024;
  model.context_length = 8192;
  model.scratch_bytes = 256 * kMiB;
  return model;
}

Stage MakeStage(std::string node, int32_t begin, int32_t end, bool embedding, bool head) {
  return Stage{.node_id = std::move(node),
               .layer_begin = begin,
               .layer_end = end,
               .has_embedding = embedding,
               .has_head = head};
}

TEST(StageMemoryBytes, CountsWeightsKvEmbeddingHeadAndScratch) {
  const ModelProfile model = Model(32, kGiB);
  EXPECT_EQ(StageMemoryBytes(MakeStage("x", 0, 4, true, false), model),
            4 * kGiB + 4 * 64 * kMiB + 512 * kMiB + 256 * kMiB);
  EXPECT_EQ(StageMemoryBytes(MakeStage("x", 4, 6, false, false), model),
            2 * kGiB + 2 * 64 * kMiB + 256 * kMiB);
  EXPECT_EQ(StageMemoryBytes(MakeStage("x", 30, 32, false, true), model),
            2 * kGiB + 2 * 64 * kMiB + 512 * kMiB + 256 * kMiB);
  EXPECT_EQ(StageMemoryBytes(MakeStage("x", 0, 32, true, true), model), ModelMemoryBytes(model));
}

TEST(StageMemoryBytes, UsesEachLayersOwnSize) {
  ModelProfile model = Model(3, 0);
  model.layer_bytes = {100, 200, 400};
  model.kv_bytes_per_token_per_layer = 0;
  model.scratch_bytes = 0;
  EXPECT_EQ(StageMemoryBytes(MakeStage("x", 1, 3, false, false), model), 600u);
  // Out-of-range layers are not counted (ValidatePlan reports them).
  EXPECT_EQ(StageMemoryBytes(MakeStage("x", -5, 99, false, false), model), 700u);
}

TEST(StageMemoryBytes, SaturatesInsteadOfWrapping) {
  ModelProfile model = Model(2, std::numeric_limits<uint64_t>::max() / 2 + 1);
  EXPECT_EQ(StageMemoryBytes(MakeStage("x", 0, 2, false, false), model),
            std::numeric_limits<uint64_t>::max());
  model = Model(2, 1);
  model.kv_bytes_per_token_per_layer = std::numeric_limits<uint64_t>::max() / 4;
  EXPECT_EQ(StageMemoryBytes(MakeStage("x", 0, 2, false, false), model),
            std::numeric_limits<uint64_t>::max());
}

TEST(ValidatePlan, AcceptsAPipelineOverTheFleet) {
  // 32 layers of 1 GiB: 20 on the Mac, 10 on the GPU box, 2 on the Pi.
  const Plan plan{
      .epoch = 3,
      .stages = {MakeStage("mac", 0, 20, true, false), MakeStage("gpu", 20, 30, false, false),
                 MakeStage("pi", 30, 32, false, true)}};
  EXPECT_TRUE(ValidatePlan(plan, Model(32, kGiB), Fleet()).ok());
}

TEST(ValidatePlan, AcceptsASingleStageHoldingEverything) {
  const Plan plan{.epoch = 1, .stages = {MakeStage("mac", 0, 32, true, true)}};
  EXPECT_TRUE(ValidatePlan(plan, Model(32, kGiB), Fleet()).ok());
}

TEST(ValidatePlan, SaysHowManyBytesAreMissingOnWhichNode) {
  // The Pi gets 8 layers: 8 GiB + 512 MiB KV + 512 MiB head + 256 MiB scratch = 9.25 GiB.
  const Plan plan{
      .epoch = 3,
      .stages = {MakeStage("mac", 0, 20, true, false), MakeStage("gpu", 20, 24, false, false),
                 MakeStage("pi", 24, 32, false, true)}};
  const absl::Status status = ValidatePlan(plan, Model(32, kGiB), Fleet());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("node 'pi'"));
  const uint64_t missing = 8 * kGiB + 8 * 64 * kMiB + 512 * kMiB + 256 * kMiB - 8 * kGiB;
  EXPECT_THAT(status.message(), HasSubstr(absl::StrCat(missing, " bytes) missing")));
}

TEST(ValidatePlan, AddsUpStagesOnTheSameNode) {
  // Each gpu stage fits alone (11 + 11 GiB plus KV and scratch) but not together.
  const Plan plan{
      .epoch = 1,
      .stages = {MakeStage("gpu", 0, 11, true, false), MakeStage("mac", 11, 21, false, false),
                 MakeStage("gpu", 21, 32, false, true)}};
  const absl::Status status = ValidatePlan(plan, Model(32, kGiB), Fleet());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("node 'gpu'"));
  EXPECT_THAT(status.message(), HasSubstr("missing"));
}

TEST(ValidatePlan, RejectsGapsOverlapsAndWrongOrder) {
  const ModelProfile model = Model(32, kGiB);
  struct Case {
    std::string name;
    std::vector<Stage> stages;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"gap",
       {MakeStage("mac", 0, 10, true, false), MakeStage("gpu", 11, 32, false, true)},
       "starts at layer 11 but layer 10 is next"},
      {"overlap",
       {MakeStage("mac", 0, 10, true, false), MakeStage("gpu", 9, 32, false, true)},
       "starts at layer 9 but layer 10 is next"},
      {"out of order",
       {MakeStage("gpu", 16, 32, true, false), MakeStage("mac", 0, 16, false, true)},
       "starts at layer 16 but layer 0 is next"},
      {"short",
       {MakeStage("mac", 0, 10, true, false), MakeStage("gpu", 10, 31, false, true)},
       "covers layers [0, 31) but the model has 32 layers"},
      {"past the end",
       {MakeStage("mac", 0, 10, true, false), MakeStage("gpu", 10, 33, false, true)},
       "layer range [10, 33)"},
      {"empty stage",
       {MakeStage("mac", 0, 0, true, false), MakeStage("gpu", 0, 32, false, true)},
       "layer range [0, 0)"},
      {"first without embedding",
       {MakeStage("mac", 0, 10, false, false), MakeStage("gpu", 10, 32, false, true)},
       "is first but does not hold the embedding"},
      {"embedding later",
       {MakeStage("mac", 0, 10, true, false), MakeStage("gpu", 10, 32, true, true)},
       "holds the embedding but only the first stage may"},
      {"last without head",
       {MakeStage("mac", 0, 10, true, false), MakeStage("gpu", 10, 32, false, false)},
       "is last but does not hold the head"},
      {"head early",
       {MakeStage("mac", 0, 10, true, true), MakeStage("gpu", 10, 32, false, true)},
       "holds the head but only the last stage may"},
      {"unknown node",
       {MakeStage("mac", 0, 10, true, false), MakeStage("laptop", 10, 32, false, true)},
       "names node 'laptop', which is not among the 3 known devices"},
      {"no stages", {}, "has no stages"},
  };
  for (const Case& c : cases) {
    const absl::Status status = ValidatePlan(Plan{.epoch = 7, .stages = c.stages}, model, Fleet());
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_THAT(status.message(), HasSubstr(c.message)) << c.name;
  }
}

TEST(ValidatePlan, RejectsInconsistentModelAndFleet) {
  const Plan plan{.epoch = 1, .stages = {MakeStage("mac", 0, 4, true, true)}};
  ModelProfile model = Model(4, kGiB);
  model.layer_bytes.pop_back();
  EXPECT_THAT(ValidatePlan(plan, model, Fleet()).message(),
              HasSubstr("layer_bytes has 3 entries but n_layers is 4"));
  model = Model(4, kGiB);
  model.context_length = 0;
  EXPECT_THAT(ValidatePlan(plan, model, Fleet()).message(), HasSubstr("context_length"));
  std::vector<DeviceProfile> fleet = Fleet();
  fleet.push_back(fleet.front());
  EXPECT_THAT(ValidatePlan(plan, Model(4, kGiB), fleet).message(),
              HasSubstr("node 'mac' is listed twice"));
}

TEST(SingleNodePlan, PicksTheFastestNodeThatFits) {
  // 4 GiB of layers + 256 MiB KV + 1 GiB embedding/head + 256 MiB scratch = 5.5 GiB: every node
  // can hold it, and the GPU box is the fastest.
  const absl::StatusOr<Plan> plan = SingleNodePlan(Model(4, kGiB), Fleet(), 9);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->stages.size(), 1u);
  EXPECT_EQ(plan->epoch, 9u);
  EXPECT_EQ(plan->stages[0].node_id, "gpu");
  EXPECT_EQ(plan->stages[0].layer_begin, 0);
  EXPECT_EQ(plan->stages[0].layer_end, 4);
  EXPECT_TRUE(plan->stages[0].has_embedding);
  EXPECT_TRUE(plan->stages[0].has_head);
  EXPECT_TRUE(ValidatePlan(*plan, Model(4, kGiB), Fleet()).ok());
}

TEST(SingleNodePlan, FallsBackToTheSlowerNodeWhenTheFastOneIsTooSmall) {
  // 32 GiB of layers: only the Mac can hold it.
  const absl::StatusOr<Plan> plan = SingleNodePlan(Model(32, kGiB), Fleet(), 1);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->stages[0].node_id, "mac");
  EXPECT_TRUE(ValidatePlan(*plan, Model(32, kGiB), Fleet()).ok());
}

TEST(SingleNodePlan, BreaksSpeedTiesByMemoryThenNodeId) {
  std::vector<DeviceProfile> fleet = {
      {.node_id = "b",
       .memory_bytes = 16 * kGiB,
       .decode_bytes_per_second = 100e9,
       .device_kind = "cpu"},
      {.node_id = "a",
       .memory_bytes = 16 * kGiB,
       .decode_bytes_per_second = 100e9,
       .device_kind = "cpu"},
      {.node_id = "c",
       .memory_bytes = 8 * kGiB,
       .decode_bytes_per_second = 100e9,
       .device_kind = "cpu"},
  };
  EXPECT_EQ(SingleNodePlan(Model(2, kGiB), fleet, 1)->stages[0].node_id, "a");
  fleet[2].memory_bytes = 32 * kGiB;
  EXPECT_EQ(SingleNodePlan(Model(2, kGiB), fleet, 1)->stages[0].node_id, "c");
}

TEST(SingleNodePlan, SaysHowMuchIsMissingOnTheLargestNode) {
  // 80 GiB of layers + 5 GiB KV + 1 GiB embedding/head + 256 MiB scratch; the Mac has 64 GiB.
  const ModelProfile model = Model(80, kGiB);
  const absl::StatusOr<Plan> plan = SingleNodePlan(model, Fleet(), 1);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(plan.status().message(), HasSubstr("largest node 'mac'"));
  const uint64_t missing = ModelMemoryBytes(model) - 64 * kGiB;
  EXPECT_EQ(missing, 22 * kGiB + 256 * kMiB);
  EXPECT_THAT(plan.status().message(), HasSubstr(absl::StrCat(missing, " bytes) missing")));
}

TEST(SingleNodePlan, RefusesAnEmptyFleet) {
  EXPECT_EQ(SingleNodePlan(Model(2, kGiB), {}, 1).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(FormatBytes, ShowsUnitsAndExactCount) {
  EXPECT_EQ(FormatBytes(512), "512 bytes");
  EXPECT_EQ(FormatBytes(3 * kMiB / 2), "1.50 MiB (1572864 bytes)");
  EXPECT_EQ(FormatBytes(9 * kGiB / 4), "2.25 GiB (2415919104 bytes)");
}

}  // namespace
}  // namespace exo::partition
