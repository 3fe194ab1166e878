// In-process cluster nodes on loopback (ports 0, static peers, temporary state directories).
#include "node/cluster_node.h"

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "node/cluster_auth.h"
#include "node/identity.h"

namespace exo::node {
namespace {

using ::testing::HasSubstr;

class LogSink {
 public:
  std::function<void(const std::string&)> Writer(const std::string& name) {
    return [this, name](const std::string& line) {
      absl::MutexLock lock(&mu_);
      lines_.push_back(line);
      std::fprintf(stderr, "[%s] %s\n", name.c_str(), line.c_str());
    };
  }
  int Count(const std::string& needle) {
    absl::MutexLock lock(&mu_);
    int n = 0;
    for (const auto& line : lines_) n += absl::StrContains(line, needle);
    return n;
  }

 private:
  absl::Mutex mu_;
  std::vector<std::string> lines_;
};

class ClusterNodeTest : public ::testing::Test {
 protected:
  std::string StateDir(const std::string& name) {
    const std::string dir =
        absl::StrCat(::testing::TempDir(), "/cluster_node_test_", getpid(), "_",
                     ::testing::UnitTest::GetInstance()->current_test_info()->name(), "_", name);
    std::filesystem::remove_all(dir);
    return dir;
  }

  ClusterNodeOptions Options(const std::string& name, LogSink& logs) {
    ClusterNodeOptions o;
    o.state_dir = StateDir(name);
    o.bind_address = "127.0.0.1";
    o.grpc_port = 0;
    o.bus_port = 0;
    o.heartbeat_timeout = absl::Seconds(2);
    o.discovery_modes = {"static"};  // never multicast on the machine's own interfaces
    o.log = logs.Writer(name);
    return o;
  }

  static discovery::PeerInfo PeerAt(const ClusterNode& node) {
    discovery::PeerInfo peer;
    peer.host = "127.0.0.1";
    peer.grpc_port = node.grpc_port();
    return peer;
  }

