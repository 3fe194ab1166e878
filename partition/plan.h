// A plan: which node runs which contiguous range of layers, for one epoch. Pure functions only.
#ifndef EXO_PARTITION_PLAN_H_
#define EXO_PARTITION_PLAN_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "partition/profile.h"

namespace exo::partition {

// One pipeline stage: layers [layer_begin, layer_end) on one node.
struct Stage {
  std::string node_id;
  int32_t layer_begin = 0;
  int32_t layer_end = 0;       // exclusive
  bool has_embedding = false;  // only the first stage
  bool has_head = false;       // only the last stage
};

struct Plan {
  uint64_t epoch = 0;
  std::vector<Stage> stages;  // in pipeline order
};

// Memory a stage needs on its node: weights of its layers, embedding and head if held, KV cache
// for the model's context length over its layers, and scratch. Layers outside [0, n_layers) are
// not counted. Saturates at UINT64_MAX instead of wrapping.
uint64_t StageMemoryBytes(const Stage& stage, const ModelProfile& model);

// OK when the stages cover [0, n_layers) contiguously in order with non-empty ranges, the first
// holds the embedding and the last the head (and no other stage does), every node is one of
// `devices`, and every node's stages fit its memory. InvalidArgument otherwise, saying which
// stage is wrong or how many bytes are missing on which node.
absl::Status ValidatePlan(const Plan& plan, const ModelProfile& model,
                          absl::Span<const DeviceProfile> devices);

// The best single node that can hold the whole model: the fastest (highest bandwidth) that fits,
// then the one with most memory, then the lowest node id. ResourceExhausted when none fits,
// saying how much is missing on the largest node; FailedPrecondition when `devices` is empty.
absl::StatusOr<Plan> SingleNodePlan(const ModelProfile& model,
                                    absl::Span<const DeviceProfile> devices, uint64_t epoch);

}  // namespace exo::partition

#endif  // EXO_PARTITION_PLAN_H_
