#include "node/cluster_node.h"

#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "node/bus.h"
#include "node/capabilities.h"
#include "node/cluster_auth.h"
#include "node/identity.h"

namespace exo::node {
namespace {

constexpr absl::Duration kTickInterval = absl::Milliseconds(100);
constexpr absl::Duration kMinBackoff = absl::Milliseconds(250);
constexpr absl::Duration kMaxBackoff = absl::Seconds(4);
constexpr absl::Duration kRefusedBackoff = absl::Seconds(15);
constexpr int kMaxGossipedPeers = 64;

uint64_t UnixMillis(absl::Time t) { return static_cast<uint64_t>(absl::ToUnixMillis(t)); }

std::string JoinHostPort(const std::string& host, uint16_t port) {
  if (host.find(':') != std::string::npos) return absl::StrCat("[", host, "]:", port);
  return absl::StrCat(host, ":", port);
}

// The caller's IP from gRPC's peer string: "ipv4:10.0.0.2:4123" or "ipv6:[fe80::1%eth0]:4123".
std::string PeerHost(const std::string& peer) {
  std::string rest;
  if (peer.rfind("ipv4:", 0) == 0) {
    rest = peer.substr(5);
    return rest.substr(0, rest.rfind(':'));
  }
  if (peer.rfind("ipv6:", 0) == 0) {
    rest = peer.substr(5);
    const size_t close = rest.find(']');
    if (rest.size() > 1 && rest[0] == '[' && close != std::string::npos) {
      return rest.substr(1, close - 1);
    }
  }
  return "";
}

NodeCapabilities FromProto(const exo::v1::Capabilities& c) {
  NodeCapabilities caps;
  caps.memory_bytes = c.memory_bytes();
  caps.total_memory_bytes = c.total_memory_bytes();
  caps.cpu_cores = c.cpu_cores();
  caps.memory_bandwidth_bytes_per_second = c.decode_bytes_per_second();
  caps.device_kind = c.device_kind().substr(0, 64);
  caps.grpc_port = static_cast<uint16_t>(c.grpc_port());
  caps.bus_port = static_cast<uint16_t>(c.bus_port());
  caps.http_port = c.http_port() <= 65535 ? static_cast<uint16_t>(c.http_port()) : 0;
  caps.served_model = c.served_model().substr(0, 256);
  return caps;
}

nlohmann::json CapabilitiesJson(const NodeCapabilities& c) {
  return {{"memory_bytes", c.memory_bytes},
          {"total_memory_bytes", c.total_memory_bytes},
          {"cpu_cores", c.cpu_cores},
          {"memory_bandwidth_bytes_per_second", c.memory_bandwidth_bytes_per_second},
          {"device_kind", c.device_kind},
          {"grpc_port", c.grpc_port},
          {"bus_port", c.bus_port},
          {"http_port", c.http_port},
          {"served_model", c.served_model}};
}

}  // namespace

ClusterNode::ClusterNode(ClusterNodeOptions options) : options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<ClusterNode>> ClusterNode::Start(ClusterNodeOptions options) {
  if (options.state_dir.empty()) options.state_dir = DefaultStateDir();
  if (!options.log) {
    options.log = [](const std::string& line) { std::cerr << "exo-node: " << line << std::endl; };
  }
  std::unique_ptr<ClusterNode> node(new ClusterNode(std::move(options)));
  const ClusterNodeOptions& o = node->options_;
  ASSIGN_OR_RETURN(std::string node_id, LoadOrCreateNodeId(o.state_dir));
  {
    absl::MutexLock lock(&node->mu_);
    node->state_.self = {node_id, RandomUint64(), UnixMillis(absl::Now())};
  }
  node->capabilities_ = LocalCapabilities(o.state_dir);
  if (o.memory_limit_bytes > 0) {
    node->capabilities_.memory_bytes =
        std::min(node->capabilities_.memory_bytes, o.memory_limit_bytes);
  }

  BusOptions bus_options;
  bus_options.bind_address = o.bind_address;
  bus_options.port = o.bus_port;
  bus_options.heartbeat_interval = o.heartbeat_interval;
  ClusterNode* self = node.get();
  bus_options.periodic = [self] { return self->PeriodicEvents(); };
  ASSIGN_OR_RETURN(node->bus_,
                   Bus::Start(
                       bus_options, o.cluster_key, [self] { return self->MakeHeartbeat(); },
                       [self](const exo::v1::BusEvent& event) { self->HandleBusEvent(event); },
                       [self](const absl::Status& status) {
                         absl::MutexLock lock(&self->mu_);
                         const std::string reason(status.message());
                         if (self->logged_bus_rejects_.insert(reason).second) {
                           self->Log(absl::StrCat("ignoring bus traffic: ", reason));
                         }
                       }));
  node->capabilities_.bus_port = node->bus_->port();

  node->service_ = std::make_unique<NodeServiceImpl>([self](const std::string& peer,
                                                            const exo::v1::HelloRequest& request,
                                                            exo::v1::HelloResponse* response) {
    return self->HandleHello(peer, request, response);
  });
  // The pipeline stage: peers that prove the cluster key may load a shard here, send frames and
  // fetch tensors of the local model file.
  node->stage_authenticator_ = std::make_unique<ClusterKeyAuthenticator>(o.cluster_key);
  ShardHandlerOptions shard_options;
  shard_options.model_path = o.model_path;
  shard_options.models_dir = o.models_dir;
  shard_options.threads = o.stage_threads;
  shard_options.authorize_outgoing = exo::node::DataPathAuthorizer(o.cluster_key, node_id);
  shard_options.log = o.stage_log != nullptr ? o.stage_log : &std::cerr;
  node->shards_ =
      std::make_unique<ShardHandler>(std::move(shard_options), node->stage_authenticator_.get());
  node->service_->SetStageHandlers(node->shards_.get());
  grpc::ServerBuilder builder;
  // Frames of wide models (256 rows of 8192 floats = 8 MiB) exceed gRPC's 4 MiB default.
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.SetMaxSendMessageSize(kMaxMessageBytes);
  int bound_port = 0;
  builder.AddListeningPort(JoinHostPort(o.bind_address, o.grpc_port),
                           grpc::InsecureServerCredentials(), &bound_port);
  // One process per port: without this gRPC would let two nodes share a port.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.RegisterService(node->service_.get());
  node->server_ = builder.BuildAndStart();
  if (node->server_ == nullptr || bound_port == 0) {
    node->bus_->Stop();
    return absl::UnavailableError(absl::StrCat(
        "cannot listen for gRPC on ", JoinHostPort(o.bind_address, o.grpc_port),
        ": the port is in use or the address is not local (choose another --grpc_port, or 0 for "
        "any; see `exo-node doctor`)"));
  }
  node->grpc_port_ = static_cast<uint16_t>(bound_port);
  node->capabilities_.grpc_port = node->grpc_port_;

  node->StartMdns();
  {
    absl::MutexLock lock(&node->mu_);
    const absl::Time now = absl::Now();
    for (const discovery::PeerInfo& peer : o.static_peers) {
      node->AddCandidateLocked(peer.host, peer.grpc_port, "static", now);
    }
  }
  node->WriteStatus(true);
  // The membership thread ticks the state machine, dials candidates and rewrites the status file.
  node->loop_ = std::thread([self] { self->RunMembershipLoop(); });
  return node;
}

ClusterNode::~ClusterNode() { Stop(); }

void ClusterNode::Log(const std::string& line) const { options_.log(line); }

std::function<void(grpc::ClientContext&)> ClusterNode::DataPathAuthorizer() const {
  return exo::node::DataPathAuthorizer(options_.cluster_key, node_id());
}

std::vector<discovery::TxtEntry> ClusterNode::MdnsTxt() const {
  return {{"id", state_.self.node_id},
          {"proto", absl::StrCat(options_.protocol_version)},
          {"bus", absl::StrCat(capabilities_.bus_port)},
          {"ckf", options_.cluster_key.Fingerprint()},
          {"mem", absl::StrCat(capabilities_.total_memory_bytes)},
          {"dev", capabilities_.device_kind}};
}

void ClusterNode::StartMdns() {
  const auto& modes = options_.discovery_modes;
  if (std::find(modes.begin(), modes.end(), "mdns") == modes.end()) return;
  char host[256] = {0};
  if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0') std::strcpy(host, "exo-node");
  std::string label;  // DNS label: letters, digits and '-'
  for (const char* c = host; *c != '\0' && *c != '.' && label.size() < 40; ++c) {
    label.push_back(absl::ascii_isalnum(static_cast<unsigned char>(*c)) ? *c : '-');
  }
  discovery::MdnsOptions mdns;
  mdns.interfaces = options_.mdns_interfaces;
  mdns.port = grpc_port_;
  mdns.mdns_port = options_.mdns_port;
  mdns.on_peer_event = [this](const discovery::PeerEvent& event) { HandleMdnsEvent(event); };
  {
    absl::MutexLock lock(&mu_);
    const std::string unique = absl::StrCat(label, "-", state_.self.node_id.substr(0, 8));
    mdns.instance_name = options_.mdns_instance_name.empty() ? unique : options_.mdns_instance_name;
    mdns.host_name = unique;
    mdns.txt = MdnsTxt();
  }
  absl::StatusOr<std::unique_ptr<discovery::MdnsService>> started =
      discovery::MdnsService::Start(std::move(mdns));
  if (!started.ok()) {
    mdns_error_ = std::string(started.status().message());
    Log(absl::StrCat("mDNS discovery is off: ", mdns_error_,
                     " (static peers still work; see `exo-node doctor`)"));
    return;
  }
  mdns_ = *std::move(started);
}

void ClusterNode::HandleMdnsEvent(const discovery::PeerEvent& event) {
  if (event.kind == discovery::PeerEventKind::kRemoved) return;  // the bus goodbye decides
  const discovery::PeerInfo& peer = event.peer;
  auto txt = [&](const std::string& key) {
    auto it = peer.txt.find(key);
    return it == peer.txt.end() ? std::string() : it->second;
  };
  absl::MutexLock lock(&mu_);
  const absl::Time now = absl::Now();
  const std::string address = PeerAddress(peer);
  const std::string theirs = txt("ckf");
  if (!theirs.empty() && theirs != options_.cluster_key.Fingerprint()) {
    ApplyLocked(HelloRefused{
        address, txt("id").substr(0, 32),
        absl::StrCat("cluster key mismatch: it advertises fingerprint ", theirs.substr(0, 32),
                     " over mDNS, this node's is ", options_.cluster_key.Fingerprint(),
                     " (another cluster; give every node the same "
                     "--cluster_key to join them)"),
        now});
    return;
  }
  const std::string version = txt("proto");
  if (!version.empty() && version != absl::StrCat(kProtocolVersion)) {
    ApplyLocked(HelloRefused{address, txt("id").substr(0, 32),
                             absl::StrCat("it advertises protocol version ", version.substr(0, 8),
                                          " over mDNS, this node speaks ", kProtocolVersion,
                                          ": run the same exo-node release on every node"),
                             now});
    return;
  }
  AddCandidateLocked(peer.host, peer.grpc_port, "mdns", now);
}

std::string ClusterNode::node_id() const {
  absl::MutexLock lock(&mu_);
  return state_.self.node_id;
}

uint16_t ClusterNode::bus_port() const { return bus_ != nullptr ? bus_->port() : 0; }

MembershipState ClusterNode::Snapshot() const {
  absl::MutexLock lock(&mu_);
  return state_;
}

void ClusterNode::AddCandidate(const discovery::PeerInfo& peer, const std::string& source) {
  absl::MutexLock lock(&mu_);
  AddCandidateLocked(peer.host, peer.grpc_port, source, absl::Now());
}

void ClusterNode::AddCandidateLocked(const std::string& host, uint16_t port,
                                     const std::string& source, absl::Time now) {
  if (host.empty() || port == 0) return;
  const std::string address = JoinHostPort(host, port);
  auto [it, inserted] = candidates_.try_emplace(address);
  Candidate& candidate = it->second;
  if (inserted) {
    candidate.address = address;
    candidate.host = host;
    candidate.source = source;
  }
  // News about an address that is not up: try it now rather than at the end of its back-off.
  auto peer = candidate.node_id.empty() ? state_.peers.end() : state_.peers.find(candidate.node_id);
  const bool up = peer != state_.peers.end() && peer->second.state == PeerState::kUp;
  if (!up && candidate.last_error.find("cluster key") == std::string::npos &&
      candidate.last_error.find("protocol version") == std::string::npos) {
    candidate.next_attempt = now;
  }
}

void ClusterNode::LearnAddressesLocked(
    const google::protobuf::RepeatedPtrField<std::string>& addresses, const std::string& from,
    absl::Time now) {
  for (int i = 0; i < std::min(addresses.size(), kMaxGossipedPeers); ++i) {
    absl::StatusOr<std::vector<discovery::PeerInfo>> learned =
        discovery::ParseStaticPeers(addresses.Get(i));
    if (!learned.ok() || learned->size() != 1) continue;  // ignore garbage from a peer
    if (candidates_.contains(PeerAddress(learned->front()))) continue;
    AddCandidateLocked(learned->front().host, learned->front().grpc_port,
                       absl::StrCat("via ", from.substr(0, 8)), now);
  }
}

void ClusterNode::ApplyLocked(const MembershipEvent& event) {
  MembershipOptions membership_options;
  membership_options.heartbeat_timeout = options_.heartbeat_timeout;
  MembershipTransition transition = Apply(std::move(state_), event, membership_options);
  state_ = std::move(transition.state);
  for (const MembershipEffect& effect : transition.effects) {
    switch (effect.kind) {
      case MembershipEffect::Kind::kPeerUp:
        bus_->Subscribe(effect.bus_endpoint);
        Log(effect.message);
        break;
      case MembershipEffect::Kind::kPeerDown: {
        bus_->Unsubscribe(effect.bus_endpoint);
        Log(effect.message);
        auto it = candidates_.find(effect.address);
        if (it != candidates_.end()) {
          it->second.backoff = kMinBackoff;
          it->second.next_attempt = absl::Now() + kMinBackoff;
        }
        break;
      }
      case MembershipEffect::Kind::kRefused:
        Log(effect.message);
        break;
      case MembershipEffect::Kind::kRenameSelf: {
        const std::string old_id = state_.self.node_id;
        absl::StatusOr<std::string> renewed = RenewNodeId(options_.state_dir, old_id);
        if (!renewed.ok()) {
          Log(absl::StrCat(effect.message,
                           "; could not take a new id: ", renewed.status().message()));
          break;
        }
        Log(absl::StrCat(effect.message, "; this node now uses id ", *renewed, " (saved in ",
                         options_.state_dir, "/", kNodeIdFile, ")"));
        MembershipTransition renamed =
            Apply(std::move(state_), SelfRenamed{*renewed}, membership_options);
        state_ = std::move(renamed.state);
        if (mdns_ != nullptr) (void)mdns_->UpdateTxt(MdnsTxt());
        // Everyone we knew admitted us under the old id: say hello again under the new one.
        for (auto& [address, candidate] : candidates_) candidate.next_attempt = absl::Now();
        break;
      }
      case MembershipEffect::Kind::kSelfDialed: {
        auto it = candidates_.find(effect.address);
        if (it != candidates_.end()) it->second.is_self = true;
        break;
      }
    }
  }
}

exo::v1::Capabilities ClusterNode::CapabilitiesProto() const {
  exo::v1::Capabilities c;
  c.set_memory_bytes(capabilities_.memory_bytes);
  c.set_total_memory_bytes(capabilities_.total_memory_bytes);
  c.set_cpu_cores(capabilities_.cpu_cores);
  c.set_decode_bytes_per_second(capabilities_.memory_bandwidth_bytes_per_second);
  c.set_device_kind(capabilities_.device_kind);
  c.set_grpc_port(grpc_port_);
  c.set_bus_port(capabilities_.bus_port);
  absl::MutexLock lock(&api_mu_);
  c.set_http_port(http_port_);
  c.set_served_model(served_model_);
  return c;
}

NodeCapabilities ClusterNode::capabilities() const {
  NodeCapabilities c = capabilities_;
  absl::MutexLock lock(&api_mu_);
  c.http_port = http_port_;
  c.served_model = served_model_;
  return c;
}

void ClusterNode::SetHttpApi(uint16_t http_port, const std::string& served_model) {
  absl::MutexLock lock(&api_mu_);
  http_port_ = http_port;
  served_model_ = served_model;
}

grpc::Status ClusterNode::HandleHello(const std::string& peer, const exo::v1::HelloRequest& request,
                                      exo::v1::HelloResponse* response) {
  if (stopping_) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "this node is shutting down");
  }
  const std::string host = PeerHost(peer);
  const uint16_t port = static_cast<uint16_t>(request.capabilities().grpc_port());
  const std::string address = port != 0 && !host.empty() ? JoinHostPort(host, port) : peer;
  const absl::Status check = CheckHelloRequest(options_.cluster_key, request);
  absl::MutexLock lock(&mu_);
  const absl::Time now = absl::Now();
  if (!check.ok()) {
    ApplyLocked(HelloRefused{address, IsValidNodeId(request.node_id()) ? request.node_id() : "",
                             std::string(check.message()), now});
    return ToGrpcStatus(check);
  }
  ApplyLocked(HelloReceived{
      {request.node_id(), request.boot_id(), request.started_unix_millis()}, address, now});
  LocalInstance self{state_.self.node_id, state_.self.boot_id, state_.self.started_unix_millis};
  *response = MakeHelloResponse(options_.cluster_key, self, CapabilitiesProto(), request);
  // Tell the caller whom else we know, so a static list needs only one member's address.
  for (const PeerRecord* up : UpPeers(state_)) {
    if (up->instance.node_id != request.node_id()) response->add_peer_addresses(up->grpc_address);
  }
  // The caller is a node of our cluster: say hello back, which is what admits it here.
  if (request.node_id() != state_.self.node_id) AddCandidateLocked(host, port, "inbound", now);
  return grpc::Status::OK;
}

