#include "partition/profile.h"

#include "absl/strings/str_format.h"
#include "partition/internal/saturating.h"

namespace exo::partition {

absl::Status ValidateModelProfile(const ModelProfile& model) {
  if (model.n_layers <= 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("model profile: n_layers must be positive, got %d", model.n_layers));
  }
  if (model.layer_bytes.size() != static_cast<size_t>(model.n_layers)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("model profile: layer_bytes has %d entries but n_layers is %d",
                        model.layer_bytes.size(), model.n_layers));
  }
  if (model.context_length <= 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "model profile: context_length must be positive, got %d", model.context_length));
  }
  if (!model.layer_kv_bytes.empty() &&
      model.layer_kv_bytes.size() != static_cast<size_t>(model.n_layers)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("model profile: layer_kv_bytes has %d entries but n_layers is %d",
                        model.layer_kv_bytes.size(), model.n_layers));
  }
  if (model.head_shares_embedding && model.head_bytes < model.embedding_bytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "model profile: the head shares the embedding but head_bytes (%d) is smaller than "
        "embedding_bytes (%d)",
        model.head_bytes, model.embedding_bytes));
  }
  return absl::OkStatus();
}

uint64_t LayerKvBytes(const ModelProfile& model, int32_t layer) {
  if (layer < 0 || layer >= model.n_layers) return 0;
  if (!model.layer_kv_bytes.empty()) {
    return static_cast<size_t>(layer) < model.layer_kv_bytes.size() ? model.layer_kv_bytes[layer]
                                                                    : 0;
  }
  return internal::SaturatingMultiply(
      model.kv_bytes_per_token_per_layer,
      static_cast<uint64_t>(model.context_length > 0 ? model.context_length : 0));
}

uint64_t ModelMemoryBytes(const ModelProfile& model) {
  uint64_t total = model.head_shares_embedding
                       ? model.head_bytes
                       : internal::SaturatingAdd(model.embedding_bytes, model.head_bytes);
  const int32_t n_layers = static_cast<int32_t>(model.layer_bytes.size());
  for (int32_t layer = 0; layer < n_layers; ++layer) {
    total = internal::SaturatingAdd(total, model.layer_bytes[layer]);
    total = internal::SaturatingAdd(total, LayerKvBytes(model, layer));
  }
  return internal::SaturatingAdd(total, model.scratch_bytes);
}

std::string FormatBytes(uint64_t bytes) {
  constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
  constexpr double kMiB = 1024.0 * 1024.0;
  if (bytes >= (uint64_t{1} << 30)) {
    return absl::StrFormat("%.2f GiB (%d bytes)", static_cast<double>(bytes) / kGiB, bytes);
  }
  if (bytes >= (uint64_t{1} << 20)) {
    return absl::StrFormat("%.2f MiB (%d bytes)", static_cast<double>(bytes) / kMiB, bytes);
  }
  return absl::StrFormat("%d bytes", bytes);
}

}  // namespace exo::partition
