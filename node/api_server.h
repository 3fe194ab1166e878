// The HTTP API of a node: OpenAI- and Ollama-compatible generation endpoints, models, health,
// Prometheus metrics, the cluster view and the built-in web UI. Generation goes through the
// continuous-batching Engine of the served model.
//
//   ApiServerOptions options;  options.port = 0;
//   ASSIGN_OR_RETURN(auto server, ApiServer::Start(options));   // answers 503 until a model is set
//   server->SetModel(model);                                    // from LoadServedModel()
#ifndef EXO_NODE_API_SERVER_H_
#define EXO_NODE_API_SERVER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/thread_pool.h"
#include "nlohmann/json.hpp"
#include "node/api_routing.h"
#include "node/engine.h"
#include "node/metrics.h"
#include "runtime/chat_template.h"
#include "runtime/gguf.h"
#include "runtime/stage.h"
#include "runtime/tokenizer.h"

namespace exo::node {

// A model ready to answer requests, with everything it needs; destroyed in reverse order.
struct ServedModel {
  std::string id;          // the name clients use: the file name without ".gguf"
  std::string path;        // the GGUF file
  nlohmann::json details;  // architecture, parameters, quantisation, context, layers
  std::unique_ptr<runtime::GgufFile> file;
  std::unique_ptr<runtime::Tokenizer> tokenizer;
  std::unique_ptr<runtime::ChatTemplate> chat_template;  // null: chat endpoints refuse
  std::unique_ptr<kernels::ThreadPool> pool;
  std::unique_ptr<runtime::Stage> stage;
  std::unique_ptr<BatchModel> batch_model;
  std::unique_ptr<GenerationBackend> engine;  // destroyed first (declared last)
};

struct ApiServerOptions {
  std::string host = "0.0.0.0";
  int port = 52415;     // 0: any free port
  std::string api_key;  // non-empty: /v1 and /api need "Authorization: Bearer <key>"
  size_t max_body_bytes = 4 << 20;
  int32_t threads = 96;  // HTTP worker threads: at least concurrent streams + queued requests
  // Returns the cluster view for GET /v1/cluster (and the web UI); called per request.
  std::function<nlohmann::json()> cluster_view;
  // In a cluster: this node's id and every API endpoint that serves a model
  // (node/api_routing.h), read per request. A request for a model whose coordinator is another
  // node is proxied there (node/api_proxy.h); /v1/models and /api/tags list every model served.
  struct ClusterRoutes {
    std::string self_id;
    std::vector<ApiEndpoint> endpoints;
  };
  std::function<ClusterRoutes()> routes;
};

class ApiServer {
 public:
  // Binds and starts answering on a background thread. Unavailable when the address is taken.
  static absl::StatusOr<std::unique_ptr<ApiServer>> Start(const ApiServerOptions& options);
  ~ApiServer();  // stops listening, ends open streams
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  int port() const;
  // The model being loaded (health says 503 "loading" until SetModel), and what the loading
  // waits for ("waiting for capacity: ...", shown in health and in 503 errors). Drops the model
  // served so far; requests already running keep it until they end.
  void SetLoading(const std::string& model_id, const std::string& detail = "");
  void SetModel(std::shared_ptr<ServedModel> model);
  // This node serves the model `model_id` but another node coordinates it (`detail` says which):
  // requests for it are proxied there; health is ok. Drops the model served so far.
  void SetFollowing(const std::string& model_id, const std::string& detail);
  void SetLoadError(const absl::Status& status);
  Metrics& metrics();

  class Impl;

 private:
  explicit ApiServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Loads the model at `path` for serving with `num_slots` concurrent sequences.
struct ServeModelOptions {
  std::string path;
  int32_t context = 4096;  // per sequence, capped at the model's trained context
  int32_t threads = 0;     // compute threads; 0: physical cores
  int32_t batch = 256;     // tokens per forward pass
  int32_t num_slots = 16;  // concurrent sequences
  int32_t max_queue = 64;  // requests waiting for a slot
};
absl::StatusOr<std::shared_ptr<ServedModel>> LoadServedModel(const ServeModelOptions& options);
// The parts every coordinator needs, without weights in memory: the mapped file, tokenizer, chat
// template and details. The caller adds a generation backend (the cluster's pipeline).
absl::StatusOr<std::shared_ptr<ServedModel>> LoadServedModelFrontEnd(
    const ServeModelOptions& options);

}  // namespace exo::node

#endif  // EXO_NODE_API_SERVER_H_