void ClusterNode::HandleBusEvent(const exo::v1::BusEvent& event) {
  const Instance peer{event.sender_node_id(), event.sender_boot_id(),
                      event.sender_started_unix_millis()};
  absl::MutexLock lock(&mu_);
  const absl::Time now = absl::Now();
  if (event.has_heartbeat()) {
    NodeLoad load;
    load.free_memory_bytes = event.heartbeat().free_memory_bytes();
    load.active_sequences = event.heartbeat().active_sequences();
    load.utilisation = event.heartbeat().utilisation();
    ApplyLocked(HeartbeatReceived{peer, FromProto(event.heartbeat().capabilities()), load, now});
    auto it = state_.peers.find(peer.node_id);
    if (it != state_.peers.end() && it->second.state == PeerState::kUp &&
        it->second.instance.boot_id == peer.boot_id) {
      LearnAddressesLocked(event.heartbeat().peer_addresses(), peer.node_id, now);
    }
  } else if (event.has_node_leaving()) {
    ApplyLocked(LeavingReceived{peer, event.node_leaving().reason().substr(0, 200), now});
  } else if (event.has_plan_announcement()) {
    // Only from an up peer, and only about itself as coordinator.
    auto it = state_.peers.find(peer.node_id);
    const exo::v1::PlanAnnouncement& plan = event.plan_announcement();
    if (it != state_.peers.end() && it->second.state == PeerState::kUp &&
        plan.coordinator_node_id() == peer.node_id && plan.stages_size() <= 1024) {
      RecordPlanLocked(plan);
    }
  }
}

