// Synthetic GGUF models and the double-precision reference forward pass.
//
// Conventions, checked against llama.cpp's source (src/llama-model.cpp, src/llama-arch.cpp,
// src/llama-hparams.cpp, src/models/gemma3*.cpp, the KV-cache SWA mask) with the search tool:
//
// * Tensor names (LLM_TENSOR_NAMES): token_embd, output_norm, output, blk.N.attn_norm,
//   blk.N.attn_q / attn_k / attn_v / attn_output, blk.N.attn_q_norm / attn_k_norm,
//   blk.N.post_attention_norm (LLM_TENSOR_ATTN_POST_NORM), blk.N.ffn_norm, blk.N.ffn_gate /
//   ffn_up / ffn_down, blk.N.post_ffw_norm (LLM_TENSOR_FFN_POST_NORM); each with ".weight", and
//   ".bias" for the qwen2 q/k/v biases.
// * Shapes (ggml order, dims[0] contiguous): attn_q {n_embd, n_head*head_dim}, attn_k/attn_v
//   {n_embd, n_head_kv*head_dim}, attn_output {n_head*head_dim, n_embd}, ffn_gate/ffn_up
//   {n_embd, n_ff}, ffn_down {n_ff, n_embd}, token_embd/output {n_embd, n_vocab}, attn_q_norm /
//   attn_k_norm {head_dim}, other norms {n_embd}. output is optional for all three architectures;
//   when absent the head reuses token_embd.
// * RoPE type (llama_model_rope_type): LLAMA is NORM (rotates adjacent pairs (2i, 2i+1)); QWEN2
//   and GEMMA3 are NEOX (rotate (i, i + n_rot/2)). Angle for pair i at position p:
//   p * base^(-2i / n_rot).
// * GQA: query head h reads kv head h / (n_head / n_head_kv) (ggml_mul_mat broadcasting).
// * gemma3 (llm_build_gemma3 with iswa): the input embedding is scaled by sqrt(n_embd); Q and K
//   are RMS-normed per head with attn_q_norm / attn_k_norm before RoPE; the query is scaled by
//   f_attention_scale = 1/sqrt(head_dim) (1/sqrt(n_embd/n_head) for the 62-layer 27B only) and
//   build_attn gets kq_scale 1; the attention output goes through Wo, then post_attention_norm,
//   then the residual add; the FFN is GELU (tanh approximation, ggml_gelu) gated in parallel
//   (LLM_FFN_PAR), then post_ffw_norm, then the residual add. No final logit soft-capping in the
//   sliding-window build. GGUF norm weights already hold (1 + w) (the converter adds 1), so the
//   stored value multiplies directly.
// * gemma3 sliding window (llama_load_hparams gemma3): swa_type STANDARD, set_swa_pattern(6):
//   layer il is sliding when il % 6 < 5, i.e. unless (il + 1) % 6 == 0.
//   rope_freq_base_train_swa = 10000 for the sliding layers; the global layers use
//   gemma3.rope.freq_base. The STANDARD mask hides key position p0 from query position p1 when
//   p1 - p0 >= n_swa, so a query at p sees keys in (p - n_swa, p]. Newer llama.cpp treats a
//   missing or zero sliding_window as "no sliding layers"; so does this reference.
// * qwen2: like llama plus q/k/v biases (the reference adds any attn_{q,k,v}.bias it finds,
//   as llama.cpp loads them as optional tensors for llama too).
// * RMSNorm: x / sqrt(mean(x^2) + eps) * w with eps = <arch>.attention.layer_norm_rms_epsilon,
//   also for the gemma3 per-head Q/K norms and post-norms.
#include "tests/runtime/synthetic_model_testlib.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "kernels/quants.h"
#include "runtime/gguf.h"

namespace exo::runtime::synthetic {
namespace {

using kernels::TensorType;

// ---- Deterministic random numbers ------------------------------------------------------------

// SplitMix64: tiny, fully specified, so the weights are the same on every platform.
class Random {
 public:
  explicit Random(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [-1, 1).
  double Symmetric() { return static_cast<double>(Next() >> 11) * 0x1.0p-52 - 1.0; }

 private:
  uint64_t state_;
};

// Each tensor draws from its own stream (seed mixed with its name), so values do not depend on
// the order tensors are written in nor on their types.
uint64_t TensorSeed(uint64_t seed, const std::string& name) {
  uint64_t hash = 0xCBF29CE484222325ull;  // FNV-1a
  for (unsigned char c : name) {
    hash ^= c;
    hash *= 0x100000001B3ull;
  }
  return seed ^ hash;
}

std::vector<float> RandomValues(uint64_t seed, const std::string& name, int64_t count,
                                double center, double half_width) {
  Random random(TensorSeed(seed, name));
  std::vector<float> values(count);
  for (float& v : values) v = static_cast<float>(center + half_width * random.Symmetric());
  return values;
}

// ---- Tokenizer vocabularies ------------------------------------------------------------------

void AppendUtf8(uint32_t code_point, std::string* out) {
  if (code_point < 0x80) {
    out->push_back(static_cast<char>(code_point));
  } else if (code_point < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (code_point >> 6)));
    out->push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xE0 | (code_point >> 12)));
    out->push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  }
}

