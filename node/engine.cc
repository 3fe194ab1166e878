#include "node/engine.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace exo::node {
namespace {

// One Stage::ForwardBatch per step: every segment shares the weight reads.
class StageModel : public BatchModel {
 public:
  explicit StageModel(runtime::Stage& stage) : stage_(stage) {
    segments_.reserve(stage.max_logit_rows());
  }

  absl::StatusOr<absl::Span<const float>> Forward(absl::Span<const Segment> segments,
                                                  absl::Span<const int32_t> tokens) override {
    segments_.clear();
    for (const Segment& s : segments) {
      segments_.push_back({s.slot, s.first_position, s.n_tokens, runtime::LogitsMode::kLast});
    }
    return stage_.ForwardBatch(segments_, tokens, {});
  }
  void ResetSlot(int32_t slot) override { stage_.ResetSlot(slot); }
  int32_t num_slots() const override { return stage_.options().num_slots; }
  int32_t context() const override { return stage_.options().context; }
  int32_t max_batch_tokens() const override { return stage_.options().max_batch_tokens; }
  int32_t max_segments() const override {
    return std::min(stage_.max_logit_rows(), stage_.options().num_slots);
  }
  int32_t vocab_size() const override { return stage_.config().n_vocab; }

 private:
  runtime::Stage& stage_;
  std::vector<runtime::BatchSegment> segments_;
};

}  // namespace

std::unique_ptr<BatchModel> StageBatchModel(runtime::Stage& stage) {
  return std::make_unique<StageModel>(stage);
}

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone:
      return "none";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kCancelled:
      return "cancelled";
    case FinishReason::kError:
      return "error";
  }
  return "error";
}

// ---- Sequence -----------------------------------------------------------------------------------

Sequence::State Sequence::Wait(std::vector<TokenEvent>* events, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !pending_.empty() || state_ == State::kFinished;
  };
  mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
  for (TokenEvent& e : pending_) events->push_back(std::move(e));
  pending_.clear();
  return state_;
}

void Sequence::Cancel() {
  absl::MutexLock lock(&mu_);
  cancelled_ = true;
}

bool Sequence::cancelled() const {
  absl::MutexLock lock(&mu_);
  return cancelled_;
}

FinishReason Sequence::finish_reason() const {
  absl::MutexLock lock(&mu_);
  return finish_reason_;
}

absl::Status Sequence::error() const {
  absl::MutexLock lock(&mu_);
  return error_;
}

int32_t Sequence::generated_tokens() const {
  absl::MutexLock lock(&mu_);
  return generated_;
}

void Sequence::Push(TokenEvent event) {
  absl::MutexLock lock(&mu_);
  state_ = State::kRunning;
  ++generated_;
  pending_.push_back(std::move(event));
}

void Sequence::Finish(FinishReason reason, absl::Status error) {
  absl::MutexLock lock(&mu_);
  state_ = State::kFinished;
  finish_reason_ = reason;
  error_ = std::move(error);
}

// ---- Engine -------------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(BatchModel& model,
                                                       const EngineOptions& options) {
  if (model.num_slots() < 1 || model.max_batch_tokens() < 1 || model.max_segments() < 1) {
    return absl::InvalidArgumentError("the model needs at least one slot, token and segment");
  }
  if (options.max_queue < 0) return absl::InvalidArgumentError("max_queue must be 0 or more");
  if (options.prefill_chunk < 1) return absl::InvalidArgumentError("prefill_chunk must be >= 1");
  return std::unique_ptr<Engine>(new Engine(model, options));
}

Engine::Engine(BatchModel& model, const EngineOptions& options)
    : model_(model), options_(options), slots_(model.num_slots()) {
  stats_.slots = model.num_slots();
  batch_tokens_.reserve(model.max_batch_tokens());
  segments_.reserve(model.max_segments());
  segment_owner_.reserve(model.max_segments());
  row_.resize(model.vocab_size());
  // The engine thread admits queued requests into free slots and runs forward steps until the
  // engine is destroyed.
  thread_ = std::thread([this] { Loop(); });
}

Engine::~Engine() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

