#include "runtime/stage.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/ops.h"
#include "runtime/arch/layers.h"
#include "runtime/internal/transformer_blocks.h"

namespace exo::runtime {

absl::StatusOr<std::unique_ptr<Stage>> Stage::Create(const GgufFile& file,
                                                     const StageOptions& options) {
  ASSIGN_OR_RETURN(ModelConfig config, ReadModelConfig(file));
  if (options.layers.begin == 0 && options.layers.end == 0 && !options.has_embedding &&
      !options.has_head) {
    return absl::InvalidArgumentError(
        "a stage needs at least one layer, the embedding or the head");
  }
  if (options.context <= 0 || options.max_batch_tokens <= 0 || options.num_slots <= 0 ||
      options.max_logit_rows <= 0) {
    return absl::InvalidArgumentError(
        "stage options: context, max_batch_tokens, max_logit_rows and num_slots must be positive");
  }
  ASSIGN_OR_RETURN(StageWeights weights, LoadStageWeights(file, config, options.layers,
                                                          options.has_embedding, options.has_head));
  return std::unique_ptr<Stage>(new Stage(config, options, std::move(weights)));
}

Stage::Stage(const ModelConfig& config, const StageOptions& options, StageWeights weights)
    : config_(config),
      options_(options),
      weights_(std::move(weights)),
      kv_(config, options.layers, options.context, options.max_batch_tokens, options.num_slots),
      cached_length_(options.num_slots, 0) {
  const size_t b = options.max_batch_tokens;
  const ModelConfig& c = config_;
  x_.resize(b * c.n_embd);
  norm_.resize(b * c.n_embd);
  q_.resize(b * c.n_head * c.head_dim);
  k_.resize(b * c.n_embd_k_gqa());
  v_.resize(b * c.n_embd_v_gqa());
  attn_.resize(b * c.n_head * c.head_dim_v);
  proj_.resize(b * c.n_embd);
  gate_.resize(b * c.n_ff);
  up_.resize(b * c.n_ff);
  // The most positions one batch can see: the whole context (full-attention layers).
  attn_keys_.resize(size_t(options.context) * c.n_embd_k_gqa());
  attn_values_.resize(size_t(options.context) * c.n_embd_v_gqa());
  const size_t pairs = c.rope_dim / 2;
  for (auto* table : {&rope_cos_, &rope_sin_, &rope_cos_swa_, &rope_sin_swa_}) {
    table->resize(b * pairs);
  }
  if (options.has_head) {
    logits_.resize(size_t(std::min(options.max_logit_rows, options.max_batch_tokens)) * c.n_vocab);
  }
}

absl::StatusOr<absl::Span<const float>> Stage::Forward(const StageInput& in, LogitsMode mode) {
  const ModelConfig& c = config_;
  // ---- Validate the request: nothing below may fail part-way. -------------------------------
  if (in.slot < 0 || in.slot >= options_.num_slots) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV slot ", in.slot, " is out of range [0, ", options_.num_slots, ")"));
  }
  int64_t n = 0;
  if (options_.has_embedding) {
    n = static_cast<int64_t>(in.tokens.size());
    for (int32_t token : in.tokens) {
      if (token < 0 || token >= c.n_vocab) {
        return absl::InvalidArgumentError(
            absl::StrCat("token id ", token, " is outside the vocabulary [0, ", c.n_vocab, ")"));
      }
    }
  } else {
    if (in.hidden.size() % c.n_embd != 0) {
      return absl::InvalidArgumentError(absl::StrCat("hidden state of ", in.hidden.size(),
                                                     " floats is not a whole number of rows of ",
                                                     c.n_embd));
    }
    n = static_cast<int64_t>(in.hidden.size() / c.n_embd);
  }
  if (n <= 0 || n > options_.max_batch_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("a batch must have 1 to ", options_.max_batch_tokens, " tokens, got ", n));
  }
  const int32_t cached = cached_length_[in.slot];
  if (in.first_position < 0 || in.first_position > cached) {
    return absl::FailedPreconditionError(absl::StrCat("batch starts at position ",
                                                      in.first_position, " but slot ", in.slot,
                                                      " holds ", cached, " positions"));
  }
  if (in.first_position + n > options_.context) {
    return absl::OutOfRangeError(absl::StrCat("sequence of ", in.first_position + n,
                                              " tokens exceeds the context of ", options_.context,
                                              " tokens"));
  }
  if (!CanRollBack(in.slot, in.first_position)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot roll slot ", in.slot, " back from ", cached, " to ", in.first_position,
        " positions: the sliding-window cache no longer holds them; replay the sequence"));
  }
  if (mode == LogitsMode::kAll && options_.has_head &&
      n > static_cast<int64_t>(logits_.size() / c.n_vocab)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "logits for all ", n, " rows requested, at most ", logits_.size() / c.n_vocab, " allowed"));
  }

  // ---- Input: token embeddings or the previous stage's hidden states. ------------------------
  const int32_t rows = static_cast<int32_t>(n);
  if (options_.has_embedding) {
    const TensorView& e = weights_.token_embd;
    for (int32_t r = 0; r < rows; ++r) {
      float* row = x_.data() + int64_t{r} * c.n_embd;
      kernels::GetRow(e.type, e.data, e.cols, in.tokens[r], row);
      if (c.embedding_scale != 1.0f) {
        for (int32_t i = 0; i < c.n_embd; ++i) row[i] *= c.embedding_scale;
      }
    }
  } else {
    std::copy(in.hidden.begin(), in.hidden.end(), x_.begin());
  }

  // ---- Layers. --------------------------------------------------------------------------------
  internal::RopeTables(
      c, c.rope_base, c.rope_freq_scale,
      weights_.rope_freq_factors.empty() ? nullptr : weights_.rope_freq_factors.data(),
      in.first_position, rows, rope_cos_.data(), rope_sin_.data());
  if (c.sliding_window > 0) {
    internal::RopeTables(c, c.rope_base_swa, c.rope_freq_scale_swa, nullptr, in.first_position,
                         rows, rope_cos_swa_.data(), rope_sin_swa_.data());
  }
  for (int32_t l = 0; l < options_.layers.end - options_.layers.begin; ++l) {
    RunLayer(l, in.slot, in.first_position, rows);
  }
  cached_length_[in.slot] = in.first_position + rows;

  if (!options_.has_head) {
    return absl::Span<const float>(x_.data(), size_t(rows) * c.n_embd);
  }

  // ---- Head: final norm and logits for the last row (or every row). --------------------------
  const int32_t first_row = mode == LogitsMode::kAll ? 0 : rows - 1;
  const int32_t out_rows = rows - first_row;
  const float* last = x_.data() + int64_t{first_row} * c.n_embd;
  internal::NormRows(last, weights_.output_norm, out_rows, c.rms_eps, norm_.data());
  internal::Linear(weights_.output, norm_.data(), out_rows, logits_.data(), options_.pool);
  const size_t count = size_t(out_rows) * c.n_vocab;
  if (c.final_logit_softcap > 0) {
    const float cap = c.final_logit_softcap;
    for (size_t i = 0; i < count; ++i) logits_[i] = cap * std::tanh(logits_[i] / cap);
  }
  return absl::Span<const float>(logits_.data(), count);
}

