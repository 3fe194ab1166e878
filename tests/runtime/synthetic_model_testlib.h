// Tiny synthetic GGUF models with random weights, and an independent double-precision reference
// forward pass, for checking the real runtime against the maths.
//
// How to use it (in a runtime test):
//
//   SyntheticModelOptions options;            // defaults: llama, 3 layers, n_embd 64, F32
//   options.arch = "gemma3";
//   options.n_layer = 6;                       // gemma3: layer 5 is the first global layer
//   absl::StatusOr<std::string> path =
//       WriteSyntheticModel(options, ::testing::TempDir() + "/g3.gguf");
//   ASSERT_TRUE(path.ok()) << path.status();
//   std::vector<int32_t> tokens = {1, 17, 42, 5, 9, 33, 60, 2};
//   std::vector<std::vector<double>> expected = ReferenceForward(*path, tokens);
//   ... load *path with the runtime, run the same tokens (prefill, or one token at a time
//   through the KV cache, or split over several stages), collect logits[pos][vocab] ...
//   EXPECT_TRUE(LogitsNear(expected, actual, 1e-4));
//
// Tolerances: with F32 weights and F32 activations the runtime differs from this reference only
// by float rounding, so ~1e-4 relative to the largest |logit| at each position is a fair bound.
// With quantised weights (F16, Q8_0, Q4_K, ...) the reference dequantises the very same bytes
// from the file, so weight quantisation is not an error source and the same bound applies to a
// runtime that keeps activations in float. A runtime that quantises activations to 8 bits for
// its dot products (Q8_0 / Q8_K, as ggml does) adds an error of the same kind as 8-bit weights:
// on the 2-layer n_embd=256 llama model, Q8_0 weights against F32 weights differ by ~8e-3 of the
// largest |logit|, so use ~2e-2 there (and, if wanted, also check that the argmax agrees).
//
// The reference (ReferenceForward) is written from the maths, independently of runtime/model* and
// runtime/arch/*, and follows llama.cpp's conventions per architecture; the conventions and where
// they were checked are listed in synthetic_model_testlib.cc.
#ifndef EXO_TESTS_RUNTIME_SYNTHETIC_MODEL_TESTLIB_H_
#define EXO_TESTS_RUNTIME_SYNTHETIC_MODEL_TESTLIB_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "kernels/types.h"

namespace exo::runtime::synthetic {

enum class SyntheticTokenizer {
  // tokenizer.ggml.model = "llama": <unk>, <s>, </s>, then single characters ("▁" for space)
  // with scores, padded with <unusedN> tokens. Works with any vocab_size >= 4.
  kLlama,
  // tokenizer.ggml.model = "gpt2": the 256 byte-level tokens (GPT-2 byte-to-unicode mapping),
  // then pair tokens of lowercase letters with their merges, then <|bos|> and <|eos|> last.
  // Needs vocab_size >= 258.
  kGpt2,
};

struct SyntheticModelOptions {
  std::string arch = "llama";  // "llama", "qwen2" or "gemma3"
  int n_layer = 3;
  int n_embd = 64;
  int n_head = 4;
  int n_head_kv = 2;  // GQA: n_head % n_head_kv == 0
  int head_dim = 0;   // 0: n_embd / n_head. gemma3 may use another value.
  int n_ff = 96;
  int vocab_size = 96;
  int context_length = 128;
  double rope_freq_base = 10000.0;  // gemma3: the base of the global layers (sliding use 10000)
  double rms_norm_eps = 1e-5;
  int sliding_window = 4;  // gemma3 only: written as gemma3.attention.sliding_window
  // Type of every 2-D weight matrix (attention, feed-forward, output). Rows (the first GGUF dim)
  // must be a multiple of the type's block size: 32 for Q8_0/Q4_0, 256 for K-quants, so use
  // n_embd = n_head * head_dim = n_ff = 256 (or multiples) with K-quants.
  kernels::TensorType weight_type = kernels::TensorType::kF32;
  // Type of token_embd.weight; defaults to weight_type.
  std::optional<kernels::TensorType> embedding_type;
  // false: no output.weight, the head reuses token_embd (as llama.cpp does when it is absent).
  bool separate_output = false;
  // qwen2 has q/k/v biases; this switch exists so a test can turn them off. Ignored for others.
  bool qkv_bias = true;
  // Sets attn_output and ffn_down to zero, so the residual stream is the (scaled) embedding.
  bool zero_block_outputs = false;
  SyntheticTokenizer tokenizer = SyntheticTokenizer::kLlama;
  uint64_t seed = 42;
};

// Writes the model to `path` and returns `path`. Deterministic: the same options give the same
// bytes. The random values do not depend on the tensor types, so an F32 model and a Q8_0 model
// with the same seed hold the same weights up to quantisation. InvalidArgument on inconsistent
// options (unknown arch, head counts, rows not a multiple of the block size, vocab too small).
absl::StatusOr<std::string> WriteSyntheticModel(const SyntheticModelOptions& options,
                                                const std::string& path);

// Logits (double) at every position of one causal forward pass over `tokens`, which all start at
// position 0. Weights are read from the GGUF file and dequantised with kernels::DequantizeRow.
// Supports the three synthetic architectures (and real files of those architectures, if small).
absl::StatusOr<std::vector<std::vector<double>>> TryReferenceForward(
    const std::string& gguf_path, const std::vector<int32_t>& tokens);

// Same, for tests: on error it records a GoogleTest failure with the status and returns {}.
std::vector<std::vector<double>> ReferenceForward(const std::string& gguf_path,
                                                  const std::vector<int32_t>& tokens);

// Everything the reference computes, for locating a mismatch (for example at a pipeline stage
// boundary): hidden[l][pos] is the residual stream entering layer l (hidden[n_layer][pos] is the
// output of the last layer, before the output norm), exactly what one stage hands the next.
struct ReferenceTrace {
  std::vector<std::vector<std::vector<double>>> hidden;
  std::vector<std::vector<double>> logits;
};
absl::StatusOr<ReferenceTrace> ReferenceForwardTrace(const std::string& gguf_path,
                                                     const std::vector<int32_t>& tokens);

// Compares logits per position: passes when, at every position, every |actual - expected| is at
// most relative_tolerance * max(1, max_j |expected[pos][j]|). The failure message names the
// worst position and vocabulary entry.
::testing::AssertionResult LogitsNear(const std::vector<std::vector<double>>& expected,
                                      const std::vector<std::vector<float>>& actual,
                                      double relative_tolerance);
::testing::AssertionResult LogitsNear(const std::vector<std::vector<double>>& expected,
                                      const std::vector<std::vector<double>>& actual,
                                      double relative_tolerance);

}  // namespace exo::runtime::synthetic

#endif  // EXO_TESTS_RUNTIME_SYNTHETIC_MODEL_TESTLIB_H_