// GPT-2's byte-to-unicode table: printable bytes map to themselves, the others to 256 + k.
std::vector<std::string> ByteLevelTokens() {
  std::vector<std::string> tokens(256);
  uint32_t next_extra = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
    AppendUtf8(printable ? b : next_extra++, &tokens[b]);
  }
  return tokens;
}

// Token type ids as llama.cpp numbers them.
constexpr int32_t kTokenNormal = 1;
constexpr int32_t kTokenUnknown = 2;
constexpr int32_t kTokenControl = 3;
constexpr int32_t kTokenUnused = 5;

absl::Status AddVocabulary(const SyntheticModelOptions& o, GgufWriter* writer) {
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  if (o.tokenizer == SyntheticTokenizer::kLlama) {
    if (o.vocab_size < 4) return absl::InvalidArgumentError("llama vocabulary needs >= 4 tokens");
    tokens = {"<unk>", "<s>", "</s>", "\xE2\x96\x81"};  // U+2581 stands for a space
    types = {kTokenUnknown, kTokenControl, kTokenControl, kTokenNormal};
    for (char c = '!'; c <= '~' && static_cast<int>(tokens.size()) < o.vocab_size; ++c) {
      tokens.push_back(std::string(1, c));
      types.push_back(kTokenNormal);
    }
    while (static_cast<int>(tokens.size()) < o.vocab_size) {
      tokens.push_back(absl::StrCat("<unused", tokens.size(), ">"));
      types.push_back(kTokenUnused);
    }
    std::vector<float> scores(tokens.size());
    for (size_t i = 0; i < scores.size(); ++i) scores[i] = -static_cast<float>(i);
    writer->SetValue("tokenizer.ggml.model", GgufValue::String("llama"));
    writer->SetValue("tokenizer.ggml.tokens", GgufValue::StringArray(tokens));
    writer->SetValue("tokenizer.ggml.scores", GgufValue::F32Array(scores));
    writer->SetValue("tokenizer.ggml.token_type", GgufValue::I32Array(types));
    writer->SetValue("tokenizer.ggml.unknown_token_id", GgufValue::U32(0));
    writer->SetValue("tokenizer.ggml.bos_token_id", GgufValue::U32(1));
    writer->SetValue("tokenizer.ggml.eos_token_id", GgufValue::U32(2));
  } else {
    if (o.vocab_size < 258) {
      return absl::InvalidArgumentError("gpt2 vocabulary needs >= 258 tokens (256 bytes + 2)");
    }
    tokens = ByteLevelTokens();
    types.assign(tokens.size(), kTokenNormal);
    std::vector<std::string> merges;
    for (char a = 'a'; a <= 'z'; ++a) {
      for (char b = 'a'; b <= 'z'; ++b) {
        if (static_cast<int>(tokens.size()) >= o.vocab_size - 2) break;
        tokens.push_back(std::string{a, b});
        types.push_back(kTokenNormal);
        merges.push_back(std::string{a, ' ', b});
      }
    }
    while (static_cast<int>(tokens.size()) < o.vocab_size - 2) {
      tokens.push_back(absl::StrCat("<|unused", tokens.size(), "|>"));
      types.push_back(kTokenUnused);
    }
    const int bos = static_cast<int>(tokens.size());
    tokens.push_back("<|bos|>");
    tokens.push_back("<|eos|>");
    types.push_back(kTokenControl);
    types.push_back(kTokenControl);
    writer->SetValue("tokenizer.ggml.model", GgufValue::String("gpt2"));
    writer->SetValue("tokenizer.ggml.pre", GgufValue::String("default"));
    writer->SetValue("tokenizer.ggml.tokens", GgufValue::StringArray(tokens));
    writer->SetValue("tokenizer.ggml.token_type", GgufValue::I32Array(types));
    writer->SetValue("tokenizer.ggml.merges", GgufValue::StringArray(merges));
    writer->SetValue("tokenizer.ggml.bos_token_id", GgufValue::U32(bos));
    writer->SetValue("tokenizer.ggml.eos_token_id", GgufValue::U32(bos + 1));
  }
  writer->SetValue("tokenizer.ggml.add_bos_token", GgufValue::Bool(true));
  writer->SetValue("tokenizer.ggml.add_eos_token", GgufValue::Bool(false));
  return absl::OkStatus();
}

