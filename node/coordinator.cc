#include "node/coordinator.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "node/api_routing.h"
#include "node/cluster_node.h"
#include "node/model_profile.h"
#include "node/pipeline.h"
#include "node/pipeline_backend.h"
#include "node/tensor_fetch.h"
#include "runtime/model_config.h"

namespace exo::node {
namespace {

// "10.0.0.2:52416" -> "10.0.0.2"; "[fe80::1]:52416" -> "fe80::1".
std::string HostOf(const std::string& address) {
  if (!address.empty() && address[0] == '[') {
    const size_t close = address.find(']');
    return close == std::string::npos ? "" : address.substr(1, close - 1);
  }
  const size_t colon = address.rfind(':');
  return colon == std::string::npos ? address : address.substr(0, colon);
}

std::string JoinHostPort(const std::string& host, uint16_t port) {
  if (host.find(':') != std::string::npos) return absl::StrCat("[", host, "]:", port);
  return absl::StrCat(host, ":", port);
}

}  // namespace

std::string LocalAddressToward(const std::string& peer_host, uint16_t port,
                               const std::string& fallback) {
  addrinfo hints = {};
  hints.ai_socktype = SOCK_DGRAM;
  hints.ai_flags = AI_NUMERICHOST;
  addrinfo* found = nullptr;
  if (peer_host.empty() || getaddrinfo(peer_host.c_str(), "9", &hints, &found) != 0) {
    return fallback;
  }
  std::string result = fallback;
  const int fd = socket(found->ai_family, SOCK_DGRAM, 0);
  // connect() on a UDP socket only picks the route and source address; nothing is sent.
  if (fd >= 0 && connect(fd, found->ai_addr, found->ai_addrlen) == 0) {
    sockaddr_storage local = {};
    socklen_t length = sizeof(local);
    char text[INET6_ADDRSTRLEN] = {};
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length) == 0) {
      const void* where =
          local.ss_family == AF_INET6
              ? static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(&local)->sin6_addr)
              : static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(&local)->sin_addr);
      if (inet_ntop(local.ss_family, where, text, sizeof(text)) != nullptr) {
        result = JoinHostPort(text, port);
      }
    }
  }
  if (fd >= 0) close(fd);
  freeaddrinfo(found);
  return result;
}

Coordinator::Coordinator(ClusterNode& node, ApiServer& api, CoordinatorOptions options)
    : node_(node), api_(api), options_(std::move(options)) {}

std::unique_ptr<Coordinator> Coordinator::Start(ClusterNode& node, ApiServer& api,
                                                CoordinatorOptions options) {
  std::unique_ptr<Coordinator> c(new Coordinator(node, api, std::move(options)));
  Coordinator* raw = c.get();
  // The coordinator thread loads the model's front end, plans, deploys and re-plans.
  c->thread_ = std::thread([raw] { raw->Run(); });
  return c;
}

Coordinator::~Coordinator() {
  stop_.Notify();
  thread_.join();
}

void Coordinator::Log(const std::string& line) {
  std::ostream& out = options_.log != nullptr ? *options_.log : std::cerr;
  out << "exo-node: " << line << std::endl;
}

bool Coordinator::Sleep(absl::Duration duration) {
  return !stop_.WaitForNotificationWithTimeout(duration);
}

std::string Coordinator::SelfAddress() const {
  const uint16_t port = node_.grpc_port();
  const std::string& bind = node_.bind_address();
  if (bind != "0.0.0.0" && bind != "::" && !bind.empty()) return JoinHostPort(bind, port);
  const std::string fallback = JoinHostPort("127.0.0.1", port);
  for (const PeerRecord* peer : UpPeers(node_.Snapshot())) {
    const std::string host = HostOf(peer->grpc_address);
    if (!host.empty()) return LocalAddressToward(host, port, fallback);
  }
  return fallback;
}

