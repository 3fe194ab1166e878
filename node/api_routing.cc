#include "node/api_routing.h"

#include <algorithm>
#include <map>

#include "discovery/peer.h"

namespace exo::node {

std::string EndpointAddress(const ApiEndpoint& endpoint) {
  discovery::PeerInfo peer;  // the same host:port rules as gRPC targets
  peer.host = endpoint.host;
  peer.grpc_port = endpoint.port;
  return discovery::PeerAddress(peer);
}

bool ModelNameMatches(const std::string& id, const std::string& asked, bool ollama) {
  if (asked == id) return true;
  if (asked.empty()) return ollama;
  if (ollama && asked == id + ":latest") return true;
  return asked == id + ".gguf";
}

std::vector<ApiEndpoint> ApiEndpoints(const MembershipState& state, const NodeCapabilities& self,
                                      const std::string& self_host) {
  std::vector<ApiEndpoint> out;
  if (self.http_port != 0 && !self.served_model.empty()) {
    out.push_back({state.self.node_id, self_host, self.http_port, self.served_model, true});
  }
  for (const auto& [id, peer] : state.peers) {
    if (peer.state != PeerState::kUp) continue;
    if (peer.capabilities.http_port == 0 || peer.capabilities.served_model.empty()) continue;
    absl::StatusOr<std::vector<discovery::PeerInfo>> parsed =
        discovery::ParseStaticPeers(peer.grpc_address);
    if (!parsed.ok() || parsed->size() != 1) continue;
    out.push_back({id, (*parsed)[0].host, peer.capabilities.http_port,
                   peer.capabilities.served_model, false});
  }
  return out;
}

std::optional<ApiEndpoint> CoordinatorOf(const std::vector<ApiEndpoint>& endpoints,
                                         const std::string& model) {
  std::optional<ApiEndpoint> best;
  for (const ApiEndpoint& e : endpoints) {
    if (e.model != model) continue;
    if (!best.has_value() || e.node_id < best->node_id) best = e;
  }
  return best;
}

std::vector<ApiEndpoint> ModelCoordinators(const std::vector<ApiEndpoint>& endpoints) {
  std::map<std::string, ApiEndpoint> by_model;
  for (const ApiEndpoint& e : endpoints) {
    auto it = by_model.find(e.model);
    if (it == by_model.end() || e.node_id < it->second.node_id) by_model[e.model] = e;
  }
  std::vector<ApiEndpoint> out;
  for (auto& [model, e] : by_model) out.push_back(std::move(e));
  return out;
}

std::optional<ApiEndpoint> RouteModel(const std::vector<ApiEndpoint>& endpoints,
                                      const std::string& asked, bool ollama) {
  const std::vector<ApiEndpoint> coordinators = ModelCoordinators(endpoints);
  if (asked.empty() && coordinators.size() == 1) return coordinators[0];
  for (const ApiEndpoint& e : coordinators) {
    if (!asked.empty() && ModelNameMatches(e.model, asked, ollama)) return e;
  }
  return std::nullopt;
}

}  // namespace exo::node
