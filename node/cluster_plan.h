// The coordinator's planning step, pure: from the membership view (this node and every up peer,
// with the capabilities their heartbeats carry) and a model profile to a plan whose stages name
// reachable gRPC addresses. No sockets, no clocks; node/coordinator.* carries the plan out.
#ifndef EXO_NODE_CLUSTER_PLAN_H_
#define EXO_NODE_CLUSTER_PLAN_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "node/membership.h"
#include "partition/plan.h"
#include "partition/planner.h"
#include "partition/profile.h"

namespace exo::node {

struct ClusterPlan {
  partition::Plan plan;
  std::vector<std::string> addresses;  // gRPC host:port of each stage's node, in plan order
  partition::PlanEstimate estimate;
  std::vector<partition::DeviceProfile> devices;  // the fleet it was planned over
};

// Planner devices: this node (its id is state.self.node_id) and every up peer, sorted by id.
std::vector<partition::DeviceProfile> ClusterDevices(const MembershipState& state,
                                                     const NodeCapabilities& self);

struct ClusterPlanOptions {
  partition::PlannerOptions planner;  // strategy, max stages
  partition::LinkModel links;         // default: 1 ms per hop
  // Set after a join or leave: the plan in force, so the new one moves as few layers as it can.
  std::optional<partition::Plan> previous;
};

// A plan over the cluster as `state` sees it, with `self_address` as this node's gRPC address
// (what peers dial to reach it). ResourceExhausted when nothing fits (the message says how much
// memory is missing where), as partition::MakePlan.
absl::StatusOr<ClusterPlan> PlanCluster(const MembershipState& state, const NodeCapabilities& self,
                                        const std::string& self_address,
                                        const partition::ModelProfile& model,
                                        const ClusterPlanOptions& options);

// True when every node of `plan` is this node or an up peer of `state`.
bool PlanNodesUp(const partition::Plan& plan, const MembershipState& state);

// One line per stage, e.g. "stage 1: node 3f2a… at 10.0.0.2:52416, layers 0-8 + embedding,
// 120.5 MiB, 2.10 ms/token"; for logs and `serve`'s output.
std::string DescribeClusterPlan(const ClusterPlan& plan);

}  // namespace exo::node

#endif  // EXO_NODE_CLUSTER_PLAN_H_
