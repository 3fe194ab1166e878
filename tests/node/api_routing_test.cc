// Which node answers an API request: the lowest id among the API nodes serving the model.
#include "node/api_routing.h"

#include "gtest/gtest.h"

namespace exo::node {
namespace {

PeerRecord Peer(const std::string& address, uint16_t http_port, const std::string& model,
                PeerState state = PeerState::kUp) {
  PeerRecord peer;
  peer.grpc_address = address;
  peer.state = state;
  peer.capabilities.http_port = http_port;
  peer.capabilities.served_model = model;
  return peer;
}

MembershipState View() {
  MembershipState state;
  state.self.node_id = "m-self";
  state.peers["a-low"] = Peer("10.0.0.2:52416", 52415, "gemma");
  state.peers["z-high"] = Peer("[fd00::3]:52416", 8080, "gemma");
  state.peers["b-qwen"] = Peer("10.0.0.4:52416", 52415, "qwen");
  state.peers["c-noapi"] = Peer("10.0.0.5:52416", 0, "");
  state.peers["d-stage"] = Peer("10.0.0.6:52416", 52415, "");  // API, no model: proxies itself
  state.peers["0-down"] = Peer("10.0.0.7:52416", 52415, "gemma", PeerState::kDown);
  return state;
}

TEST(ApiRoutingTest, EndpointsAreUpNodesWithAnApiAndAModel) {
  NodeCapabilities self;
  self.http_port = 52415;
  self.served_model = "gemma";
  const std::vector<ApiEndpoint> endpoints = ApiEndpoints(View(), self, "127.0.0.1");
  ASSERT_EQ(endpoints.size(), 4u);
  EXPECT_EQ(endpoints[0], (ApiEndpoint{"m-self", "127.0.0.1", 52415, "gemma", true}));
  EXPECT_EQ(endpoints[1], (ApiEndpoint{"a-low", "10.0.0.2", 52415, "gemma", false}));
  EXPECT_EQ(endpoints[2], (ApiEndpoint{"b-qwen", "10.0.0.4", 52415, "qwen", false}));
  EXPECT_EQ(endpoints[3], (ApiEndpoint{"z-high", "fd00::3", 8080, "gemma", false}));
  EXPECT_EQ(EndpointAddress(endpoints[3]), "[fd00::3]:8080");
  EXPECT_EQ(EndpointAddress(endpoints[1]), "10.0.0.2:52415");

  self.served_model = "";  // an API without a model is not an endpoint
  EXPECT_EQ(ApiEndpoints(View(), self, "127.0.0.1").size(), 3u);
}

TEST(ApiRoutingTest, TheLowestIdServingAModelCoordinatesIt) {
  NodeCapabilities self;
  self.http_port = 52415;
  self.served_model = "gemma";
  const std::vector<ApiEndpoint> endpoints = ApiEndpoints(View(), self, "127.0.0.1");
  EXPECT_EQ(CoordinatorOf(endpoints, "gemma")->node_id, "a-low");
  EXPECT_EQ(CoordinatorOf(endpoints, "qwen")->node_id, "b-qwen");
  EXPECT_FALSE(CoordinatorOf(endpoints, "llama").has_value());
  // Every node computes the same answer, whatever order it lists the endpoints in.
  std::vector<ApiEndpoint> reversed(endpoints.rbegin(), endpoints.rend());
  EXPECT_EQ(CoordinatorOf(reversed, "gemma"), CoordinatorOf(endpoints, "gemma"));

  MembershipState alone = View();
  alone.peers.erase("a-low");
  EXPECT_TRUE(CoordinatorOf(ApiEndpoints(alone, self, "127.0.0.1"), "gemma")->self);

  const std::vector<ApiEndpoint> coordinators = ModelCoordinators(endpoints);
  ASSERT_EQ(coordinators.size(), 2u);
  EXPECT_EQ(coordinators[0].model, "gemma");
  EXPECT_EQ(coordinators[0].node_id, "a-low");
  EXPECT_EQ(coordinators[1].model, "qwen");
}

TEST(ApiRoutingTest, RequestsFindTheirModelAsClientsSpellIt) {
  const std::vector<ApiEndpoint> endpoints = {{"b", "10.0.0.2", 1, "gemma", false},
                                              {"a", "10.0.0.3", 2, "gemma", false},
                                              {"c", "10.0.0.4", 3, "qwen", false}};
  EXPECT_EQ(RouteModel(endpoints, "gemma", false)->node_id, "a");
  EXPECT_EQ(RouteModel(endpoints, "gemma.gguf", false)->node_id, "a");
  EXPECT_EQ(RouteModel(endpoints, "qwen:latest", true)->node_id, "c");
  EXPECT_FALSE(RouteModel(endpoints, "qwen:latest", false).has_value());
  EXPECT_FALSE(RouteModel(endpoints, "llama", false).has_value());
  // No name: the cluster's model when it serves exactly one.
  EXPECT_FALSE(RouteModel(endpoints, "", true).has_value());
  EXPECT_EQ(RouteModel({endpoints[0], endpoints[1]}, "", false)->node_id, "a");
  EXPECT_FALSE(RouteModel({}, "", false).has_value());

  EXPECT_TRUE(ModelNameMatches("gemma", "gemma", false));
  EXPECT_TRUE(ModelNameMatches("gemma", "", true));
  EXPECT_FALSE(ModelNameMatches("gemma", "", false));
  EXPECT_FALSE(ModelNameMatches("gemma", "gemm", false));
}

}  // namespace
}  // namespace exo::node
