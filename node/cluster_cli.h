// Operator commands about the cluster: `exo-node peers` and `exo-node doctor`. Both read the
// status file a running `exo-node serve` keeps in its state directory (cluster.json, rewritten
// every 250 ms), so they need no network access and no credentials.
#ifndef EXO_NODE_CLUSTER_CLI_H_
#define EXO_NODE_CLUSTER_CLI_H_

#include <cstdint>
#include <functional>
#include <ostream>
#include <string>

#include "nlohmann/json.hpp"

namespace exo::node {

// What the status file of the node with a given state directory says.
struct NodeStatus {
  nlohmann::json json = nlohmann::json::object();  // the file; an empty object when unreadable
  std::string path;                                // <state_dir>/cluster.json
  bool running = false;         // the file says running, its pid lives, and it is fresh
  int64_t age_millis = 0;       // since the file was written
  std::string why_not_running;  // one line, set when !running
};

// A status file older than this counts as a hung node (it is rewritten every 250 ms).
inline constexpr int64_t kStatusStaleMillis = 5000;

// Pure: judges `status_json` (already parsed from `path`) at `now_unix_millis`, asking
// `pid_alive` whether the pid it names still runs. Never throws on fields of the wrong type.
NodeStatus EvaluateNodeStatus(nlohmann::json status_json, const std::string& state_dir,
                              int64_t now_unix_millis,
                              const std::function<bool(int64_t pid)>& pid_alive);

// Reads and judges <state_dir>/cluster.json now (a missing or damaged file is "not running").
NodeStatus ReadNodeStatus(const std::string& state_dir);

struct PeersCommand {
  std::string state_dir;  // empty: the default state directory
  bool json = false;      // print the status file as JSON instead of a table
};

struct DoctorCommand {
  std::string state_dir;   // empty: the default state directory
  uint16_t grpc_port = 0;  // ports to check when no node is running (0: the defaults)
  uint16_t bus_port = 0;
  std::string interface;  // the --interface the node was told to use, if any
};

// Lists this node and its peers: id, address, state, capabilities, load, last heartbeat age.
// Exit 1 (with a one-line reason) when no node is running with that state directory.
int RunPeers(const PeersCommand& command, std::ostream& out, std::ostream& err);

// Explains why a peer may be missing and what to do. Exit 0 when nothing looks wrong, 1 when it
// found a problem.
int RunDoctor(const DoctorCommand& command, std::ostream& out, std::ostream& err);

}  // namespace exo::node

#endif  // EXO_NODE_CLUSTER_CLI_H_
