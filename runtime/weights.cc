#include "runtime/weights.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace exo::runtime {
namespace {

std::string ShapeString(const std::vector<int64_t>& dims) {
  return absl::StrCat("[", absl::StrJoin(dims, ", "), "]");
}

// Looks up `name` and checks it is a matrix of `rows` x `cols` (ggml dims {cols, rows}) or a
// vector of `cols` (rows == 0) with a type the kernels can run.
absl::StatusOr<TensorView> Find(const GgufFile& file, const std::string& name, int64_t cols,
                                int64_t rows, bool optional = false) {
  const GgufTensorInfo* info = file.FindTensor(name);
  if (info == nullptr) {
    if (optional) return TensorView{};
    return absl::InvalidArgumentError(absl::StrCat("model is missing tensor '", name, "'"));
  }
  std::vector<int64_t> want =
      rows == 0 ? std::vector<int64_t>{cols} : std::vector<int64_t>{cols, rows};
  if (info->dims != want) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' has shape ",
                                                   ShapeString(info->dims), ", expected ",
                                                   ShapeString(want)));
  }
  const kernels::TypeInfo& type = kernels::GetTypeInfo(info->type);
  if (!type.supported) {
    return absl::UnimplementedError(absl::StrCat(
        "tensor '", name, "' has type ", type.name,
        ", which exo-node cannot run (supported: F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q4_K Q5_K "
        "Q6_K)"));
  }
  if (rows == 0 && info->type != kernels::TensorType::kF32) {
    return absl::UnimplementedError(absl::StrCat("tensor '", name, "' is a ", type.name,
                                                 " vector; only F32 vectors are supported"));
  }
  TensorView view;
  view.type = info->type;
  view.data = info->data;
  view.cols = cols;
  view.rows = rows == 0 ? 1 : rows;
  view.nbytes = info->nbytes;
  return view;
}

}  // namespace

absl::StatusOr<StageWeights> LoadStageWeights(const GgufFile& file, const ModelConfig& c,
                                              LayerRange range, bool has_embedding, bool has_head) {
  if (range.begin < 0 || range.end > c.n_layer || range.begin > range.end) {
    return absl::InvalidArgumentError(absl::StrCat("layer range [", range.begin, ", ", range.end,
                                                   ") is outside the model's ", c.n_layer,
                                                   " layers"));
  }
  StageWeights w;
  const int64_t embd = c.n_embd;
  if (has_embedding || has_head) {
    ASSIGN_OR_RETURN(w.token_embd, Find(file, "token_embd.weight", embd, c.n_vocab));
  }
  if (has_head) {
    ASSIGN_OR_RETURN(w.output_norm, Find(file, "output_norm.weight", embd, 0));
    ASSIGN_OR_RETURN(w.output, Find(file, "output.weight", embd, c.n_vocab, /*optional=*/true));
    if (!w.output.present()) w.output = w.token_embd;  // tied embeddings
  }
  if (!has_embedding) w.token_embd = TensorView{};
  if (const GgufTensorInfo* freqs = file.FindTensor("rope_freqs.weight")) {
    ASSIGN_OR_RETURN(TensorView view, Find(file, "rope_freqs.weight", c.rope_dim / 2, 0));
    w.rope_freq_factors.assign(view.f32(), view.f32() + view.cols);
    (void)freqs;
  }

  const int64_t q_dim = int64_t{c.n_head} * c.head_dim;
  const int64_t k_dim = c.n_embd_k_gqa();
  const int64_t v_dim = c.n_embd_v_gqa();
  const int64_t attn_out_dim = int64_t{c.n_head} * c.head_dim_v;
  for (int32_t il = range.begin; il < range.end; ++il) {
    const std::string p = absl::StrCat("blk.", il, ".");
    LayerWeights l;
    ASSIGN_OR_RETURN(l.attn_norm, Find(file, p + "attn_norm.weight", embd, 0));
    ASSIGN_OR_RETURN(l.wq, Find(file, p + "attn_q.weight", embd, q_dim));
    ASSIGN_OR_RETURN(l.wk, Find(file, p + "attn_k.weight", embd, k_dim));
    ASSIGN_OR_RETURN(l.wv, Find(file, p + "attn_v.weight", embd, v_dim));
    ASSIGN_OR_RETURN(l.wo, Find(file, p + "attn_output.weight", attn_out_dim, embd));
    if (c.has_qkv_bias) {
      ASSIGN_OR_RETURN(l.bq, Find(file, p + "attn_q.bias", q_dim, 0));
      ASSIGN_OR_RETURN(l.bk, Find(file, p + "attn_k.bias", k_dim, 0));
      ASSIGN_OR_RETURN(l.bv, Find(file, p + "attn_v.bias", v_dim, 0));
    }
    if (c.has_qk_norm) {
      ASSIGN_OR_RETURN(l.q_norm, Find(file, p + "attn_q_norm.weight", c.head_dim, 0));
      ASSIGN_OR_RETURN(l.k_norm, Find(file, p + "attn_k_norm.weight", c.head_dim, 0));
    }
    if (c.has_post_norms) {
      ASSIGN_OR_RETURN(l.post_attention_norm,
                       Find(file, p + "post_attention_norm.weight", embd, 0));
      ASSIGN_OR_RETURN(l.post_ffw_norm, Find(file, p + "post_ffw_norm.weight", embd, 0));
    }
    ASSIGN_OR_RETURN(l.ffn_norm, Find(file, p + "ffn_norm.weight", embd, 0));
    ASSIGN_OR_RETURN(l.ffn_gate, Find(file, p + "ffn_gate.weight", embd, c.n_ff));
    ASSIGN_OR_RETURN(l.ffn_up, Find(file, p + "ffn_up.weight", embd, c.n_ff));
    ASSIGN_OR_RETURN(l.ffn_down, Find(file, p + "ffn_down.weight", c.n_ff, embd));
    w.layers.push_back(l);
  }
  return w;
}

uint64_t StageWeightBytes(const StageWeights& w) {
  uint64_t total = w.token_embd.nbytes + w.output_norm.nbytes;
  if (w.output.data != w.token_embd.data) total += w.output.nbytes;
  for (const LayerWeights& l : w.layers) {
    for (const TensorView* t : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.bq, &l.bk, &l.bv, &l.q_norm,
                                &l.k_norm, &l.wo, &l.post_attention_norm, &l.ffn_norm, &l.ffn_gate,
                                &l.ffn_up, &l.ffn_down, &l.post_ffw_norm}) {
      total += t->nbytes;
    }
  }
  return total;
}

}  // namespace exo::runtime
