#include "runtime/model_config.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace exo::runtime {
namespace {

absl::StatusOr<Architecture> ParseArchitecture(const std::string& name) {
  if (name == "llama") return Architecture::kLlama;
  if (name == "qwen2") return Architecture::kQwen2;
  if (name == "gemma3") return Architecture::kGemma3;
  return absl::UnimplementedError(absl::StrCat("unsupported model architecture '", name,
                                               "' (exo-node runs: llama, qwen2, gemma3)"));
}

// Reads a positive integer hyperparameter `<arch>.<suffix>`.
absl::StatusOr<int32_t> GetPositive(const GgufFile& file, const std::string& key) {
  absl::StatusOr<int64_t> value = file.GetInt(key);
  if (!value.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("model metadata: ", value.status().message()));
  }
  if (*value <= 0 || *value > (int64_t{1} << 24)) {
    return absl::InvalidArgumentError(
        absl::StrCat("model metadata: ", key, " = ", *value, " is out of range"));
  }
  return static_cast<int32_t>(*value);
}

absl::StatusOr<int32_t> GetPositiveOr(const GgufFile& file, const std::string& key,
                                      int32_t fallback) {
  if (file.Find(key) == nullptr) return fallback;
  return GetPositive(file, key);
}

}  // namespace

const char* ArchitectureName(Architecture arch) {
  switch (arch) {
    case Architecture::kLlama:
      return "llama";
    case Architecture::kQwen2:
      return "qwen2";
    case Architecture::kGemma3:
      return "gemma3";
  }
  return "unknown";
}