void ClusterNode::RecordPlanLocked(const exo::v1::PlanAnnouncement& plan) {
  const std::string model = plan.model().name().substr(0, 256);
  auto it = known_plans_.find(model);
  if (it != known_plans_.end() && it->second.epoch() == plan.epoch() &&
      it->second.coordinator_node_id() == plan.coordinator_node_id()) {
    return;  // heard already
  }
  if (it != known_plans_.end() && it->second.epoch() > plan.epoch() &&
      it->second.coordinator_node_id() == plan.coordinator_node_id()) {
    return;  // an old one, late
  }
  std::string stages;
  for (const exo::v1::PlanStage& stage : plan.stages()) {
    absl::StrAppend(&stages, stages.empty() ? "" : " -> ", stage.node_id().substr(0, 12), " [",
                    stage.layer_begin(), ", ", stage.layer_end(), ")");
  }
  Log(absl::StrCat("plan epoch ", plan.epoch(), " for ", model, " from coordinator ",
                   plan.coordinator_node_id().substr(0, 12), ": ", stages));
  known_plans_[model] = plan;
}

void ClusterNode::AnnouncePlan(std::optional<exo::v1::PlanAnnouncement> plan) {
  absl::MutexLock lock(&mu_);
  if (plan.has_value()) {
    plan->set_coordinator_node_id(state_.self.node_id);
    RecordPlanLocked(*plan);
  } else if (announced_plan_.has_value()) {
    known_plans_.erase(announced_plan_->model().name());
  }
  announced_plan_ = std::move(plan);
}