// ---- Reference maths (double) ----------------------------------------------------------------

using Vector = std::vector<double>;

// A weight matrix with `rows` outputs of `cols` inputs (GGUF ne = {cols, rows}).
struct Matrix {
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<double> values;  // row-major

  const double* Row(int64_t r) const { return values.data() + r * cols; }
  Vector Times(const Vector& x) const {
    Vector y(rows, 0.0);
    for (int64_t r = 0; r < rows; ++r) {
      const double* w = Row(r);
      double sum = 0.0;
      for (int64_t c = 0; c < cols; ++c) sum += w[c] * x[c];
      y[r] = sum;
    }
    return y;
  }
};

// Reads a tensor with ggml dims {cols, rows} (or {cols} when rows == 0) and dequantises it.
absl::StatusOr<Matrix> ReadTensor(const GgufFile& file, const std::string& name, int64_t cols,
                                  int64_t rows) {
  const GgufTensorInfo* info = file.FindTensor(name);
  if (info == nullptr) return absl::NotFoundError(absl::StrCat("tensor ", name, " is missing"));
  const std::vector<int64_t> want =
      rows == 0 ? std::vector<int64_t>{cols} : std::vector<int64_t>{cols, rows};
  if (info->dims != want) {
    std::string got;
    for (int64_t d : info->dims) absl::StrAppend(&got, got.empty() ? "" : ", ", d);
    return absl::InvalidArgumentError(absl::StrFormat("tensor %s has dims {%s}, expected {%d%s}",
                                                      name, got, cols,
                                                      rows == 0 ? "" : absl::StrCat(", ", rows)));
  }
  const kernels::TypeInfo* type_info = kernels::FindTypeInfo(static_cast<uint32_t>(info->type));
  if (type_info == nullptr || !type_info->supported) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " has an unsupported type"));
  }
  if (cols % type_info->block_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " rows are not whole blocks"));
  }
  if (info->data == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("tensor ", name, " has no data"));
  }
  Matrix m;
  m.rows = std::max<int64_t>(rows, 1);
  m.cols = cols;
  const int64_t row_bytes = kernels::RowBytes(info->type, cols);
  if (static_cast<uint64_t>(row_bytes * m.rows) > info->nbytes) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " is shorter than its dims"));
  }
  m.values.resize(m.rows * cols);
  std::vector<float> row(cols);
  for (int64_t r = 0; r < m.rows; ++r) {
    kernels::DequantizeRow(info->type, info->data + r * row_bytes, row.data(), cols);
    std::copy(row.begin(), row.end(), m.values.begin() + r * cols);
  }
  return m;
}

absl::StatusOr<Vector> ReadVector(const GgufFile& file, const std::string& name, int64_t n) {
  ASSIGN_OR_RETURN(Matrix m, ReadTensor(file, name, n, 0));
  return std::move(m.values);
}

// Optional tensor: an empty vector when absent.
absl::StatusOr<Vector> ReadOptionalVector(const GgufFile& file, const std::string& name,
                                          int64_t n) {
  if (file.FindTensor(name) == nullptr) return Vector{};
  return ReadVector(file, name, n);
}

// x / sqrt(mean(x^2) + eps) * weight, over `n` elements starting at `x`.
void RmsNormInPlace(double* x, int64_t n, const double* weight, double eps) {
  double sum_squares = 0.0;
  for (int64_t i = 0; i < n; ++i) sum_squares += x[i] * x[i];
  const double scale = 1.0 / std::sqrt(sum_squares / static_cast<double>(n) + eps);
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] * scale * weight[i];
}

Vector RmsNorm(const Vector& x, const Vector& weight, double eps) {
  Vector y = x;
  RmsNormInPlace(y.data(), static_cast<int64_t>(y.size()), weight.data(), eps);
  return y;
}

enum class RopeMode { kNormal, kNeox };

// Rotates the first n_rot dims of one head vector for position `pos`.
void Rope(double* head, int64_t n_rot, RopeMode mode, double base, int64_t pos) {
  for (int64_t i = 0; i < n_rot / 2; ++i) {
    const double theta =
        static_cast<double>(pos) * std::pow(base, -2.0 * static_cast<double>(i) / n_rot);
    const double c = std::cos(theta);
    const double s = std::sin(theta);
    const int64_t a = mode == RopeMode::kNormal ? 2 * i : i;
    const int64_t b = mode == RopeMode::kNormal ? 2 * i + 1 : i + n_rot / 2;
    const double x0 = head[a];
    const double x1 = head[b];
    head[a] = x0 * c - x1 * s;
    head[b] = x0 * s + x1 * c;
  }
}

double Silu(double x) { return x / (1.0 + std::exp(-x)); }

