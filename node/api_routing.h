// Which node answers an API request: every node runs the HTTP API, but a model is served by one
// coordinator, the node with the lowest id among the API nodes that serve that model (each
// advertises its HTTP port and model in its capabilities). Any other node proxies the request
// there. Pure functions over the membership view, so every node picks the same coordinator.
#ifndef EXO_NODE_API_ROUTING_H_
#define EXO_NODE_API_ROUTING_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "node/membership.h"

namespace exo::node {

// A node's HTTP API that serves a model.
struct ApiEndpoint {
  std::string node_id;
  std::string host;  // as other nodes reach it (IPv6 without brackets)
  uint16_t port = 0;
  std::string model;  // the served model's id (its file name without ".gguf")
  bool self = false;

  friend bool operator==(const ApiEndpoint&, const ApiEndpoint&) = default;
};

// "host:port", IPv6 in brackets.
std::string EndpointAddress(const ApiEndpoint& endpoint);

// Whether a client asking for `asked` means the model `id`: the id itself, "<id>.gguf", and for
// Ollama's API "<id>:latest" or nothing (Ollama clients may leave the name out).
bool ModelNameMatches(const std::string& id, const std::string& asked, bool ollama);

// Every API endpoint with a model in the view: this node (when `self` advertises one; its host
// is `self_host`) and every up peer (host taken from the address its Hello answered on).
std::vector<ApiEndpoint> ApiEndpoints(const MembershipState& state, const NodeCapabilities& self,
                                      const std::string& self_host);

// The coordinator of model `model`: the endpoint with the lowest node id among those serving it.
std::optional<ApiEndpoint> CoordinatorOf(const std::vector<ApiEndpoint>& endpoints,
                                         const std::string& model);

// The coordinator that answers a request for `asked` (spelled as ModelNameMatches accepts); an
// empty name means the cluster's model when it serves exactly one. nullopt when nobody serves it.
std::optional<ApiEndpoint> RouteModel(const std::vector<ApiEndpoint>& endpoints,
                                      const std::string& asked, bool ollama);

// The coordinators of every model served in the cluster, one per model, sorted by model id.
std::vector<ApiEndpoint> ModelCoordinators(const std::vector<ApiEndpoint>& endpoints);

}  // namespace exo::node

#endif  // EXO_NODE_API_ROUTING_H_
