// The coordinator: the node that serves the HTTP API for a model plans the model over the
// cluster and runs it. It
//  1. maps the model file and reads its tokenizer and chat template (no weights touched),
//  2. waits a moment for discovery to find peers, then plans over itself and every up peer
//     (node/cluster_plan.h): memory decides what fits, speed and hops decide the split,
//  3. runs the model locally (continuous-batching Engine) when the plan puts it all on this
//     node, else sends LoadShard to every stage (peers without the file fetch their tensors from
//     this node) and serves API requests through the pipeline (node/pipeline_backend.h). With
//     speculative decoding (a draft model or prompt lookup) a plan that puts it all here also
//     runs as a one-stage pipeline through this node's own stage over loopback, so that the
//     same last-stage verification serves every plan (docs/speculative.md, "Serving"),
//  4. watches membership: when a stage's node leaves, it re-plans over the survivors with a new
//     epoch (keeping what need not move) and reconnects; requests arriving meanwhile get 503 with
//     Retry-After, and when nothing fits it says how much memory is missing where.
//
// One thread does all of this; the API keeps serving (health says what the coordinator waits
// for) while it works.
#ifndef EXO_NODE_COORDINATOR_H_
#define EXO_NODE_COORDINATOR_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "node/api_server.h"
#include "node/cluster_plan.h"
#include "node/draft_model_pool.h"
#include "node/stage_host.h"
#include "node/tensor_fetch.h"
#include "runtime/speculative.h"

namespace exo::node {

class ClusterNode;

struct CoordinatorOptions {
  ServeModelOptions model;  // path, context, threads, batch, sequences, queue
  // How long to let discovery find peers before the first plan.
  absl::Duration settle = absl::Seconds(2);
  // How often membership is checked for a stage that left (and, while nothing fits, for news).
  absl::Duration check_interval = absl::Milliseconds(250);
  partition::Strategy strategy = partition::Strategy::kOptimal;
  int32_t max_stages = 0;  // 0: no limit
  WireDType wire_dtype = WireDType::kF32;
  // Speculative decoding for API requests: each pass through every stage verifies several drafted
  // tokens. Prompt lookup (ngram_speculation), or a draft model (draft_model_path, loaded once
  // before planning, its vocabulary checked against the model's; it proposes its argmax). Either
  // one makes a plan that puts every layer on this node run through its own stage as a one-stage
  // pipeline instead of the continuous-batching Engine.
  bool ngram_speculation = false;
  runtime::NgramOptions ngram;
  std::string draft_model_path;       // empty: no draft model
  float draft_min_confidence = 0.5f;  // the draft stops when its top probability is lower
  runtime::SpeculativeOptions speculative;
  std::ostream* log = nullptr;  // plan and progress lines; null: stderr
};

// This node's gRPC address as a peer at `peer_host` would dial it: the local address of the route
// toward that host (found with a connected UDP socket, which sends nothing), else `fallback`.
std::string LocalAddressToward(const std::string& peer_host, uint16_t port,
                               const std::string& fallback);

class Coordinator {
 public:
  // `node` and `api` must outlive the coordinator. Starts its thread.
  static std::unique_ptr<Coordinator> Start(ClusterNode& node, ApiServer& api,
                                            CoordinatorOptions options);
  ~Coordinator();  // stops the thread; the pipeline's sequences end
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  // GET /v1/cluster: every member with its capabilities, the plan in force and its stages.
  nlohmann::json ClusterView() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  Coordinator(ClusterNode& node, ApiServer& api, CoordinatorOptions options);
  void Run();
  // Sleeps up to `duration`; false when stopping.
  bool Sleep(absl::Duration duration);
  void Log(const std::string& line);
  // Plans and brings the plan up; false while it cannot (the reason is in the API's health).
  bool Deploy(const partition::ModelProfile& profile);
  // Whether this node coordinates `model_id` (the lowest id among the API nodes serving it);
  // when another node does, drops what this node served and lets the API proxy there.
  bool Elected(const std::string& model_id);
  std::string SelfAddress() const;

  ClusterNode& node_;
  ApiServer& api_;
  const CoordinatorOptions options_;
  absl::Notification stop_;
  std::thread thread_;

  mutable absl::Mutex mu_;
  std::optional<ClusterPlan> plan_ ABSL_GUARDED_BY(mu_);  // in force
  std::string model_id_ ABSL_GUARDED_BY(mu_);
  int32_t n_layer_ ABSL_GUARDED_BY(mu_) = 0;
  std::string status_ ABSL_GUARDED_BY(mu_) = "starting";
  uint64_t epoch_ = 0;                     // coordinator thread only
  std::string last_wait_reason_;           // coordinator thread only: logged once per change
  std::string following_;                  // coordinator thread only: who coordinates, if not us
  std::shared_ptr<ServedModel> served_;    // coordinator thread only
  std::optional<ModelIdentity> identity_;  // coordinator thread only: the file's SHA-256, once
  // The draft model, loaded once; every deployment's backend shares it (coordinator thread only).
  std::shared_ptr<DraftModelPool> draft_pool_;
};

}  // namespace exo::node

#endif  // EXO_NODE_COORDINATOR_H_
