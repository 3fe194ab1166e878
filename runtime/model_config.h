// Model hyperparameters read from GGUF metadata, one struct for every architecture.
#ifndef EXO_RUNTIME_MODEL_CONFIG_H_
#define EXO_RUNTIME_MODEL_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/ops.h"
#include "runtime/gguf.h"

namespace exo::runtime {

enum class Architecture { kLlama, kQwen2, kGemma3 };

// Names as they appear in `general.architecture`.
const char* ArchitectureName(Architecture arch);

enum class FeedForwardActivation { kSilu, kGeluTanh };

struct ModelConfig {
  Architecture arch = Architecture::kLlama;
  std::string name;  // general.name, for display

  int32_t n_layer = 0;
  int32_t n_embd = 0;
  int32_t n_head = 0;
  int32_t n_head_kv = 0;
  int32_t head_dim = 0;    // key/query length per head
  int32_t head_dim_v = 0;  // value length per head
  int32_t n_ff = 0;
  int32_t n_vocab = 0;
  int32_t context_length = 0;  // the model's trained context
  float rms_eps = 1e-5f;

  // Rotary embedding. Sliding-window layers may use their own base (gemma3).
  kernels::RopeStyle rope_style = kernels::RopeStyle::kNormal;
  int32_t rope_dim = 0;
  float rope_base = 10000.0f;
  float rope_freq_scale = 1.0f;
  float rope_base_swa = 10000.0f;
  float rope_freq_scale_swa = 1.0f;

  // Sliding-window attention: 0 means none. layer_is_swa has n_layer entries.
  int32_t sliding_window = 0;
  std::vector<bool> layer_is_swa;

  float embedding_scale = 1.0f;      // gemma multiplies embeddings by sqrt(n_embd)
  float attention_scale = 0.0f;      // multiplier on q·k
  float final_logit_softcap = 0.0f;  // 0 = none
  FeedForwardActivation activation = FeedForwardActivation::kSilu;
  bool has_qkv_bias = false;    // qwen2
  bool has_qk_norm = false;     // gemma3: RMSNorm on q and k per head
  bool has_post_norms = false;  // gemma3: RMSNorm after attention and after the FFN

  int32_t n_embd_k_gqa() const { return n_head_kv * head_dim; }
  int32_t n_embd_v_gqa() const { return n_head_kv * head_dim_v; }
};

// Reads and validates the hyperparameters. Errors (InvalidArgument / Unimplemented) say which key
// is missing or wrong, or which architecture is not supported.
absl::StatusOr<ModelConfig> ReadModelConfig(const GgufFile& file);

}  // namespace exo::runtime

#endif  // EXO_RUNTIME_MODEL_CONFIG_H_
