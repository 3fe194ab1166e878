// Views of a model's weight tensors inside the mapped GGUF file. Nothing is copied: a node maps
// the whole file but only ever touches the tensors of its own layer range.
#ifndef EXO_RUNTIME_WEIGHTS_H_
#define EXO_RUNTIME_WEIGHTS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/types.h"
#include "runtime/gguf.h"
#include "runtime/model_config.h"

namespace exo::runtime {

// A 1-D or 2-D tensor: `rows` rows of `cols` elements of `type` (cols is the contiguous dimension,
// rows is 1 for vectors). Null data means the tensor is absent (optional tensors only).
struct TensorView {
  kernels::TensorType type = kernels::TensorType::kF32;
  const void* data = nullptr;
  int64_t cols = 0;
  int64_t rows = 0;
  uint64_t nbytes = 0;

  bool present() const { return data != nullptr; }
  const float* f32() const { return static_cast<const float*>(data); }
};

// Shapes are (rows, cols): y = W x maps cols inputs to rows outputs.
struct LayerWeights {
  TensorView attn_norm;            // (n_embd)
  TensorView wq;                   // (n_head * head_dim, n_embd)
  TensorView wk;                   // (n_head_kv * head_dim, n_embd)
  TensorView wv;                   // (n_head_kv * head_dim_v, n_embd)
  TensorView bq, bk, bv;           // qwen2 biases: (n_head * head_dim), (n_head_kv * head_dim), ...
  TensorView q_norm, k_norm;       // gemma3: (head_dim)
  TensorView wo;                   // (n_embd, n_head * head_dim_v)
  TensorView post_attention_norm;  // gemma3: (n_embd)
  TensorView ffn_norm;             // (n_embd)
  TensorView ffn_gate;             // (n_ff, n_embd)
  TensorView ffn_up;               // (n_ff, n_embd)
  TensorView ffn_down;             // (n_embd, n_ff)
  TensorView post_ffw_norm;        // gemma3: (n_embd)
};

struct StageWeights {
  TensorView token_embd;   // (n_vocab, n_embd); present on the first stage and when tied to head
  TensorView output_norm;  // (n_embd); last stage only
  TensorView output;       // (n_vocab, n_embd); last stage only (token_embd when tied)
  std::vector<float> rope_freq_factors;  // optional per-dimension divisors (llama 3.x)
  std::vector<LayerWeights> layers;      // layers [layer_begin, layer_end)
};

struct LayerRange {
  int32_t begin = 0;
  int32_t end = 0;
};

// Resolves and validates every tensor a stage needs: presence, exact shape and a supported type.
// Errors name the tensor and what is wrong.
absl::StatusOr<StageWeights> LoadStageWeights(const GgufFile& file, const ModelConfig& config,
                                              LayerRange layers, bool has_embedding, bool has_head);

// Bytes of the weights a stage touches (for planning and for reporting).
uint64_t StageWeightBytes(const StageWeights& weights);

}  // namespace exo::runtime

#endif  // EXO_RUNTIME_WEIGHTS_H_