void Coordinator::Run() {
  const std::string id = std::filesystem::path(options_.model.path).stem().string();
  api_.SetLoading(id, "reading the model file");
  absl::StatusOr<std::shared_ptr<ServedModel>> front = LoadServedModelFrontEnd(options_.model);
  absl::StatusOr<runtime::ModelConfig> config =
      front.ok() ? runtime::ReadModelConfig(*(*front)->file) : front.status();
  absl::StatusOr<partition::ModelProfile> profile =
      absl::FailedPreconditionError("the model was not read");
  if (!config.ok()) {
    profile = config.status();
  } else {
    ModelProfileOptions po;
    po.context = options_.model.context;
    po.max_batch_tokens = std::max(options_.model.batch, options_.model.num_slots);
    po.max_logit_rows = options_.model.num_slots;
    po.num_slots = options_.model.num_slots;
    profile = BuildModelProfile(*(*front)->file, *config, po);
  }
  if (!profile.ok()) {
    Log(absl::StrCat("error: cannot serve ", options_.model.path, ": ",
                     profile.status().message()));
    api_.SetLoadError(profile.status());
    absl::MutexLock lock(&mu_);
    status_ = absl::StrCat("failed: ", profile.status().message());
    return;
  }
  if (!options_.draft_model_path.empty()) {
    api_.SetLoading(id, "loading the draft model");
    DraftModelPoolOptions draft;
    draft.path = options_.draft_model_path;
    draft.slots = options_.model.num_slots;
    draft.context = options_.model.context;
    draft.threads = options_.model.threads;
    draft.batch = options_.model.batch;
    draft.min_confidence = options_.draft_min_confidence;
    absl::StatusOr<std::shared_ptr<DraftModelPool>> pool =
        DraftModelPool::Load(draft, *(*front)->tokenizer);
    if (!pool.ok()) {
      Log(absl::StrCat("error: cannot serve ", options_.model.path,
                       " with a draft model: ", pool.status().message()));
      api_.SetLoadError(pool.status());
      absl::MutexLock lock(&mu_);
      status_ = absl::StrCat("failed: ", pool.status().message());
      return;
    }
    draft_pool_ = *std::move(pool);
    Log(absl::StrFormat(
        "draft model %s from %s: %.1f MiB of weights, %.1f MiB of KV cache for %d sequences; "
        "requests verify its drafts in each pass",
        draft_pool_->name(), options_.draft_model_path, draft_pool_->weight_bytes() / 1048576.0,
        draft_pool_->kv_cache_bytes() / 1048576.0, draft_pool_->slots()));
  }
  {
    absl::MutexLock lock(&mu_);
    model_id_ = id;
    n_layer_ = config->n_layer;
    status_ = "waiting for peers";
  }
  api_.SetLoading(id, absl::StrCat("waiting ", absl::FormatDuration(options_.settle),
                                   " for peers before planning"));
  if (!Sleep(options_.settle)) return;
  front->reset();  // each deployment maps its own copy

  while (!stop_.HasBeenNotified()) {
    if (!Elected(id)) {
      if (!Sleep(options_.check_interval)) break;
      continue;
    }
    if (served_ == nullptr) {
      if (!Deploy(*profile)) {
        if (!Sleep(absl::Seconds(1))) break;
        continue;
      }
    }
    if (!Sleep(options_.check_interval)) break;
    const MembershipState state = node_.Snapshot();
    std::string why;
    {
      absl::MutexLock lock(&mu_);
      if (plan_.has_value() && !PlanNodesUp(plan_->plan, state)) {
        for (const partition::Stage& stage : plan_->plan.stages) {
          auto it = state.peers.find(stage.node_id);
          if (stage.node_id != state.self.node_id &&
              (it == state.peers.end() || it->second.state != PeerState::kUp)) {
            why = absl::StrCat("node ", stage.node_id.substr(0, 12), " (layers ", stage.layer_begin,
                               "-", stage.layer_end - 1, ") is down",
                               it == state.peers.end() || it->second.down_reason.empty()
                                   ? ""
                                   : absl::StrCat(" (", it->second.down_reason, ")"));
            break;
          }
        }
      }
    }
    if (why.empty() && served_ != nullptr) {
      auto* backend = dynamic_cast<PipelineBackend*>(served_->engine.get());
      if (backend != nullptr && !backend->broken().ok()) {
        why = absl::StrCat("the pipeline broke: ", backend->broken().message());
      }
    }
    if (!why.empty()) {
      Log(absl::StrCat(why, "; re-planning over the nodes still up"));
      api_.SetLoading(id, absl::StrCat("re-planning: ", why));
      {
        absl::MutexLock lock(&mu_);
        status_ = absl::StrCat("re-planning: ", why);
      }
      served_.reset();  // running requests keep it until they end (with an error)
      node_.AnnouncePlan(std::nullopt);
    }
  }
  served_.reset();
  node_.AnnouncePlan(std::nullopt);
}

