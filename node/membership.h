// Cluster membership as a pure state machine: Apply(state, event) -> (state, effects).
//
// No sockets, no clocks: every event carries the time it happened, so timeouts are tested with
// made-up times. node/cluster_node.* feeds it events from the Hello handshake and the bus and
// carries out its effects (subscribe, log, rename).
//
// Rules:
// - A peer is up only after a Hello this node sent was answered with a valid proof
//   (HelloSucceeded). Heartbeats keep an up peer up; they never admit anyone.
// - A peer is down after no heartbeat for `heartbeat_timeout`, or at once when it says goodbye
//   (NodeLeaving). A peer that said goodbye is not re-admitted by a late answer from the same
//   process (same boot id); a restarted process (new boot id) is.
// - Refusals (wrong cluster key or protocol version) never admit; each distinct (address,
//   reason) is reported once as a log effect and then only counted.
// - Two live processes with one node id (a cloned state directory): the one that started later
//   (ties: larger boot id) renames itself; the other does nothing.
#ifndef EXO_NODE_MEMBERSHIP_H_
#define EXO_NODE_MEMBERSHIP_H_

#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include "absl/time/time.h"

namespace exo::node {

struct NodeCapabilities {
  uint64_t memory_bytes = 0;        // usable for weights, KV and scratch
  uint64_t total_memory_bytes = 0;  // physical memory
  uint32_t cpu_cores = 0;
  double memory_bandwidth_bytes_per_second = 0;
  std::string device_kind;
  uint16_t grpc_port = 0;
  uint16_t bus_port = 0;
  // The HTTP API (0: none) and the model it serves ("" when none): the API node with the lowest
  // id among those serving a model coordinates it (node/api_routing.h).
  uint16_t http_port = 0;
  std::string served_model;
};

struct NodeLoad {
  uint64_t free_memory_bytes = 0;
  uint32_t active_sequences = 0;
  float utilisation = 0;
};

// One process: the node id plus what tells two processes with the same id apart.
struct Instance {
  std::string node_id;
  uint64_t boot_id = 0;
  uint64_t started_unix_millis = 0;
};

enum class PeerState { kUp, kDown, kLeft };
const char* PeerStateName(PeerState state);

struct PeerRecord {
  Instance instance;
  std::string grpc_address;  // host:port we reached its Hello at
  std::string bus_endpoint;  // host:port of its PUB socket
  PeerState state = PeerState::kDown;
  NodeCapabilities capabilities;
  NodeLoad load;
  absl::Time up_since = absl::InfinitePast();
  absl::Time last_heard = absl::InfinitePast();  // last Hello answer or heartbeat
  std::string down_reason;                       // why it is down or left
};

// A peer that failed the handshake (another key or version, or a malformed answer).
struct Refusal {
  std::string address;
  std::string node_id;  // empty when unknown
  std::string reason;
  absl::Time first_seen;
  absl::Time last_seen;
  int count = 0;
};

struct MembershipState {
  Instance self;
  std::map<std::string, PeerRecord> peers;  // by node id
  std::vector<Refusal> refusals;            // newest last, at most kMaxRefusals
};
inline constexpr size_t kMaxRefusals = 32;

struct MembershipOptions {
  absl::Duration heartbeat_timeout = absl::Seconds(3);
};

// ---- Events ------------------------------------------------------------------------------------

// Our Hello to `grpc_address` was answered with a valid proof.
struct HelloSucceeded {
  Instance peer;
  std::string grpc_address;
  std::string bus_endpoint;
  NodeCapabilities capabilities;
  absl::Time now;
};
// Our Hello was refused, or another node's Hello to us was refused (wrong key or version).
struct HelloRefused {
  std::string address;
  std::string node_id;
  std::string reason;
  absl::Time now;
};
// Another node's Hello to us passed the checks (used to spot a clone of our own id).
struct HelloReceived {
  Instance peer;
  std::string address;
  absl::Time now;
};
// A verified heartbeat on the bus.
struct HeartbeatReceived {
  Instance peer;
  NodeCapabilities capabilities;
  NodeLoad load;
  absl::Time now;
};
// A verified NodeLeaving on the bus.
struct LeavingReceived {
  Instance peer;
  std::string reason;
  absl::Time now;
};
// Time passes (checks heartbeat timeouts).
struct Tick {
  absl::Time now;
};
// We took a new id after a RenameSelf effect.
struct SelfRenamed {
  std::string new_node_id;
};

using MembershipEvent = std::variant<HelloSucceeded, HelloRefused, HelloReceived, HeartbeatReceived,
                                     LeavingReceived, Tick, SelfRenamed>;

// ---- Effects -----------------------------------------------------------------------------------

struct MembershipEffect {
  enum class Kind {
    kPeerUp,      // subscribe to bus_endpoint; message is the log line
    kPeerDown,    // unsubscribe from bus_endpoint; message is the log line
    kRefused,     // message is the one log line for a new (address, reason)
    kRenameSelf,  // take a new node id and feed SelfRenamed; message explains
    kSelfDialed,  // the address answered with our own id and boot id: it is us; forget it
  };
  Kind kind;
  std::string node_id;
  std::string address;       // grpc address for kSelfDialed / kRefused
  std::string bus_endpoint;  // for kPeerUp / kPeerDown
  std::string message;
};

struct MembershipTransition {
  MembershipState state;
  std::vector<MembershipEffect> effects;
};

MembershipTransition Apply(MembershipState state, const MembershipEvent& event,
                           const MembershipOptions& options = {});

// Peers currently up, by node id.
std::vector<const PeerRecord*> UpPeers(const MembershipState& state);

}  // namespace exo::node

#endif  // EXO_NODE_MEMBERSHIP_H_
