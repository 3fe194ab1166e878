// One transformer layer per architecture, each written top to bottom like the maths from the
// shared blocks in runtime/internal/transformer_blocks.h. `x` (n x n_embd) is the residual stream,
// updated in place.
#ifndef EXO_RUNTIME_ARCH_LAYERS_H_
#define EXO_RUNTIME_ARCH_LAYERS_H_

#include "runtime/internal/transformer_blocks.h"
#include "runtime/weights.h"

namespace exo::runtime::arch {

// Llama 2/3, Mistral, TinyLlama, SmolLM; and Qwen2 (the same layer with q/k/v biases and NeoX
// RoPE, both selected by ModelConfig).
void LlamaLayer(const internal::LayerContext& ctx, const LayerWeights& w,
                const internal::LayerScratch& s, float* x);

// Gemma 3: QK-norm, post-attention and post-FFN norms, tanh-GELU, sliding-window layers.
void Gemma3Layer(const internal::LayerContext& ctx, const LayerWeights& w,
                 const internal::LayerScratch& s, float* x);

}  // namespace exo::runtime::arch

#endif  // EXO_RUNTIME_ARCH_LAYERS_H_
