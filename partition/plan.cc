#include "partition/plan.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "partition/internal/saturating.h"

namespace exo::partition {
namespace {

const DeviceProfile* FindDevice(absl::Span<const DeviceProfile> devices,
                                const std::string& node_id) {
  for (const DeviceProfile& device : devices) {
    if (device.node_id == node_id) return &device;
  }
  return nullptr;
}

absl::Status CheckDistinctNodeIds(absl::Span<const DeviceProfile> devices) {
  for (size_t i = 0; i < devices.size(); ++i) {
    if (devices[i].node_id.empty()) {
      return absl::InvalidArgumentError(absl::StrFormat("device %d has an empty node id", i));
    }
    for (size_t j = 0; j < i; ++j) {
      if (devices[i].node_id == devices[j].node_id) {
        return absl::InvalidArgumentError(
            absl::StrFormat("node '%s' is listed twice among the devices", devices[i].node_id));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

uint64_t StageMemoryBytes(const Stage& stage, const ModelProfile& model) {
  const int32_t n_layers = static_cast<int32_t>(model.layer_bytes.size());
  const int32_t begin = std::clamp(stage.layer_begin, 0, n_layers);
  const int32_t end = std::clamp(stage.layer_end, begin, n_layers);
  uint64_t total = model.scratch_bytes;
  // With tied weights the head's bytes already include the embedding it reads.
  const bool embedding_counted_by_head = stage.has_head && model.head_shares_embedding;
  if (stage.has_embedding && !embedding_counted_by_head) {
    total = internal::SaturatingAdd(total, model.embedding_bytes);
  }
  if (stage.has_head) total = internal::SaturatingAdd(total, model.head_bytes);
  for (int32_t layer = begin; layer < end; ++layer) {
    total = internal::SaturatingAdd(total, model.layer_bytes[layer]);
    total = internal::SaturatingAdd(total, LayerKvBytes(model, layer));
  }
  return total;
}

absl::Status ValidatePlan(const Plan& plan, const ModelProfile& model,
                          absl::Span<const DeviceProfile> devices) {
  RETURN_IF_ERROR(ValidateModelProfile(model));
  RETURN_IF_ERROR(CheckDistinctNodeIds(devices));
  if (plan.stages.empty()) {
    return absl::InvalidArgumentError(absl::StrFormat("plan %d has no stages", plan.epoch));
  }
  const size_t last = plan.stages.size() - 1;
  int32_t next_layer = 0;
  // Memory per node, in first-appearance order so the error names the earliest failing node.
  std::vector<std::pair<const DeviceProfile*, uint64_t>> node_usage;
  for (size_t i = 0; i < plan.stages.size(); ++i) {
    const Stage& stage = plan.stages[i];
    if (stage.layer_begin != next_layer) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "plan %d stage %d (node '%s') starts at layer %d but layer %d is next: stages must "
          "cover [0, %d) contiguously in order",
          plan.epoch, i, stage.node_id, stage.layer_begin, next_layer, model.n_layers));
    }
    if (stage.layer_end <= stage.layer_begin || stage.layer_end > model.n_layers) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "plan %d stage %d (node '%s') has layer range [%d, %d); it must be non-empty and "
          "within [0, %d)",
          plan.epoch, i, stage.node_id, stage.layer_begin, stage.layer_end, model.n_layers));
    }
    next_layer = stage.layer_end;
    if (stage.has_embedding != (i == 0)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          i == 0 ? "plan %d stage %d (node '%s') is first but does not hold the embedding"
                 : "plan %d stage %d (node '%s') holds the embedding but only the first stage may",
          plan.epoch, i, stage.node_id));
    }
    if (stage.has_head != (i == last)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          i == last ? "plan %d stage %d (node '%s') is last but does not hold the head"
                    : "plan %d stage %d (node '%s') holds the head but only the last stage may",
          plan.epoch, i, stage.node_id));
    }
    const DeviceProfile* device = FindDevice(devices, stage.node_id);
    if (device == nullptr) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "plan %d stage %d names node '%s', which is not among the %d known devices", plan.epoch,
          i, stage.node_id, devices.size()));
    }
    const uint64_t bytes = StageMemoryBytes(stage, model);
    auto it = std::find_if(node_usage.begin(), node_usage.end(),
                           [device](const auto& entry) { return entry.first == device; });
    if (it == node_usage.end()) {
      node_usage.emplace_back(device, bytes);
    } else {
      it->second = internal::SaturatingAdd(it->second, bytes);
    }
  }
  if (next_layer != model.n_layers) {
    return absl::InvalidArgumentError(
        absl::StrFormat("plan %d covers layers [0, %d) but the model has %d layers", plan.epoch,
                        next_layer, model.n_layers));
  }
  for (const auto& [device, bytes] : node_usage) {
    if (bytes > device->memory_bytes) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "plan %d does not fit on node '%s': its stages need %s but it has %s, %s missing",
          plan.epoch, device->node_id, FormatBytes(bytes), FormatBytes(device->memory_bytes),
          FormatBytes(bytes - device->memory_bytes)));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Plan> SingleNodePlan(const ModelProfile& model,
                                    absl::Span<const DeviceProfile> devices, uint64_t epoch) {
  RETURN_IF_ERROR(ValidateModelProfile(model));
  RETURN_IF_ERROR(CheckDistinctNodeIds(devices));
  if (devices.empty()) {
    return absl::FailedPreconditionError("no devices to place the model on");
  }
  const Stage whole{.node_id = "",
                    .layer_begin = 0,
                    .layer_end = model.n_layers,
                    .has_embedding = true,
                    .has_head = true};
  const uint64_t needed = StageMemoryBytes(whole, model);

  const DeviceProfile* best = nullptr;
  const DeviceProfile* largest = nullptr;
  for (const DeviceProfile& device : devices) {
    if (largest == nullptr || device.memory_bytes > largest->memory_bytes ||
        (device.memory_bytes == largest->memory_bytes && device.node_id < largest->node_id)) {
      largest = &device;
    }
    if (device.memory_bytes < needed) continue;
    if (best == nullptr || device.decode_bytes_per_second > best->decode_bytes_per_second ||
        (device.decode_bytes_per_second == best->decode_bytes_per_second &&
         (device.memory_bytes > best->memory_bytes ||
          (device.memory_bytes == best->memory_bytes && device.node_id < best->node_id)))) {
      best = &device;
    }
  }
  if (best == nullptr) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "no single node can hold the model: it needs %s; the largest node '%s' has %s, %s "
        "missing",
        FormatBytes(needed), largest->node_id, FormatBytes(largest->memory_bytes),
        FormatBytes(needed - largest->memory_bytes)));
  }
  Plan plan;
  plan.epoch = epoch;
  plan.stages.push_back(whole);
  plan.stages.back().node_id = best->node_id;
  return plan;
}

}  // namespace exo::partition
