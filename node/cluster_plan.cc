#include "node/cluster_plan.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace exo::node {
namespace {

partition::DeviceProfile Device(const std::string& id, const NodeCapabilities& caps) {
  partition::DeviceProfile device;
  device.node_id = id;
  device.memory_bytes = caps.memory_bytes;
  device.decode_bytes_per_second = caps.memory_bandwidth_bytes_per_second;
  device.device_kind = caps.device_kind;
  return device;
}

}  // namespace

std::vector<partition::DeviceProfile> ClusterDevices(const MembershipState& state,
                                                     const NodeCapabilities& self) {
  std::vector<partition::DeviceProfile> devices = {Device(state.self.node_id, self)};
  for (const PeerRecord* peer : UpPeers(state)) {
    if (peer->instance.node_id == state.self.node_id) continue;
    devices.push_back(Device(peer->instance.node_id, peer->capabilities));
  }
  std::sort(devices.begin(), devices.end(),
            [](const auto& a, const auto& b) { return a.node_id < b.node_id; });
  return devices;
}

absl::StatusOr<ClusterPlan> PlanCluster(const MembershipState& state, const NodeCapabilities& self,
                                        const std::string& self_address,
                                        const partition::ModelProfile& model,
                                        const ClusterPlanOptions& options) {
  ClusterPlan result;
  result.devices = ClusterDevices(state, self);
  if (options.previous.has_value()) {
    partition::ReplanOptions replan;
    replan.planner = options.planner;
    ASSIGN_OR_RETURN(result.plan, partition::Replan(*options.previous, model, result.devices,
                                                    options.links, replan));
  } else {
    ASSIGN_OR_RETURN(result.plan,
                     partition::MakePlan(model, result.devices, options.links, options.planner));
  }
  ASSIGN_OR_RETURN(result.estimate,
                   partition::EstimatePlan(result.plan, model, result.devices, options.links));
  // The planner's estimate starts the token's round at the first stage; requests start here, so
  // a plan whose first stage is another node pays one more hop. When this node alone holds the
  // model as fast as that, it keeps it (no hop, no pipeline, the Engine's batching).
  const std::string& self_id = state.self.node_id;
  if (result.plan.stages.front().node_id != self_id) {
    const double extra =
        partition::FindLink(options.links, self_id, result.plan.stages.front().node_id)
            .latency_seconds;
    std::vector<partition::DeviceProfile> alone;
    for (const partition::DeviceProfile& d : result.devices) {
      if (d.node_id == self_id) alone.push_back(d);
    }
    absl::StatusOr<partition::Plan> here =
        partition::MakePlan(model, alone, options.links, options.planner);
    if (here.ok()) {
      absl::StatusOr<partition::PlanEstimate> estimate =
          partition::EstimatePlan(*here, model, alone, options.links);
      if (estimate.ok() &&
          estimate->seconds_per_token <= result.estimate.seconds_per_token + extra) {
        here->epoch = result.plan.epoch;
        result.plan = *std::move(here);
        result.estimate = *std::move(estimate);
      }
    }
  }
  for (const partition::Stage& stage : result.plan.stages) {
    if (stage.node_id == state.self.node_id) {
      result.addresses.push_back(self_address);
      continue;
    }
    auto it = state.peers.find(stage.node_id);
    if (it == state.peers.end() || it->second.grpc_address.empty()) {
      return absl::InternalError(
          absl::StrCat("the plan names node ", stage.node_id, " whose address is unknown"));
    }
    result.addresses.push_back(it->second.grpc_address);
  }
  return result;
}

bool PlanNodesUp(const partition::Plan& plan, const MembershipState& state) {
  for (const partition::Stage& stage : plan.stages) {
    if (stage.node_id == state.self.node_id) continue;
    auto it = state.peers.find(stage.node_id);
    if (it == state.peers.end() || it->second.state != PeerState::kUp) return false;
  }
  return true;
}

std::string DescribeClusterPlan(const ClusterPlan& plan) {
  std::string out;
  for (size_t i = 0; i < plan.plan.stages.size(); ++i) {
    const partition::Stage& s = plan.plan.stages[i];
    const bool has_estimate = i < plan.estimate.stages.size();
    absl::StrAppend(
        &out,
        absl::StrFormat("stage %d: node %s at %s, layers %d-%d%s%s", i + 1, s.node_id.substr(0, 12),
                        i < plan.addresses.size() ? plan.addresses[i] : "?", s.layer_begin,
                        s.layer_end - 1, s.has_embedding ? " + embedding" : "",
                        s.has_head ? " + head" : ""),
        has_estimate
            ? absl::StrFormat(
                  ", %.1f MiB, %.2f ms/token", plan.estimate.stages[i].memory_bytes / 1048576.0,
                  (plan.estimate.stages[i].compute_seconds + plan.estimate.stages[i].hop_seconds) *
                      1e3)
            : "",
        "\n");
  }
  return out;
}

}  // namespace exo::node