double GeluTanh(double x) {
  const double kSqrt2OverPi = std::sqrt(2.0 / std::numbers::pi);
  return 0.5 * x * (1.0 + std::tanh(kSqrt2OverPi * (x + 0.044715 * x * x * x)));
}

struct Hparams {
  std::string arch;
  int64_t n_embd = 0;
  int64_t n_layer = 0;
  int64_t n_ff = 0;
  int64_t n_head = 0;
  int64_t n_head_kv = 0;
  int64_t head_dim_k = 0;
  int64_t head_dim_v = 0;
  int64_t n_rot = 0;
  int64_t n_vocab = 0;
  double eps = 0.0;
  double rope_base = 10000.0;
  int64_t sliding_window = 0;  // gemma3; 0 = no sliding layers
  bool gemma3 = false;
  RopeMode rope_mode = RopeMode::kNormal;
};

absl::StatusOr<Hparams> ReadHparams(const GgufFile& file) {
  Hparams h;
  ASSIGN_OR_RETURN(h.arch, file.GetString("general.architecture"));
  if (h.arch != "llama" && h.arch != "qwen2" && h.arch != "gemma3") {
    return absl::InvalidArgumentError(
        absl::StrCat("reference forward does not know architecture '", h.arch, "'"));
  }
  h.gemma3 = h.arch == "gemma3";
  h.rope_mode = h.arch == "llama" ? RopeMode::kNormal : RopeMode::kNeox;
  const std::string& a = h.arch;
  ASSIGN_OR_RETURN(h.n_embd, file.GetInt(a + ".embedding_length"));
  ASSIGN_OR_RETURN(h.n_layer, file.GetInt(a + ".block_count"));
  ASSIGN_OR_RETURN(h.n_ff, file.GetInt(a + ".feed_forward_length"));
  ASSIGN_OR_RETURN(h.n_head, file.GetInt(a + ".attention.head_count"));
  ASSIGN_OR_RETURN(h.n_head_kv, file.GetIntOr(a + ".attention.head_count_kv", h.n_head));
  if (h.n_embd <= 0 || h.n_layer <= 0 || h.n_ff <= 0 || h.n_head <= 0 || h.n_head_kv <= 0 ||
      h.n_head % h.n_head_kv != 0) {
    return absl::InvalidArgumentError("bad hyperparameters");
  }
  ASSIGN_OR_RETURN(h.head_dim_k, file.GetIntOr(a + ".attention.key_length", h.n_embd / h.n_head));
  ASSIGN_OR_RETURN(h.head_dim_v, file.GetIntOr(a + ".attention.value_length", h.head_dim_k));
  ASSIGN_OR_RETURN(h.n_rot, file.GetIntOr(a + ".rope.dimension_count", h.head_dim_k));
  if (h.head_dim_k <= 0 || h.head_dim_v <= 0 || h.n_rot <= 0 || h.n_rot > h.head_dim_k ||
      h.n_rot % 2 != 0) {
    return absl::InvalidArgumentError("bad head dimensions");
  }
  ASSIGN_OR_RETURN(h.eps, file.GetFloat(a + ".attention.layer_norm_rms_epsilon"));
  ASSIGN_OR_RETURN(h.rope_base, file.GetFloatOr(a + ".rope.freq_base", 10000.0));
  if (h.gemma3) {
    ASSIGN_OR_RETURN(h.sliding_window, file.GetIntOr(a + ".attention.sliding_window", 0));
  }
  if (file.FindTensor("rope_freqs.weight") != nullptr) {
    return absl::UnimplementedError("reference forward does not do rope_freqs scaling");
  }
  const GgufTensorInfo* embd = file.FindTensor("token_embd.weight");
  if (embd == nullptr || embd->dims.size() != 2) {
    return absl::InvalidArgumentError("token_embd.weight missing or not 2-D");
  }
  h.n_vocab = embd->dims[1];
  return h;
}

bool IsSlidingLayer(const Hparams& h, int64_t il) {
  return h.gemma3 && h.sliding_window > 0 && (il + 1) % 6 != 0;
}

}  // namespace

// ---- Writer ----------------------------------------------------------------------------------

