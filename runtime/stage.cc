#include "runtime/stage.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
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
      cached_length_(options.num_slots, 0),
      sequences_(std::min(options.num_slots, options.max_batch_tokens)),
      row_sequence_(options.max_batch_tokens),
      slot_in_batch_(options.num_slots, 0) {
  const size_t b = options.max_batch_tokens;
  const ModelConfig& c = config_;
  x_.Allocate(b * c.n_embd);
  norm_.Allocate(b * c.n_embd);
  q_.Allocate(b * c.n_head * c.head_dim);
  k_.Allocate(b * c.n_embd_k_gqa());
  v_.Allocate(b * c.n_embd_v_gqa());
  attn_.Allocate(b * c.n_head * c.head_dim_v);
  proj_.Allocate(b * c.n_embd);
  gate_.Allocate(b * c.n_ff);
  up_.Allocate(b * c.n_ff);
  // The most positions one batch can see: the whole context (full-attention layers).
  const size_t pairs = c.rope_dim / 2;
  for (auto* table : {&rope_cos_, &rope_sin_, &rope_cos_swa_, &rope_sin_swa_}) {
    table->resize(b * pairs);
  }
  if (options.has_head) {
    logits_.Allocate(size_t(std::min(options.max_logit_rows, options.max_batch_tokens)) *
                     c.n_vocab);
  }
}

absl::StatusOr<absl::Span<const float>> Stage::Forward(const StageInput& in, LogitsMode mode) {
  BatchSegment segment;
  segment.slot = in.slot;
  segment.first_position = in.first_position;
  segment.n_tokens = static_cast<int32_t>(
      options_.has_embedding ? in.tokens.size() : in.hidden.size() / std::max(1, config_.n_embd));
  segment.logits = mode;
  if (!options_.has_embedding && in.hidden.size() % config_.n_embd != 0) {
    return absl::InvalidArgumentError(absl::StrCat("hidden state of ", in.hidden.size(),
                                                   " floats is not a whole number of rows of ",
                                                   config_.n_embd));
  }
  return ForwardBatch(absl::MakeConstSpan(&segment, 1), in.tokens, in.hidden);
}

int32_t Stage::max_logit_rows() const {
  return options_.has_head ? static_cast<int32_t>(logits_.size() / config_.n_vocab) : 0;
}

absl::Status Stage::ValidateBatch(absl::Span<const BatchSegment> segments,
                                  absl::Span<const int32_t> tokens,
                                  absl::Span<const float> hidden) {
  const ModelConfig& c = config_;
  if (segments.empty()) return absl::InvalidArgumentError("a batch needs at least one sequence");
  int64_t total = 0;
  int64_t logit_rows = 0;
  std::fill(slot_in_batch_.begin(), slot_in_batch_.end(), 0);
  for (const BatchSegment& seg : segments) {
    if (seg.slot < 0 || seg.slot >= options_.num_slots) {
      return absl::InvalidArgumentError(
          absl::StrCat("KV slot ", seg.slot, " is out of range [0, ", options_.num_slots, ")"));
    }
    if (slot_in_batch_[seg.slot]) {
      return absl::InvalidArgumentError(
          absl::StrCat("KV slot ", seg.slot, " appears twice in one batch"));
    }
    slot_in_batch_[seg.slot] = 1;
    if (seg.n_tokens <= 0 || seg.n_tokens > options_.max_batch_tokens) {
      return absl::InvalidArgumentError(absl::StrCat(
          "a batch must have 1 to ", options_.max_batch_tokens, " tokens, got ", seg.n_tokens));
    }
    const int32_t cached = cached_length_[seg.slot];
    if (seg.first_position < 0 || seg.first_position > cached) {
      return absl::FailedPreconditionError(absl::StrCat("batch starts at position ",
                                                        seg.first_position, " but slot ", seg.slot,
                                                        " holds ", cached, " positions"));
    }
    if (int64_t{seg.first_position} + seg.n_tokens > options_.context) {
      return absl::OutOfRangeError(
          absl::StrCat("sequence of ", int64_t{seg.first_position} + seg.n_tokens,
                       " tokens exceeds the context of ", options_.context, " tokens"));
    }
    if (!CanRollBack(seg.slot, seg.first_position)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot roll slot ", seg.slot, " back from ", cached, " to ", seg.first_position,
          " positions: the sliding-window cache no longer holds them; replay the sequence"));
    }
    total += seg.n_tokens;
    logit_rows += seg.logits == LogitsMode::kAll ? seg.n_tokens : 1;
  }
  if (total > options_.max_batch_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("a batch must have 1 to ", options_.max_batch_tokens, " tokens, got ", total));
  }
  if (options_.has_head && logit_rows > max_logit_rows()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "logits for ", logit_rows, " rows requested, at most ", max_logit_rows(), " allowed"));
  }
  if (options_.has_embedding) {
    if (static_cast<int64_t>(tokens.size()) != total) {
      return absl::InvalidArgumentError(absl::StrCat("the batch's sequences have ", total,
                                                     " tokens but ", tokens.size(),
                                                     " token ids were given"));
    }
    for (int32_t token : tokens) {
      if (token < 0 || token >= c.n_vocab) {
        return absl::InvalidArgumentError(
            absl::StrCat("token id ", token, " is outside the vocabulary [0, ", c.n_vocab, ")"));
      }
    }
  } else if (static_cast<int64_t>(hidden.size()) != total * c.n_embd) {
    return absl::InvalidArgumentError(
        absl::StrCat("the batch's sequences have ", total, " tokens, so the hidden state needs ",
                     total * c.n_embd, " floats (", c.n_embd, " per token), got ", hidden.size()));
  }
  return absl::OkStatus();
}