std::vector<exo::v1::BusEvent> ClusterNode::PeriodicEvents() {
  absl::MutexLock lock(&mu_);
  std::vector<exo::v1::BusEvent> events;
  if (!announced_plan_.has_value()) return events;
  exo::v1::BusEvent& event = events.emplace_back();
  event.set_sender_node_id(state_.self.node_id);
  event.set_sender_boot_id(state_.self.boot_id);
  event.set_sender_started_unix_millis(state_.self.started_unix_millis);
  event.set_sent_unix_millis(UnixMillis(absl::Now()));
  *event.mutable_plan_announcement() = *announced_plan_;
  return events;
}

exo::v1::BusEvent ClusterNode::MakeHeartbeat() {
  exo::v1::BusEvent event;
  {
    absl::MutexLock lock(&mu_);
    event.set_sender_node_id(state_.self.node_id);
    event.set_sender_boot_id(state_.self.boot_id);
    event.set_sender_started_unix_millis(state_.self.started_unix_millis);
    for (const PeerRecord* up : UpPeers(state_)) {
      event.mutable_heartbeat()->add_peer_addresses(up->grpc_address);
    }
  }
  event.set_sent_unix_millis(UnixMillis(absl::Now()));
  const NodeLoad load = LocalLoad();
  exo::v1::Heartbeat* heartbeat = event.mutable_heartbeat();
  *heartbeat->mutable_capabilities() = CapabilitiesProto();
  heartbeat->set_free_memory_bytes(load.free_memory_bytes);
  heartbeat->set_utilisation(load.utilisation);
  heartbeat->set_active_sequences(load.active_sequences);
  return event;
}