absl::StatusOr<std::string> WriteSyntheticModel(const SyntheticModelOptions& o,
                                                const std::string& path) {
  const bool llama = o.arch == "llama";
  const bool qwen2 = o.arch == "qwen2";
  const bool gemma3 = o.arch == "gemma3";
  if (!llama && !qwen2 && !gemma3) {
    return absl::InvalidArgumentError(absl::StrCat("unknown synthetic arch '", o.arch, "'"));
  }
  if (o.n_layer <= 0 || o.n_embd <= 0 || o.n_head <= 0 || o.n_head_kv <= 0 || o.n_ff <= 0 ||
      o.context_length <= 0 || o.n_head % o.n_head_kv != 0) {
    return absl::InvalidArgumentError("bad layer / head counts");
  }
  const int head_dim = o.head_dim > 0 ? o.head_dim : o.n_embd / o.n_head;
  if (head_dim <= 0 || head_dim % 2 != 0) {
    return absl::InvalidArgumentError("head_dim must be positive and even");
  }
  if (gemma3 && o.sliding_window <= 0) {
    return absl::InvalidArgumentError("gemma3 needs sliding_window > 0");
  }
  const TensorType embedding_type = o.embedding_type.value_or(o.weight_type);
  const int64_t q_width = static_cast<int64_t>(o.n_head) * head_dim;
  const int64_t kv_width = static_cast<int64_t>(o.n_head_kv) * head_dim;
  for (auto [type, n] :
       {std::pair{o.weight_type, int64_t{o.n_embd}}, std::pair{o.weight_type, q_width},
        std::pair{o.weight_type, int64_t{o.n_ff}}, std::pair{embedding_type, int64_t{o.n_embd}}}) {
    const kernels::TypeInfo* info = kernels::FindTypeInfo(static_cast<uint32_t>(type));
    if (info == nullptr) return absl::InvalidArgumentError("unknown tensor type");
    if (n % info->block_size != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "rows of %d elements are not a multiple of %s's block size %d (use n_embd, "
          "n_head*head_dim and n_ff multiples of it)",
          n, info->name, info->block_size));
    }
  }

  GgufWriter writer;
  const std::string& a = o.arch;
  writer.SetValue("general.architecture", GgufValue::String(a));
  writer.SetValue("general.name", GgufValue::String(absl::StrCat("synthetic-", a)));
  writer.SetValue(a + ".vocab_size", GgufValue::U32(o.vocab_size));
  writer.SetValue(a + ".context_length", GgufValue::U32(o.context_length));
  writer.SetValue(a + ".embedding_length", GgufValue::U32(o.n_embd));
  writer.SetValue(a + ".block_count", GgufValue::U32(o.n_layer));
  writer.SetValue(a + ".feed_forward_length", GgufValue::U32(o.n_ff));
  writer.SetValue(a + ".attention.head_count", GgufValue::U32(o.n_head));
  writer.SetValue(a + ".attention.head_count_kv", GgufValue::U32(o.n_head_kv));
  // Real llama/qwen2 files usually omit key/value_length (default n_embd / n_head); write them
  // only where they say something, so the runtime's default path is exercised too.
  if (gemma3 || head_dim * o.n_head != o.n_embd) {
    writer.SetValue(a + ".attention.key_length", GgufValue::U32(head_dim));
    writer.SetValue(a + ".attention.value_length", GgufValue::U32(head_dim));
  }
  if (!gemma3) writer.SetValue(a + ".rope.dimension_count", GgufValue::U32(head_dim));
  writer.SetValue(a + ".attention.layer_norm_rms_epsilon",
                  GgufValue::F32(static_cast<float>(o.rms_norm_eps)));
  writer.SetValue(a + ".rope.freq_base", GgufValue::F32(static_cast<float>(o.rope_freq_base)));
  if (gemma3) writer.SetValue(a + ".attention.sliding_window", GgufValue::U32(o.sliding_window));
  RETURN_IF_ERROR(AddVocabulary(o, &writer));

  // Weight scales: uniform in [-w, w] with w = sqrt(3 / n_in) gives unit-variance outputs for
  // unit-variance inputs, which keeps attention and logits in a well-conditioned range.
  auto matrix = [&](const std::string& name, TensorType type, int64_t n_in, int64_t n_out,
                    bool zero) {
    std::vector<float> values =
        zero ? std::vector<float>(n_in * n_out, 0.0f)
             : RandomValues(o.seed, name, n_in * n_out, 0.0, std::sqrt(3.0 / n_in));
    writer.AddTensorF32(name, type, {n_in, n_out}, values);
  };
  auto norm = [&](const std::string& name, int64_t n) {
    writer.AddTensorF32(name, TensorType::kF32, {n}, RandomValues(o.seed, name, n, 1.0, 0.2));
  };
  auto bias = [&](const std::string& name, int64_t n) {
    writer.AddTensorF32(name, TensorType::kF32, {n}, RandomValues(o.seed, name, n, 0.0, 0.5));
  };

  writer.AddTensorF32("token_embd.weight", embedding_type, {o.n_embd, o.vocab_size},
                      RandomValues(o.seed, "token_embd.weight",
                                   static_cast<int64_t>(o.n_embd) * o.vocab_size, 0.0, 1.0));
  for (int il = 0; il < o.n_layer; ++il) {
    const std::string p = absl::StrCat("blk.", il, ".");
    const TensorType t = o.weight_type;
    norm(p + "attn_norm.weight", o.n_embd);
    matrix(p + "attn_q.weight", t, o.n_embd, q_width, false);
    matrix(p + "attn_k.weight", t, o.n_embd, kv_width, false);
    matrix(p + "attn_v.weight", t, o.n_embd, kv_width, false);
    if (qwen2 && o.qkv_bias) {
      bias(p + "attn_q.bias", q_width);
      bias(p + "attn_k.bias", kv_width);
      bias(p + "attn_v.bias", kv_width);
    }
    if (gemma3) {
      norm(p + "attn_q_norm.weight", head_dim);
      norm(p + "attn_k_norm.weight", head_dim);
    }
    matrix(p + "attn_output.weight", t, q_width, o.n_embd, o.zero_block_outputs);
    if (gemma3) norm(p + "post_attention_norm.weight", o.n_embd);
    norm(p + "ffn_norm.weight", o.n_embd);
    matrix(p + "ffn_gate.weight", t, o.n_embd, o.n_ff, false);
    matrix(p + "ffn_up.weight", t, o.n_embd, o.n_ff, false);
    matrix(p + "ffn_down.weight", t, o.n_ff, o.n_embd, o.zero_block_outputs);
    if (gemma3) norm(p + "post_ffw_norm.weight", o.n_embd);
  }
  norm("output_norm.weight", o.n_embd);
  if (o.separate_output) matrix("output.weight", o.weight_type, o.n_embd, o.vocab_size, false);

  RETURN_IF_ERROR(writer.WriteFile(path));
  return path;
}

