// `exo-node serve`, HTTP part: starts the API server at once (health answers 503 while loading),
// loads the model on a background thread, and describes this node for GET /v1/cluster.
#ifndef EXO_NODE_API_SERVE_H_
#define EXO_NODE_API_SERVE_H_

#include <memory>
#include <ostream>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "node/api_server.h"
#include "node/coordinator.h"

namespace exo::node {

class ClusterNode;

struct HttpServiceOptions {
  ApiServerOptions http;
  ServeModelOptions model;  // model.path empty: serve without a model
  // Set when the node is part of a cluster: a Coordinator plans the model over the cluster and
  // serves it (locally or pipelined) instead of loading it here. Must outlive the service.
  ClusterNode* cluster = nullptr;
  CoordinatorOptions coordinator;  // its `model` is replaced by `model` above
};

class HttpService {
 public:
  // Binds the port, prints "exo-node: http listening on http://HOST:PORT" to `out`, and starts
  // loading the model. Unavailable when the port is taken.
  static absl::StatusOr<std::unique_ptr<HttpService>> Start(const HttpServiceOptions& options,
                                                            std::ostream& out, std::ostream& err);
  ~HttpService();
  ApiServer& server() { return *server_; }

 private:
  HttpService() = default;
  // Read by the cluster view while the server runs; cleared before the coordinator goes.
  struct CoordinatorSlot {
    absl::Mutex mu;
    Coordinator* coordinator ABSL_GUARDED_BY(mu) = nullptr;
  };
  std::shared_ptr<CoordinatorSlot> slot_ = std::make_shared<CoordinatorSlot>();
  std::unique_ptr<ApiServer> server_;
  std::unique_ptr<Coordinator> coordinator_;
  std::thread loader_;
};

// The default model's path when it is installed, else "" (serve then runs without a model).
std::string InstalledDefaultModel();

// Runs the HTTP service until SIGINT or SIGTERM; returns the process exit code.
int RunHttpServe(const HttpServiceOptions& options, std::ostream& out, std::ostream& err);

}  // namespace exo::node

#endif  // EXO_NODE_API_SERVE_H_
