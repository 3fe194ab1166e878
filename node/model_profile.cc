#include "node/model_profile.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "runtime/kv_cache.h"
#include "runtime/weights.h"

namespace exo::node {
namespace {

// The layer index of a "blk.N.*" tensor name, or -1.
int32_t BlockIndex(const std::string& name) {
  if (!absl::StartsWith(name, "blk.")) return -1;
  const size_t dot = name.find('.', 4);
  if (dot == std::string::npos) return -1;
  int32_t index = -1;
  if (!absl::SimpleAtoi(absl::string_view(name).substr(4, dot - 4), &index)) return -1;
  return index;
}

}  // namespace

absl::StatusOr<partition::ModelProfile> BuildModelProfile(const runtime::GgufFile& file,
                                                          const runtime::ModelConfig& config,
                                                          const ModelProfileOptions& options) {
  if (options.context <= 0 || options.max_batch_tokens <= 0 || options.num_slots <= 0 ||
      options.max_logit_rows <= 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "model profile: context (%d), max batch tokens (%d), logit rows (%d) and slots (%d) "
        "must be positive",
        options.context, options.max_batch_tokens, options.max_logit_rows, options.num_slots));
  }
  if (config.n_layer <= 0 || config.layer_is_swa.size() != static_cast<size_t>(config.n_layer)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("model profile: the config has %d layers and %d sliding-window flags",
                        config.n_layer, config.layer_is_swa.size()));
  }
  const int32_t context = config.context_length > 0
                              ? std::min(options.context, config.context_length)
                              : options.context;

  partition::ModelProfile profile;
  profile.n_layers = config.n_layer;
  profile.layer_bytes.assign(config.n_layer, 0);
  profile.context_length = context;
  uint64_t output_norm = 0;
  uint64_t output = 0;
  uint64_t shared = 0;  // tensors every stage needs (rope_freqs)
  bool has_embedding = false;
  bool has_output = false;
  for (const runtime::GgufTensorInfo& tensor : file.tensors()) {
    const int32_t block = BlockIndex(tensor.name);
    if (block >= 0) {
      if (block >= config.n_layer) {
        return absl::InvalidArgumentError(
            absl::StrFormat("model profile: tensor '%s' belongs to layer %d but the model has %d",
                            tensor.name, block, config.n_layer));
      }
      profile.layer_bytes[block] += tensor.nbytes;
    } else if (tensor.name == "token_embd.weight") {
      profile.embedding_bytes = tensor.nbytes;
      has_embedding = true;
    } else if (tensor.name == "output_norm.weight") {
      output_norm = tensor.nbytes;
    } else if (tensor.name == "output.weight") {
      output = tensor.nbytes;
      has_output = true;
    } else {
      shared += tensor.nbytes;
    }
  }
  if (!has_embedding) {
    return absl::InvalidArgumentError("model profile: the file has no token_embd.weight");
  }
  // Without output.weight the head multiplies by the token embedding (tied weights).
  profile.head_shares_embedding = !has_output;
  profile.head_bytes = output_norm + (has_output ? output : profile.embedding_bytes);

  // KV cache: f16 K and V rows; sliding-window layers keep a ring of window + batch - 1 rows.
  profile.kv_bytes_per_token_per_layer =
      static_cast<uint64_t>(config.n_embd_k_gqa() + config.n_embd_v_gqa()) * sizeof(uint16_t) *
      options.num_slots;
  profile.layer_kv_bytes.resize(config.n_layer);
  for (int32_t layer = 0; layer < config.n_layer; ++layer) {
    profile.layer_kv_bytes[layer] =
        runtime::KvCache::BytesFor(config, runtime::LayerRange{layer, layer + 1}, context,
                                   options.max_batch_tokens, options.num_slots);
  }

  // Scratch as runtime::Stage sizes it, in f32: per-batch activations, the f32 copies of the
  // cache rows one batch attends to, RoPE tables, and logits rows.
  const uint64_t batch = options.max_batch_tokens;
  uint64_t floats =
      batch * (3 * static_cast<uint64_t>(config.n_embd) +
               static_cast<uint64_t>(config.n_head) * config.head_dim + config.n_embd_k_gqa() +
               config.n_embd_v_gqa() + static_cast<uint64_t>(config.n_head) * config.head_dim_v +
               2 * static_cast<uint64_t>(config.n_ff));
  floats += static_cast<uint64_t>(context) * (config.n_embd_k_gqa() + config.n_embd_v_gqa());
  floats += 4 * batch * static_cast<uint64_t>(std::max(config.rope_dim, 0) / 2);
  floats += static_cast<uint64_t>(std::min(options.max_logit_rows, options.max_batch_tokens)) *
            static_cast<uint64_t>(std::max(config.n_vocab, 0));
  profile.scratch_bytes = floats * sizeof(float) + shared + options.overhead_bytes;
  profile.hidden_bytes_per_token =
      static_cast<uint64_t>(config.n_embd) * (options.f16_activations ? 2 : 4);
  return profile;
}

}  // namespace exo::node