// ---- Reference forward -----------------------------------------------------------------------

absl::StatusOr<ReferenceTrace> ReferenceForwardTrace(const std::string& gguf_path,
                                                     const std::vector<int32_t>& tokens) {
  ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> file, GgufFile::Open(gguf_path));
  ASSIGN_OR_RETURN(Hparams h, ReadHparams(*file));
  const int64_t n_tokens = static_cast<int64_t>(tokens.size());
  for (int32_t t : tokens) {
    if (t < 0 || t >= h.n_vocab) {
      return absl::InvalidArgumentError(absl::StrCat("token ", t, " outside the vocabulary"));
    }
  }
  const int64_t q_width = h.n_head * h.head_dim_k;
  const int64_t k_width = h.n_head_kv * h.head_dim_k;
  const int64_t v_width = h.n_head_kv * h.head_dim_v;
  const int64_t attn_width = h.n_head * h.head_dim_v;
  const int64_t group = h.n_head / h.n_head_kv;

  ReferenceTrace trace;

  // x = token_embd[token] (gemma3: * sqrt(n_embd)).
  ASSIGN_OR_RETURN(Matrix token_embd, ReadTensor(*file, "token_embd.weight", h.n_embd, h.n_vocab));
  const double input_scale = h.gemma3 ? std::sqrt(static_cast<double>(h.n_embd)) : 1.0;
  std::vector<Vector> x(n_tokens, Vector(h.n_embd));
  for (int64_t p = 0; p < n_tokens; ++p) {
    const double* row = token_embd.Row(tokens[p]);
    for (int64_t i = 0; i < h.n_embd; ++i) x[p][i] = row[i] * input_scale;
  }
  trace.hidden.push_back(x);

  // gemma3 scales the query by f_attention_scale (1/sqrt(n_embd/n_head) for the 27B only).
  const double kq_scale = (h.gemma3 && h.n_layer == 62)
                              ? 1.0 / std::sqrt(static_cast<double>(h.n_embd / h.n_head))
                              : 1.0 / std::sqrt(static_cast<double>(h.head_dim_k));

  for (int64_t il = 0; il < h.n_layer; ++il) {
    const std::string pre = absl::StrCat("blk.", il, ".");
    ASSIGN_OR_RETURN(Vector attn_norm, ReadVector(*file, pre + "attn_norm.weight", h.n_embd));
    ASSIGN_OR_RETURN(Matrix wq, ReadTensor(*file, pre + "attn_q.weight", h.n_embd, q_width));
    ASSIGN_OR_RETURN(Matrix wk, ReadTensor(*file, pre + "attn_k.weight", h.n_embd, k_width));
    ASSIGN_OR_RETURN(Matrix wv, ReadTensor(*file, pre + "attn_v.weight", h.n_embd, v_width));
    ASSIGN_OR_RETURN(Vector bq, ReadOptionalVector(*file, pre + "attn_q.bias", q_width));
    ASSIGN_OR_RETURN(Vector bk, ReadOptionalVector(*file, pre + "attn_k.bias", k_width));
    ASSIGN_OR_RETURN(Vector bv, ReadOptionalVector(*file, pre + "attn_v.bias", v_width));
    ASSIGN_OR_RETURN(Matrix wo,
                     ReadTensor(*file, pre + "attn_output.weight", attn_width, h.n_embd));
    ASSIGN_OR_RETURN(Vector ffn_norm, ReadVector(*file, pre + "ffn_norm.weight", h.n_embd));
    ASSIGN_OR_RETURN(Matrix w_gate, ReadTensor(*file, pre + "ffn_gate.weight", h.n_embd, h.n_ff));
    ASSIGN_OR_RETURN(Matrix w_up, ReadTensor(*file, pre + "ffn_up.weight", h.n_embd, h.n_ff));
    ASSIGN_OR_RETURN(Matrix w_down, ReadTensor(*file, pre + "ffn_down.weight", h.n_ff, h.n_embd));
    Vector q_norm, k_norm, post_attn_norm, post_ffw_norm;
    if (h.gemma3) {
      ASSIGN_OR_RETURN(q_norm, ReadVector(*file, pre + "attn_q_norm.weight", h.head_dim_k));
      ASSIGN_OR_RETURN(k_norm, ReadVector(*file, pre + "attn_k_norm.weight", h.head_dim_k));
      ASSIGN_OR_RETURN(post_attn_norm,
                       ReadVector(*file, pre + "post_attention_norm.weight", h.n_embd));
      ASSIGN_OR_RETURN(post_ffw_norm, ReadVector(*file, pre + "post_ffw_norm.weight", h.n_embd));
    }
    const bool sliding = IsSlidingLayer(h, il);
    const double rope_base = sliding ? 10000.0 : h.rope_base;

    // q, k, v for every position: norm -> projections (+ biases) -> per-head Q/K norm -> RoPE.
    std::vector<Vector> q(n_tokens), k(n_tokens), v(n_tokens);
    for (int64_t p = 0; p < n_tokens; ++p) {
      const Vector normed = RmsNorm(x[p], attn_norm, h.eps);
      q[p] = wq.Times(normed);
      k[p] = wk.Times(normed);
      v[p] = wv.Times(normed);
      for (size_t i = 0; i < bq.size(); ++i) q[p][i] += bq[i];
      for (size_t i = 0; i < bk.size(); ++i) k[p][i] += bk[i];
      for (size_t i = 0; i < bv.size(); ++i) v[p][i] += bv[i];
      for (int64_t head = 0; head < h.n_head; ++head) {
        double* qh = q[p].data() + head * h.head_dim_k;
        if (h.gemma3) RmsNormInPlace(qh, h.head_dim_k, q_norm.data(), h.eps);
        Rope(qh, h.n_rot, h.rope_mode, rope_base, p);
      }
      for (int64_t head = 0; head < h.n_head_kv; ++head) {
        double* kh = k[p].data() + head * h.head_dim_k;
        if (h.gemma3) RmsNormInPlace(kh, h.head_dim_k, k_norm.data(), h.eps);
        Rope(kh, h.n_rot, h.rope_mode, rope_base, p);
      }
    }

    for (int64_t p = 0; p < n_tokens; ++p) {
      // Causal attention over keys [first, p]; sliding layers see (p - window, p].
      const int64_t first = sliding ? std::max<int64_t>(0, p - h.sliding_window + 1) : 0;
      Vector attn(attn_width, 0.0);
      Vector scores(p - first + 1);
      for (int64_t head = 0; head < h.n_head; ++head) {
        const int64_t kv_head = head / group;
        const double* qh = q[p].data() + head * h.head_dim_k;
        double max_score = -INFINITY;
        for (int64_t j = first; j <= p; ++j) {
          const double* kh = k[j].data() + kv_head * h.head_dim_k;
          double dot = 0.0;
          for (int64_t d = 0; d < h.head_dim_k; ++d) dot += qh[d] * kh[d];
          scores[j - first] = dot * kq_scale;
          max_score = std::max(max_score, scores[j - first]);
        }
        double total = 0.0;
        for (double& s : scores) {
          s = std::exp(s - max_score);
          total += s;
        }
        double* out = attn.data() + head * h.head_dim_v;
        for (int64_t j = first; j <= p; ++j) {
          const double weight = scores[j - first] / total;
          const double* vh = v[j].data() + kv_head * h.head_dim_v;
          for (int64_t d = 0; d < h.head_dim_v; ++d) out[d] += weight * vh[d];
        }
      }
      // Output projection (gemma3: post-attention norm), residual.
      Vector attn_out = wo.Times(attn);
      if (h.gemma3) attn_out = RmsNorm(attn_out, post_attn_norm, h.eps);
      for (int64_t i = 0; i < h.n_embd; ++i) x[p][i] += attn_out[i];

      // Feed-forward: down(act(gate(h)) * up(h)) (gemma3: GELU and post-FFN norm), residual.
      const Vector normed = RmsNorm(x[p], ffn_norm, h.eps);
      Vector gate = w_gate.Times(normed);
      const Vector up = w_up.Times(normed);
      for (int64_t i = 0; i < h.n_ff; ++i) {
        gate[i] = (h.gemma3 ? GeluTanh(gate[i]) : Silu(gate[i])) * up[i];
      }
      Vector ffn_out = w_down.Times(gate);
      if (h.gemma3) ffn_out = RmsNorm(ffn_out, post_ffw_norm, h.eps);
      for (int64_t i = 0; i < h.n_embd; ++i) x[p][i] += ffn_out[i];
    }
    trace.hidden.push_back(x);
  }

  // Final norm and head (output.weight, or the tied token embedding).
  ASSIGN_OR_RETURN(Vector output_norm, ReadVector(*file, "output_norm.weight", h.n_embd));
  Matrix output_storage;
  const Matrix* output = &token_embd;
  if (file->FindTensor("output.weight") != nullptr) {
    ASSIGN_OR_RETURN(output_storage, ReadTensor(*file, "output.weight", h.n_embd, h.n_vocab));
    output = &output_storage;
  }
  trace.logits.resize(n_tokens);
  for (int64_t p = 0; p < n_tokens; ++p) {
    trace.logits[p] = output->Times(RmsNorm(x[p], output_norm, h.eps));
  }
  return trace;
}