  // Polls `condition` for up to `limit`; returns whether it became true.
  static bool WaitFor(const std::function<bool()>& condition,
                      absl::Duration limit = absl::Seconds(5)) {
    const absl::Time deadline = absl::Now() + limit;
    while (absl::Now() < deadline) {
      if (condition()) return true;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return condition();
  }

  static bool SeesUp(const ClusterNode& node, const std::string& id) {
    const MembershipState s = node.Snapshot();
    auto it = s.peers.find(id);
    return it != s.peers.end() && it->second.state == PeerState::kUp;
  }

  static std::unique_ptr<ClusterNode> Start(ClusterNodeOptions options) {
    absl::StatusOr<std::unique_ptr<ClusterNode>> node = ClusterNode::Start(std::move(options));
    EXPECT_TRUE(node.ok()) << node.status();
    return node.ok() ? *std::move(node) : nullptr;
  }
};

TEST_F(ClusterNodeTest, StaticPeerJoinsBothWaysThenLeavesOnStop) {
  LogSink logs;
  auto a = Start(Options("a", logs));
  ClusterNodeOptions b_options = Options("b", logs);
  b_options.static_peers = {PeerAt(*a)};  // only b knows a
  auto b = Start(b_options);
  ASSERT_TRUE(a && b);
  EXPECT_TRUE(WaitFor([&] { return SeesUp(*a, b->node_id()) && SeesUp(*b, a->node_id()); }));
  // Capabilities travel with the Hello and the heartbeats.
  const PeerRecord peer = a->Snapshot().peers.at(b->node_id());
  EXPECT_EQ(peer.capabilities.bus_port, b->bus_port());
  EXPECT_GT(peer.capabilities.total_memory_bytes, 0u);
  EXPECT_GT(peer.capabilities.cpu_cores, 0u);
  EXPECT_TRUE(
      WaitFor([&] { return a->Snapshot().peers.at(b->node_id()).load.free_memory_bytes > 0; }));

  const std::string b_id = b->node_id();
  const absl::Time stop = absl::Now();
  b->Stop("test stop");
  EXPECT_TRUE(WaitFor([&] { return !SeesUp(*a, b_id); }, absl::Seconds(1)));
  EXPECT_LT(absl::Now() - stop, absl::Seconds(1.5));
  EXPECT_EQ(a->Snapshot().peers.at(b_id).state, PeerState::kLeft);
  EXPECT_EQ(logs.Count("left: test stop"), 1);
}

TEST_F(ClusterNodeTest, SilentPeerGoesDownAfterTheHeartbeatTimeout) {
  LogSink logs;
  auto a = Start(Options("a", logs));
  ASSERT_TRUE(a);
  ClusterNodeOptions c_options = Options("c", logs);
  c_options.static_peers = {PeerAt(*a)};
  c_options.heartbeat_interval = absl::Seconds(60);  // one heartbeat at start, then silence
  auto c = Start(c_options);
  ASSERT_TRUE(c);
  ASSERT_TRUE(WaitFor([&] { return SeesUp(*a, c->node_id()); }));
  const absl::Time up = absl::Now();
  EXPECT_TRUE(WaitFor([&] { return !SeesUp(*a, c->node_id()); }, absl::Seconds(4)));
  EXPECT_GE(absl::Now() - up, absl::Seconds(1));  // not long before the 2 s timeout
  EXPECT_THAT(a->Snapshot().peers.at(c->node_id()).down_reason, HasSubstr("no heartbeat"));
}

TEST_F(ClusterNodeTest, AnotherClusterKeyIsNeverAdmittedAndLoggedOnce) {
  LogSink logs;
  auto a = Start(Options("a", logs));
  ClusterNodeOptions x_options = Options("x", logs);
  x_options.cluster_key = *ClusterKey::FromString("someone else's cluster");
  x_options.static_peers = {PeerAt(*a)};
  auto x = Start(x_options);
  ASSERT_TRUE(a && x);
  ASSERT_TRUE(WaitFor([&] { return !a->Snapshot().refusals.empty(); }));
  absl::SleepFor(absl::Seconds(1));
  EXPECT_TRUE(a->Snapshot().peers.empty());
  EXPECT_TRUE(x->Snapshot().peers.empty());
  // One line on each side: a (callee) says why it refused, x (caller) says it was refused.
  EXPECT_EQ(logs.Count("cluster key mismatch"), 2);
  EXPECT_THAT(a->Snapshot().refusals[0].reason, HasSubstr(x->cluster_fingerprint()));
}

TEST_F(ClusterNodeTest, AnotherProtocolVersionIsRefused) {
  LogSink logs;
  auto a = Start(Options("a", logs));
  ClusterNodeOptions v_options = Options("v", logs);
  v_options.protocol_version = kProtocolVersion + 1;
  v_options.static_peers = {PeerAt(*a)};
  auto v = Start(v_options);
  ASSERT_TRUE(a && v);
  ASSERT_TRUE(WaitFor([&] { return !a->Snapshot().refusals.empty(); }));
  EXPECT_THAT(a->Snapshot().refusals[0].reason, HasSubstr("protocol version 2"));
  EXPECT_TRUE(a->Snapshot().peers.empty());
  EXPECT_EQ(logs.Count("protocol version 2"), 2);
}

TEST_F(ClusterNodeTest, ClonedStateDirectoryTheLaterNodeTakesANewId) {
  LogSink logs;
  ClusterNodeOptions a_options = Options("a", logs);
  auto a = Start(a_options);
  ASSERT_TRUE(a);
  const std::string original = a->node_id();
  // b starts later from a copy of a's state directory.
  ClusterNodeOptions b_options = Options("b", logs);
  std::filesystem::create_directories(b_options.state_dir);
  std::filesystem::copy_file(a_options.state_dir + "/node_id", b_options.state_dir + "/node_id");
  b_options.static_peers = {PeerAt(*a)};
  absl::SleepFor(absl::Milliseconds(5));  // start times differ
  auto b = Start(b_options);
  ASSERT_TRUE(b);
  EXPECT_TRUE(WaitFor([&] { return b->node_id() != original; }));
  EXPECT_EQ(a->node_id(), original);
  EXPECT_EQ(*LoadOrCreateNodeId(b_options.state_dir), b->node_id());  // persisted
  EXPECT_EQ(*LoadOrCreateNodeId(a_options.state_dir), original);
  EXPECT_EQ(logs.Count("now uses id"), 1);
  // Then they are ordinary peers.
  EXPECT_TRUE(WaitFor([&] { return SeesUp(*a, b->node_id()) && SeesUp(*b, original); }));
}

TEST_F(ClusterNodeTest, PipelineRpcsNeedTheClusterKey) {
  LogSink logs;
  auto a = Start(Options("a", logs));
  ASSERT_TRUE(a);
  auto stub = exo::v1::NodeService::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", a->grpc_port()), grpc::InsecureChannelCredentials()));
  {
    grpc::ClientContext context;  // no token
    exo::v1::LoadShardResponse response;
    const grpc::Status status = stub->LoadShard(&context, {}, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_THAT(status.error_message(), HasSubstr("LoadShard"));
  }
  {
    grpc::ClientContext context;  // a token made with another key
    DataPathAuthorizer(*ClusterKey::FromString("another cluster"), "stranger")(context);
    exo::v1::LoadShardResponse response;
    EXPECT_EQ(stub->LoadShard(&context, {}, &response).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    // With the node's own key the call gets through to the stage, which says what is missing.
    grpc::ClientContext context;
    a->DataPathAuthorizer()(context);
    exo::v1::LoadShardResponse response;
    const grpc::Status status = stub->LoadShard(&context, {}, &response);
    EXPECT_NE(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_NE(status.error_code(), grpc::StatusCode::UNIMPLEMENTED);
    EXPECT_FALSE(status.ok());
  }
}

TEST_F(ClusterNodeTest, PortInUseIsUnavailableWithAHint) {
  LogSink logs;
  auto a = Start(Options("a", logs));
  ASSERT_TRUE(a);
  ClusterNodeOptions b_options = Options("b", logs);
  b_options.grpc_port = a->grpc_port();
  absl::StatusOr<std::unique_ptr<ClusterNode>> b = ClusterNode::Start(b_options);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(b.status().message()), HasSubstr("--grpc_port"));
  b_options.grpc_port = 0;
  b_options.bus_port = a->bus_port();
  b = ClusterNode::Start(b_options);
  ASSERT_FALSE(b.ok());
  EXPECT_THAT(std::string(b.status().message()), HasSubstr("--bus_port"));
}

}  // namespace
}  // namespace exo::node