bool Coordinator::Elected(const std::string& model_id) {
  const std::optional<ApiEndpoint> elected =
      CoordinatorOf(ApiEndpoints(node_.Snapshot(), node_.capabilities(), "127.0.0.1"), model_id);
  if (!elected.has_value() || elected->self) {
    if (!following_.empty()) {
      Log(absl::StrCat("the coordinator of ", model_id, " (", following_,
                       ") is gone; this node coordinates it now"));
      following_.clear();
    }
    return true;
  }
  const std::string detail =
      absl::StrCat("node ", elected->node_id.substr(0, 12), " at ", EndpointAddress(*elected));
  if (detail != following_) {
    Log(absl::StrCat(model_id, " is coordinated by ", detail,
                     " (the lowest id serving it): this node passes its API requests there and "
                     "serves layers when that node's plan asks"));
    following_ = detail;
    served_.reset();
    node_.AnnouncePlan(std::nullopt);
    api_.SetFollowing(model_id, absl::StrCat("coordinated by ", detail));
    absl::MutexLock lock(&mu_);
    plan_.reset();
    status_ = absl::StrCat("following ", detail);
  }
  return false;
}

bool Coordinator::Deploy(const partition::ModelProfile& profile) {
  const std::string self_address = SelfAddress();
  const MembershipState state = node_.Snapshot();
  ClusterPlanOptions plan_options;
  plan_options.planner.strategy = options_.strategy;
  plan_options.planner.max_stages = options_.max_stages;
  epoch_ = std::max<uint64_t>(epoch_ + 1, static_cast<uint64_t>(absl::ToUnixMillis(absl::Now())));
  plan_options.planner.epoch = epoch_;
  std::string model_id;
  {
    absl::MutexLock lock(&mu_);
    if (plan_.has_value()) plan_options.previous = plan_->plan;
    model_id = model_id_;
  }
  absl::StatusOr<ClusterPlan> plan =
      PlanCluster(state, node_.capabilities(), self_address, profile, plan_options);
  auto wait = [&](const std::string& reason) {
    api_.SetLoading(model_id, reason);
    if (reason != last_wait_reason_) Log(reason);
    last_wait_reason_ = reason;
    absl::MutexLock lock(&mu_);
    status_ = reason;
  };
  if (!plan.ok()) {
    wait(absl::StrCat("waiting for capacity: ", plan.status().message()));
    return false;
  }
  plan->plan.epoch = epoch_;
  const bool all_here =
      plan->plan.stages.size() == 1 && plan->plan.stages[0].node_id == state.self.node_id;
  // Drafts are verified by a pipeline's last stage; the Engine has no verification step, so with
  // speculation a plan on this node alone runs through this node's stage over loopback.
  const bool speculating = options_.ngram_speculation || draft_pool_ != nullptr;
  const bool local = all_here && !speculating;
  Log(absl::StrFormat(
      "plan epoch %d over %d node(s), %s, estimated %.1f tokens/s:\n%s", epoch_,
      plan->devices.size(),
      local      ? "all layers on this node"
      : all_here ? "all layers on this node, served through its own stage over loopback so that "
                   "requests verify drafts (speculative decoding instead of the Engine's "
                   "continuous batching)"
                 : "pipelined",
      plan->estimate.seconds_per_token > 0 ? 1.0 / plan->estimate.seconds_per_token : 0.0,
      DescribeClusterPlan(*plan)));
  std::shared_ptr<ServedModel> served;
  if (local) {
    api_.SetLoading(model_id, "loading every layer on this node");
    absl::StatusOr<std::shared_ptr<ServedModel>> loaded = LoadServedModel(options_.model);
    if (!loaded.ok()) {
      wait(absl::StrCat("cannot load the model here: ", loaded.status().message()));
      return false;
    }
    served = *std::move(loaded);
  } else {
    absl::StatusOr<std::shared_ptr<ServedModel>> front = LoadServedModelFrontEnd(options_.model);
    if (!identity_.has_value() && front.ok()) {  // hashing reads the whole file: once
      absl::StatusOr<ModelIdentity> computed = ComputeModelIdentity(options_.model.path);
      if (!computed.ok()) front = computed.status();
      if (computed.ok()) identity_ = *std::move(computed);
    }
    if (!front.ok()) {
      wait(absl::StrCat("cannot read the model: ", front.status().message()));
      return false;
    }
    ModelIdentity identity = *identity_;
    identity.name = model_id;
    served = *std::move(front);
    PipelineOptions po;
    po.stages = plan->addresses;
    for (const partition::Stage& s : plan->plan.stages) {
      po.layers.push_back({s.layer_begin, s.layer_end});
    }
    po.model = identity;
    po.n_layer = served->details["layers"].get<int32_t>();
    po.n_vocab = served->tokenizer->vocab_size();  // drafted ids beyond it are not sent
    po.plan_epoch = epoch_;
    po.context = served->details["context_length"].get<int32_t>();
    po.max_sequences = options_.model.num_slots;
    po.prefill_chunk = options_.model.batch;
    po.dtype = options_.wire_dtype;
    po.authorize = node_.DataPathAuthorizer();
    po.fetch_from = self_address;
    api_.SetLoading(model_id, absl::StrCat("loading ", po.stages.size(),
                                           " stages (a node without the file fetches its "
                                           "tensors from this one)"));
    absl::StatusOr<std::unique_ptr<Pipeline>> pipeline = Pipeline::Connect(po);
    if (!pipeline.ok()) {
      wait(absl::StrCat("could not bring up plan epoch ", epoch_, ": ",
                        pipeline.status().message()));
      return false;
    }
    PipelineBackendOptions bo;
    bo.max_sequences = options_.model.num_slots;
    bo.max_queue = options_.model.max_queue;
    bo.context = po.context;
    bo.vocab_size = served->tokenizer->vocab_size();
    const runtime::Tokenizer* tokenizer = served->tokenizer.get();
    bo.is_end_of_generation = [tokenizer](int32_t t) { return tokenizer->IsEndOfGeneration(t); };
    if (draft_pool_ != nullptr) {
      std::shared_ptr<DraftModelPool> pool = draft_pool_;
      bo.make_drafter = [pool](const runtime::SamplingParams& sampling) {
        return pool->Acquire(sampling);
      };
      bo.speculative = options_.speculative;
      served->details["draft_model"] = pool->name();
    } else if (options_.ngram_speculation) {
      const runtime::NgramOptions ngram = options_.ngram;
      bo.make_drafter = [ngram](const runtime::SamplingParams&) {
        return std::make_unique<runtime::NgramDrafter>(ngram);
      };
      bo.speculative = options_.speculative;
    }
    served->engine = PipelineBackend::Create(*std::move(pipeline), bo);
    served->details["stages"] = plan->plan.stages.size();
  }
  served->details["plan_epoch"] = epoch_;
  Log(absl::StrFormat("model %s ready on plan epoch %d (%d stage(s))", model_id, epoch_,
                      plan->plan.stages.size()));
  last_wait_reason_.clear();
  api_.SetModel(served);
  served_ = std::move(served);
  // Every node hears the plan in force (bus, with each heartbeat; peers log and record it).
  exo::v1::PlanAnnouncement announcement;
  announcement.set_epoch(epoch_);
  if (identity_.has_value()) IdentityToProto(*identity_, announcement.mutable_model());
  announcement.mutable_model()->set_name(model_id);
  for (const partition::Stage& s : plan->plan.stages) {
    exo::v1::PlanStage* stage = announcement.add_stages();
    stage->set_node_id(s.node_id);
    stage->set_layer_begin(s.layer_begin);
    stage->set_layer_end(s.layer_end);
    stage->set_has_embedding(s.has_embedding);
    stage->set_has_head(s.has_head);
  }
  node_.AnnouncePlan(std::move(announcement));
  absl::MutexLock lock(&mu_);
  plan_ = *std::move(plan);
  status_ = "ready";
  return true;
}

