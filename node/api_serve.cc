#include "node/api_serve.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "node/api_routing.h"
#include "node/cluster_node.h"
#include "node/paths.h"

namespace exo::node {
namespace {

// MemTotal and MemAvailable from /proc/meminfo, in bytes (0 when unknown).
std::pair<uint64_t, uint64_t> SystemMemory() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  uint64_t value = 0, total = 0, available = 0;
  std::string unit;
  while (in >> key >> value >> unit) {
    if (key == "MemTotal:") total = value * 1024;
    if (key == "MemAvailable:") available = value * 1024;
  }
  return {total, available};
}

std::string Hostname() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "localhost";
  return name;
}

// This node alone: every layer of the model on it. The cluster code can replace this function
// with one that lists every member and the coordinator's plan, in the same shape.
nlohmann::json SingleNodeView(const std::string& host, int port,
                              const ServeModelOptions& model_options) {
  const std::string address = absl::StrCat(host, ":", port);
  const auto [total, available] = SystemMemory();
  const std::string id = Hostname();
  nlohmann::json node = {{"id", id},
                         {"name", id},
                         {"address", address},
                         {"self", true},
                         {"memory", {{"total_bytes", total}, {"available_bytes", available}}},
                         {"capabilities",
                          {{"cpu_threads", std::thread::hardware_concurrency()},
                           {"memory_bytes", total},
                           {"accelerator", "cpu"}}}};
  nlohmann::json plan = {{"model", nullptr}, {"stages", nlohmann::json::array()}};
  return {{"coordinator", id},
          {"nodes", nlohmann::json::array({node})},
          {"plan", plan},
          {"model_path", model_options.path}};
}

}  // namespace

std::string InstalledDefaultModel() {
  const std::string path = DefaultModelPath();
  std::error_code ec;
  return std::filesystem::exists(path, ec) ? path : "";
}

absl::StatusOr<std::unique_ptr<HttpService>> HttpService::Start(const HttpServiceOptions& options,
                                                                std::ostream& out,
                                                                std::ostream& err) {
  auto service = std::unique_ptr<HttpService>(new HttpService());
  ApiServerOptions http = options.http;
  // Filled in below once the model is known; read per request.
  auto model_info = std::make_shared<nlohmann::json>();
  auto model_mu = std::make_shared<absl::Mutex>();
  auto port = std::make_shared<std::atomic<int>>(options.http.port);
  std::shared_ptr<CoordinatorSlot> slot = service->slot_;
  http.cluster_view = [model_info, model_mu, options, port, slot]() {
    {
      absl::MutexLock lock(&slot->mu);
      if (slot->coordinator != nullptr) return slot->coordinator->ClusterView();
    }
    nlohmann::json view = SingleNodeView(options.http.host, port->load(), options.model);
    absl::MutexLock lock(model_mu.get());
    if (!model_info->is_null()) {
      const int64_t layers = (*model_info)["layers"].get<int64_t>();
      view["plan"] = {
          {"model", (*model_info)["id"]},
          {"layers", layers},
          {"stages",
           nlohmann::json::array(
               {{{"node", view["coordinator"]}, {"layer_begin", 0}, {"layer_end", layers}}})}};
      view["nodes"][0]["layers"] = {{"begin", 0}, {"end", layers}};
      view["nodes"][0]["memory"]["model_bytes"] = (*model_info)["weight_bytes"];
      view["nodes"][0]["memory"]["kv_cache_bytes"] = (*model_info)["kv_cache_bytes"];
    }
    return view;
  };
  ClusterNode* cluster = options.cluster;
  if (cluster != nullptr) {
    http.routes = [cluster]() {
      const MembershipState state = cluster->Snapshot();
      // This node's own endpoint is never dialled (its requests are answered here).
      return ApiServerOptions::ClusterRoutes{
          state.self.node_id, ApiEndpoints(state, cluster->capabilities(), "127.0.0.1")};
    };
  }
  absl::StatusOr<std::unique_ptr<ApiServer>> server = ApiServer::Start(http);
  if (!server.ok()) return server.status();
  service->server_ = std::move(*server);
  port->store(service->server_->port());
  if (cluster != nullptr) {
    // Peers learn where this API is and which model it serves; the API node with the lowest id
    // among those serving a model coordinates it, the others pass requests there.
    cluster->SetHttpApi(static_cast<uint16_t>(service->server_->port()),
                        options.model.path.empty()
                            ? ""
                            : std::filesystem::path(options.model.path).stem().string());
  }
  const std::string host = http.host == "0.0.0.0" ? "127.0.0.1" : http.host;
  out << "exo-node: http listening on http://" << host << ":" << service->server_->port()
      << std::endl;
  if (options.model.path.empty()) {
    err << (cluster != nullptr
                ? "exo-node: no model given and the default model is not installed; this node "
                  "passes API requests to the cluster node that serves a model\n"
                : "exo-node: no model given and the default model is not installed; serving "
                  "without one (pass --model PATH)\n");
    return service;
  }
  ApiServer* api = service->server_.get();
  if (options.cluster != nullptr) {
    CoordinatorOptions coordinator = options.coordinator;
    coordinator.model = options.model;
    service->coordinator_ = Coordinator::Start(*options.cluster, *api, std::move(coordinator));
    absl::MutexLock lock(&service->slot_->mu);
    service->slot_->coordinator = service->coordinator_.get();
    return service;
  }
  api->SetLoading(std::filesystem::path(options.model.path).stem().string());
  // The loader thread maps and prepares the model, then hands it to the server.
  service->loader_ = std::thread([api, options, model_info, model_mu, &err] {
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<std::shared_ptr<ServedModel>> model = LoadServedModel(options.model);
    if (!model.ok()) {
      err << "exo-node: error: cannot load " << options.model.path << ": "
          << model.status().message() << "\n";
      api->SetLoadError(model.status());
      return;
    }
    {
      absl::MutexLock lock(model_mu.get());
      *model_info = (*model)->details;
      (*model_info)["id"] = (*model)->id;
    }
    err << absl::StrFormat(
        "exo-node: model %s ready in %.2f s (%d sequences, context %d each)\n", (*model)->id,
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
        options.model.num_slots, (*model)->details["context_length"].get<int>());
    api->SetModel(std::move(*model));
  });
  return service;
}

HttpService::~HttpService() {
  {
    absl::MutexLock lock(&slot_->mu);
    slot_->coordinator = nullptr;
  }
  coordinator_.reset();
  if (loader_.joinable()) loader_.join();
  server_.reset();
}

int RunHttpServe(const HttpServiceOptions& options, std::ostream& out, std::ostream& err) {
  // Block the stop signals before any thread starts, so only sigwait below receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  absl::StatusOr<std::unique_ptr<HttpService>> service = HttpService::Start(options, out, err);
  if (!service.ok()) {
    err << "exo-node: error: " << service.status().message() << "\n";
    return 1;
  }
  int signal = 0;
  sigwait(&signals, &signal);
  err << "exo-node: stopping (signal " << signal << ")\n";
  service->reset();
  return 0;
}

}  // namespace exo::node
