// A running cluster node: identity, the gRPC NodeService (Hello handshake), the ZeroMQ bus, the
// membership state machine, and the dialer that turns discovered addresses into peers.
//
// Threads: gRPC's own threads answer Hello; the bus thread publishes heartbeats and receives
// peers' events; the membership thread ticks the state machine every 100 ms, starts Hello dials
// to candidate addresses and rewrites the status file; each dial runs on a short-lived thread.
// All of them meet at one mutex around the membership state.
#ifndef EXO_NODE_CLUSTER_NODE_H_
#define EXO_NODE_CLUSTER_NODE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "discovery/mdns.h"
#include "discovery/peer.h"
#include "exo/v1/bus.pb.h"
#include "node/cluster_key.h"
#include "node/handshake.h"
#include "node/membership.h"
#include "node/node_service.h"
#include "node/shard_handler.h"

namespace grpc {
class Server;
class ClientContext;
}  // namespace grpc

namespace exo::node {

class Bus;

inline constexpr uint16_t kDefaultGrpcPort = 52416;
inline constexpr uint16_t kDefaultBusPort = 52417;
// Name of the status file the daemon keeps in its state directory (read by peers and doctor).
inline constexpr char kStatusFile[] = "cluster.json";

struct ClusterNodeOptions {
  std::string state_dir;  // empty: DefaultStateDir()
  std::string bind_address = "0.0.0.0";
  uint16_t grpc_port = kDefaultGrpcPort;  // 0: ephemeral
  uint16_t bus_port = kDefaultBusPort;    // 0: ephemeral
  ClusterKey cluster_key = ClusterKey::Default();
  std::vector<discovery::PeerInfo> static_peers;
  std::vector<std::string> discovery_modes = {"mdns", "static"};
  // mDNS (when discovery_modes has "mdns"): interfaces to use (empty: every multicast-capable
  // one) and the instance label ("<host name>-<id prefix>" when empty).
  std::vector<std::string> mdns_interfaces;
  std::string mdns_instance_name;
  uint16_t mdns_port = 5353;  // only tests change it
  absl::Duration heartbeat_interval = absl::Milliseconds(500);
  absl::Duration heartbeat_timeout = absl::Seconds(3);
  absl::Duration hello_timeout = absl::Milliseconds(800);
  absl::Duration status_interval = absl::Milliseconds(250);
  int protocol_version = kProtocolVersion;  // tests play an incompatible node with this
  // Caps the memory this node offers the cluster (weights, KV and scratch); 0: what is free.
  uint64_t memory_limit_bytes = 0;
  // The pipeline-stage side (LoadShard / Forward / FetchTensors from peers holding the key):
  // a local GGUF file to serve shards and tensors from (empty: fetch a shard's tensors from the
  // peer the plan names), where fetched tensors are cached, and compute threads (0: cores).
  std::string model_path;
  std::string models_dir;
  int32_t stage_threads = 0;
  std::ostream* stage_log = nullptr;  // shard loading and fetch progress; null: stderr
  // Receives log lines (no newline). Default: "exo-node: <line>" on stderr.
  std::function<void(const std::string&)> log;
};

class ClusterNode {
 public:
  // Loads (or creates) the node id, binds the bus and gRPC ports, starts dialing static peers.
  // Unavailable if a port is taken, FailedPrecondition for an unusable state directory.
  static absl::StatusOr<std::unique_ptr<ClusterNode>> Start(ClusterNodeOptions options);
  ~ClusterNode();

  // Leaves gracefully: refuses new Hellos, publishes NodeLeaving on the bus, stops everything
  // and marks the status file stopped. Idempotent.
  void Stop(const std::string& reason = "shutting down");

  std::string node_id() const ABSL_LOCKS_EXCLUDED(mu_);
  uint16_t grpc_port() const { return grpc_port_; }
  uint16_t bus_port() const;
  const std::string& bind_address() const { return options_.bind_address; }
  std::string cluster_fingerprint() const { return options_.cluster_key.Fingerprint(); }
  bool default_cluster_key() const { return options_.cluster_key.is_default(); }
  const std::string& state_dir() const { return options_.state_dir; }
  // This node's capabilities, including the HTTP API it advertises (SetHttpApi).
  NodeCapabilities capabilities() const ABSL_LOCKS_EXCLUDED(api_mu_);
  // Advertises this node's HTTP API (port, 0: none) and the model it serves ("" when none) to
  // peers in heartbeats, Hello answers and the status file, from the next one on.
  void SetHttpApi(uint16_t http_port, const std::string& served_model) ABSL_LOCKS_EXCLUDED(api_mu_);
  MembershipState Snapshot() const ABSL_LOCKS_EXCLUDED(mu_);

  // A discovery source (static list, mDNS) found an address worth a Hello.
  void AddCandidate(const discovery::PeerInfo& peer, const std::string& source)
      ABSL_LOCKS_EXCLUDED(mu_);

