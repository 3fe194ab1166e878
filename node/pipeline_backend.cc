#include "node/pipeline_backend.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "node/pipeline.h"

namespace exo::node {

PipelineBackend::PipelineBackend(std::unique_ptr<Pipeline> pipeline,
                                 const PipelineBackendOptions& options)
    : pipeline_(std::move(pipeline)), options_(options) {
  stats_.slots = options_.max_sequences;
}

std::unique_ptr<PipelineBackend> PipelineBackend::Create(std::unique_ptr<Pipeline> pipeline,
                                                         const PipelineBackendOptions& options) {
  std::unique_ptr<PipelineBackend> backend(new PipelineBackend(std::move(pipeline), options));
  PipelineBackend* raw = backend.get();
  // The dispatcher starts queued requests as slots free up and forwards cancellations.
  backend->thread_ = std::thread([raw] { raw->Loop(); });
  return backend;
}

PipelineBackend::~PipelineBackend() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
  std::deque<std::pair<std::shared_ptr<Sequence>, EngineRequest>> queued;
  {
    absl::MutexLock lock(&mu_);
    queued.swap(queue_);
    stats_.queued = 0;
  }
  for (auto& [sequence, request] : queued) {
    sequence->Finish(FinishReason::kCancelled, absl::CancelledError("the server is stopping"));
  }
  // Ends the stream; every running sequence's on_done runs (as Unavailable) before this returns.
  pipeline_.reset();
}

absl::StatusOr<std::shared_ptr<Sequence>> PipelineBackend::Submit(EngineRequest request) {
  absl::Status valid = ValidateEngineRequest(request, options_.vocab_size, options_.context);
  if (!valid.ok()) return valid;
  absl::MutexLock lock(&mu_);
  if (stopping_) return absl::UnavailableError("the server is shutting down");
  if (!broken_.ok()) {
    return absl::UnavailableError(
        absl::StrCat("the cluster pipeline is down (", broken_.message(), "); retry shortly"));
  }
  const int32_t busy = static_cast<int32_t>(running_.size()) + starting_;
  const int32_t free_slots = options_.max_sequences - busy;
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

EngineStats PipelineBackend::stats() const {
  absl::MutexLock lock(&mu_);
  EngineStats stats = stats_;
  stats.running = static_cast<int32_t>(running_.size());
  return stats;
}

absl::Status PipelineBackend::broken() const {
  absl::MutexLock lock(&mu_);
  return broken_;
}

void PipelineBackend::Loop() {
  while (true) {
    std::vector<uint64_t> cancels;
    std::vector<std::shared_ptr<Sequence>> cancelled_while_queued;
    std::optional<std::pair<std::shared_ptr<Sequence>, EngineRequest>> next;
    {
      absl::MutexLock lock(&mu_);
      auto can_start = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || (!queue_.empty() && static_cast<int32_t>(running_.size()) + starting_ <
                                                    options_.max_sequences);
      };
      mu_.AwaitWithTimeout(absl::Condition(&can_start), options_.poll_interval);
      if (stopping_) return;
      for (auto& [key, running] : running_) {
        if (!running.cancel_sent && running.pipeline_id != 0 && running.sequence->cancelled()) {
          running.cancel_sent = true;
          cancels.push_back(running.pipeline_id);
        }
      }
      for (auto it = queue_.begin(); it != queue_.end();) {
        if (it->first->cancelled()) {
          cancelled_while_queued.push_back(it->first);
          it = queue_.erase(it);
          --stats_.queued;
          ++stats_.cancelled_sequences;
        } else {
          ++it;
        }
      }
      if (!queue_.empty() &&
          static_cast<int32_t>(running_.size()) + starting_ < options_.max_sequences) {
        next = std::move(queue_.front());
        queue_.pop_front();
        --stats_.queued;
        ++starting_;
      }
    }
    for (auto& sequence : cancelled_while_queued) {
      sequence->Finish(FinishReason::kCancelled, absl::CancelledError("cancelled while queued"));
    }
    // Pipeline::Cancel reports the sequence's end through its on_done, which takes mu_.
    for (uint64_t id : cancels) pipeline_->Cancel(id);
    if (next.has_value()) StartOne(std::move(next->first), std::move(next->second));
  }
}

void PipelineBackend::StartOne(std::shared_ptr<Sequence> sequence, EngineRequest request) {
  SequenceRequest r;
  r.prompt = std::move(request.prompt);
  const int32_t room = options_.context - static_cast<int32_t>(r.prompt.size());
  r.max_tokens = request.max_tokens < 0 ? room : std::min(request.max_tokens, room);
  r.sampling = request.sampling;
  r.top_logprobs = std::max(0, request.top_logprobs);
  r.is_stop_token = options_.is_end_of_generation;
  std::shared_ptr<runtime::Drafter> drafter;
  if (options_.make_drafter) drafter = options_.make_drafter(r.sampling);
  r.drafter = drafter.get();
  r.speculative = options_.speculative;
  Sequence* key = sequence.get();
  r.on_token = [this, sequence](const SampledToken& t) {
    TokenEvent event;
    event.token = t.token;
    event.logprob = t.logprob;
    event.top = t.top_logprobs;
    event.time = absl::Now();
    sequence->Push(std::move(event));
    {
      absl::MutexLock lock(&mu_);
      ++stats_.generated_tokens;
    }
    return !sequence->cancelled();
  };
  // The drafter is kept alive by on_done, which the pipeline calls once and last.
  r.on_done = [this, sequence, key, drafter](const absl::Status& status,
                                             const SequenceStats& stats) {
    FinishReason reason = FinishReason::kLength;
    if (absl::IsCancelled(status) || (status.ok() && sequence->cancelled())) {
      reason = FinishReason::kCancelled;
    } else if (!status.ok()) {
      reason = FinishReason::kError;
    } else if (stats.stopped_by_token) {
      reason = FinishReason::kStop;
    }
    {
      absl::MutexLock lock(&mu_);
      running_.erase(key);
      stats_.prompt_tokens += stats.prompt_tokens;
      stats_.speculative_passes += stats.speculative.passes;
      stats_.speculative_drafted += stats.speculative.drafted_tokens;
      stats_.speculative_accepted += stats.speculative.accepted_tokens;
      stats_.speculative_emitted += stats.speculative.emitted_tokens;
      if (reason == FinishReason::kCancelled) {
        ++stats_.cancelled_sequences;
      } else {
        ++stats_.finished_sequences;
      }
      if (absl::IsUnavailable(status) && broken_.ok()) broken_ = status;
    }
    sequence->Finish(reason, reason == FinishReason::kError ? status : absl::OkStatus());
  };
  {
    absl::MutexLock lock(&mu_);
    --starting_;
    running_[key] = Running{sequence, 0, false};
  }
  absl::StatusOr<uint64_t> id = pipeline_->Start(std::move(r));
  if (!id.ok()) {
    {
      absl::MutexLock lock(&mu_);
      running_.erase(key);
      if (absl::IsUnavailable(id.status()) && broken_.ok()) broken_ = id.status();
      ++stats_.finished_sequences;
    }
    sequence->Finish(FinishReason::kError, id.status());
    return;
  }
  absl::MutexLock lock(&mu_);
  auto it = running_.find(key);
  if (it != running_.end()) it->second.pipeline_id = *id;
}

}  // namespace exo::node
