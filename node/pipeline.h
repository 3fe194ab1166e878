// Pipeline: the coordinator's side of the data path. Given an ordered list of stage endpoints, it
// loads each stage's layer range (LoadShard), keeps one persistent Forward stream to the first
// stage, and runs sequences through the chain: the prompt in chunks, then one token per step.
// Several sequences run at once, so while one sequence is in stage 2, another can be in stage 1.
//
// Speculative decoding (docs/speculative.md): with a drafter, each step is one frame carrying the
// newest token and up to k drafted tokens; every stage runs all k + 1 rows, the last stage
// verifies the drafts and returns the accepted ones plus one token of its own, and the next
// frame's first position (and kv_keep_length) rolls every stage's cache back over the rejected
// rows. k adapts to the measured acceptance and pass time (runtime::DraftLengthController).
#ifndef EXO_NODE_PIPELINE_H_
#define EXO_NODE_PIPELINE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "exo/v1/node.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "node/stage_host.h"
#include "node/tensor_fetch.h"
#include "runtime/sampler.h"
#include "runtime/speculative.h"
#include "runtime/weights.h"

namespace exo::node {

// Splits n_layer layers into n_stages contiguous ranges whose sizes differ by at most one
// (earlier stages get the extra layers).
absl::StatusOr<std::vector<runtime::LayerRange>> SplitLayersEvenly(int32_t n_layer,
                                                                   int32_t n_stages);
// Parses "0:6,6:12,12:18"; the ranges must be contiguous and cover [0, n_layer).
absl::StatusOr<std::vector<runtime::LayerRange>> ParseLayerRanges(const std::string& text,
                                                                  int32_t n_layer);

struct PipelineOptions {
  std::vector<std::string> stages;          // host:port of each stage, in pipeline order
  std::vector<runtime::LayerRange> layers;  // one per stage; empty: split evenly
  ModelIdentity model;
  int32_t n_layer = 0;
  uint64_t plan_epoch = 1;
  int32_t context = 4096;       // KV positions per sequence on every stage
  int32_t max_sequences = 4;    // sequences in flight at once
  int32_t prefill_chunk = 256;  // prompt tokens per frame
  WireDType dtype = WireDType::kF32;
  // host:port of a node holding the model file, for stages that lack it (LoadShard.fetch_from).
  std::string fetch_from;
  // The model's vocabulary size: drafted ids at or above it are dropped before sending (a draft
  // model's vocabulary may be a little larger than the target's). 0: not checked here (the
  // stages refuse such frames).
  int32_t n_vocab = 0;
  // Adds the coordinator's session token to each call.
  std::function<void(grpc::ClientContext&)> authorize;
};

struct SequenceStats {
  int32_t prompt_tokens = 0;
  int32_t generated_tokens = 0;
  double prompt_seconds = 0;    // from the start to the first generated token
  double generate_seconds = 0;  // from the first to the last generated token
  bool stopped_by_token = false;
  bool stopped_by_context = false;
  // With a drafter: passes (one frame each, counted from the first generated token on), drafts
  // sent and accepted, tokens those passes emitted, time in the drafter, and the passes' round
  // trips through the pipeline (verify_seconds). All zero without one.
  runtime::SpeculativeStats speculative;
};

struct SequenceRequest {
  std::vector<int32_t> prompt;
  int32_t max_tokens = 128;
  runtime::SamplingParams sampling;
  int32_t top_logprobs = 0;
  std::function<bool(int32_t)> is_stop_token;  // ends generation; the token is not emitted
  // Each generated token, on the pipeline's reader thread; return false to stop.
  std::function<bool(const SampledToken&)> on_token;
  // Once, when the sequence ends: OK, or the error that ended it.
  std::function<void(const absl::Status&, const SequenceStats&)> on_done;
  // Speculative decoding when set. Only token ids travel, so its proposals must be deterministic
  // (one-hot q: prompt lookup, or a draft model with one_hot_proposals); a proposal with
  // probabilities ends the sequence with FailedPrecondition. Not owned: it must outlive the
  // sequence (until on_done); the pipeline calls it under its lock, for one step at a time.
  runtime::Drafter* drafter = nullptr;
  // draft_max is capped at StageHost::kMaxDraftTokens and at prefill_chunk - 1.
  runtime::SpeculativeOptions speculative;
};

class Pipeline {
 public:
  // Sends LoadShard to every stage (which may fetch tensors first), then opens the stream.
  static absl::StatusOr<std::unique_ptr<Pipeline>> Connect(const PipelineOptions& options);
  ~Pipeline();
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  const std::vector<runtime::LayerRange>& layers() const { return layers_; }

  // Starts a sequence; returns its id. ResourceExhausted when max_sequences are running.
  absl::StatusOr<uint64_t> Start(SequenceRequest request);
  // Ends a sequence early (its on_done gets Cancelled).
  void Cancel(uint64_t id);

  // Runs one sequence to the end and returns its generated tokens (a convenience over Start).
  absl::StatusOr<std::vector<int32_t>> Generate(SequenceRequest request,
                                                SequenceStats* stats = nullptr);

 private:
  struct Sequence {
    SequenceRequest request;
    std::vector<int32_t> history;  // prompt and generated tokens
    SequenceStats stats;
    std::chrono::steady_clock::time_point start, first_token;
    // Positions every stage's cache holds once the frame in flight has run.
    int32_t cached = 0;
    // With a drafter: the adaptive length, and what the frame in flight carried.
    std::optional<runtime::DraftLengthController> length;
    std::vector<int32_t> drafts;  // drafted tokens sent with the frame in flight
    int32_t requested = 0;        // tokens asked of the drafter for it
    double draft_seconds = 0;     // the drafter's time for it
    bool timed = false;           // its round trip measures one pass (not the prompt's too)
    std::chrono::steady_clock::time_point sent;
  };

  explicit Pipeline(const PipelineOptions& options) : options_(options) {}
  void ReadResults();
  bool Send(const v1::ForwardFrame& frame);
  void SendCancel(uint64_t id);
  // Ends a sequence (removed from the map by the caller) and reports it.
  void Finish(Sequence& sequence, const absl::Status& status);
  // The frame of the sequence's next step: its newest token and, with a drafter, the drafts.
  absl::Status PrepareStep(uint64_t id, Sequence& sequence, v1::ForwardFrame& frame)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Checks a step's result against the frame that was sent and counts the pass. Returns the
  // tokens to emit, in order.
  absl::StatusOr<std::vector<SampledToken>> TakeStepResult(Sequence& sequence,
                                                           const v1::ForwardResult& result)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const PipelineOptions options_;
  std::vector<runtime::LayerRange> layers_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::NodeService::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::ForwardFrame, v1::ForwardResult>> stream_;
  std::thread reader_;

  absl::Mutex write_mu_;  // one writer on the stream at a time
  absl::Mutex mu_;
  std::map<uint64_t, Sequence> sequences_ ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  runtime::DraftProposal proposal_ ABSL_GUARDED_BY(mu_);  // drafting scratch
  absl::Status broken_ ABSL_GUARDED_BY(mu_);              // set when the stream ended
};

}  // namespace exo::node

#endif  // EXO_NODE_PIPELINE_H_
