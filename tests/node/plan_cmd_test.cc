// `exo-node plan`: the fleet file parser and the command, run in-process on a synthetic model.
#include "node/plan_cmd.h"

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "synthetic_model_testlib.h"

namespace exo::node {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

std::string TempPath(const std::string& name) {
  return ::testing::TempDir() + "/plan_cmd_test." + std::to_string(getpid()) + "." + name;
}

std::string WriteFile(const std::string& name, const std::string& text) {
  const std::string path = TempPath(name);
  std::ofstream(path) << text;
  return path;
}

TEST(ParseByteQuantity, ReadsNumbersAndUnits) {
  EXPECT_DOUBLE_EQ(*ParseByteQuantity("64GiB", false), 64.0 * (1 << 30));
  EXPECT_DOUBLE_EQ(*ParseByteQuantity(" 1.5 GB ", false), 1.5e9);
  EXPECT_DOUBLE_EQ(*ParseByteQuantity("512", false), 512.0);
  EXPECT_DOUBLE_EQ(*ParseByteQuantity("400GB/s", true), 400e9);
  EXPECT_DOUBLE_EQ(*ParseByteQuantity("2 mib/s", true), 2.0 * (1 << 20));
  EXPECT_FALSE(ParseByteQuantity("400GB/s", false).ok());
  EXPECT_FALSE(ParseByteQuantity("lots", false).ok());
  EXPECT_FALSE(ParseByteQuantity("-3GB", false).ok());
  EXPECT_THAT(ParseByteQuantity("3 parsecs", false).status().message(),
              HasSubstr("unknown unit 'parsecs'"));
}

TEST(ParseFleet, ReadsNodesAndLinks) {
  absl::StatusOr<Fleet> fleet = ParseFleet(R"({
    "nodes": [
      {"id": "mac", "memory": "64GiB", "bandwidth": "400GB/s", "kind": "apple-m2-max"},
      {"id": "pi", "memory": 8589934592, "bandwidth": 4e9}
    ],
    "links": {"default_latency_ms": 3, "default_bandwidth": "1GB/s",
              "pairs": [{"from": "mac", "to": "pi", "latency_ms": 0.5}]}
  })");
  ASSERT_TRUE(fleet.ok()) << fleet.status();
  ASSERT_EQ(fleet->devices.size(), 2u);
  EXPECT_EQ(fleet->devices[0].node_id, "mac");
  EXPECT_EQ(fleet->devices[0].memory_bytes, uint64_t{64} << 30);
  EXPECT_DOUBLE_EQ(fleet->devices[0].decode_bytes_per_second, 400e9);
  EXPECT_EQ(fleet->devices[0].device_kind, "apple-m2-max");
  EXPECT_EQ(fleet->devices[1].memory_bytes, uint64_t{8} << 30);
  EXPECT_DOUBLE_EQ(fleet->links.default_latency_seconds, 0.003);
  EXPECT_DOUBLE_EQ(fleet->links.default_bytes_per_second, 1e9);
  ASSERT_EQ(fleet->links.links.size(), 1u);
  EXPECT_DOUBLE_EQ(fleet->links.links[0].latency_seconds, 0.0005);
  EXPECT_DOUBLE_EQ(fleet->links.links[0].bytes_per_second, 1e9);  // the default
}

TEST(ParseFleet, SaysWhatIsWrongWhere) {
  struct Bad {
    const char* json;
    const char* message;
  };
  const Bad cases[] = {
      {"{", "not valid JSON"},
      {"[]", "\"nodes\" array"},
      {R"({"nodes": []})", "no nodes"},
      {R"({"nodes": [{"memory": 1, "bandwidth": 1}]})", "nodes[0] has no \"id\""},
      {R"({"nodes": [{"id": "a", "bandwidth": 1}]})", "needs \"memory\""},
      {R"({"nodes": [{"id": "a", "memory": "lots", "bandwidth": 1}]})", "nodes[0] ('a').memory"},
      {R"({"nodes": [{"id": "a", "memory": 1, "bandwidth": -1}]})", "('a').bandwidth"},
      {R"({"nodes": [{"id": "a", "memory": 1, "bandwidth": 1}, {"id": "a", "memory": 1,
          "bandwidth": 1}]})",
       "listed twice"},
      {R"({"nodes": [{"id": "a", "memory": 1, "bandwidth": 1}], "links": {"pairs": [{"from":
          "a", "to": "b"}]}})",
       "node 'b', which is not in"},
      {R"({"nodes": [{"id": "a", "memory": 1, "bandwidth": 1}], "links": {"default_latency_ms":
          "fast"}})",
       "default_latency_ms"},
  };
  for (const Bad& bad : cases) {
    absl::StatusOr<Fleet> fleet = ParseFleet(bad.json);
    ASSERT_FALSE(fleet.ok()) << bad.json;
    EXPECT_EQ(fleet.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(fleet.status().message(), HasSubstr(bad.message)) << bad.json;
  }
}