void ClusterNode::Dial(std::string address) {
  exo::v1::HelloRequest request;
  auto context = std::make_shared<grpc::ClientContext>();
  {
    absl::MutexLock lock(&mu_);
    LocalInstance self{state_.self.node_id, state_.self.boot_id, state_.self.started_unix_millis};
    request = MakeHelloRequest(options_.cluster_key, self, CapabilitiesProto(),
                               options_.protocol_version);
    dials_in_flight_.insert(context);
  }
  context->set_deadline(absl::ToChronoTime(absl::Now() + options_.hello_timeout));
  grpc::ChannelArguments arguments;
  arguments.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a fresh connection per dial
  auto channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), arguments);
  auto stub = exo::v1::NodeService::NewStub(channel);
  exo::v1::HelloResponse response;
  const grpc::Status rpc = stub->Hello(context.get(), request, &response);

  absl::MutexLock lock(&mu_);
  dials_in_flight_.erase(context);
  auto it = candidates_.find(address);
  if (it == candidates_.end() || stopping_) return;
  Candidate& candidate = it->second;
  candidate.dialing = false;
  const absl::Time now = absl::Now();
  absl::Status refused;
  if (rpc.ok()) {
    refused = CheckHelloResponse(options_.cluster_key, request, response);
  } else if (rpc.error_code() == grpc::StatusCode::PERMISSION_DENIED ||
             rpc.error_code() == grpc::StatusCode::FAILED_PRECONDITION ||
             rpc.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
    refused = absl::Status(static_cast<absl::StatusCode>(rpc.error_code()),
                           absl::StrCat("it refused our Hello: ", rpc.error_message()));
  } else {
    // Not reachable (yet): try again with back-off.
    candidate.last_error = absl::StrCat("Hello failed: ", rpc.error_message());
    ++candidate.failures;
    candidate.backoff = std::min(kMaxBackoff, std::max(kMinBackoff, candidate.backoff * 2));
    candidate.next_attempt = now + candidate.backoff;
    return;
  }
  if (!refused.ok()) {
    candidate.last_error = std::string(refused.message());
    ++candidate.failures;
    candidate.next_attempt = now + kRefusedBackoff;
    ApplyLocked(HelloRefused{address, IsValidNodeId(response.node_id()) ? response.node_id() : "",
                             std::string(refused.message()), now});
    return;
  }
  candidate.last_error.clear();
  candidate.failures = 0;
  candidate.backoff = kMinBackoff;
  candidate.node_id = response.node_id();
  candidate.next_attempt = now + options_.heartbeat_interval;
  const NodeCapabilities caps = FromProto(response.capabilities());
  LearnAddressesLocked(response.peer_addresses(), response.node_id(), now);
  ApplyLocked(
      HelloSucceeded{{response.node_id(), response.boot_id(), response.started_unix_millis()},
                     address,
                     JoinHostPort(candidate.host, caps.bus_port),
                     caps,
                     now});
}