absl::Status ValidateEngineRequest(const EngineRequest& request, int32_t vocab_size,
                                   int32_t context) {
  if (request.prompt.empty()) return absl::InvalidArgumentError("the prompt has no tokens");
  for (int32_t id : request.prompt) {
    if (id < 0 || id >= vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", id, " is outside the vocabulary"));
    }
  }
  if (static_cast<int64_t>(request.prompt.size()) >= context) {
    return absl::InvalidArgumentError(
        absl::StrCat("the prompt has ", request.prompt.size(), " tokens but the context holds ",
                     context, " (prompt and answer together); shorten the prompt"));
  }
  if (request.top_logprobs > 20) {
    return absl::InvalidArgumentError("top_logprobs must be at most 20");
  }
  return runtime::ValidateSamplingParams(request.sampling);
}

absl::StatusOr<std::shared_ptr<Sequence>> Engine::Submit(EngineRequest request) {
  absl::Status valid = ValidateEngineRequest(request, model_.vocab_size(), model_.context());
  if (!valid.ok()) return valid;
  absl::MutexLock lock(&mu_);
  if (stopping_) return absl::UnavailableError("the engine is shutting down");
  // Requests beyond the free slots wait; at most max_queue of them.
  const int32_t free_slots = stats_.slots - stats_.running;
  if (static_cast<int32_t>(queue_.size()) >= options_.max_queue + std::max(0, free_slots)) {
    ++stats_.rejected_sequences;
    return absl::ResourceExhaustedError(
        absl::StrCat("the server is busy: ", queue_.size(), " requests are waiting; retry later"));
  }
  auto sequence = std::shared_ptr<Sequence>(
      new Sequence(static_cast<int32_t>(request.prompt.size()), absl::Now()));
  queue_.emplace_back(sequence, std::move(request));
  ++stats_.queued;
  return sequence;
}

EngineStats Engine::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

void Engine::Loop() {
  std::vector<Active*> running;
  while (true) {
    running.clear();
    for (auto& a : slots_) {
      if (a != nullptr) running.push_back(a.get());
    }
    {
      absl::MutexLock lock(&mu_);
      if (running.empty()) {
        auto has_work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return stopping_ || !queue_.empty();
        };
        mu_.Await(absl::Condition(&has_work));
      }
      if (stopping_) break;
      // Admit waiting requests into free slots, oldest first.
      for (size_t slot = 0; slot < slots_.size() && !queue_.empty(); ++slot) {
        if (slots_[slot] != nullptr) continue;
        auto [sequence, request] = std::move(queue_.front());
        queue_.pop_front();
        --stats_.queued;
        if (sequence->cancelled()) {
          ++stats_.cancelled_sequences;
          sequence->Finish(FinishReason::kCancelled, absl::OkStatus());
          --slot;  // the slot is still free
          continue;
        }
        auto active = std::make_unique<Active>();
        active->sequence = std::move(sequence);
        active->sampler = std::make_unique<runtime::Sampler>(request.sampling, model_.vocab_size());
        active->history = request.prompt;
        active->request = std::move(request);
        active->slot = static_cast<int32_t>(slot);
        model_.ResetSlot(active->slot);
        running.push_back(active.get());
        slots_[slot] = std::move(active);
        ++stats_.running;
      }
    }
    // Give back the slots of cancelled sequences before computing anything for them.
    for (Active*& a : running) {
      if (a->sequence->cancelled()) {
        Retire(*a, FinishReason::kCancelled, absl::OkStatus());
        a = nullptr;
      }
    }
    running.erase(std::remove(running.begin(), running.end(), nullptr), running.end());
    if (!running.empty()) {
      // Start each step at another sequence, so none waits forever when a step cannot hold all.
      std::rotate(running.begin(), running.begin() + (rotation_++ % running.size()), running.end());
      Step(running);
    }
  }
  // Shutting down: every sequence ends as cancelled.
  for (auto& a : slots_) {
    if (a != nullptr) Retire(*a, FinishReason::kCancelled, absl::OkStatus());
  }
  absl::MutexLock lock(&mu_);
  for (auto& [sequence, request] : queue_) {
    sequence->Finish(FinishReason::kCancelled, absl::OkStatus());
  }
  queue_.clear();
}