std::string SyntheticModel() {
  runtime::synthetic::SyntheticModelOptions options;
  options.n_layer = 6;
  absl::StatusOr<std::string> path =
      runtime::synthetic::WriteSyntheticModel(options, TempPath("model.gguf"));
  EXPECT_TRUE(path.ok()) << path.status();
  return *path;
}

TEST(RunPlan, PrintsStagesTotalsAndBaselines) {
  PlanCommand command;
  command.model_path = SyntheticModel();
  command.profile.context = 64;
  command.profile.max_batch_tokens = 8;
  // The model needs about 833 KiB; each node holds about two thirds of it, so it must be split.
  command.fleet_path = WriteFile("fleet.json", R"({"nodes": [
      {"id": "fast", "memory": "640KiB", "bandwidth": "100GB/s", "kind": "cuda"},
      {"id": "slow", "memory": "640KiB", "bandwidth": "1GB/s"}],
      "links": {"default_latency_ms": 0.01}})");
  std::ostringstream out;
  std::ostringstream err;
  ASSERT_EQ(RunPlan(command, out, err), 0) << err.str();
  EXPECT_THAT(out.str(),
              AllOf(HasSubstr("strategy optimal: 2 stages"), HasSubstr("fast"), HasSubstr("slow"),
                    HasSubstr("+E"), HasSubstr("+H"), HasSubstr("per token"),
                    HasSubstr("single-node baseline: none"), HasSubstr("ring (exo) baseline")))
      << out.str();

  command.strategy = partition::Strategy::kRing;
  std::ostringstream ring_out;
  ASSERT_EQ(RunPlan(command, ring_out, err), 0) << err.str();
  EXPECT_THAT(ring_out.str(), HasSubstr("strategy ring")) << ring_out.str();
}

TEST(RunPlan, FailsWithOneLineWhenNothingFits) {
  PlanCommand command;
  command.model_path = SyntheticModel();
  command.profile.context = 64;
  command.fleet_path = WriteFile("small.json", R"({"nodes": [
      {"id": "tiny", "memory": "10KiB", "bandwidth": "1GB/s"}]})");
  std::ostringstream out;
  std::ostringstream err;
  EXPECT_EQ(RunPlan(command, out, err), 1);
  EXPECT_THAT(err.str(),
              AllOf(HasSubstr("does not fit"), HasSubstr("node 'tiny'"), HasSubstr("missing")));
  const std::string message = err.str();
  EXPECT_EQ(std::count(message.begin(), message.end(), '\n'), 1);
}

TEST(RunPlan, FailsClearlyOnAMissingFleetOrModel) {
  PlanCommand command;
  command.model_path = SyntheticModel();
  command.fleet_path = TempPath("absent.json");
  std::ostringstream out;
  std::ostringstream err;
  EXPECT_EQ(RunPlan(command, out, err), 1);
  EXPECT_THAT(err.str(), HasSubstr("cannot open the fleet file"));
  command.fleet_path = WriteFile("ok.json", R"({"nodes": [{"id": "a", "memory": "1GiB",
      "bandwidth": "1GB/s"}]})");
  command.model_path = TempPath("absent.gguf");
  std::ostringstream err2;
  EXPECT_EQ(RunPlan(command, out, err2), 1);
  EXPECT_THAT(err2.str(), HasSubstr("absent.gguf"));
}

}  // namespace
}  // namespace exo::node