void ClusterNode::RunMembershipLoop() {
  absl::Time next_status = absl::Now();
  while (!stopping_) {
    std::vector<std::string> to_dial;
    {
      absl::MutexLock lock(&mu_);
      const absl::Time now = absl::Now();
      ApplyLocked(Tick{now});
      for (auto& [address, candidate] : candidates_) {
        if (candidate.dialing || candidate.is_self || now < candidate.next_attempt) continue;
        auto peer = state_.peers.find(candidate.node_id);
        if (peer != state_.peers.end() && peer->second.state == PeerState::kUp) {
          candidate.next_attempt = now + options_.heartbeat_interval;
          continue;
        }
        candidate.dialing = true;
        to_dial.push_back(address);
      }
      // Reap finished dial threads (done is set after Dial released the lock).
      std::erase_if(dial_threads_, [](DialThread& dial) {
        if (!dial.done->load()) return false;
        dial.thread.join();
        return true;
      });
      // Each dial thread sends one Hello and feeds the answer to the state machine.
      for (const std::string& address : to_dial) {
        auto done = std::make_shared<std::atomic<bool>>(false);
        dial_threads_.push_back({std::thread([this, address, done] {
                                   Dial(address);
                                   done->store(true);
                                 }),
                                 done});
      }
    }
    if (absl::Now() >= next_status) {
      WriteStatus(true);
      next_status = absl::Now() + options_.status_interval;
    }
    absl::SleepFor(kTickInterval);
  }
}

