// Continuous-batching scheduler: many sequences share one model, one forward pass per step.
//
// Each step the engine thread gathers every running sequence's next token (one decode row each)
// and, in the token budget that is left, a chunk of one or more waiting prompts, runs them as one
// batched forward pass (weights are read once for the whole batch) and samples each sequence's
// next token from its logits row. A new request waits in a bounded queue until a KV slot is free;
// a cancelled or finished sequence gives its slot back at the next step.
//
//   auto engine = Engine::Create(model, options);
//   ASSIGN_OR_RETURN(std::shared_ptr<Sequence> seq, engine->Submit(std::move(request)));
//   while (seq->Wait(&events, absl::Milliseconds(100)) != Sequence::State::kFinished) { ... }
#ifndef EXO_NODE_ENGINE_H_
#define EXO_NODE_ENGINE_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "runtime/sampler.h"
#include "runtime/stage.h"

namespace exo::node {

// What the engine needs from a model: a forward pass over several sequences at once, each in its
// own KV slot. StageBatchModel() adapts a runtime::Stage; tests may use a fake.
class BatchModel {
 public:
  struct Segment {
    int32_t slot = 0;
    int32_t first_position = 0;
    int32_t n_tokens = 0;
  };
  virtual ~BatchModel() = default;
  // Runs the segments (distinct slots; their tokens concatenated in segment order) and returns
  // one row of logits per segment (for its last token), rows concatenated in segment order. The
  // span stays valid until the next call.
  virtual absl::StatusOr<absl::Span<const float>> Forward(absl::Span<const Segment> segments,
                                                          absl::Span<const int32_t> tokens) = 0;
  virtual void ResetSlot(int32_t slot) = 0;
  virtual int32_t num_slots() const = 0;
  virtual int32_t context() const = 0;           // KV positions per slot
  virtual int32_t max_batch_tokens() const = 0;  // tokens per Forward call
  virtual int32_t max_segments() const = 0;      // segments (logit rows) per Forward call
  virtual int32_t vocab_size() const = 0;
};

// Adapts a Stage that holds the whole model (embedding and head). The stage must outlive it.
std::unique_ptr<BatchModel> StageBatchModel(runtime::Stage& stage);

enum class FinishReason { kNone, kStop, kLength, kCancelled, kError };
const char* FinishReasonName(FinishReason reason);  // "stop", "length", "cancelled", "error"

struct EngineRequest {
  std::vector<int32_t> prompt;  // at least one token
  int32_t max_tokens = -1;      // -1: until the context is full
  runtime::SamplingParams sampling;
  int32_t top_logprobs = -1;  // -1: no log-probabilities; 0..20: that many alternatives too
};

struct TokenEvent {
  int32_t token = 0;
  float logprob = 0;  // when the request asked for log-probabilities
  std::vector<runtime::Sampler::TokenLogprob> top;
  absl::Time time;
};

// One request's view of its sequence, shared by the engine thread and the request's handler.
class Sequence {
 public:
  enum class State { kQueued, kRunning, kFinished };

  // Moves the tokens produced since the last call into `events` (appended) and returns the state,
  // waiting up to `timeout` when there is nothing new and the sequence is not finished.
  State Wait(std::vector<TokenEvent>* events, absl::Duration timeout);
  // Asks the engine to stop the sequence and free its slot (at its next step). Idempotent.
  void Cancel();

  int32_t prompt_tokens() const { return prompt_tokens_; }
  // Valid once finished.
  FinishReason finish_reason() const;
  absl::Status error() const;  // for kError
  int32_t generated_tokens() const;
  absl::Time submit_time() const { return submit_time_; }

 private:
  friend class Engine;
  friend class PipelineBackend;
  explicit Sequence(int32_t prompt_tokens, absl::Time submit_time)
      : prompt_tokens_(prompt_tokens), submit_time_(submit_time) {}
  void Push(TokenEvent event);
  void Finish(FinishReason reason, absl::Status error);
  bool cancelled() const;