absl::StatusOr<absl::Span<const float>> Stage::ForwardBatch(absl::Span<const BatchSegment> segments,
                                                            absl::Span<const int32_t> tokens,
                                                            absl::Span<const float> hidden) {
  const ModelConfig& c = config_;
  // ---- Validate the request: nothing below may fail part-way. -------------------------------
  RETURN_IF_ERROR(ValidateBatch(segments, tokens, hidden));

  // ---- Where each sequence's rows sit. --------------------------------------------------------
  const int32_t n_sequences = static_cast<int32_t>(segments.size());
  int32_t rows = 0;
  for (int32_t i = 0; i < n_sequences; ++i) {
    const BatchSegment& seg = segments[i];
    sequences_[i] = SequenceRows{seg.slot, seg.first_position, rows, seg.n_tokens};
    std::fill_n(row_sequence_.begin() + rows, seg.n_tokens, i);
    rows += seg.n_tokens;
  }
  n_sequences_ = n_sequences;

  // ---- Input: token embeddings or the previous stage's hidden states. ------------------------
  if (options_.has_embedding) {
    const TensorView& e = weights_.token_embd;
    for (int32_t r = 0; r < rows; ++r) {
      float* row = x_.data() + int64_t{r} * c.n_embd;
      kernels::GetRow(e.type, e.data, e.cols, tokens[r], row);
      if (c.embedding_scale != 1.0f) {
        for (int32_t i = 0; i < c.n_embd; ++i) row[i] *= c.embedding_scale;
      }
    }
  } else {
    std::copy(hidden.begin(), hidden.end(), x_.data());
  }

  // ---- Layers. --------------------------------------------------------------------------------
  const int32_t pairs = c.rope_dim / 2;
  for (int32_t i = 0; i < n_sequences; ++i) {
    const SequenceRows& seq = sequences_[i];
    const size_t offset = size_t(seq.row_begin) * pairs;
    internal::RopeTables(
        c, c.rope_base, c.rope_freq_scale,
        weights_.rope_freq_factors.empty() ? nullptr : weights_.rope_freq_factors.data(),
        seq.first_position, seq.n, rope_cos_.data() + offset, rope_sin_.data() + offset);
    if (c.sliding_window > 0) {
      internal::RopeTables(c, c.rope_base_swa, c.rope_freq_scale_swa, nullptr, seq.first_position,
                           seq.n, rope_cos_swa_.data() + offset, rope_sin_swa_.data() + offset);
    }
  }
  for (int32_t l = 0; l < options_.layers.end - options_.layers.begin; ++l) RunLayer(l, rows);
  for (const BatchSegment& seg : segments) {
    cached_length_[seg.slot] = seg.first_position + seg.n_tokens;
  }

  if (!options_.has_head) {
    return absl::Span<const float>(x_.data(), size_t(rows) * c.n_embd);
  }

  // ---- Head: final norm and logits for each sequence's last row (or every row). --------------
  int32_t out_rows = 0;
  for (int32_t i = 0; i < n_sequences; ++i) {
    const SequenceRows& seq = sequences_[i];
    const int32_t first = segments[i].logits == LogitsMode::kAll ? 0 : seq.n - 1;
    const int32_t count = seq.n - first;
    internal::NormRows(x_.data() + int64_t{seq.row_begin + first} * c.n_embd, weights_.output_norm,
                       count, c.rms_eps, norm_.data() + int64_t{out_rows} * c.n_embd);
    out_rows += count;
  }
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

void Stage::RunLayer(int32_t local_layer, int32_t n) {
  const int32_t layer = options_.layers.begin + local_layer;
  const bool swa = config_.sliding_window > 0 && config_.layer_is_swa[layer];
  internal::LayerContext ctx{&config_,
                             layer,
                             local_layer,
                             sequences_.data(),
                             n_sequences_,
                             row_sequence_.data(),
                             n,
                             &kv_,
                             options_.pool,
                             swa ? rope_cos_swa_.data() : rope_cos_.data(),
                             swa ? rope_sin_swa_.data() : rope_sin_.data()};
  internal::LayerScratch s{norm_.data(), q_.data(),    k_.data(),    v_.data(),
                           attn_.data(), proj_.data(), gate_.data(), up_.data()};
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