nlohmann::json Coordinator::ClusterView() const {
  const MembershipState state = node_.Snapshot();
  const NodeCapabilities& self_caps = node_.capabilities();
  absl::MutexLock lock(&mu_);
  std::map<std::string, const partition::Stage*> stage_of;
  std::map<std::string, uint64_t> stage_memory;
  if (plan_.has_value()) {
    for (size_t i = 0; i < plan_->plan.stages.size(); ++i) {
      stage_of[plan_->plan.stages[i].node_id] = &plan_->plan.stages[i];
      if (i < plan_->estimate.stages.size()) {
        stage_memory[plan_->plan.stages[i].node_id] = plan_->estimate.stages[i].memory_bytes;
      }
    }
  }
  auto node_json = [&](const std::string& id, const std::string& address,
                       const NodeCapabilities& caps, bool self, const std::string& node_state) {
    nlohmann::json node = {
        {"id", id},
        {"name", id.substr(0, 12)},
        {"address", address},
        {"self", self},
        {"state", node_state},
        {"memory",
         {{"total_bytes", caps.total_memory_bytes}, {"available_bytes", caps.memory_bytes}}},
        {"capabilities",
         {{"cpu_threads", caps.cpu_cores},
          {"memory_bytes", caps.memory_bytes},
          {"memory_bandwidth_bytes_per_second", caps.memory_bandwidth_bytes_per_second},
          {"accelerator", caps.device_kind}}}};
    if (auto it = stage_of.find(id); it != stage_of.end()) {
      node["layers"] = {{"begin", it->second->layer_begin}, {"end", it->second->layer_end}};
      node["memory"]["model_bytes"] = stage_memory[id];
    }
    return node;
  };
  nlohmann::json nodes = nlohmann::json::array();
  nodes.push_back(node_json(state.self.node_id, SelfAddress(), self_caps, true, "up"));
  for (const auto& [id, peer] : state.peers) {
    nodes.push_back(
        node_json(id, peer.grpc_address, peer.capabilities, false, PeerStateName(peer.state)));
  }
  nlohmann::json plan = {
      {"model", model_id_.empty() ? nlohmann::json() : nlohmann::json(model_id_)},
      {"layers", n_layer_},
      {"stages", nlohmann::json::array()}};
  if (plan_.has_value()) {
    plan["epoch"] = plan_->plan.epoch;
    plan["strategy"] = partition::StrategyName(options_.strategy);
    plan["seconds_per_token"] = plan_->estimate.seconds_per_token;
    for (size_t i = 0; i < plan_->plan.stages.size(); ++i) {
      const partition::Stage& s = plan_->plan.stages[i];
      plan["stages"].push_back({{"node", s.node_id},
                                {"address", plan_->addresses[i]},
                                {"layer_begin", s.layer_begin},
                                {"layer_end", s.layer_end}});
    }
  }
  return {{"coordinator", state.self.node_id},
          {"status", status_},
          {"nodes", nodes},
          {"plan", plan},
          {"model_path", options_.model.path}};
}

}  // namespace exo::node
