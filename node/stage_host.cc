#include "node/stage_host.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/quants.h"

namespace exo::node {

int32_t WireDTypeSize(int32_t dtype) {
  switch (dtype) {
    case static_cast<int32_t>(WireDType::kF32):
      return 4;
    case static_cast<int32_t>(WireDType::kF16):
    case static_cast<int32_t>(WireDType::kBf16):
      return 2;
    default:
      return 0;
  }
}

absl::StatusOr<std::unique_ptr<StageHost>> StageHost::Create(const runtime::GgufFile& file,
                                                             const StageHostOptions& options) {
  if (options.max_sequences < 1 || options.max_sequences > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_sequences must be 1 to 1024, got ", options.max_sequences));
  }
  if (options.context < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("context must be at least 1, got ", options.context));
  }
  runtime::StageOptions so;
  so.layers = options.layers;
  so.has_embedding = options.has_embedding;
  so.has_head = options.has_head;
  so.context = options.context;
  so.max_batch_tokens = options.max_batch_tokens;
  so.max_logit_rows = std::max(16, options.max_sequences);
  so.num_slots = options.max_sequences;
  so.pool = options.pool;
  ASSIGN_OR_RETURN(std::unique_ptr<runtime::Stage> stage, runtime::Stage::Create(file, so));
  return std::unique_ptr<StageHost>(new StageHost(file, options, std::move(stage)));
}

StageHost::StageHost(const runtime::GgufFile& file, const StageHostOptions& options,
                     std::unique_ptr<runtime::Stage> stage)
    : options_(options), stage_(std::move(stage)) {
  const runtime::ModelConfig& c = stage_->config();
  slot_used_.assign(options_.max_sequences, 0);
  batch_tokens_.resize(options_.max_batch_tokens);
  batch_hidden_.resize(static_cast<size_t>(options_.max_batch_tokens) * c.n_embd);
  if (options_.has_head) {
    logits_scratch_.resize(c.n_vocab);
    verifier_ = std::make_unique<runtime::DraftRowVerifier>(c.n_vocab);
  }
}

int32_t StageHost::max_draft_tokens() const {
  return std::max(0, std::min(kMaxDraftTokens, options_.max_batch_tokens - 1));
}

int32_t StageHost::FreeSlots() const {
  return static_cast<int32_t>(std::count(slot_used_.begin(), slot_used_.end(), 0));
}

void StageHost::Release(uint64_t sequence_id) {
  auto it = sequences_.find(sequence_id);
  if (it == sequences_.end()) return;
  stage_->ResetSlot(it->second.slot);
  slot_used_[it->second.slot] = 0;
  sequences_.erase(it);
}

void StageHost::CancelAll() {
  while (!sequences_.empty()) Release(sequences_.begin()->first);
}

