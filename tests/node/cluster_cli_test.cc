// `exo-node peers` and `exo-node doctor` on status files written by hand.
#include "node/cluster_cli.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"

namespace exo::node {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class ClusterCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(::testing::TempDir(), "/cluster_cli_test_", getpid(), "_",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }

  nlohmann::json RunningStatus() {
    return {{"pid", getpid()},
            {"running", true},
            {"updated_unix_millis", absl::ToUnixMillis(absl::Now())},
            {"node_id", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
            {"cluster_fingerprint", "0123456789abcdef"},
            {"bind_address", "0.0.0.0"},
            {"grpc_port", 52416},
            {"bus_port", 52417},
            {"discovery", {"static"}},
            {"capabilities",
             {{"device_kind", "cpu-avx2"}, {"cpu_cores", 8}, {"total_memory_bytes", 1ull << 34}}},
            {"peers",
             {{{"node_id", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"},
               {"state", "up"},
               {"grpc_address", "10.0.0.2:52416"},
               {"capabilities", {{"device_kind", "cpu-neon"}, {"cpu_cores", 4}}},
               {"last_heard_ms_ago", 300}},
              {{"node_id", "cccccccccccccccccccccccccccccccc"},
               {"state", "down"},
               {"grpc_address", "10.0.0.3:52416"},
               {"bus_endpoint", "10.0.0.3:52417"},
               {"down_reason", "no heartbeat for 3.1 s"},
               {"last_heard_ms_ago", 3100}}}},
            {"refusals",
             {{{"address", "10.0.0.9:52416"},
               {"reason", "cluster key mismatch: the calling node's key has fingerprint ..."},
               {"count", 4},
               {"last_seen_ms_ago", 1000}}}},
            {"candidates",
             {{{"address", "10.0.0.7:52416"},
               {"source", "static"},
               {"failures", 3},
               {"last_error", "Hello failed: failed to connect to all addresses"}}}}};
  }

  void Write(const std::string& text) { std::ofstream(dir_ + "/cluster.json") << text; }

  std::string dir_;
};

TEST_F(ClusterCliTest, PeersListsSelfAndPeersWithStateAndHeartbeatAge) {
  Write(RunningStatus().dump());
  std::ostringstream out, err;
  ASSERT_EQ(RunPeers({dir_, false}, out, err), 0) << err.str();
  const std::string table = out.str();
  EXPECT_THAT(table, HasSubstr("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa  self"));
  EXPECT_THAT(table, HasSubstr("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb  up     10.0.0.2:52416"));
  EXPECT_THAT(table, HasSubstr("cpu-neon"));
  EXPECT_THAT(table, HasSubstr("(no heartbeat for 3.1 s)"));
  EXPECT_THAT(table, HasSubstr("1 peer up"));
  std::ostringstream json;
  ASSERT_EQ(RunPeers({dir_, true}, json, err), 0);
  EXPECT_EQ(nlohmann::json::parse(json.str())["peers"].size(), 2u);
}

TEST_F(ClusterCliTest, PeersExplainsWhenNoNodeRuns) {
  std::ostringstream out, err;
  EXPECT_EQ(RunPeers({dir_ + "/missing", false}, out, err), 1);
  EXPECT_THAT(err.str(), HasSubstr("exo-node serve"));

  nlohmann::json stopped = RunningStatus();
  stopped["running"] = false;
  Write(stopped.dump());
  std::ostringstream err2;
  EXPECT_EQ(RunPeers({dir_, false}, out, err2), 1);
  EXPECT_THAT(err2.str(), HasSubstr("has stopped"));

  nlohmann::json stale = RunningStatus();
  stale["updated_unix_millis"] = absl::ToUnixMillis(absl::Now()) - 60000;
  Write(stale.dump());
  std::ostringstream err3;
  EXPECT_EQ(RunPeers({dir_, false}, out, err3), 1);
  EXPECT_THAT(err3.str(), HasSubstr("has not updated"));
}

TEST_F(ClusterCliTest, DamagedStatusFileIsAnErrorNotACrash) {
  for (const std::string& text :
       {std::string("{not json"), std::string("[]"),
        std::string(R"({"pid": "x", "running": true})"), RunningStatus().dump().substr(0, 100)}) {
    Write(text);
    std::ostringstream out, err;
    EXPECT_EQ(RunPeers({dir_, false}, out, err), 1) << text;
    EXPECT_THAT(err.str(), HasSubstr("exo-node: error:")) << text;
  }
  nlohmann::json odd = RunningStatus();
  odd["peers"][0]["state"] = 42;
  Write(odd.dump());
  std::ostringstream out, err;
  EXPECT_EQ(RunPeers({dir_, false}, out, err), 1);
  EXPECT_EQ(RunDoctor({dir_, 0, 0, ""}, out, err), 1);
}

TEST_F(ClusterCliTest, DoctorReportsRefusalsUnreachablePeersAndLapsedHeartbeats) {
  Write(RunningStatus().dump());
  std::ostringstream out, err;
  EXPECT_EQ(RunDoctor({dir_, 0, 0, ""}, out, err), 1);
  const std::string report = out.str();
  EXPECT_THAT(report, HasSubstr("ok:      node aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa is running"));
  EXPECT_THAT(report, HasSubstr("10.0.0.9:52416 was refused 4 time(s)"));
  EXPECT_THAT(report, HasSubstr("same --cluster_key"));
  EXPECT_THAT(report, HasSubstr("10.0.0.7:52416 (static) does not answer"));
  EXPECT_THAT(report, HasSubstr("10.0.0.3:52417) may be blocked by a firewall"));
  EXPECT_THAT(report, HasSubstr("problem(s) found"));
}

TEST_F(ClusterCliTest, DoctorWithoutANodeSaysHowToStartOne) {
  std::ostringstream out, err;
  EXPECT_EQ(RunDoctor({dir_, 0, 0, ""}, out, err), 1);
  EXPECT_THAT(out.str(), HasSubstr("start the node with `exo-node serve`"));
  EXPECT_THAT(out.str(), Not(HasSubstr("is running")));
}

}  // namespace
}  // namespace exo::node