  // The plan this node coordinates, published on the bus with every heartbeat until replaced
  // or withdrawn (nullopt). Peers log the newest epoch per model and list it in the status file.
  void AnnouncePlan(std::optional<exo::v1::PlanAnnouncement> plan) ABSL_LOCKS_EXCLUDED(mu_);

  NodeServiceImpl& service() { return *service_; }
  const ClusterKey& cluster_key() const { return options_.cluster_key; }
  // Adds this node's data-path token (node/cluster_auth.h) to an outgoing call.
  std::function<void(grpc::ClientContext&)> DataPathAuthorizer() const;

 private:
  struct Candidate {
    std::string address;  // host:port of its NodeService
    std::string host;
    std::string source;  // "static", "mdns", "inbound"
    absl::Time next_attempt = absl::InfinitePast();
    absl::Duration backoff = absl::ZeroDuration();
    bool dialing = false;
    bool is_self = false;
    std::string node_id;  // learned from its answer
    std::string last_error;
    int failures = 0;
  };

  explicit ClusterNode(ClusterNodeOptions options);
  void Log(const std::string& line) const;
  void ApplyLocked(const MembershipEvent& event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Adds peers' peers (from a Hello answer or a heartbeat) as candidates.
  void LearnAddressesLocked(const google::protobuf::RepeatedPtrField<std::string>& addresses,
                            const std::string& from, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AddCandidateLocked(const std::string& host, uint16_t port, const std::string& source,
                          absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  grpc::Status HandleHello(const std::string& peer, const exo::v1::HelloRequest& request,
                           exo::v1::HelloResponse* response) ABSL_LOCKS_EXCLUDED(mu_);
  void HandleBusEvent(const exo::v1::BusEvent& event) ABSL_LOCKS_EXCLUDED(mu_);
  exo::v1::BusEvent MakeHeartbeat() ABSL_LOCKS_EXCLUDED(mu_);
  std::vector<exo::v1::BusEvent> PeriodicEvents() ABSL_LOCKS_EXCLUDED(mu_);
  // Records `plan` when it is newer than what is known for its model; logs each new epoch.
  void RecordPlanLocked(const exo::v1::PlanAnnouncement& plan) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  exo::v1::Capabilities CapabilitiesProto() const;
  void Dial(std::string address) ABSL_LOCKS_EXCLUDED(mu_);
  void RunMembershipLoop();
  void StartMdns();
  std::vector<discovery::TxtEntry> MdnsTxt() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void HandleMdnsEvent(const discovery::PeerEvent& event) ABSL_LOCKS_EXCLUDED(mu_);
  void WriteStatus(bool running) ABSL_LOCKS_EXCLUDED(mu_);

  ClusterNodeOptions options_;
  NodeCapabilities capabilities_;  // fixed after Start, except the API fields below
  mutable absl::Mutex api_mu_;
  uint16_t http_port_ ABSL_GUARDED_BY(api_mu_) = 0;
  std::string served_model_ ABSL_GUARDED_BY(api_mu_);
  uint16_t grpc_port_ = 0;
  std::unique_ptr<NodeServiceImpl> service_;
  std::unique_ptr<PeerAuthenticator> stage_authenticator_;
  std::unique_ptr<ShardHandler> shards_;  // this node's pipeline stage
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<Bus> bus_;
  std::unique_ptr<discovery::MdnsService> mdns_;  // null when mDNS is off or failed to start
  std::string mdns_error_;                        // why mDNS is off, if it was asked for

  mutable absl::Mutex mu_;
  MembershipState state_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Candidate> candidates_ ABSL_GUARDED_BY(mu_);  // by address
  std::set<std::shared_ptr<grpc::ClientContext>> dials_in_flight_ ABSL_GUARDED_BY(mu_);
  struct DialThread {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::vector<DialThread> dial_threads_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> logged_bus_rejects_ ABSL_GUARDED_BY(mu_);
  std::optional<exo::v1::PlanAnnouncement> announced_plan_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, exo::v1::PlanAnnouncement> known_plans_ ABSL_GUARDED_BY(mu_);

  std::atomic<bool> stopping_{false};
  std::atomic<bool> stopped_{false};
  std::thread loop_;
};

// Blocks SIGINT and SIGTERM in the calling thread and every thread it starts afterwards; call
// before starting a ClusterNode, then WaitForShutdownSignal.
void BlockShutdownSignals();
// Waits for SIGINT or SIGTERM; returns the signal's name.
std::string WaitForShutdownSignal();

// The machine-parseable lines `exo-node serve` prints when ready:
//   exo-node: node id <ID>
//   exo-node: cluster key fingerprint <FP>[ (default key)]
//   exo-node: grpc listening on <addr>:<port>
//   exo-node: bus listening on <addr>:<port>
void PrintReady(const ClusterNode& node, std::ostream& out);

}  // namespace exo::node

#endif  // EXO_NODE_CLUSTER_NODE_H_