absl::StatusOr<ModelConfig> ReadModelConfig(const GgufFile& file) {
  ModelConfig c;
  absl::StatusOr<std::string> arch_name = file.GetString("general.architecture");
  if (!arch_name.ok()) {
    return absl::InvalidArgumentError(
        "model metadata: general.architecture is missing; is this a model (not a vocab-only) "
        "file?");
  }
  ASSIGN_OR_RETURN(c.arch, ParseArchitecture(*arch_name));
  const std::string p = *arch_name + ".";
  c.name = file.GetString("general.name").value_or(*arch_name);

  ASSIGN_OR_RETURN(c.n_layer, GetPositive(file, p + "block_count"));
  ASSIGN_OR_RETURN(c.n_embd, GetPositive(file, p + "embedding_length"));
  ASSIGN_OR_RETURN(c.n_ff, GetPositive(file, p + "feed_forward_length"));
  ASSIGN_OR_RETURN(c.n_head, GetPositive(file, p + "attention.head_count"));
  ASSIGN_OR_RETURN(c.n_head_kv, GetPositiveOr(file, p + "attention.head_count_kv", c.n_head));
  ASSIGN_OR_RETURN(c.head_dim,
                   GetPositiveOr(file, p + "attention.key_length", c.n_embd / c.n_head));
  ASSIGN_OR_RETURN(c.head_dim_v, GetPositiveOr(file, p + "attention.value_length", c.head_dim));
  ASSIGN_OR_RETURN(c.context_length, GetPositiveOr(file, p + "context_length", 2048));
  ASSIGN_OR_RETURN(c.rope_dim, GetPositiveOr(file, p + "rope.dimension_count", c.head_dim));
  ASSIGN_OR_RETURN(double eps, file.GetFloatOr(p + "attention.layer_norm_rms_epsilon", 1e-5));
  c.rms_eps = static_cast<float>(eps);
  ASSIGN_OR_RETURN(double base, file.GetFloatOr(p + "rope.freq_base", 10000.0));
  c.rope_base = static_cast<float>(base);
  ASSIGN_OR_RETURN(double scale_factor, file.GetFloatOr(p + "rope.scaling.factor", 0.0));
  absl::StatusOr<std::string> scaling_type = file.GetString(p + "rope.scaling.type");
  if (scaling_type.ok() && *scaling_type == "linear" && scale_factor > 0) {
    c.rope_freq_scale = static_cast<float>(1.0 / scale_factor);
  } else if (scaling_type.ok() && *scaling_type != "none" && *scaling_type != "linear" &&
             *scaling_type != "llama3") {
    return absl::UnimplementedError(absl::StrCat("model uses RoPE scaling '", *scaling_type,
                                                 "', which exo-node does not support"));
  }
  ASSIGN_OR_RETURN(double softcap, file.GetFloatOr(p + "final_logit_softcapping", 0.0));
  c.final_logit_softcap = static_cast<float>(softcap);

  // Vocabulary size: the embedding table's row count is authoritative.
  const GgufTensorInfo* embd = file.FindTensor("token_embd.weight");
  if (embd == nullptr || embd->dims.size() != 2) {
    return absl::InvalidArgumentError("model has no 2-D tensor 'token_embd.weight'");
  }
  c.n_vocab = static_cast<int32_t>(embd->dims[1]);

  if (c.n_head % c.n_head_kv != 0) {
    return absl::InvalidArgumentError(absl::StrCat("model metadata: head_count ", c.n_head,
                                                   " is not a multiple of head_count_kv ",
                                                   c.n_head_kv));
  }
  if (c.rope_dim > c.head_dim || c.rope_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("model metadata: rope.dimension_count ",
                                                   c.rope_dim, " does not fit head size ",
                                                   c.head_dim));
  }
  c.layer_is_swa.assign(c.n_layer, false);
  c.attention_scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));

  switch (c.arch) {
    case Architecture::kLlama:
      c.rope_style = kernels::RopeStyle::kNormal;
      break;
    case Architecture::kQwen2:
      c.rope_style = kernels::RopeStyle::kNeox;
      c.has_qkv_bias = true;
      break;
    case Architecture::kGemma3: {
      c.rope_style = kernels::RopeStyle::kNeox;
      c.activation = FeedForwardActivation::kGeluTanh;
      c.has_qk_norm = true;
      c.has_post_norms = true;
      c.embedding_scale = std::sqrt(static_cast<float>(c.n_embd));
      // Sliding-window layers use a fixed RoPE base of 10000 and no scaling; every sixth layer
      // (il % 6 == 5) attends globally with the model's own base.
      ASSIGN_OR_RETURN(c.sliding_window, GetPositiveOr(file, p + "attention.sliding_window", 0));
      c.rope_base_swa = 10000.0f;
      c.rope_freq_scale_swa = 1.0f;
      // The pattern is an integer period (every period-th layer is global) or, in newer files,
      // an array with one flag per layer (true = sliding).
      const GgufValue* pattern_value = file.Find(p + "attention.sliding_window_pattern");
      if (pattern_value != nullptr && pattern_value->type == GgufValueType::kArray) {
        const auto& flags = std::get<GgufValue::Array>(pattern_value->data);
        if (static_cast<int64_t>(flags.size()) != c.n_layer) {
          return absl::InvalidArgumentError(
              absl::StrCat("model metadata: ", p, "attention.sliding_window_pattern has ",
                           flags.size(), " entries for ", c.n_layer, " layers"));
        }
        bool all_bool = true;
        flags.ForEach([&](size_t il, const GgufValue& element) {
          const bool* flag = std::get_if<bool>(&element.data);
          all_bool = flag != nullptr;
          if (all_bool) c.layer_is_swa[il] = c.sliding_window > 0 && *flag;
          return all_bool;
        });
        if (!all_bool) {
          return absl::InvalidArgumentError(absl::StrCat(
              "model metadata: ", p, "attention.sliding_window_pattern must hold booleans"));
        }
      } else {
        ASSIGN_OR_RETURN(int64_t period, file.GetIntOr(p + "attention.sliding_window_pattern", 6));
        if (period <= 0) period = 6;
        if (c.sliding_window > 0) {
          for (int32_t il = 0; il < c.n_layer; ++il) {
            c.layer_is_swa[il] = (il % period) < period - 1;
          }
        }
      }
      break;
    }
  }
  return c;
}

}  // namespace exo::runtime