absl::Status StageHost::Validate(const StageFrame& f, int32_t reserved_slots) const {
  const runtime::ModelConfig& c = stage_->config();
  if (f.plan_epoch != options_.plan_epoch) {
    return absl::FailedPreconditionError(
        absl::StrCat("frame of sequence ", f.sequence_id, " is for plan epoch ", f.plan_epoch,
                     " but this stage serves epoch ", options_.plan_epoch,
                     "; send LoadShard for the current plan or use its epoch"));
  }
  if (!f.draft_tokens.empty()) RETURN_IF_ERROR(ValidateDrafts(f));
  if (f.token_count < 0 || (f.token_count == 0 && !f.end_of_sequence)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "token_count must be positive (0 only with end_of_sequence), got ", f.token_count));
  }
  if (f.token_count > options_.max_batch_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("a frame may carry at most ",
                                                   options_.max_batch_tokens, " tokens, got ",
                                                   f.token_count, "; split the prompt in chunks"));
  }
  const int32_t element_size = WireDTypeSize(f.dtype);
  if (element_size == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported hidden dtype ", f.dtype,
                     "; this stage accepts DTYPE_F32 (1), DTYPE_F16 (2) and DTYPE_BF16 (3)"));
  }
  // Token ids: the embedding needs them; the last stage keeps them as sampling history.
  const bool tokens_required = options_.has_embedding || options_.has_head;
  if (tokens_required || !f.tokens.empty()) {
    if (static_cast<int64_t>(f.tokens.size() + f.draft_tokens.size()) != f.token_count) {
      return absl::InvalidArgumentError(
          absl::StrCat("frame has token_count ", f.token_count, " but ", f.tokens.size(),
                       " token ids", tokens_required ? " (this stage needs them)" : ""));
    }
    for (int32_t token : f.tokens) {
      if (token < 0 || token >= c.n_vocab) {
        return absl::InvalidArgumentError(
            absl::StrCat("token id ", token, " is outside the vocabulary [0, ", c.n_vocab, ")"));
      }
    }
  }
  if (options_.has_embedding) {
    if (!f.hidden.empty() || !f.shape.empty()) {
      return absl::InvalidArgumentError(
          "this stage holds the embedding and takes token ids, but the frame carries a hidden "
          "state");
    }
  } else if (f.token_count > 0) {
    if (f.shape.size() != 2 || f.shape[0] != f.token_count || f.shape[1] != c.n_embd) {
      std::string got;
      for (size_t i = 0; i < f.shape.size() && i < 8; ++i) {
        absl::StrAppend(&got, i ? ", " : "", f.shape[i]);
      }
      if (f.shape.size() > 8) absl::StrAppend(&got, ", ...");
      return absl::InvalidArgumentError(absl::StrCat("hidden state shape must be [", f.token_count,
                                                     ", ", c.n_embd, "], got [", got, "]"));
    }
    const uint64_t expected = uint64_t(f.token_count) * uint64_t(c.n_embd) * element_size;
    if (f.hidden.size() != expected) {
      return absl::InvalidArgumentError(absl::StrCat("hidden state of shape [", f.token_count, ", ",
                                                     c.n_embd, "] in dtype ", f.dtype, " needs ",
                                                     expected, " bytes, got ", f.hidden.size()));
    }
  } else if (!f.hidden.empty()) {
    return absl::InvalidArgumentError("a cancel frame (token_count 0) carries no hidden state");
  }
  if (f.kv_keep_length != 0 && f.kv_keep_length != f.first_position) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv_keep_length ", f.kv_keep_length, " must equal first_position ",
                     f.first_position, " (the cache is rolled back to where the frame starts)"));
  }
  if (f.first_position < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("first_position must be 0 or more, got ", f.first_position));
  }
  if (f.token_count == 0) return absl::OkStatus();  // a cancel: nothing else matters
  if (int64_t{f.first_position} + f.token_count > options_.context) {
    return absl::OutOfRangeError(absl::StrCat(
        "positions ", f.first_position, " to ", int64_t{f.first_position} + f.token_count,
        " exceed this stage's context of ", options_.context, " tokens"));
  }
  auto it = sequences_.find(f.sequence_id);
  if (it == sequences_.end()) {
    if (f.first_position != 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "sequence ", f.sequence_id,
          " is not running on this stage (never started, ended or cancelled); start it at "
          "position 0, got first_position ",
          f.first_position));
    }
    if (FreeSlots() - reserved_slots <= 0) {
      return absl::ResourceExhaustedError(
          absl::StrCat("all ", options_.max_sequences,
                       " sequence slots of this stage are busy; retry when a sequence ends"));
    }
    if (options_.has_head) {
      RETURN_IF_ERROR(runtime::ValidateSamplingParams(f.sampling.params));
      if (f.sampling.top_logprobs < 0 || f.sampling.top_logprobs > kMaxTopLogprobs) {
        return absl::InvalidArgumentError(absl::StrCat(
            "top_logprobs must be 0 to ", kMaxTopLogprobs, ", got ", f.sampling.top_logprobs));
      }
    }
    return absl::OkStatus();
  }
  const int32_t slot = it->second.slot;
  const int32_t cached = stage_->cached_length(slot);
  if (f.first_position > cached) {
    return absl::FailedPreconditionError(absl::StrCat(
        "frame of sequence ", f.sequence_id, " starts at position ", f.first_position,
        " but this stage holds ", cached, " positions of it; frames must be contiguous"));
  }
  if (f.first_position < cached && f.first_position > 0 &&
      !stage_->CanRollBack(slot, f.first_position)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot roll sequence ", f.sequence_id, " back from ", cached, " to ", f.first_position,
        " positions: the sliding-window cache no longer holds them; replay it from position 0"));
  }
  return absl::OkStatus();
}

