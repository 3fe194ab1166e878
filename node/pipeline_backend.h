// PipelineBackend: the HTTP API's generation backend when the model runs split over the
// cluster. It gives the API the same Submit / Sequence interface as the local Engine, and runs
// each request as one sequence through a Pipeline (node/pipeline.h): the stages batch whatever
// sequences are in flight, the last stage samples, only tokens come back.
//
// Requests beyond the pipeline's sequence slots wait in a bounded queue; a cancelled sequence
// (client gone) is cancelled on every stage within one poll interval.
#ifndef EXO_NODE_PIPELINE_BACKEND_H_
#define EXO_NODE_PIPELINE_BACKEND_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "node/engine.h"
#include "runtime/speculative.h"

namespace exo::node {

class Pipeline;

struct PipelineBackendOptions {
  int32_t max_sequences = 4;  // sequences in flight on the pipeline (its slots per stage)
  int32_t max_queue = 64;     // requests waiting for a slot; Submit fails beyond this
  int32_t context = 4096;     // KV positions per sequence on every stage
  int32_t vocab_size = 0;
  // Token ids that end a sequence (not emitted), e.g. the tokenizer's end-of-generation set.
  std::function<bool(int32_t)> is_end_of_generation;
  absl::Duration poll_interval = absl::Milliseconds(20);  // how often cancellations are checked
  // Speculative decoding through the pipeline: makes each sequence's drafter (prompt lookup, or
  // a draft model with one-hot proposals) from the request's sampling parameters; empty: off. A
  // null drafter runs that sequence without speculation. The drafter lives until the sequence
  // ends.
  std::function<std::unique_ptr<runtime::Drafter>(const runtime::SamplingParams&)> make_drafter;
  runtime::SpeculativeOptions speculative;
};

class PipelineBackend : public GenerationBackend {
 public:
  // Takes the connected pipeline. Starts the dispatcher thread.
  static std::unique_ptr<PipelineBackend> Create(std::unique_ptr<Pipeline> pipeline,
                                                 const PipelineBackendOptions& options);
  // Ends every sequence (queued ones as cancelled, running ones through the pipeline) and joins.
  ~PipelineBackend() override;

  absl::StatusOr<std::shared_ptr<Sequence>> Submit(EngineRequest request) override;
  EngineStats stats() const override;
  int32_t context() const override { return options_.context; }

  // The first error that ended a sequence because the pipeline broke (a stage went away), or OK.
  absl::Status broken() const;

 private:
  struct Running {
    std::shared_ptr<Sequence> sequence;
    uint64_t pipeline_id = 0;
    bool cancel_sent = false;
  };
  PipelineBackend(std::unique_ptr<Pipeline> pipeline, const PipelineBackendOptions& options);
  // The dispatcher's job: start queued requests while slots are free, pass cancellations on.
  void Loop();
  void StartOne(std::shared_ptr<Sequence> sequence, EngineRequest request);

  std::unique_ptr<Pipeline> pipeline_;
  const PipelineBackendOptions options_;
  mutable absl::Mutex mu_;
  std::deque<std::pair<std::shared_ptr<Sequence>, EngineRequest>> queue_ ABSL_GUARDED_BY(mu_);
  std::map<Sequence*, Running> running_ ABSL_GUARDED_BY(mu_);
  int32_t starting_ ABSL_GUARDED_BY(mu_) = 0;  // taken from the queue, not yet started
  EngineStats stats_ ABSL_GUARDED_BY(mu_);
  absl::Status broken_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace exo::node

#endif  // EXO_NODE_PIPELINE_BACKEND_H_