uint64_t Stage::weight_bytes_per_token() const {
  uint64_t bytes = weight_bytes();
  const TensorView& embd = weights_.token_embd;
  if (embd.present() && weights_.output.data != embd.data) {
    bytes -= embd.nbytes;
    bytes += embd.nbytes / embd.rows;
  }
  return bytes;
}

bool Stage::CanRollBack(int32_t slot, int32_t position) const {
  const int32_t cached = cached_length_[slot];
  if (position >= cached) return true;
  for (int32_t l = 0; l < options_.layers.end - options_.layers.begin; ++l) {
    const int32_t il = options_.layers.begin + l;
    // Full-attention layers hold every position; a ring must still hold the window before it.
    if (kv_.capacity(l) >= options_.context) continue;
    const int32_t needed =
        config_.layer_is_swa[il] ? std::max(0, position - config_.sliding_window + 1) : 0;
    if (needed < kv_.OldestHeld(l, cached - 1)) return false;
  }
  return true;
}

void Stage::RunLayer(int32_t local_layer, int32_t slot, int32_t first_position, int32_t n) {
  const int32_t layer = options_.layers.begin + local_layer;
  const bool swa = config_.sliding_window > 0 && config_.layer_is_swa[layer];
  internal::LayerContext ctx{&config_,
                             layer,
                             local_layer,
                             slot,
                             first_position,
                             n,
                             &kv_,
                             options_.pool,
                             swa ? rope_cos_swa_.data() : rope_cos_.data(),
                             swa ? rope_sin_swa_.data() : rope_sin_.data()};
  internal::LayerScratch s{norm_.data(),      q_.data(),          k_.data(),    v_.data(),
                           attn_.data(),      proj_.data(),       gate_.data(), up_.data(),
                           attn_keys_.data(), attn_values_.data()};
  const LayerWeights& w = weights_.layers[local_layer];
  switch (config_.arch) {
    case Architecture::kLlama:
    case Architecture::kQwen2:
      arch::LlamaLayer(ctx, w, s, x_.data());
      break;
    case Architecture::kGemma3:
      arch::Gemma3Layer(ctx, w, s, x_.data());
      break;
  }
}

}  // namespace exo::runtime
