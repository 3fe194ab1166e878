#include "partition/planner.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <limits>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "partition/plan.h"
#include "partition/profile.h"

namespace exo::partition {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kGiB = uint64_t{1} << 30;

DeviceProfile Device(std::string id, uint64_t memory, double bandwidth, std::string kind = "") {
  return DeviceProfile{.node_id = std::move(id),
                       .memory_bytes = memory,
                       .decode_bytes_per_second = bandwidth,
                       .device_kind = std::move(kind)};
}

// A made-up home fleet: a 64 GB Mac, a 24 GB GPU box, an 8 GB Raspberry Pi.
std::vector<DeviceProfile> HomeFleet() {
  return {Device("mac", 64 * kGiB, 400e9, "apple-m2-max"),
          Device("gpu", 24 * kGiB, 900e9, "cuda-rtx4090"), Device("pi", 8 * kGiB, 4e9, "cpu-a76")};
}

// n_layers layers of `layer` bytes, 64 MiB of KV per layer, 512 MiB embedding and head,
// 256 MiB scratch, 16 KiB of hidden state per token.
ModelProfile Model(int32_t n_layers, uint64_t layer) {
  ModelProfile model;
  model.n_layers = n_layers;
  model.layer_bytes.assign(n_layers, layer);
  model.embedding_bytes = 512 * kMiB;
  model.head_bytes = 512 * kMiB;
  model.kv_bytes_per_token_per_layer = 8 * 1024;
  model.context_length = 8192;
  model.scratch_bytes = 256 * kMiB;
  model.hidden_bytes_per_token = 4096 * 4;
  return model;
}

LinkModel Lan(double latency = 0.002) {
  LinkModel links;
  links.default_latency_seconds = latency;
  links.default_bytes_per_second = 1.25e9;  // 10 GbE
  return links;
}

PlannerOptions Optimal() { return PlannerOptions{.strategy = Strategy::kOptimal}; }
PlannerOptions Ring() { return PlannerOptions{.strategy = Strategy::kRing}; }

double Seconds(const Plan& plan, const ModelProfile& model,
               const std::vector<DeviceProfile>& devices, const LinkModel& links) {
  absl::StatusOr<PlanEstimate> estimate = EstimatePlan(plan, model, devices, links);
  EXPECT_TRUE(estimate.ok()) << estimate.status();
  return estimate.ok() ? estimate->seconds_per_token : std::numeric_limits<double>::infinity();
}

std::string Describe(const Plan& plan) {
  std::string out;
  for (const Stage& stage : plan.stages) {
    absl::StrAppend(&out, stage.node_id, "[", stage.layer_begin, ",", stage.layer_end, ") ");
  }
  return out;
}

bool SameStages(const Plan& a, const Plan& b) {
  if (a.stages.size() != b.stages.size()) return false;
  for (size_t i = 0; i < a.stages.size(); ++i) {
    const Stage& x = a.stages[i];
    const Stage& y = b.stages[i];
    if (x.node_id != y.node_id || x.layer_begin != y.layer_begin || x.layer_end != y.layer_end ||
        x.has_embedding != y.has_embedding || x.has_head != y.has_head) {
      return false;
    }
  }
  return true;
}

// Every plan with distinct nodes: every subset, every order, every contiguous split.
std::vector<Plan> AllPlans(const ModelProfile& model, const std::vector<DeviceProfile>& devices,
                           int32_t max_stages) {
  std::vector<Plan> plans;
  const int32_t n = static_cast<int32_t>(devices.size());
  for (uint32_t mask = 1; mask < (1u << n); ++mask) {
    std::vector<int32_t> chosen;
    for (int32_t d = 0; d < n; ++d) {
      if (mask >> d & 1) chosen.push_back(d);
    }
    const int32_t k = static_cast<int32_t>(chosen.size());
    if (k > model.n_layers || (max_stages > 0 && k > max_stages)) continue;
    do {
      // Choose k-1 cut points among layers 1..n_layers-1.
      std::vector<bool> cut(model.n_layers - 1, false);
      std::fill(cut.end() - (k - 1), cut.end(), true);
      do {
        Plan plan;
        int32_t begin = 0;
        int32_t stage = 0;
        for (int32_t boundary = 1; boundary <= model.n_layers; ++boundary) {
          if (boundary == model.n_layers || cut[boundary - 1]) {
            plan.stages.push_back(Stage{.node_id = devices[chosen[stage]].node_id,
                                        .layer_begin = begin,
                                        .layer_end = boundary,
                                        .has_embedding = stage == 0,
                                        .has_head = boundary == model.n_layers});
            begin = boundary;
            ++stage;
          }
        }
        plans.push_back(std::move(plan));
      } while (std::next_permutation(cut.begin(), cut.end()));
    } while (std::next_permutation(chosen.begin(), chosen.end()));
  }
  return plans;
}

// The fastest valid plan by brute force; nullopt when none fits.
std::optional<double> BruteForceSeconds(const ModelProfile& model,
                                        const std::vector<DeviceProfile>& devices,
                                        const LinkModel& links, int32_t max_stages = 0) {
  std::optional<double> best;
  for (const Plan& plan : AllPlans(model, devices, max_stages)) {
    if (!ValidatePlan(plan, model, devices).ok()) continue;
    const double seconds = Seconds(plan, model, devices, links);
    if (!best || seconds < *best) best = seconds;
  }
  return best;
}

// A random small fleet and model where memory binds often.
struct Case {
  ModelProfile model;
  std::vector<DeviceProfile> devices;
  LinkModel links;
};

Case RandomCase(std::mt19937_64& rng, int32_t max_devices, int32_t max_layers) {
  std::uniform_int_distribution<int32_t> n_devices(1, max_devices);
  std::uniform_int_distribution<int32_t> n_layers(1, max_layers);
  std::uniform_int_distribution<uint64_t> layer(50 * kMiB, 400 * kMiB);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  Case c;
  c.model.n_layers = n_layers(rng);
  uint64_t total = 0;
  for (int32_t i = 0; i < c.model.n_layers; ++i) {
    c.model.layer_bytes.push_back(layer(rng));
    total += c.model.layer_bytes.back();
  }
  c.model.embedding_bytes = layer(rng);
  c.model.head_shares_embedding = unit(rng) < 0.3;
  c.model.head_bytes = c.model.embedding_bytes + (c.model.head_shares_embedding ? kMiB : 0);
  c.model.kv_bytes_per_token_per_layer = 1024;
  c.model.context_length = 4096;
  if (unit(rng) < 0.3) {
    for (int32_t i = 0; i < c.model.n_layers; ++i) {
      c.model.layer_kv_bytes.push_back(i % 2 == 0 ? 4 * kMiB : 1 * kMiB);
    }
  }
  c.model.scratch_bytes = 32 * kMiB;
  c.model.hidden_bytes_per_token = 2048 * 4;
  const int32_t n = n_devices(rng);
  for (int32_t d = 0; d < n; ++d) {
    // Memory between 10% and 160% of the layers; bandwidth 4 to 1000 GB/s.
    const uint64_t memory =
        static_cast<uint64_t>((0.1 + 1.5 * unit(rng)) * static_cast<double>(total));
    const double bandwidth = 4e9 * std::pow(250.0, unit(rng));
    c.devices.push_back(Device(absl::StrCat("node-", std::string(1, static_cast<char>('a' + d))),
                               memory, bandwidth));
  }
  c.links.default_latency_seconds = 0.0001 * std::pow(500.0, unit(rng));  // 0.1 to 50 ms
  c.links.default_bytes_per_second = unit(rng) < 0.5 ? 0.0 : 1e9;
  if (n >= 2 && unit(rng) < 0.5) {
    c.links.links.push_back({.from = c.devices[0].node_id,
                             .to = c.devices[1].node_id,
                             .latency_seconds = 0.00005,
                             .bytes_per_second = 5e9});
  }
  return c;
}

TEST(FindLink, UsesListedLinksBothWaysAndDefaultsOtherwise) {
  LinkModel links = Lan(0.003);
  links.links.push_back({.from = "a", .to = "b", .latency_seconds = 0.0001});
  links.links.push_back({.from = "c", .to = "a", .latency_seconds = 0.0002});
  links.links.push_back({.from = "a", .to = "c", .latency_seconds = 0.0004});
  EXPECT_DOUBLE_EQ(FindLink(links, "a", "b").latency_seconds, 0.0001);
  EXPECT_DOUBLE_EQ(FindLink(links, "b", "a").latency_seconds, 0.0001);
  EXPECT_DOUBLE_EQ(FindLink(links, "a", "c").latency_seconds, 0.0004);
  EXPECT_DOUBLE_EQ(FindLink(links, "c", "a").latency_seconds, 0.0002);
  EXPECT_DOUBLE_EQ(FindLink(links, "b", "c").latency_seconds, 0.003);
  EXPECT_DOUBLE_EQ(FindLink(links, "b", "c").bytes_per_second, 1.25e9);
  EXPECT_DOUBLE_EQ(FindLink(links, "b", "b").latency_seconds, 0.0);
}

TEST(EstimatePlan, AddsComputeHopsAndTheReturnOfTheToken) {
  ModelProfile model = Model(4, 1000);
  model.head_bytes = 500;
  model.hidden_bytes_per_token = 100;
  const std::vector<DeviceProfile> devices = {Device("a", 64 * kGiB, 1000.0),
                                              Device("b", 64 * kGiB, 2000.0)};
  LinkModel links;
  links.default_latency_seconds = 0.5;
  links.default_bytes_per_second = 100.0;
  const Plan plan{.stages = {{"a", 0, 1, true, false}, {"b", 1, 4, false, true}}};
  absl::StatusOr<PlanEstimate> estimate = EstimatePlan(plan, model, devices, links);
  ASSERT_TRUE(estimate.ok()) << estimate.status();
  ASSERT_EQ(estimate->stages.size(), 2u);
  EXPECT_EQ(estimate->stages[0].bytes_read_per_token, 1000u);
  EXPECT_DOUBLE_EQ(estimate->stages[0].compute_seconds, 1.0);
  EXPECT_DOUBLE_EQ(estimate->stages[0].hop_seconds, 0.5 + 1.0);  // 100 hidden bytes at 100 B/s
  EXPECT_EQ(estimate->stages[1].bytes_read_per_token, 3500u);    // three layers and the head
  EXPECT_DOUBLE_EQ(estimate->stages[1].compute_seconds, 1.75);
  EXPECT_DOUBLE_EQ(estimate->stages[1].hop_seconds, 0.5 + 0.04);  // a 4-byte token back to a
  EXPECT_EQ(estimate->stages[1].memory_bytes, StageMemoryBytes(plan.stages[1], model));
  EXPECT_DOUBLE_EQ(estimate->seconds_per_token, 1.0 + 1.5 + 1.75 + 0.54);

  const Plan unknown{.stages = {{"zz", 0, 4, true, true}}};
  EXPECT_THAT(EstimatePlan(unknown, model, devices, links).status().message(), HasSubstr("zz"));
}

TEST(Ring, SplitsLayersInProportionToMemoryLargestFirst) {
  const ModelProfile model = Model(32, kGiB);
  absl::StatusOr<Plan> plan = MakePlan(model, HomeFleet(), Lan(), Ring());
  ASSERT_TRUE(plan.ok()) << plan.status();
  // 64:24:8 of 32 layers: boundaries 21.33 and 29.33 round to 21 and 29.
  const Plan expected{.stages = {{"mac", 0, 21, true, false},
                                 {"gpu", 21, 29, false, false},
                                 {"pi", 29, 32, false, true}}};
  EXPECT_TRUE(SameStages(*plan, expected)) << Describe(*plan);
  EXPECT_TRUE(ValidatePlan(*plan, model, HomeFleet()).ok());
}

TEST(Ring, TiesInMemoryGoByNodeId) {
  const ModelProfile model = Model(4, kGiB);
  const std::vector<DeviceProfile> devices = {Device("b", 16 * kGiB, 1e9),
                                              Device("a", 16 * kGiB, 1e9)};
  absl::StatusOr<Plan> plan = MakePlan(model, devices, Lan(), Ring());
  ASSERT_TRUE(plan.ok()) << plan.status();
  const Plan expected{.stages = {{"a", 0, 2, true, false}, {"b", 2, 4, false, true}}};
  EXPECT_TRUE(SameStages(*plan, expected)) << Describe(*plan);
}

TEST(Ring, MovesBoundariesWhenRoundingWouldOverflowANode) {
  // Ten 1 GiB layers and a 2 GiB head on nodes of 7 and 6 GiB.
  ModelProfile model = Model(10, kGiB);
  model.kv_bytes_per_token_per_layer = 0;
  model.scratch_bytes = 0;
  model.embedding_bytes = 0;
  model.head_bytes = 2 * kGiB;
  const std::vector<DeviceProfile> devices = {Device("a", 7 * kGiB, 1e9),
                                              Device("b", 6 * kGiB, 1e9)};
  absl::StatusOr<Plan> plan = MakePlan(model, devices, Lan(), Ring());
  ASSERT_TRUE(plan.ok()) << plan.status();
  // Targets: 10*7/13 = 5.38 -> 5 would leave b with 5 layers + head = 7 GiB > 6 GiB. The
  // nearest split that fits gives b 4 layers.
  const Plan expected{.stages = {{"a", 0, 6, true, false}, {"b", 6, 10, false, true}}};
  EXPECT_TRUE(SameStages(*plan, expected)) << Describe(*plan);
  EXPECT_TRUE(ValidatePlan(*plan, model, devices).ok());
}

TEST(Ring, DropsANodeWhoseShareRoundsToNoLayers) {
  const ModelProfile model = Model(4, kGiB);
  const std::vector<DeviceProfile> devices = {Device("big", 64 * kGiB, 1e9),
                                              Device("tiny", 1 * kGiB, 1e9)};
  absl::StatusOr<Plan> plan = MakePlan(model, devices, Lan(), Ring());
  ASSERT_TRUE(plan.ok()) << plan.status();
  const Plan expected{.stages = {{"big", 0, 4, true, true}}};
  EXPECT_TRUE(SameStages(*plan, expected)) << Describe(*plan);
}

TEST(Optimal, UsesTheFastNodesAndLeavesTheSlowPiOut) {
  const ModelProfile model = Model(40, kGiB);  // about 43 GiB in all
  const std::vector<DeviceProfile> devices = HomeFleet();
  absl::StatusOr<Plan> plan = MakePlan(model, devices, Lan(), Optimal());
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_TRUE(ValidatePlan(*plan, model, devices).ok()) << Describe(*plan);
  for (const Stage& stage : plan->stages) EXPECT_NE(stage.node_id, "pi") << Describe(*plan);
  ASSERT_EQ(plan->stages.size(), 2u) << Describe(*plan);
  // The GPU box takes as many layers as fit: 21 GiB of layers and KV plus scratch.
  const Stage& gpu = plan->stages[0].node_id == "gpu" ? plan->stages[0] : plan->stages[1];
  EXPECT_EQ(gpu.layer_end - gpu.layer_begin, gpu.has_head || gpu.has_embedding ? 21 : 22);

  absl::StatusOr<Plan> single = SingleNodePlan(model, devices, 0);
  ASSERT_TRUE(single.ok());
  absl::StatusOr<Plan> ring = MakePlan(model, devices, Lan(), Ring());
  ASSERT_TRUE(ring.ok());
  const double optimal_seconds = Seconds(*plan, model, devices, Lan());
  EXPECT_LT(optimal_seconds, Seconds(*single, model, devices, Lan()));
  // exo's ring puts 3 layers and the head on the Pi and is several times slower.
  EXPECT_LT(optimal_seconds * 3, Seconds(*ring, model, devices, Lan()));
}

TEST(Optimal, StaysOnOneNodeWhenHopsCostMoreThanTheyGain) {
  const ModelProfile model = Model(40, kGiB);
  const std::vector<DeviceProfile> devices = HomeFleet();
  absl::StatusOr<Plan> plan = MakePlan(model, devices, Lan(/*latency=*/0.5), Optimal());
  ASSERT_TRUE(plan.ok()) << plan.status();
  absl::StatusOr<Plan> single = SingleNodePlan(model, devices, 0);
  ASSERT_TRUE(single.ok());
  EXPECT_TRUE(SameStages(*plan, *single)) << Describe(*plan);
}

TEST(Optimal, EqualsBruteForceOnSmallFleets) {
  std::mt19937_64 rng(20261125);
  int32_t feasible = 0;
  int32_t multi_stage = 0;
  for (int32_t trial = 0; trial < 300; ++trial) {
    const Case c = RandomCase(rng, /*max_devices=*/4, /*max_layers=*/7);
    const int32_t max_stages = trial % 5 == 0 ? 2 : 0;
    PlannerOptions options = Optimal();
    options.max_stages = max_stages;
    const std::optional<double> brute = BruteForceSeconds(c.model, c.devices, c.links, max_stages);
    absl::StatusOr<Plan> plan = MakePlan(c.model, c.devices, c.links, options);
    ASSERT_EQ(plan.ok(), brute.has_value()) << "trial " << trial << ": " << plan.status();
    if (!plan.ok()) {
      EXPECT_EQ(plan.status().code(), absl::StatusCode::kResourceExhausted);
      continue;
    }
    ++feasible;
    if (plan->stages.size() > 1) ++multi_stage;
    ASSERT_TRUE(ValidatePlan(*plan, c.model, c.devices).ok()) << Describe(*plan);
    if (max_stages > 0) EXPECT_LE(static_cast<int32_t>(plan->stages.size()), max_stages);
    const double seconds = Seconds(*plan, c.model, c.devices, c.links);
    EXPECT_NEAR(seconds, *brute, *brute * 1e-9) << "trial " << trial << ": " << Describe(*plan);
  }
  // The random cases exercise both fitting and non-fitting fleets, and real splits.
  EXPECT_GT(feasible, 60);
  EXPECT_GT(multi_stage, 30);
  EXPECT_LT(feasible, 250);
  std::cout << feasible << " of 300 cases fit, " << multi_stage << " of them on several nodes\n";
}

TEST(Optimal, IsDeterministicWhateverTheDeviceOrder) {
  std::mt19937_64 rng(7);
  for (int32_t trial = 0; trial < 50; ++trial) {
    Case c = RandomCase(rng, /*max_devices=*/8, /*max_layers=*/24);
    // Equal devices make ties, which must resolve the same way every time.
    if (c.devices.size() >= 2) {
      c.devices[1].memory_bytes = c.devices[0].memory_bytes;
      c.devices[1].decode_bytes_per_second = c.devices[0].decode_bytes_per_second;
    }
    for (Strategy strategy : {Strategy::kOptimal, Strategy::kRing}) {
      PlannerOptions options{.strategy = strategy};
      absl::StatusOr<Plan> first = MakePlan(c.model, c.devices, c.links, options);
      absl::StatusOr<Plan> again = MakePlan(c.model, c.devices, c.links, options);
      std::vector<DeviceProfile> shuffled = c.devices;
      std::shuffle(shuffled.begin(), shuffled.end(), rng);
      absl::StatusOr<Plan> reordered = MakePlan(c.model, shuffled, c.links, options);
      ASSERT_EQ(first.ok(), again.ok());
      ASSERT_EQ(first.ok(), reordered.ok());
      if (!first.ok()) {
        EXPECT_EQ(first.status(), reordered.status());
        continue;
      }
      EXPECT_TRUE(SameStages(*first, *again)) << Describe(*first) << " vs " << Describe(*again);
      EXPECT_TRUE(SameStages(*first, *reordered))
          << Describe(*first) << " vs " << Describe(*reordered);
    }
  }
}

// Randomized fleets, small and large (the large ones take the heuristic path): every plan fits,
// and the optimal one is never slower than the best single node nor than the ring.
TEST(Planner, NeverOverMemoryNeverSlowerThanOneNodeOrTheRing) {
  std::mt19937_64 rng(42);
  int32_t beat_single = 0;
  for (int32_t trial = 0; trial < 120; ++trial) {
    const bool large = trial % 4 == 3;
    const Case c = RandomCase(rng, large ? 16 : 10, large ? 48 : 32);
    absl::StatusOr<Plan> optimal = MakePlan(c.model, c.devices, c.links, Optimal());
    absl::StatusOr<Plan> ring = MakePlan(c.model, c.devices, c.links, Ring());
    absl::StatusOr<Plan> single = SingleNodePlan(c.model, c.devices, 0);
    if (ring.ok()) {
      EXPECT_TRUE(ValidatePlan(*ring, c.model, c.devices).ok()) << Describe(*ring);
      ASSERT_TRUE(optimal.ok()) << "the ring fits, so the optimum must: " << optimal.status();
    }
    if (single.ok()) ASSERT_TRUE(optimal.ok()) << optimal.status();
    if (!optimal.ok()) {
      EXPECT_EQ(optimal.status().code(), absl::StatusCode::kResourceExhausted);
      continue;
    }
    EXPECT_TRUE(ValidatePlan(*optimal, c.model, c.devices).ok()) << Describe(*optimal);
    const double seconds = Seconds(*optimal, c.model, c.devices, c.links);
    if (single.ok()) {
      const double single_seconds = Seconds(*single, c.model, c.devices, c.links);
      EXPECT_LE(seconds, single_seconds * (1 + 1e-12)) << Describe(*optimal);
      if (seconds < single_seconds) ++beat_single;
    }
    if (ring.ok()) {
      EXPECT_LE(seconds, Seconds(*ring, c.model, c.devices, c.links) * (1 + 1e-12));
    }
  }
  EXPECT_GT(beat_single, 5);
}

TEST(Planner, HeuristicHandlesALargeFleetQuickly) {
  std::vector<DeviceProfile> devices;
  for (int32_t i = 0; i < 40; ++i) {
    devices.push_back(
        Device(absl::StrCat("n", i), (4 + (i * 7) % 20) * kGiB, (20 + (i * 37) % 500) * 1e9));
  }
  const ModelProfile model = Model(80, 2 * kGiB);  // about 168 GiB
  absl::StatusOr<Plan> plan = MakePlan(model, devices, Lan(), Optimal());
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_TRUE(ValidatePlan(*plan, model, devices).ok());
  absl::StatusOr<Plan> ring = MakePlan(model, devices, Lan(), Ring());
  ASSERT_TRUE(ring.ok()) << ring.status();
  EXPECT_LT(Seconds(*plan, model, devices, Lan()), Seconds(*ring, model, devices, Lan()));
  // Deterministic on the heuristic path too.
  std::vector<DeviceProfile> shuffled = devices;
  std::shuffle(shuffled.begin(), shuffled.end(), std::mt19937_64(3));
  absl::StatusOr<Plan> reordered = MakePlan(model, shuffled, Lan(), Optimal());
  ASSERT_TRUE(reordered.ok());
  EXPECT_TRUE(SameStages(*plan, *reordered)) << Describe(*plan) << " vs " << Describe(*reordered);
  // The stage limit binds in the heuristic too.
  PlannerOptions limited = Optimal();
  limited.max_stages = 9;
  absl::StatusOr<Plan> few = MakePlan(model, devices, Lan(), limited);
  ASSERT_TRUE(few.ok()) << few.status();
  EXPECT_LE(few->stages.size(), 9u) << Describe(*few);
  EXPECT_TRUE(ValidatePlan(*few, model, devices).ok());
  limited.max_stages = 6;
  EXPECT_EQ(MakePlan(model, devices, Lan(), limited).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST(Planner, SaysHowMuchIsMissingOnWhichNodes) {
  const ModelProfile model = Model(80, 2 * kGiB);  // about 168 GiB, the fleet has 96 GiB
  for (PlannerOptions options : {Optimal(), Ring()}) {
    absl::StatusOr<Plan> plan = MakePlan(model, HomeFleet(), Lan(), options);
    ASSERT_FALSE(plan.ok());
    EXPECT_EQ(plan.status().code(), absl::StatusCode::kResourceExhausted);
    EXPECT_THAT(plan.status().message(),
                AllOf(HasSubstr("96.00 GiB"), HasSubstr("missing"), HasSubstr("node 'mac'"),
                      HasSubstr("node 'gpu'"), HasSubstr("node 'pi'"), HasSubstr("--memory_limit")))
        << plan.status();
  }
}

TEST(Planner, SaysWhenEnoughMemoryCannotBeSplitIntoWholeLayers) {
  // Two 3 GiB layers on nodes of 2.9 and 4 GiB: 6.9 GiB is enough in total, but the 2.9 GiB
  // node cannot hold a whole layer and the other cannot hold both.
  ModelProfile model = Model(2, 3 * kGiB);
  model.kv_bytes_per_token_per_layer = 0;
  model.embedding_bytes = model.head_bytes = 0;
  model.scratch_bytes = 0;
  const std::vector<DeviceProfile> devices = {Device("a", 2 * kGiB + 900 * kMiB, 1e9),
                                              Device("b", 4 * kGiB, 1e9)};
  absl::StatusOr<Plan> plan = MakePlan(model, devices, Lan(), Optimal());
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(plan.status().message(),
              AllOf(HasSubstr("cannot be split"), HasSubstr("node 'a'"), HasSubstr("missing")));
}

TEST(Planner, RespectsMaxStages) {
  std::vector<DeviceProfile> devices;
  for (int32_t i = 0; i < 6; ++i) devices.push_back(Device(absl::StrCat("n", i), 8 * kGiB, 1e12));
  const ModelProfile model = Model(24, kGiB);
  LinkModel fast = Lan(1e-6);
  PlannerOptions options = Optimal();
  options.max_stages = 4;
  absl::StatusOr<Plan> plan = MakePlan(model, devices, fast, options);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->stages.size(), 4u) << Describe(*plan);
  options.max_stages = 2;
  EXPECT_EQ(MakePlan(model, devices, fast, options).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST(Planner, RejectsBadFleets) {
  const ModelProfile model = Model(4, kGiB);
  std::vector<DeviceProfile> devices = {Device("a", 8 * kGiB, 1e9), Device("a", 8 * kGiB, 1e9)};
  EXPECT_THAT(MakePlan(model, devices, Lan(), Optimal()).status().message(),
              HasSubstr("listed twice"));
  devices = {Device("a", 8 * kGiB, -1)};
  EXPECT_EQ(MakePlan(model, devices, Lan(), Optimal()).status().code(),
            absl::StatusCode::kInvalidArgument);
  devices = {Device("", 8 * kGiB, 1)};
  EXPECT_EQ(MakePlan(model, devices, Lan(), Optimal()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakePlan(model, {}, Lan(), Optimal()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  LinkModel links = Lan();
  links.default_latency_seconds = std::nan("");
  EXPECT_EQ(MakePlan(model, {Device("a", 8 * kGiB, 1)}, links, Optimal()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(MovedBytes, CountsOnlyWhatANodeDidNotHold) {
  ModelProfile model = Model(4, 100);
  model.embedding_bytes = 10;
  model.head_bytes = 20;
  const Plan before{.stages = {{"a", 0, 2, true, false}, {"b", 2, 4, false, true}}};
  EXPECT_EQ(MovedBytes(before, before, model), 0u);
  const Plan shifted{.stages = {{"a", 0, 3, true, false}, {"b", 3, 4, false, true}}};
  EXPECT_EQ(MovedBytes(before, shifted, model), 100u);
  const Plan swapped{.stages = {{"b", 0, 2, true, false}, {"a", 2, 4, false, true}}};
  EXPECT_EQ(MovedBytes(before, swapped, model), 400u + 10 + 20);
  const Plan joined{.stages = {{"a", 0, 2, true, false}, {"c", 2, 4, false, true}}};
  EXPECT_EQ(MovedBytes(before, joined, model), 200u + 20);
  // Tied weights: the head includes the embedding, so a node that held the embedding only loads
  // the rest of the head.
  model.head_shares_embedding = true;
  model.head_bytes = 15;
  const Plan one_node{.stages = {{"a", 0, 4, true, true}}};
  EXPECT_EQ(MovedBytes(before, one_node, model), 200u + 5);
}

TEST(Replan, KeepsThePlanWhenAJoinHelpsLessThanTheTolerance) {
  const ModelProfile model = Model(40, kGiB);
  std::vector<DeviceProfile> devices = HomeFleet();
  absl::StatusOr<Plan> before = MakePlan(model, devices, Lan(), Optimal());
  ASSERT_TRUE(before.ok());
  // A node a little faster than the Mac joins: the optimum changes but only by a few percent.
  devices.push_back(Device("mac2", 64 * kGiB, 420e9));
  absl::StatusOr<Plan> fresh = MakePlan(model, devices, Lan(), Optimal());
  ASSERT_TRUE(fresh.ok());
  ASSERT_GT(MovedBytes(*before, *fresh, model), 0u) << Describe(*fresh);
  absl::StatusOr<Plan> after = Replan(*before, model, devices, Lan(), ReplanOptions{});
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_TRUE(SameStages(*after, *before)) << Describe(*after);
  EXPECT_EQ(MovedBytes(*before, *after, model), 0u);
}

TEST(Replan, UsesAMuchFasterNodeThatJoins) {
  const ModelProfile model = Model(40, kGiB);
  std::vector<DeviceProfile> devices = HomeFleet();
  absl::StatusOr<Plan> before = MakePlan(model, devices, Lan(), Optimal());
  ASSERT_TRUE(before.ok());
  devices.push_back(Device("h100", 80 * kGiB, 3000e9));
  absl::StatusOr<Plan> after = Replan(*before, model, devices, Lan(), ReplanOptions{});
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_TRUE(ValidatePlan(*after, model, devices).ok());
  absl::StatusOr<Plan> fresh = MakePlan(model, devices, Lan(), Optimal());
  ASSERT_TRUE(fresh.ok());
  EXPECT_LE(Seconds(*after, model, devices, Lan()),
            Seconds(*fresh, model, devices, Lan()) * 1.05 * (1 + 1e-12));
  EXPECT_LT(Seconds(*after, model, devices, Lan()), Seconds(*before, model, devices, Lan()));
}

TEST(Replan, AfterALeaveSurvivorsKeepTheirLayers) {
  // Four similar nodes share a model; one leaves. A fresh plan may reshuffle everything; the
  // re-plan hands the lost layers to neighbours and moves far less.
  const ModelProfile model = Model(48, kGiB);
  std::vector<DeviceProfile> devices = {
      Device("n1", 24 * kGiB, 400e9), Device("n2", 24 * kGiB, 410e9),
      Device("n3", 24 * kGiB, 420e9), Device("n4", 24 * kGiB, 430e9)};
  LinkModel links = Lan(0.0001);
  absl::StatusOr<Plan> before = MakePlan(model, devices, links, Optimal());
  ASSERT_TRUE(before.ok()) << before.status();
  ASSERT_EQ(before->stages.size(), 3u) << Describe(*before);
  // Remove the node holding the middle stage.
  const std::string gone = before->stages[1].node_id;
  devices.erase(std::find_if(devices.begin(), devices.end(),
                             [&](const DeviceProfile& d) { return d.node_id == gone; }));
  absl::StatusOr<Plan> after = Replan(*before, model, devices, links, ReplanOptions{});
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_TRUE(ValidatePlan(*after, model, devices).ok());
  absl::StatusOr<Plan> fresh = MakePlan(model, devices, links, Optimal());
  ASSERT_TRUE(fresh.ok());
  const uint64_t moved = MovedBytes(*before, *after, model);
  // The departed node's layers must move somewhere; little else should.
  uint64_t lost = 0;
  for (int32_t l = before->stages[1].layer_begin; l < before->stages[1].layer_end; ++l) {
    lost += model.layer_bytes[l];
  }
  EXPECT_LE(moved, lost + 2 * kGiB) << Describe(*before) << " -> " << Describe(*after);
  EXPECT_LE(moved, MovedBytes(*before, *fresh, model));
  EXPECT_LE(Seconds(*after, model, devices, links),
            Seconds(*fresh, model, devices, links) * 1.05 * (1 + 1e-12));
}

TEST(Replan, RandomChangesStayValidWithinToleranceAndMoveNoMoreThanAFreshPlan) {
  std::mt19937_64 rng(99);
  for (int32_t trial = 0; trial < 60; ++trial) {
    Case c = RandomCase(rng, 6, 20);
    absl::StatusOr<Plan> before = MakePlan(c.model, c.devices, c.links, Optimal());
    if (!before.ok()) continue;
    // A random leave or join.
    if (c.devices.size() > 1 && trial % 2 == 0) {
      c.devices.erase(c.devices.begin() + trial % c.devices.size());
    } else {
      c.devices.push_back(Device("joined", c.devices[0].memory_bytes, 200e9));
    }
    absl::StatusOr<Plan> fresh = MakePlan(c.model, c.devices, c.links, Optimal());
    absl::StatusOr<Plan> after = Replan(*before, c.model, c.devices, c.links, ReplanOptions{});
    ASSERT_EQ(fresh.ok(), after.ok()) << after.status();
    if (!after.ok()) continue;
    EXPECT_TRUE(ValidatePlan(*after, c.model, c.devices).ok()) << Describe(*after);
    const double seconds = Seconds(*after, c.model, c.devices, c.links);
    EXPECT_LE(seconds, Seconds(*fresh, c.model, c.devices, c.links) * 1.05 * (1 + 1e-9));
    absl::StatusOr<Plan> single = SingleNodePlan(c.model, c.devices, 0);
    if (single.ok()) {
      EXPECT_LE(seconds, Seconds(*single, c.model, c.devices, c.links) * (1 + 1e-9));
    }
    EXPECT_LE(MovedBytes(*before, *after, c.model), MovedBytes(*before, *fresh, c.model));
  }
}

// The heuristic's fixed-order searches alone (max_exact_devices = 1 leaves only single nodes to
// the exact search) against the exact search on fleets of 6 to 8 devices: how often they find
// the optimum and how far off they are otherwise. The real heuristic adds an exact search over
// the fastest devices on top.
TEST(Optimal, HeuristicStaysCloseToTheExactSearch) {
  std::mt19937_64 rng(1234);
  int32_t compared = 0;
  int32_t equal = 0;
  double worst = 0;
  double sum = 0;
  for (int32_t trial = 0; trial < 150; ++trial) {
    Case c = RandomCase(rng, 8, 32);
    if (c.devices.size() < 6) continue;
    absl::StatusOr<Plan> exact = MakePlan(c.model, c.devices, c.links, Optimal());
    PlannerOptions heuristic_options = Optimal();
    heuristic_options.max_exact_devices = 1;
    absl::StatusOr<Plan> heuristic = MakePlan(c.model, c.devices, c.links, heuristic_options);
    ASSERT_EQ(exact.ok(), heuristic.ok()) << heuristic.status();
    if (!exact.ok()) continue;
    EXPECT_TRUE(ValidatePlan(*heuristic, c.model, c.devices).ok());
    const double exact_seconds = Seconds(*exact, c.model, c.devices, c.links);
    const double gap = Seconds(*heuristic, c.model, c.devices, c.links) / exact_seconds - 1;
    EXPECT_GE(gap, -1e-9);
    ++compared;
    if (gap < 1e-9) ++equal;
    worst = std::max(worst, gap);
    sum += gap;
  }
  std::cout << "heuristic vs exact: " << equal << " of " << compared << " optimal, mean gap "
            << sum / std::max(compared, 1) * 100 << "%, worst " << worst * 100 << "%\n";
  EXPECT_GT(compared, 30);
  EXPECT_GE(equal * 10, compared * 8);
  EXPECT_LT(worst, 0.1);
}

TEST(ModelProfile, TiedHeadCountsTheEmbeddingOnceAndLayersHaveTheirOwnKv) {
  ModelProfile model = Model(3, 1000);
  model.embedding_bytes = 300;
  model.head_bytes = 310;  // the embedding and a 10-byte norm
  model.head_shares_embedding = true;
  model.scratch_bytes = 7;
  model.layer_kv_bytes = {50, 5, 50};  // a sliding-window layer in the middle
  ASSERT_TRUE(ValidateModelProfile(model).ok());
  EXPECT_EQ(LayerKvBytes(model, 1), 5u);
  EXPECT_EQ(StageMemoryBytes({"x", 0, 3, true, true}, model), 3000u + 105 + 310 + 7);
  EXPECT_EQ(ModelMemoryBytes(model), 3000u + 105 + 310 + 7);
  // Split, both ends need the embedding's bytes.
  EXPECT_EQ(StageMemoryBytes({"x", 0, 1, true, false}, model), 1000u + 50 + 300 + 7);
  EXPECT_EQ(StageMemoryBytes({"x", 1, 3, false, true}, model), 2000u + 55 + 310 + 7);
  model.layer_kv_bytes = {1, 2};
  EXPECT_EQ(ValidateModelProfile(model).code(), absl::StatusCode::kInvalidArgument);
  model.layer_kv_bytes.clear();
  model.head_bytes = 100;
  EXPECT_EQ(ValidateModelProfile(model).code(), absl::StatusCode::kInvalidArgument);
}

// The smallest number of moved bytes among all plans within the re-plan budget, by brute force.
uint64_t BruteForceLeastMoved(const Plan& previous, const Case& c, double tolerance) {
  std::optional<double> best = BruteForceSeconds(c.model, c.devices, c.links);
  double budget = *best * (1 + tolerance);
  absl::StatusOr<Plan> single = SingleNodePlan(c.model, c.devices, 0);
  if (single.ok()) budget = std::min(budget, Seconds(*single, c.model, c.devices, c.links));
  uint64_t least = std::numeric_limits<uint64_t>::max();
  for (const Plan& plan : AllPlans(c.model, c.devices, 0)) {
    if (!ValidatePlan(plan, c.model, c.devices).ok()) continue;
    if (Seconds(plan, c.model, c.devices, c.links) > budget * (1 + 1e-12)) continue;
    least = std::min(least, MovedBytes(previous, plan, c.model));
  }
  return least;
}

TEST(Replan, MovesAboutAsLittleAsBruteForceOnSmallCases) {
  std::mt19937_64 rng(5);
  int32_t compared = 0;
  int32_t equal = 0;
  uint64_t replan_total = 0;
  uint64_t least_total = 0;
  uint64_t fresh_total = 0;
  for (int32_t trial = 0; trial < 150; ++trial) {
    Case c = RandomCase(rng, 4, 7);
    absl::StatusOr<Plan> before = MakePlan(c.model, c.devices, c.links, Optimal());
    if (!before.ok()) continue;
    if (c.devices.size() > 1 && trial % 2 == 0) {
      c.devices.erase(c.devices.begin() + trial % c.devices.size());
    } else {
      c.devices.push_back(Device("joined", c.devices[0].memory_bytes, 300e9));
    }
    absl::StatusOr<Plan> after = Replan(*before, c.model, c.devices, c.links, ReplanOptions{});
    if (!after.ok()) continue;
    absl::StatusOr<Plan> fresh = MakePlan(c.model, c.devices, c.links, Optimal());
    ASSERT_TRUE(fresh.ok());
    const uint64_t least = BruteForceLeastMoved(*before, c, 0.05);
    const uint64_t moved = MovedBytes(*before, *after, c.model);
    EXPECT_GE(moved, least);
    ++compared;
    if (moved == least) ++equal;
    replan_total += moved;
    least_total += least;
    fresh_total += MovedBytes(*before, *fresh, c.model);
  }
  std::cout << "re-plan: least moved bytes in " << equal << " of " << compared << " cases; moved "
            << replan_total / 1048576 << " MiB in all against " << least_total / 1048576
            << " MiB at best and " << fresh_total / 1048576 << " MiB for fresh optimal plans\n";
  EXPECT_GT(compared, 40);
  EXPECT_GE(equal * 10, compared * 8);
  EXPECT_LE(replan_total, fresh_total);
}

TEST(Optimal, FallsBackToTheRingSplitWhenNoNodeReportsABandwidth) {
  const ModelProfile model = Model(8, kGiB);
  const std::vector<DeviceProfile> devices = {Device("a", 8 * kGiB, 0.0),
                                              Device("b", 8 * kGiB, 0.0)};
  absl::StatusOr<Plan> plan = MakePlan(model, devices, Lan(), Optimal());
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_TRUE(ValidatePlan(*plan, model, devices).ok());
  absl::StatusOr<Plan> ring = MakePlan(model, devices, Lan(), Ring());
  ASSERT_TRUE(ring.ok());
  EXPECT_TRUE(SameStages(*plan, *ring)) << Describe(*plan);
  // A node without a bandwidth is infinitely slow by the estimate.
  EXPECT_TRUE(std::isinf(Seconds(*plan, model, devices, Lan())));
}

TEST(Replan, WithTheRingStrategyPlansFromScratch) {
  const ModelProfile model = Model(32, kGiB);
  std::vector<DeviceProfile> devices = HomeFleet();
  absl::StatusOr<Plan> before = MakePlan(model, devices, Lan(), Ring());
  ASSERT_TRUE(before.ok());
  devices.pop_back();  // the Pi leaves
  ReplanOptions options;
  options.planner = Ring();
  absl::StatusOr<Plan> after = Replan(*before, model, devices, Lan(), options);
  absl::StatusOr<Plan> fresh = MakePlan(model, devices, Lan(), Ring());
  ASSERT_TRUE(after.ok() && fresh.ok());
  EXPECT_TRUE(SameStages(*after, *fresh)) << Describe(*after);
  options.planner = Optimal();
  options.tolerance = -1;
  EXPECT_EQ(Replan(*before, model, devices, Lan(), options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace exo::partition