void Engine::Step(std::vector<Active*>& running) {
  segments_.clear();
  batch_tokens_.clear();
  segment_owner_.clear();
  const int32_t max_segments = model_.max_segments();
  int32_t budget = model_.max_batch_tokens();
  // Decode rows first (one token each, so running answers never stall behind a long prompt),
  // then prompt chunks in the budget that is left.
  for (Active* a : running) {
    const int32_t remaining = static_cast<int32_t>(a->history.size()) - a->cached;
    if (remaining != 1 || budget < 1 || static_cast<int32_t>(segments_.size()) >= max_segments) {
      continue;
    }
    segments_.push_back({a->slot, a->cached, 1});
    segment_owner_.push_back(a);
    batch_tokens_.push_back(a->history[a->cached]);
    --budget;
  }
  int32_t prefill_budget = std::min(budget, options_.prefill_chunk);
  for (Active* a : running) {
    const int32_t remaining = static_cast<int32_t>(a->history.size()) - a->cached;
    if (remaining <= 1 || prefill_budget < 1 ||
        static_cast<int32_t>(segments_.size()) >= max_segments) {
      continue;
    }
    const int32_t n = std::min(remaining, prefill_budget);
    segments_.push_back({a->slot, a->cached, n});
    segment_owner_.push_back(a);
    batch_tokens_.insert(batch_tokens_.end(), a->history.begin() + a->cached,
                         a->history.begin() + a->cached + n);
    prefill_budget -= n;
  }
  if (segments_.empty()) return;

  absl::StatusOr<absl::Span<const float>> logits = model_.Forward(segments_, batch_tokens_);
  if (!logits.ok()) {
    for (Active* a : segment_owner_) Retire(*a, FinishReason::kError, logits.status());
    return;
  }
  const size_t vocab = model_.vocab_size();
  std::vector<float>& row = row_;  // the sampler penalises in place
  int64_t prompt_tokens = 0, generated = 0;
  for (size_t i = 0; i < segments_.size(); ++i) {
    Active& a = *segment_owner_[i];
    const bool was_prompt = a.generated == 0;
    if (was_prompt) prompt_tokens += segments_[i].n_tokens;
    a.cached += segments_[i].n_tokens;
    if (a.cached < static_cast<int32_t>(a.history.size())) continue;  // prompt not done yet
    std::copy_n(logits->data() + i * vocab, vocab, row.data());
    const int32_t token = a.sampler->Sample(absl::MakeSpan(row), a.history);
    ++generated;
    if (options_.is_end_of_generation && options_.is_end_of_generation(token)) {
      finished_.push_back({&a, FinishReason::kStop});
      continue;
    }
    TokenEvent event;
    event.token = token;
    event.time = absl::Now();
    if (a.request.top_logprobs >= 0) {
      event.logprob = a.sampler->SampledLogprob();
      event.top.resize(a.request.top_logprobs);
      event.top.resize(a.sampler->TopLogprobs(absl::MakeSpan(event.top)));
    }
    a.history.push_back(token);
    ++a.generated;
    a.sequence->Push(std::move(event));
    if ((a.request.max_tokens >= 0 && a.generated >= a.request.max_tokens) ||
        static_cast<int32_t>(a.history.size()) > model_.context()) {
      finished_.push_back({&a, FinishReason::kLength});
    }
  }
  {
    // Counted before any sequence of this step says it is finished, so a client that saw its
    // last token also sees it in the stats.
    absl::MutexLock lock(&mu_);
    ++stats_.steps;
    stats_.prompt_tokens += prompt_tokens;
    stats_.generated_tokens += generated;
  }
  for (const auto& [active, reason] : finished_) Retire(*active, reason, absl::OkStatus());
  finished_.clear();
}

void Engine::Retire(Active& active, FinishReason reason, absl::Status error) {
  const int32_t slot = active.slot;
  model_.ResetSlot(slot);
  {
    // Counted before the sequence says it is finished, so a client that saw the end also sees
    // the slot free in the stats.
    absl::MutexLock lock(&mu_);
    --stats_.running;
    ++stats_.finished_sequences;
    if (reason == FinishReason::kCancelled) ++stats_.cancelled_sequences;
  }
  active.sequence->Finish(reason, std::move(error));
  slots_[slot].reset();  // destroys `active`
}

}  // namespace exo::node
