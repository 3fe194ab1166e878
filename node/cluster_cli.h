// Operator commands about the cluster: `exo-node peers` and `exo-node doctor`. Both read the
// status file a running `exo-node serve` keeps in its state directory (cluster.json, rewritten
// every 250 ms), so they need no network access and no credentials.
#ifndef EXO_NODE_CLUSTER_CLI_H_
#define EXO_NODE_CLUSTER_CLI_H_

#include <cstdint>
#include <ostream>
#include <string>

namespace exo::node {

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
