// `exo-node plan`: prints the plan a cluster would use for a model: the live cluster of the node
// running on this machine (its status file: this node and every up peer), or, offline, a fleet
// description. Only the optional "plan in force" line talks to the node's API.
//
// Fleet file (JSON):
//   {
//     "nodes": [
//       {"id": "mac", "memory": "64GiB", "bandwidth": "400GB/s", "kind": "apple-m2-max"},
//       {"id": "pi", "memory": 8589934592, "bandwidth": 4e9, "kind": "cpu-a76"}
//     ],
//     "links": {
//       "default_latency_ms": 2, "default_bandwidth": "1.25GB/s",
//       "pairs": [{"from": "mac", "to": "gpu", "latency_ms": 0.2, "bandwidth": "5GB/s"}]
//     }
//   }
// Sizes are bytes as numbers or strings with a unit (B, KB, MB, GB, TB = powers of 1000;
// KiB, MiB, GiB, TiB = powers of 1024); bandwidths the same with an optional "/s". "links",
// "kind" and every link field are optional; a pair listed one way is used both ways.
#ifndef EXO_NODE_PLAN_CMD_H_
#define EXO_NODE_PLAN_CMD_H_

#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "node/model_profile.h"
#include "partition/planner.h"
#include "partition/profile.h"

namespace exo::node {

struct Fleet {
  std::vector<partition::DeviceProfile> devices;
  partition::LinkModel links;
};

// InvalidArgument naming the field and node at fault.
absl::StatusOr<Fleet> ParseFleet(const std::string& json_text);

// "64GiB", "400GB/s", "1.5e9": bytes (per second when allow_rate). InvalidArgument otherwise.
absl::StatusOr<double> ParseByteQuantity(const std::string& text, bool allow_rate);

// Pure: the live fleet from a node's status file (<state_dir>/cluster.json): this node and every
// peer whose state is "up", with the memory, bandwidth and device kind their capabilities carry,
// and the planner's default links (1 ms a hop, as the coordinator plans). InvalidArgument when
// the file lacks what planning needs.
absl::StatusOr<Fleet> FleetFromStatus(const nlohmann::json& status);

// The plan as a table: each stage's node, layers, memory and time per token, the totals, and the
// single-node and ring baselines. `fleet` gives the memory each node has.
std::string FormatPlanReport(const partition::Plan& plan, const partition::ModelProfile& model,
                             const Fleet& fleet, partition::Strategy strategy);

struct PlanCommand {
  std::string model_path;  // empty: the default model
  std::string fleet_path;  // empty: the live cluster of the node with `state_dir`
  std::string state_dir;   // empty: the default state directory
  std::string api_key;     // for the node's API (the plan in force)
  partition::Strategy strategy = partition::Strategy::kOptimal;
  int32_t max_stages = 0;
  ModelProfileOptions profile;
};

// Exit code 0 with the plan on `out`; 1 with a one-line error on `err` when the model or fleet
// cannot be read, no node runs (without --fleet), or nothing fits.
int RunPlan(const PlanCommand& command, std::ostream& out, std::ostream& err);

}  // namespace exo::node

#endif  // EXO_NODE_PLAN_CMD_H_
