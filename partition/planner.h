// The planner: from device profiles, a model profile and link latencies to a Plan. Pure functions,
// deterministic (the order of `devices` does not matter), tested on made-up fleets.
//
// Two strategies:
//  - kRing: exo's memory-weighted ring, the baseline. Nodes ordered by memory (descending, ties
//    by node id), layers split in proportion to memory, boundaries moved as little as possible
//    when rounding would overflow a node.
//  - kOptimal: minimises the estimated time per token (EstimatePlan) over device subsets, device
//    orders and contiguous layer splits, subject to memory; exact dynamic programming for small
//    fleets, a documented heuristic above. Never slower than the best single node.
#ifndef EXO_PARTITION_PLANNER_H_
#define EXO_PARTITION_PLANNER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "partition/plan.h"
#include "partition/profile.h"

namespace exo::partition {

// One directed link. A link listed only as a->b is used for b->a as well.
struct LinkProfile {
  std::string from;
  std::string to;
  double latency_seconds = 0.0;   // one-way latency of one message
  double bytes_per_second = 0.0;  // 0: transfer time not modelled, latency only
};

struct LinkModel {
  double default_latency_seconds = 0.001;  // for pairs not listed
  double default_bytes_per_second = 0.0;   // 0: transfer time not modelled
  std::vector<LinkProfile> links;
};

// The link from `from` to `to`: listed as such, else listed the other way, else the defaults.
// The same node talks to itself for free.
LinkProfile FindLink(const LinkModel& links, const std::string& from, const std::string& to);

enum class Strategy { kRing, kOptimal };

// "ring" / "optimal".
const char* StrategyName(Strategy strategy);

struct PlannerOptions {
  Strategy strategy = Strategy::kOptimal;
  int32_t max_stages = 0;  // 0: no limit
  // kOptimal: exact dynamic programming while the number of candidate devices is at most this
  // (and the work estimate is small enough); the heuristic beyond.
  int32_t max_exact_devices = 10;
  uint64_t epoch = 0;  // copied into the plan
};

// Estimated decode time per token of one stage: its bytes read over its node's bandwidth, then
// the hop to the next stage (for the last stage: the sampled token back to the first stage).
struct StageEstimate {
  std::string node_id;
  int32_t layer_begin = 0;
  int32_t layer_end = 0;
  uint64_t memory_bytes = 0;          // StageMemoryBytes
  uint64_t bytes_read_per_token = 0;  // layer weights, plus the head on the last stage
  double compute_seconds = 0.0;
  double hop_seconds = 0.0;  // to the next stage; 0 when the next stage is on the same node
};

struct PlanEstimate {
  std::vector<StageEstimate> stages;
  double compute_seconds = 0.0;  // sum over stages
  double hop_seconds = 0.0;      // sum over hops, including the return to the first stage
  double seconds_per_token = 0.0;
};

// The estimate every strategy optimises and `exo-node plan` prints. Hops carry
// hidden_bytes_per_token between stages and a 4-byte token id back to the first stage; a node
// with no bandwidth is infinitely slow. InvalidArgument when the plan does not match the model
// or names an unknown node (memory is not checked here: see ValidatePlan).
absl::StatusOr<PlanEstimate> EstimatePlan(const Plan& plan, const ModelProfile& model,
                                          absl::Span<const DeviceProfile> devices,
                                          const LinkModel& links);

// A plan that fits, by `options.strategy`. Errors: InvalidArgument for a bad profile or fleet
// (empty or duplicate node ids, negative bandwidth); FailedPrecondition for no devices;
// ResourceExhausted when nothing fits, with how many bytes are missing on which nodes.
absl::StatusOr<Plan> MakePlan(const ModelProfile& model, absl::Span<const DeviceProfile> devices,
                              const LinkModel& links, const PlannerOptions& options);

// Weight bytes `next` asks nodes to load that they did not hold under `previous` (layers, and the
// embedding and head): what a re-plan costs in loading and fetching.
uint64_t MovedBytes(const Plan& previous, const Plan& next, const ModelProfile& model);

struct ReplanOptions {
  PlannerOptions planner;  // strategy kRing re-plans from scratch (the ring has no freedom)
  // Accept plans up to this fraction slower than the optimum when they move fewer bytes (never
  // slower than the best single node).
  double tolerance = 0.05;
};

// Re-plans after the fleet changed (joins, leaves, new memory): among plans within the tolerance
// of the optimum, the one moving the fewest bytes from `previous` (ties: the faster, then the
// plan order). Candidates are the previous plan if it still fits and the exact optimum of
// time + lambda * moved bytes for a sweep of lambdas (see docs/planner.md). Errors as MakePlan.
absl::StatusOr<Plan> Replan(const Plan& previous, const ModelProfile& model,
                            absl::Span<const DeviceProfile> devices, const LinkModel& links,
                            const ReplanOptions& options);

}  // namespace exo::partition

#endif  // EXO_PARTITION_PLANNER_H_