void ClusterNode::Stop(const std::string& reason) {
  if (stopped_.exchange(true)) return;
  stopping_ = true;
  if (bus_ != nullptr) {
    exo::v1::BusEvent leaving;
    {
      absl::MutexLock lock(&mu_);
      leaving.set_sender_node_id(state_.self.node_id);
      leaving.set_sender_boot_id(state_.self.boot_id);
      leaving.set_sender_started_unix_millis(state_.self.started_unix_millis);
    }
    leaving.set_sent_unix_millis(UnixMillis(absl::Now()));
    leaving.mutable_node_leaving()->set_reason(reason);
    bus_->Stop(leaving);
  }
  if (mdns_ != nullptr) mdns_->Stop();  // goodbye: TTL 0 for our records
  if (loop_.joinable()) loop_.join();
  std::vector<DialThread> dials;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& context : dials_in_flight_) context->TryCancel();
    dials.swap(dial_threads_);
  }
  for (DialThread& dial : dials) dial.thread.join();
  if (server_ != nullptr) {
    server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Milliseconds(200)));
  }
  if (grpc_port_ != 0) WriteStatus(false);
}

void ClusterNode::WriteStatus(bool running) {
  nlohmann::json status;
  const absl::Time now = absl::Now();
  {
    absl::MutexLock lock(&mu_);
    status["pid"] = static_cast<int64_t>(getpid());
    status["running"] = running;
    status["updated_unix_millis"] = UnixMillis(now);
    status["node_id"] = state_.self.node_id;
    status["started_unix_millis"] = state_.self.started_unix_millis;
    status["cluster_fingerprint"] = options_.cluster_key.Fingerprint();
    status["default_cluster_key"] = options_.cluster_key.is_default();
    status["protocol_version"] = options_.protocol_version;
    status["bind_address"] = options_.bind_address;
    status["grpc_port"] = grpc_port_;
    status["bus_port"] = capabilities_.bus_port;
    status["heartbeat_timeout_ms"] = absl::ToInt64Milliseconds(options_.heartbeat_timeout);
    status["discovery"] = options_.discovery_modes;
    status["mdns_supported"] = true;
    status["mdns_active"] = mdns_ != nullptr;
    status["mdns_error"] = mdns_error_;
    if (mdns_ != nullptr) {
      status["mdns_interfaces"] = mdns_->interfaces();
      status["mdns_instance"] = mdns_->instance_name();
      status["mdns_announced"] = mdns_->announced();
      const discovery::MdnsStats stats = mdns_->stats();
      status["mdns_stats"] = {{"packets_received", stats.packets_received},
                              {"packets_malformed", stats.packets_malformed},
                              {"packets_sent", stats.packets_sent},
                              {"send_errors", stats.send_errors},
                              {"conflicts", stats.conflicts}};
    }
    status["capabilities"] = CapabilitiesJson(capabilities());
    nlohmann::json peers = nlohmann::json::array();
    for (const auto& [id, peer] : state_.peers) {
      peers.push_back({{"node_id", id},
                       {"state", PeerStateName(peer.state)},
                       {"grpc_address", peer.grpc_address},
                       {"bus_endpoint", peer.bus_endpoint},
                       {"capabilities", CapabilitiesJson(peer.capabilities)},
                       {"free_memory_bytes", peer.load.free_memory_bytes},
                       {"utilisation", peer.load.utilisation},
                       {"active_sequences", peer.load.active_sequences},
                       {"last_heard_ms_ago", absl::ToInt64Milliseconds(now - peer.last_heard)},
                       {"down_reason", peer.down_reason}});
    }
    status["peers"] = peers;
    nlohmann::json plans = nlohmann::json::array();
    for (const auto& [model, plan] : known_plans_) {
      // Only plans whose coordinator is still here (a departed one's plan is history).
      auto coordinator = state_.peers.find(plan.coordinator_node_id());
      if (plan.coordinator_node_id() != state_.self.node_id &&
          (coordinator == state_.peers.end() || coordinator->second.state != PeerState::kUp)) {
        continue;
      }
      nlohmann::json stages = nlohmann::json::array();
      for (const exo::v1::PlanStage& stage : plan.stages()) {
        stages.push_back({{"node_id", stage.node_id()},
                          {"layer_begin", stage.layer_begin()},
                          {"layer_end", stage.layer_end()}});
      }
      plans.push_back({{"model", model},
                       {"epoch", plan.epoch()},
                       {"coordinator", plan.coordinator_node_id()},
                       {"stages", stages}});
    }
    status["plans"] = plans;
    nlohmann::json refusals = nlohmann::json::array();
    for (const Refusal& r : state_.refusals) {
      refusals.push_back({{"address", r.address},
                          {"node_id", r.node_id},
                          {"reason", r.reason},
                          {"count", r.count},
                          {"last_seen_ms_ago", absl::ToInt64Milliseconds(now - r.last_seen)}});
    }
    status["refusals"] = refusals;
    nlohmann::json candidates = nlohmann::json::array();
    for (const auto& [address, c] : candidates_) {
      candidates.push_back({{"address", address},
                            {"source", c.source},
                            {"node_id", c.node_id},
                            {"is_self", c.is_self},
                            {"failures", c.failures},
                            {"last_error", c.last_error}});
    }
    status["candidates"] = candidates;
    std::vector<std::string> bus_rejects(logged_bus_rejects_.begin(), logged_bus_rejects_.end());
    status["bus_rejects"] = bus_rejects;
  }
  const std::string path = absl::StrCat(options_.state_dir, "/", kStatusFile);
  const std::string temporary = absl::StrCat(path, ".tmp");
  {
    std::ofstream out(temporary, std::ios::trunc);
    out << status.dump(1) << "\n";
    if (!out) return;  // a full disk must not stop the node; peers then reports a stale file
  }
  std::error_code ec;
  std::filesystem::rename(temporary, path, ec);
}

void BlockShutdownSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

std::string WaitForShutdownSignal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  int signal = 0;
  while (sigwait(&set, &signal) != 0) {
  }
  return signal == SIGINT ? "SIGINT" : "SIGTERM";
}

void PrintReady(const ClusterNode& node, std::ostream& out) {
  out << "exo-node: node id " << node.node_id() << "\n"
      << "exo-node: cluster key fingerprint " << node.cluster_fingerprint()
      << (node.default_cluster_key() ? " (default key)" : "") << "\n"
      << "exo-node: grpc listening on " << JoinHostPort(node.bind_address(), node.grpc_port())
      << "\n"
      << "exo-node: bus listening on " << JoinHostPort(node.bind_address(), node.bus_port()) << "\n"
      << "exo-node: state directory " << node.state_dir() << "\n"
      << std::flush;
}

}  // namespace exo::node