absl::Status StageHost::ValidateDrafts(const StageFrame& f) const {
  const int64_t n = static_cast<int64_t>(f.draft_tokens.size());
  if (n > max_draft_tokens()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a frame may carry at most ", max_draft_tokens(), " draft tokens (the last stage verifies ",
        max_draft_tokens() + 1, " rows per pass), got ", n, "; draft fewer"));
  }
  const int32_t n_vocab = stage_->config().n_vocab;
  for (int32_t token : f.draft_tokens) {
    if (token < 0 || token >= n_vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("draft token id ", token, " is outside the vocabulary [0, ", n_vocab, ")"));
    }
  }
  if (f.tokens.size() != 1 || f.token_count != 1 + n) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a frame with ", n,
        " draft tokens carries exactly one token id before them (the "
        "sequence's last token) and token_count ",
        1 + n, "; got ", f.tokens.size(), " token ids and token_count ", f.token_count));
  }
  if (f.no_sample) {
    return absl::InvalidArgumentError(
        "a frame with draft tokens cannot be no_sample: the last stage must verify them");
  }
  return absl::OkStatus();
}

absl::Status StageHost::DecodeHidden(const StageFrame& f, float* out) const {
  const size_t n = f.hidden.size() / WireDTypeSize(f.dtype);
  const auto* bytes = reinterpret_cast<const uint8_t*>(f.hidden.data());
  const int32_t n_embd = stage_->config().n_embd;
  for (size_t i = 0; i < n; ++i) {
    float v;
    if (f.dtype == static_cast<int32_t>(WireDType::kF32)) {
      std::memcpy(&v, bytes + 4 * i, 4);
    } else {
      uint16_t h;
      std::memcpy(&h, bytes + 2 * i, 2);
      v = f.dtype == static_cast<int32_t>(WireDType::kF16) ? kernels::Fp16ToFp32(h)
                                                           : kernels::Bf16ToFp32(h);
    }
    if (!(std::fabs(v) <= kMaxHiddenMagnitude)) {  // also catches NaN
      return absl::InvalidArgumentError(
          absl::StrCat("hidden state value at row ", i / n_embd, ", column ", i % n_embd, " is ", v,
                       ": not finite or beyond ", kMaxHiddenMagnitude, " (corrupt frame?)"));
    }
    out[i] = v;
  }
  return absl::OkStatus();
}

absl::Status StageHost::EncodeHidden(const float* rows, int32_t n_rows, int32_t dtype,
                                     std::string* out) const {
  const size_t n = size_t(n_rows) * stage_->config().n_embd;
  if (dtype == static_cast<int32_t>(WireDType::kF16)) {
    out->resize(n * 2);
    for (size_t i = 0; i < n; ++i) {
      if (!(std::fabs(rows[i]) <= 65504.0f)) {
        return absl::OutOfRangeError(absl::StrCat("hidden state value ", rows[i],
                                                  " does not fit in f16 (this model's activations "
                                                  "exceed 65504); use f32 or bf16 hidden states"));
      }
      const uint16_t h = kernels::Fp32ToFp16(rows[i]);
      std::memcpy(out->data() + 2 * i, &h, 2);
    }
  } else if (dtype == static_cast<int32_t>(WireDType::kBf16)) {
    out->resize(n * 2);
    for (size_t i = 0; i < n; ++i) {
      const uint16_t h = kernels::Fp32ToBf16(rows[i]);
      std::memcpy(out->data() + 2 * i, &h, 2);
    }
  } else {
    out->resize(n * 4);
    std::memcpy(out->data(), rows, n * 4);
  }
  return absl::OkStatus();
}