absl::StatusOr<std::vector<std::vector<double>>> TryReferenceForward(
    const std::string& gguf_path, const std::vector<int32_t>& tokens) {
  ASSIGN_OR_RETURN(ReferenceTrace trace, ReferenceForwardTrace(gguf_path, tokens));
  return std::move(trace.logits);
}

std::vector<std::vector<double>> ReferenceForward(const std::string& gguf_path,
                                                  const std::vector<int32_t>& tokens) {
  absl::StatusOr<std::vector<std::vector<double>>> logits = TryReferenceForward(gguf_path, tokens);
  if (!logits.ok()) {
    ADD_FAILURE() << "ReferenceForward(" << gguf_path << "): " << logits.status();
    return {};
  }
  return *std::move(logits);
}

// ---- Comparison ------------------------------------------------------------------------------

namespace {

template <typename T>
::testing::AssertionResult LogitsNearImpl(const std::vector<std::vector<double>>& expected,
                                          const std::vector<std::vector<T>>& actual,
                                          double relative_tolerance) {
  if (expected.size() != actual.size()) {
    return ::testing::AssertionFailure()
           << "expected logits for " << expected.size() << " positions, got " << actual.size();
  }
  double worst_ratio = 0.0;
  size_t worst_pos = 0, worst_index = 0;
  double worst_expected = 0.0, worst_actual = 0.0;
  for (size_t p = 0; p < expected.size(); ++p) {
    if (expected[p].size() != actual[p].size()) {
      return ::testing::AssertionFailure()
             << "position " << p << ": expected " << expected[p].size() << " logits, got "
             << actual[p].size();
    }
    double scale = 1.0;
    for (double e : expected[p]) scale = std::max(scale, std::abs(e));
    for (size_t j = 0; j < expected[p].size(); ++j) {
      const double a = static_cast<double>(actual[p][j]);
      const double ratio = std::isfinite(a) ? std::abs(a - expected[p][j]) / scale : INFINITY;
      if (ratio > worst_ratio) {
        worst_ratio = ratio;
        worst_pos = p;
        worst_index = j;
        worst_expected = expected[p][j];
        worst_actual = a;
      }
    }
  }
  if (worst_ratio <= relative_tolerance) {
    return ::testing::AssertionSuccess() << "worst relative error " << worst_ratio;
  }
  return ::testing::AssertionFailure()
         << "logits differ: worst at position " << worst_pos << ", token " << worst_index
         << ": expected " << worst_expected << ", got " << worst_actual << " (error " << worst_ratio
         << " of the position's largest |logit|, tolerance " << relative_tolerance << ")";
}

}  // namespace

::testing::AssertionResult LogitsNear(const std::vector<std::vector<double>>& expected,
                                      const std::vector<std::vector<float>>& actual,
                                      double relative_tolerance) {
  return LogitsNearImpl(expected, actual, relative_tolerance);
}

::testing::AssertionResult LogitsNear(const std::vector<std::vector<double>>& expected,
                                      const std::vector<std::vector<double>>& actual,
                                      double relative_tolerance) {
  return LogitsNearImpl(expected, actual, relative_tolerance);
}

}  // namespace exo::runtime::synthetic
