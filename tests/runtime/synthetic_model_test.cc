// Self-tests of the synthetic-model infrastructure: the writer produces what llama.cpp expects,
// and the reference forward pass has the properties the maths demands.
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/gguf.h"
#include "tests/runtime/synthetic_model_testlib.h"

namespace exo::runtime::synthetic {
namespace {

using kernels::TensorType;

std::string TempPath(const std::string& name) {
  return ::testing::TempDir() + "/synthetic_model_test_" + std::to_string(::getpid()) + "_" + name +
         ".gguf";
}

SyntheticModelOptions OptionsFor(const std::string& arch) {
  SyntheticModelOptions o;
  o.arch = arch;
  if (arch == "qwen2") {
    o.rope_freq_base = 1000000.0;
    o.rms_norm_eps = 1e-6;
  } else if (arch == "gemma3") {
    o.n_layer = 6;    // layers 0-4 sliding, layer 5 global
    o.head_dim = 32;  // != n_embd / n_head, as in the real gemma3 models
    o.n_head_kv = 1;
    o.rope_freq_base = 1000000.0;
    o.rms_norm_eps = 1e-6;
    o.sliding_window = 3;
  }
  return o;
}

std::string Write(const SyntheticModelOptions& o, const std::string& name) {
  absl::StatusOr<std::string> path = WriteSyntheticModel(o, TempPath(name));
  EXPECT_TRUE(path.ok()) << path.status();
  return path.ok() ? *path : "";
}

// Reads an F32 tensor straight from the file (no kernels involved), one value per element.
std::vector<double> ReadF32(const GgufFile& file, const std::string& name) {
  const GgufTensorInfo* info = file.FindTensor(name);
  EXPECT_NE(info, nullptr) << name;
  if (info == nullptr) return {};
  EXPECT_EQ(info->type, TensorType::kF32) << name;
  std::vector<float> values(info->num_elements());
  std::memcpy(values.data(), info->data, values.size() * sizeof(float));
  return std::vector<double>(values.begin(), values.end());
}

const std::vector<int32_t> kTokens = {1, 17, 42, 5, 9, 33, 60, 2, 71};

// ---- Writer ----------------------------------------------------------------------------------

class SyntheticModelPerArch : public ::testing::TestWithParam<std::string> {};

TEST_P(SyntheticModelPerArch, FileRoundTripsThroughGgufFile) {
  const std::string arch = GetParam();
  SyntheticModelOptions o = OptionsFor(arch);
  o.separate_output = arch == "qwen2";
  const std::string path = Write(o, "roundtrip_" + arch);
  absl::StatusOr<std::unique_ptr<GgufFile>> opened = GgufFile::Open(path);
  ASSERT_TRUE(opened.ok()) << opened.status();
  const GgufFile& file = **opened;

  EXPECT_EQ(file.GetString("general.architecture").value_or(""), arch);
  EXPECT_EQ(file.GetInt(arch + ".block_count").value_or(-1), o.n_layer);
  EXPECT_EQ(file.GetInt(arch + ".embedding_length").value_or(-1), o.n_embd);
  EXPECT_EQ(file.GetInt(arch + ".feed_forward_length").value_or(-1), o.n_ff);
  EXPECT_EQ(file.GetInt(arch + ".context_length").value_or(-1), o.context_length);
  EXPECT_EQ(file.GetInt(arch + ".attention.head_count").value_or(-1), o.n_head);
  EXPECT_EQ(file.GetInt(arch + ".attention.head_count_kv").value_or(-1), o.n_head_kv);
  EXPECT_NEAR(file.GetFloat(arch + ".attention.layer_norm_rms_epsilon").value_or(-1),
              o.rms_norm_eps, 1e-12);
  EXPECT_NEAR(file.GetFloat(arch + ".rope.freq_base").value_or(-1), o.rope_freq_base, 1e-3);
  const int head_dim = o.head_dim > 0 ? o.head_dim : o.n_embd / o.n_head;
  if (arch == "gemma3") {
    EXPECT_EQ(file.GetInt("gemma3.attention.key_length").value_or(-1), head_dim);
    EXPECT_EQ(file.GetInt("gemma3.attention.value_length").value_or(-1), head_dim);
    EXPECT_EQ(file.GetInt("gemma3.attention.sliding_window").value_or(-1), o.sliding_window);
  } else {
    EXPECT_EQ(file.GetInt(arch + ".rope.dimension_count").value_or(-1), head_dim);
    EXPECT_EQ(file.Find(arch + ".attention.sliding_window"), nullptr);
  }
  absl::StatusOr<std::vector<std::string>> tokens = file.GetStringArray("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_EQ(static_cast<int>(tokens->size()), o.vocab_size);
  EXPECT_EQ(file.GetString("tokenizer.ggml.model").value_or(""), "llama");
  EXPECT_TRUE(file.GetInt("tokenizer.ggml.bos_token_id").ok());
  EXPECT_TRUE(file.GetInt("tokenizer.ggml.eos_token_id").ok());

  // The tensor table is exactly llama.cpp's for this architecture.
  struct Expected {
    std::string name;
    std::vector<int64_t> dims;
  };
  const int64_t e = o.n_embd, q = o.n_head * head_dim, kv = o.n_head_kv * head_dim;
  std::vector<Expected> expected = {{"token_embd.weight", {e, o.vocab_size}},
                                    {"output_norm.weight", {e}}};
  if (o.separate_output) expected.push_back({"output.weight", {e, o.vocab_size}});
  for (int il = 0; il < o.n_layer; ++il) {
    const std::string b = "blk." + std::to_string(il) + ".";
    expected.push_back({b + "attn_norm.weight", {e}});
    expected.push_back({b + "attn_q.weight", {e, q}});
    expected.push_back({b + "attn_k.weight", {e, kv}});
    expected.push_back({b + "attn_v.weight", {e, kv}});
    expected.push_back({b + "attn_output.weight", {q, e}});
    expected.push_back({b + "ffn_norm.weight", {e}});
    expected.push_back({b + "ffn_gate.weight", {e, o.n_ff}});
    expected.push_back({b + "ffn_up.weight", {e, o.n_ff}});
    expected.push_back({b + "ffn_down.weight", {o.n_ff, e}});
    if (arch == "qwen2") {
      expected.push_back({b + "attn_q.bias", {q}});
      expected.push_back({b + "attn_k.bias", {kv}});
      expected.push_back({b + "attn_v.bias", {kv}});
    }
    if (arch == "gemma3") {
      expected.push_back({b + "attn_q_norm.weight", {head_dim}});
      expected.push_back({b + "attn_k_norm.weight", {head_dim}});
      expected.push_back({b + "post_attention_norm.weight", {e}});
      expected.push_back({b + "post_ffw_norm.weight", {e}});
    }
  }
  EXPECT_EQ(file.tensors().size(), expected.size());
  for (const Expected& x : expected) {
    const GgufTensorInfo* info = file.FindTensor(x.name);
    ASSERT_NE(info, nullptr) << x.name;
    EXPECT_EQ(info->dims, x.dims) << x.name;
    EXPECT_EQ(info->type, TensorType::kF32) << x.name;
  }
  // Norm weights are random around 1 (the stored value is the multiplier).
  for (double w : ReadF32(file, "blk.0.attn_norm.weight")) {
    EXPECT_GT(w, 0.75);
    EXPECT_LT(w, 1.25);
  }
}

INSTANTIATE_TEST_SUITE_P(SyntheticModel, SyntheticModelPerArch,
                         ::testing::Values("llama", "qwen2", "gemma3"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

TEST(SyntheticModel, SameSeedWritesSameBytes) {
  SyntheticModelOptions o = OptionsFor("llama");
  o.n_layer = 1;
  auto read = [](const std::string& path) {
    absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::Open(path);
    EXPECT_TRUE(f.ok()) << f.status();
    return f.ok() ? ReadF32(**f, "blk.0.attn_q.weight") : std::vector<double>{};
  };
  const std::vector<double> a = read(Write(o, "seed_a"));
  const std::vector<double> b = read(Write(o, "seed_b"));
  o.seed = 43;
  const std::vector<double> c = read(Write(o, "seed_c"));
  ASSERT_FALSE(a.empty());
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

TEST(SyntheticModel, RejectsInconsistentOptions) {
  SyntheticModelOptions o = OptionsFor("llama");
  o.weight_type = TensorType::kQ4_K;  // rows of 64 are not whole 256-element blocks
  EXPECT_EQ(WriteSyntheticModel(o, TempPath("bad1")).status().code(),
            absl::StatusCode::kInvalidArgument);
  o = OptionsFor("llama");
  o.arch = "gpt-j";
  EXPECT_EQ(WriteSyntheticModel(o, TempPath("bad2")).status().code(),
            absl::StatusCode::kInvalidArgument);
  o = OptionsFor("llama");
  o.n_head_kv = 3;  // 4 % 3 != 0
  EXPECT_EQ(WriteSyntheticModel(o, TempPath("bad3")).status().code(),
            absl::StatusCode::kInvalidArgument);
  o = OptionsFor("llama");
  o.tokenizer = SyntheticTokenizer::kGpt2;  // 96 < 256 byte tokens
  EXPECT_EQ(WriteSyntheticModel(o, TempPath("bad4")).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SyntheticModel, Gpt2VocabularyHasByteTokensAndMerges) {
  SyntheticModelOptions o = OptionsFor("qwen2");
  o.tokenizer = SyntheticTokenizer::kGpt2;
  o.vocab_size = 300;
  const std::string path = Write(o, "gpt2_vocab");
  absl::StatusOr<std::unique_ptr<GgufFile>> file = GgufFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->GetString("tokenizer.ggml.model").value_or(""), "gpt2");
  std::vector<std::string> tokens = (*file)->GetStringArray("tokenizer.ggml.tokens").value();
  std::vector<std::string> merges = (*file)->GetStringArray("tokenizer.ggml.merges").value();
  ASSERT_EQ(tokens.size(), 300u);
  EXPECT_EQ(tokens['a'], "a");
  EXPECT_EQ(tokens[' '], "\xC4\xA0");   // U+0120 'Ġ', GPT-2's stand-in for a space
  EXPECT_EQ(tokens['\n'], "\xC4\x8A");  // U+010A 'Ċ'
  EXPECT_EQ(std::set<std::string>(tokens.begin(), tokens.end()).size(), tokens.size());
  ASSERT_EQ(merges.size(), 300u - 256u - 2u);
  EXPECT_EQ(merges[0], "a a");
  EXPECT_EQ(tokens[256], "aa");
  EXPECT_EQ((*file)->GetInt("tokenizer.ggml.eos_token_id").value_or(-1), 299);
}

// ---- Reference forward -----------------------------------------------------------------------

TEST_P(SyntheticModelPerArch, ReferenceIsCausal) {
  const std::string arch = GetParam();
  const std::string path = Write(OptionsFor(arch), "causal_" + arch);
  const std::vector<std::vector<double>> base = ReferenceForward(path, kTokens);
  ASSERT_EQ(base.size(), kTokens.size());
  for (const auto& row : base) {
    ASSERT_EQ(row.size(), 96u);
    for (double v : row) ASSERT_TRUE(std::isfinite(v));
  }

  // Changing token 4 leaves positions 0-3 bit-identical and changes every later position.
  std::vector<int32_t> changed = kTokens;
  changed[4] = 88;
  const std::vector<std::vector<double>> other = ReferenceForward(path, changed);
  ASSERT_EQ(other.size(), kTokens.size());
  for (size_t p = 0; p < kTokens.size(); ++p) {
    if (p < 4) {
      EXPECT_EQ(base[p], other[p]) << "position " << p;
    } else {
      EXPECT_NE(base[p], other[p]) << "position " << p;
    }
  }
  // A prefix gives the same logits as the full sequence at the shared positions.
  const std::vector<int32_t> prefix(kTokens.begin(), kTokens.begin() + 5);
  const std::vector<std::vector<double>> short_run = ReferenceForward(path, prefix);
  ASSERT_EQ(short_run.size(), prefix.size());
  for (size_t p = 0; p < prefix.size(); ++p) EXPECT_EQ(short_run[p], base[p]) << p;
}

TEST_P(SyntheticModelPerArch, ZeroBlockOutputsGiveNormedEmbeddingTimesHead) {
  const std::string arch = GetParam();
  SyntheticModelOptions o = OptionsFor(arch);
  o.n_layer = 1;
  o.zero_block_outputs = true;
  o.separate_output = arch == "qwen2";
  const std::string path = Write(o, "zero_" + arch);
  absl::StatusOr<std::unique_ptr<GgufFile>> opened = GgufFile::Open(path);
  ASSERT_TRUE(opened.ok()) << opened.status();
  const GgufFile& file = **opened;
  const std::vector<double> embd = ReadF32(file, "token_embd.weight");
  const std::vector<double> head = o.separate_output ? ReadF32(file, "output.weight") : embd;
  const std::vector<double> norm = ReadF32(file, "output_norm.weight");
  const double eps = file.GetFloat(arch + ".attention.layer_norm_rms_epsilon").value();
  const double input_scale = arch == "gemma3" ? std::sqrt(static_cast<double>(o.n_embd)) : 1.0;

  absl::StatusOr<ReferenceTrace> trace = ReferenceForwardTrace(path, kTokens);
  ASSERT_TRUE(trace.ok()) << trace.status();
  ASSERT_EQ(trace->hidden.size(), 2u);
  ASSERT_EQ(trace->logits.size(), kTokens.size());
  for (size_t p = 0; p < kTokens.size(); ++p) {
    std::vector<double> x(o.n_embd);
    double sum_squares = 0;
    for (int i = 0; i < o.n_embd; ++i) {
      x[i] = embd[kTokens[p] * o.n_embd + i] * input_scale;
      sum_squares += x[i] * x[i];
    }
    // The residual stream never changes: the layer adds exactly zero.
    EXPECT_EQ(trace->hidden[0][p], x);
    EXPECT_EQ(trace->hidden[1][p], x);
    const double inv_rms = 1.0 / std::sqrt(sum_squares / o.n_embd + eps);
    for (int v = 0; v < o.vocab_size; ++v) {
      double logit = 0;
      for (int i = 0; i < o.n_embd; ++i) logit += x[i] * inv_rms * norm[i] * head[v * o.n_embd + i];
      EXPECT_NEAR(trace->logits[p][v], logit, 1e-9 * (1 + std::abs(logit)))
          << "position " << p << " token " << v;
    }
  }
}

// With one token, softmax over a single key is 1, so attention returns V unchanged whatever Q, K
// and RoPE do. That makes one whole layer computable by hand, which pins the weight layout
// (element (row r, column c) of a {n_in, n_out} tensor at r * n_in + c), the GQA head mapping
// (query head h reads kv head h / (n_head / n_head_kv)), biases, norms and activations.
TEST_P(SyntheticModelPerArch, SingleTokenMatchesAHandComputedLayer) {
  const std::string arch = GetParam();
  SyntheticModelOptions o = OptionsFor(arch);
  o.n_layer = 1;
  o.n_head = 4;
  o.n_head_kv = 2;
  const std::string path = Write(o, "single_" + arch);
  absl::StatusOr<std::unique_ptr<GgufFile>> opened = GgufFile::Open(path);
  ASSERT_TRUE(opened.ok()) << opened.status();
  const GgufFile& f = **opened;
  const bool gemma = arch == "gemma3";
  const int n = o.n_embd, hd = o.head_dim > 0 ? o.head_dim : n / o.n_head;
  const double eps = f.GetFloat(arch + ".attention.layer_norm_rms_epsilon").value();
  auto norm = [&](std::vector<double> x, const std::string& weight) {
    const std::vector<double> w = ReadF32(f, weight);
    double ss = 0;
    for (double v : x) ss += v * v;
    const double inv = 1.0 / std::sqrt(ss / x.size() + eps);
    for (size_t i = 0; i < x.size(); ++i) x[i] *= inv * w[i];
    return x;
  };
  auto mul = [&](const std::string& weight, const std::vector<double>& x) {
    const std::vector<double> w = ReadF32(f, weight);
    const size_t n_out = w.size() / x.size();
    std::vector<double> y(n_out, 0.0);
    for (size_t r = 0; r < n_out; ++r) {
      for (size_t c = 0; c < x.size(); ++c) y[r] += w[r * x.size() + c] * x[c];
    }
    return y;
  };
  const int32_t token = 42;
  const std::vector<double> embd = ReadF32(f, "token_embd.weight");
  std::vector<double> x(embd.begin() + token * n, embd.begin() + (token + 1) * n);
  if (gemma) {
    for (double& v : x) v *= std::sqrt(static_cast<double>(n));
  }
  std::vector<double> v = mul("blk.0.attn_v.weight", norm(x, "blk.0.attn_norm.weight"));
  if (arch == "qwen2") {
    const std::vector<double> bias = ReadF32(f, "blk.0.attn_v.bias");
    for (size_t i = 0; i < v.size(); ++i) v[i] += bias[i];
  }
  std::vector<double> attn(o.n_head * hd);
  for (int head = 0; head < o.n_head; ++head) {
    const int kv_head = head / (o.n_head / o.n_head_kv);
    for (int d = 0; d < hd; ++d) attn[head * hd + d] = v[kv_head * hd + d];
  }
  std::vector<double> attn_out = mul("blk.0.attn_output.weight", attn);
  if (gemma) attn_out = norm(attn_out, "blk.0.post_attention_norm.weight");
  for (int i = 0; i < n; ++i) x[i] += attn_out[i];
  const std::vector<double> h = norm(x, "blk.0.ffn_norm.weight");
  std::vector<double> gate = mul("blk.0.ffn_gate.weight", h);
  const std::vector<double> up = mul("blk.0.ffn_up.weight", h);
  for (size_t i = 0; i < gate.size(); ++i) {
    const double g = gate[i];
    const double act =
        gemma ? 0.5 * g * (1 + std::tanh(0.7978845608028654 * (g + 0.044715 * g * g * g)))
              : g / (1 + std::exp(-g));
    gate[i] = act * up[i];
  }
  std::vector<double> ffn_out = mul("blk.0.ffn_down.weight", gate);
  if (gemma) ffn_out = norm(ffn_out, "blk.0.post_ffw_norm.weight");
  for (int i = 0; i < n; ++i) x[i] += ffn_out[i];
  const std::vector<double> expected = mul("token_embd.weight", norm(x, "output_norm.weight"));

  const std::vector<std::vector<double>> logits = ReferenceForward(path, {token});
  ASSERT_EQ(logits.size(), 1u);
  ASSERT_EQ(logits[0].size(), expected.size());
  for (size_t j = 0; j < expected.size(); ++j) {
    EXPECT_NEAR(logits[0][j], expected[j], 1e-9 * (1 + std::abs(expected[j]))) << "token " << j;
  }
}

TEST(SyntheticModelReference, SlidingWindowLimitsHowFarATokenReaches) {
  // Two sliding layers with a window of 3: position p sees p-2..p in each layer, so token 0
  // reaches positions 0..4 and no further.
  SyntheticModelOptions o = OptionsFor("gemma3");
  o.n_layer = 2;
  o.sliding_window = 3;
  std::vector<int32_t> changed = kTokens;
  changed[0] = 50;
  {
    const std::string path = Write(o, "swa_2layers");
    const auto base = ReferenceForward(path, kTokens);
    const auto other = ReferenceForward(path, changed);
    ASSERT_EQ(base.size(), kTokens.size());
    ASSERT_EQ(other.size(), kTokens.size());
    for (size_t p = 0; p < kTokens.size(); ++p) {
      if (p <= 4) {
        EXPECT_NE(base[p], other[p]) << "position " << p << " is inside the reach";
      } else {
        EXPECT_EQ(base[p], other[p]) << "position " << p << " is outside the reach";
      }
    }
  }
  // With a window longer than the sequence every position sees token 0.
  o.sliding_window = 64;
  {
    const std::string path = Write(o, "swa_wide");
    const auto base = ReferenceForward(path, kTokens);
    const auto other = ReferenceForward(path, changed);
    ASSERT_EQ(base.size(), kTokens.size());
    ASSERT_EQ(other.size(), kTokens.size());
    for (size_t p = 0; p < kTokens.size(); ++p) EXPECT_NE(base[p], other[p]) << p;
  }
  // Six layers: layer 5 is global, so token 0 reaches every position even with window 2
  // (five sliding layers alone would reach only positions 0..5).
  o.n_layer = 6;
  o.sliding_window = 2;
  {
    const std::string path = Write(o, "swa_global");
    const auto base = ReferenceForward(path, kTokens);
    const auto other = ReferenceForward(path, changed);
    ASSERT_EQ(base.size(), kTokens.size());
    ASSERT_EQ(other.size(), kTokens.size());
    for (size_t p = 0; p < kTokens.size(); ++p) EXPECT_NE(base[p], other[p]) << p;
    // The residual stream entering layer 5 (after five sliding layers) still shows the reach.
    const auto trace_base = ReferenceForwardTrace(path, kTokens);
    const auto trace_other = ReferenceForwardTrace(path, changed);
    ASSERT_TRUE(trace_base.ok() && trace_other.ok());
    for (size_t p = 0; p < kTokens.size(); ++p) {
      if (p <= 5) {
        EXPECT_NE(trace_base->hidden[5][p], trace_other->hidden[5][p]) << p;
      } else {
        EXPECT_EQ(trace_base->hidden[5][p], trace_other->hidden[5][p]) << p;
      }
    }
  }
}

TEST(SyntheticModelReference, Gemma3SlidingLayersIgnoreTheGlobalRopeBase) {
  // Sliding layers rotate with base 10000 whatever gemma3.rope.freq_base says; only the global
  // layers (il % 6 == 5) use it. Five layers are all sliding, six include one global layer.
  for (int n_layer : {5, 6}) {
    SyntheticModelOptions a = OptionsFor("gemma3");
    a.n_layer = n_layer;
    a.rope_freq_base = 10000.0;
    SyntheticModelOptions b = a;
    b.rope_freq_base = 1000000.0;
    const std::string suffix = std::to_string(n_layer);
    const auto logits_a = ReferenceForward(Write(a, "base_a" + suffix), kTokens);
    const auto logits_b = ReferenceForward(Write(b, "base_b" + suffix), kTokens);
    ASSERT_EQ(logits_a.size(), kTokens.size());
    ASSERT_EQ(logits_b.size(), kTokens.size());
    for (size_t p = 1; p < kTokens.size(); ++p) {
      if (n_layer == 5) {
        EXPECT_EQ(logits_a[p], logits_b[p]) << "all-sliding model, position " << p;
      } else {
        EXPECT_NE(logits_a[p], logits_b[p]) << "model with a global layer, position " << p;
      }
    }
  }
}

// Copies a GGUF file, multiplying every value of one F32 tensor by `factor`.
std::string CopyWithScaledTensor(const std::string& from, const std::string& name,
                                 const std::string& tensor, float factor) {
  absl::StatusOr<std::unique_ptr<GgufFile>> file = GgufFile::Open(from);
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return "";
  GgufWriter writer;
  for (const auto& [key, value] : (*file)->metadata()) writer.SetValue(key, value);
  bool found = false;
  for (const GgufTensorInfo& info : (*file)->tensors()) {
    std::vector<uint8_t> bytes(info.data, info.data + info.nbytes);
    if (info.name == tensor) {
      EXPECT_EQ(info.type, TensorType::kF32);
      std::vector<float> values(info.num_elements());
      std::memcpy(values.data(), bytes.data(), values.size() * sizeof(float));
      for (float& v : values) v *= factor;
      std::memcpy(bytes.data(), values.data(), values.size() * sizeof(float));
      found = true;
    }
    writer.AddTensor(info.name, info.type, info.dims, std::move(bytes));
  }
  EXPECT_TRUE(found) << tensor;
  const std::string path = TempPath(name);
  const absl::Status written = writer.WriteFile(path);
  EXPECT_TRUE(written.ok()) << written;
  return path;
}

TEST(SyntheticModelReference, Gemma3QkNormsMakeAttentionIndependentOfQkScale) {
  // gemma3 RMS-normalises every query and key head, so scaling Wq or Wk changes nothing (up to
  // eps); llama has no such norms, so the same scaling changes the attention pattern.
  for (const std::string arch : {"gemma3", "llama"}) {
    SyntheticModelOptions o = OptionsFor(arch);
    o.n_layer = 2;
    const std::string path = Write(o, "qknorm_" + arch);
    const auto base = ReferenceForward(path, kTokens);
    ASSERT_EQ(base.size(), kTokens.size());
    for (const std::string tensor : {"blk.1.attn_q.weight", "blk.1.attn_k.weight"}) {
      const auto scaled = ReferenceForward(
          CopyWithScaledTensor(path, "qknorm_scaled_" + arch, tensor, 3.0f), kTokens);
      if (arch == "gemma3") {
        EXPECT_TRUE(LogitsNear(base, scaled, 1e-5)) << tensor;
      } else {
        EXPECT_FALSE(LogitsNear(base, scaled, 1e-3)) << tensor;
      }
    }
  }
}

TEST(SyntheticModelReference, RopeIsIdentityAtPositionZeroAndDiffersByMode) {
  // llama (adjacent pairs) and qwen2 without biases (half-offset pairs) share every weight for the
  // same seed: position 0 (no rotation) must agree exactly, later positions must not.
  SyntheticModelOptions llama = OptionsFor("llama");
  SyntheticModelOptions qwen2 = OptionsFor("llama");
  qwen2.arch = "qwen2";
  qwen2.qkv_bias = false;
  const auto a = ReferenceForward(Write(llama, "rope_llama"), kTokens);
  const auto b = ReferenceForward(Write(qwen2, "rope_qwen2"), kTokens);
  ASSERT_EQ(a.size(), kTokens.size());
  ASSERT_EQ(b.size(), kTokens.size());
  EXPECT_EQ(a[0], b[0]);
  for (size_t p = 1; p < kTokens.size(); ++p) EXPECT_NE(a[p], b[p]) << p;
}

TEST(SyntheticModelReference, QuantisedWeightsStayCloseToF32) {
  SyntheticModelOptions o = OptionsFor("llama");
  o.n_layer = 2;
  o.n_embd = 256;
  o.n_ff = 256;
  o.n_head = 4;  // head_dim 64
  o.n_head_kv = 2;
  const auto f32 = ReferenceForward(Write(o, "quant_f32"), kTokens);
  ASSERT_EQ(f32.size(), kTokens.size());
  struct Case {
    TensorType type;
    double tolerance;
  };
  for (const Case& c : {Case{TensorType::kF16, 5e-3}, Case{TensorType::kQ8_0, 5e-2},
                        Case{TensorType::kQ4_K, 3e-1}}) {
    SyntheticModelOptions q = o;
    q.weight_type = c.type;
    const std::string path = Write(q, std::string("quant_") + kernels::TypeName(c.type));
    absl::StatusOr<std::unique_ptr<GgufFile>> file = GgufFile::Open(path);
    ASSERT_TRUE(file.ok()) << file.status();
    ASSERT_NE((*file)->FindTensor("blk.1.ffn_down.weight"), nullptr);
    EXPECT_EQ((*file)->FindTensor("blk.1.ffn_down.weight")->type, c.type);
    const auto quantised = ReferenceForward(path, kTokens);
    // Close to the F32 model (the reference reads and dequantises every quantised row) ...
    EXPECT_TRUE(LogitsNear(f32, quantised, c.tolerance)) << kernels::TypeName(c.type);
    // ... but not equal to it, so the quantised bytes really were used.
    EXPECT_FALSE(LogitsNear(f32, quantised, 1e-7)) << kernels::TypeName(c.type);
  }
}

TEST(SyntheticModelReference, ReportsErrorsAsStatus) {
  EXPECT_EQ(TryReferenceForward(TempPath("does_not_exist"), {1}).status().code(),
            absl::StatusCode::kNotFound);
  const std::string path = Write(OptionsFor("llama"), "bad_token");
  EXPECT_EQ(TryReferenceForward(path, {1, 96}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SyntheticModelLogitsNear, ScalesTheToleranceByThePositionsLargestLogit) {
  const std::vector<std::vector<double>> expected = {{10.0, -20.0, 0.5}, {0.1, 0.2, 0.3}};
  EXPECT_TRUE(LogitsNear(expected, expected, 0.0));
  // 1e-3 off at a position whose largest |logit| is 20: relative error 5e-5.
  std::vector<std::vector<float>> actual = {{10.001f, -20.0f, 0.5f}, {0.1f, 0.2f, 0.3f}};
  EXPECT_TRUE(LogitsNear(expected, actual, 1e-4));
  EXPECT_FALSE(LogitsNear(expected, actual, 1e-5));
  // Small logits are compared against a scale of at least 1.
  actual = {{10.0f, -20.0f, 0.5f}, {0.1f, 0.2f, 0.3005f}};
  EXPECT_TRUE(LogitsNear(expected, actual, 1e-3));
  EXPECT_FALSE(LogitsNear(expected, actual, 1e-4));
  actual[1][0] = NAN;
  EXPECT_FALSE(LogitsNear(expected, actual, 1.0));
  actual.pop_back();
  EXPECT_FALSE(LogitsNear(expected, actual, 1.0));
}

}  // namespace
}  // namespace exo::runtime::synthetic