void StageHost::SampleOrVerify(const StageFrame& f, const float* logits, Sequence& s,
                               StageOutput& out) {
  const int32_t n_vocab = stage_->config().n_vocab;
  // The history holds the tokens of every position up to the frame's first; a rollback drops the
  // rest (rejected drafts, or the token after them that this frame carries again).
  s.history.resize(std::min<size_t>(s.history.size(), f.first_position));
  s.history.insert(s.history.end(), f.tokens.begin(), f.tokens.end());
  auto report = [&](int32_t token, float logprob) {
    SampledToken t;
    t.token = token;
    t.logprob = logprob;
    if (s.top_logprobs > 0) {
      t.top_logprobs.resize(s.top_logprobs);
      t.top_logprobs.resize(s.sampler->TopLogprobs(absl::MakeSpan(t.top_logprobs)));
    }
    out.tokens.push_back(std::move(t));
  };
  if (f.draft_tokens.empty()) {
    if (f.no_sample) return;
    std::copy(logits, logits + n_vocab, logits_scratch_.begin());
    const int32_t token = s.sampler->Sample(absl::MakeSpan(logits_scratch_), s.history);
    report(token, s.sampler->SampledLogprob());
    return;
  }
  // Row i decides the token after draft i - 1 (after the frame's token for i = 0); the first
  // rejection gives the target's own token and ends the walk; if every draft is accepted, the
  // last row gives one more. Each decided token joins the history the next row is judged with.
  const int32_t drafts = static_cast<int32_t>(f.draft_tokens.size());
  for (int32_t i = 0; i <= drafts; ++i) {
    const runtime::RowDecision decision =
        verifier_->Decide(absl::MakeConstSpan(logits + size_t(i) * n_vocab, n_vocab),
                          i < drafts ? f.draft_tokens[i] : -1, {}, *s.sampler, s.history, s.greedy);
    report(decision.token, decision.logprob);
    s.history.push_back(decision.token);
    if (!decision.accepted) break;
    ++out.accepted_draft_count;
  }
}