  const int32_t prompt_tokens_;
  const absl::Time submit_time_;
  mutable absl::Mutex mu_;
  std::vector<TokenEvent> pending_ ABSL_GUARDED_BY(mu_);
  State state_ ABSL_GUARDED_BY(mu_) = State::kQueued;
  FinishReason finish_reason_ ABSL_GUARDED_BY(mu_) = FinishReason::kNone;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  int32_t generated_ ABSL_GUARDED_BY(mu_) = 0;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

struct EngineOptions {
  int32_t max_queue = 64;  // requests waiting for a slot; Submit fails beyond this
  // Prompt tokens one step may process (at most the model's max_batch_tokens, less the decode
  // rows); smaller values interleave long prompts with running decodes more finely.
  int32_t prefill_chunk = 256;
  // Token ids that end a sequence (not emitted), e.g. the tokenizer's end-of-generation set.
  std::function<bool(int32_t)> is_end_of_generation;
};

struct EngineStats {
  int32_t queued = 0;
  int32_t running = 0;
  int32_t slots = 0;
  int64_t steps = 0;             // forward passes
  int64_t prompt_tokens = 0;     // prompt tokens processed
  int64_t generated_tokens = 0;  // tokens sampled
  int64_t finished_sequences = 0;
  int64_t rejected_sequences = 0;  // queue full
  int64_t cancelled_sequences = 0;
  // Speculative decoding, summed over finished sequences: verification passes, drafted and
  // accepted tokens, tokens those passes emitted. Zero when it is off.
  int64_t speculative_passes = 0;
  int64_t speculative_drafted = 0;
  int64_t speculative_accepted = 0;
  int64_t speculative_emitted = 0;
};

// The checks every backend makes before queueing a request: a non-empty prompt of ids inside the
// vocabulary that leaves room in the context, top_logprobs <= 20, valid sampling parameters.
// InvalidArgument saying which.
absl::Status ValidateEngineRequest(const EngineRequest& request, int32_t vocab_size,
                                   int32_t context);

// What the HTTP API generates with: the local continuous-batching Engine, or a PipelineBackend
// (node/pipeline_backend.h) that runs sequences through the cluster's pipeline stages.
class GenerationBackend {
 public:
  virtual ~GenerationBackend() = default;
  // Queues a request. InvalidArgument when the prompt is empty, holds ids outside the vocabulary
  // or leaves no room in the context; ResourceExhausted when the queue is full (retry later).
  virtual absl::StatusOr<std::shared_ptr<Sequence>> Submit(EngineRequest request) = 0;
  virtual EngineStats stats() const = 0;
  virtual int32_t context() const = 0;  // KV positions per sequence
};

class Engine : public GenerationBackend {
 public:
  // `model` must outlive the engine. Starts the engine thread.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(BatchModel& model,
                                                        const EngineOptions& options);
  // Finishes every sequence as cancelled and joins the engine thread.
  ~Engine() override;
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  absl::StatusOr<std::shared_ptr<Sequence>> Submit(EngineRequest request) override;

  EngineStats stats() const override;
  int32_t context() const override { return model_.context(); }

 private:
  struct Active {
    std::shared_ptr<Sequence> sequence;
    EngineRequest request;
    std::unique_ptr<runtime::Sampler> sampler;
    std::vector<int32_t> history;  // prompt, then generated tokens
    int32_t slot = 0;
    int32_t cached = 0;  // positions in the slot's cache
    int32_t generated = 0;
  };
  Engine(BatchModel& model, const EngineOptions& options);
  void Loop();
  // One forward pass over the running sequences; false when there was nothing to do.
  void Step(std::vector<Active*>& running);
  void Retire(Active& active, FinishReason reason, absl::Status error);

  BatchModel& model_;
  const EngineOptions options_;
  mutable absl::Mutex mu_;
  std::deque<std::pair<std::shared_ptr<Sequence>, EngineRequest>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  EngineStats stats_ ABSL_GUARDED_BY(mu_);
  // Owned by the engine thread.
  std::vector<std::unique_ptr<Active>> slots_;  // index = KV slot; null when free
  std::vector<int32_t> batch_tokens_;
  std::vector<BatchModel::Segment> segments_;
  std::vector<Active*> segment_owner_;
  std::vector<std::pair<Active*, FinishReason>> finished_;  // this step's, retired after the stats
  size_t rotation_ = 0;
  std::vector<float> row_;  // one row of logits, for the sampler to penalise in place
  std::thread thread_;
};

}  // namespace exo::node

#endif  // EXO_NODE_ENGINE_H_