std::vector<StageOutput> StageHost::Step(std::vector<StageFrame> frames) {
  const runtime::ModelConfig& c = stage_->config();
  std::vector<StageOutput> outputs(frames.size());
  std::vector<uint8_t> done(frames.size(), 0);
  for (size_t i = 0; i < frames.size(); ++i) outputs[i].sequence_id = frames[i].sequence_id;
  size_t remaining = frames.size();

  std::vector<size_t> members;
  std::vector<runtime::BatchSegment> segments;
  while (remaining > 0) {
    // ---- Form one pass: frames of distinct sequences, in arrival order, within the row limit.
    members.clear();
    segments.clear();
    std::set<uint64_t> in_pass, blocked;
    int32_t rows = 0;
    int32_t logit_rows = 0;  // the last stage: one per frame, 1 + drafts for a draft frame
    int32_t new_sequences = 0;
    for (size_t i = 0; i < frames.size(); ++i) {
      if (done[i]) continue;
      StageFrame& f = frames[i];
      if (in_pass.count(f.sequence_id) || blocked.count(f.sequence_id)) {
        blocked.insert(f.sequence_id);  // keeps this sequence's frames in order
        continue;
      }
      absl::Status status = Validate(f, new_sequences);
      if (status.ok() && f.token_count == 0) {  // a cancel: free now, pass it on
        Release(f.sequence_id);
        if (!options_.has_head) outputs[i].next = std::move(f);
        done[i] = 1;
        --remaining;
        continue;
      }
      const int32_t frame_logit_rows =
          options_.has_head ? (f.draft_tokens.empty() ? 1 : f.token_count) : 0;
      if (status.ok() && (rows + f.token_count > options_.max_batch_tokens ||
                          logit_rows + frame_logit_rows > stage_->max_logit_rows())) {
        blocked.insert(f.sequence_id);  // next pass
        continue;
      }
      if (status.ok() && !options_.has_embedding) {
        status = DecodeHidden(f, batch_hidden_.data() + size_t(rows) * c.n_embd);
      }
      if (!status.ok()) {
        outputs[i].status = std::move(status);
        done[i] = 1;
        --remaining;
        continue;
      }
      if (options_.has_embedding) {
        std::copy(f.tokens.begin(), f.tokens.end(), batch_tokens_.begin() + rows);
        std::copy(f.draft_tokens.begin(), f.draft_tokens.end(),
                  batch_tokens_.begin() + rows + f.tokens.size());
      }
      if (!sequences_.count(f.sequence_id)) ++new_sequences;
      in_pass.insert(f.sequence_id);
      members.push_back(i);
      rows += f.token_count;
      logit_rows += frame_logit_rows;
    }
    if (members.empty()) continue;

    // ---- Claim slots for new sequences and roll back the histories of rolled-back ones.
    std::vector<uint64_t> created;
    for (size_t i : members) {
      StageFrame& f = frames[i];
      auto it = sequences_.find(f.sequence_id);
      if (it == sequences_.end()) {
        Sequence s;
        s.slot = static_cast<int32_t>(std::find(slot_used_.begin(), slot_used_.end(), 0) -
                                      slot_used_.begin());
        slot_used_[s.slot] = 1;
        stage_->ResetSlot(s.slot);
        if (options_.has_head) {
          s.sampler = std::make_unique<runtime::Sampler>(f.sampling.params, c.n_vocab);
          s.greedy = !(f.sampling.params.temperature > 0.0f);
          s.top_logprobs = f.sampling.top_logprobs;
        }
        it = sequences_.emplace(f.sequence_id, std::move(s)).first;
        created.push_back(f.sequence_id);
      }
      runtime::BatchSegment seg;
      seg.slot = it->second.slot;
      seg.first_position = f.first_position;
      seg.n_tokens = f.token_count;
      seg.logits = options_.has_head && !f.draft_tokens.empty() ? runtime::LogitsMode::kAll
                                                                : runtime::LogitsMode::kLast;
      segments.push_back(seg);
    }

    // ---- Run the pass.
    absl::StatusOr<absl::Span<const float>> result = stage_->ForwardBatch(
        segments, absl::MakeConstSpan(batch_tokens_.data(), options_.has_embedding ? rows : 0),
        absl::MakeConstSpan(batch_hidden_.data(),
                            options_.has_embedding ? 0 : size_t(rows) * c.n_embd));
    if (!result.ok()) {
      for (uint64_t id : created) Release(id);
      for (size_t i : members) {
        outputs[i].status = result.status();
        done[i] = 1;
        --remaining;
      }
      continue;
    }

    // ---- Hand out the results.
    int32_t row = 0;
    int32_t logit_row = 0;
    for (size_t k = 0; k < members.size(); ++k) {
      const size_t i = members[k];
      StageFrame& f = frames[i];
      Sequence& s = sequences_.at(f.sequence_id);
      StageOutput& out = outputs[i];
      if (options_.has_head) {
        SampleOrVerify(f, result->data() + size_t(logit_row) * c.n_vocab, s, out);
        logit_row += f.draft_tokens.empty() ? 1 : f.token_count;
      } else {
        StageFrame next;
        next.sequence_id = f.sequence_id;
        next.plan_epoch = f.plan_epoch;
        next.first_position = f.first_position;
        next.token_count = f.token_count;
        next.dtype = f.dtype;
        next.shape = {f.token_count, c.n_embd};
        out.status = EncodeHidden(result->data() + size_t(row) * c.n_embd, f.token_count, f.dtype,
                                  &next.hidden);
        next.tokens = std::move(f.tokens);
        next.draft_tokens = std::move(f.draft_tokens);
        next.kv_keep_length = f.kv_keep_length;
        next.end_of_sequence = f.end_of_sequence;
        next.no_sample = f.no_sample;
        next.sampling = f.sampling;
        if (out.status.ok()) out.next = std::move(next);
      }
      row += f.token_count;
      if (f.end_of_sequence) Release(f.sequence_id);
      done[i] = 1;
      --remaining;
    }
  }
  return outputs;
}

}  // namespace exo::node
