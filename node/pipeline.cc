#include "node/pipeline.h"

#include <chrono>
#include <optional>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "common/status_macros.h"
#include "node/wire.h"

namespace exo::node {
namespace {

double SecondsBetween(std::chrono::steady_clock::time_point a,
                      std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

absl::StatusOr<std::vector<runtime::LayerRange>> SplitLayersEvenly(int32_t n_layer,
                                                                   int32_t n_stages) {
  if (n_stages < 1 || n_stages > n_layer) {
    return absl::InvalidArgumentError(absl::StrCat("cannot split ", n_layer, " layers over ",
                                                   n_stages, " stages (1 to ", n_layer, ")"));
  }
  std::vector<runtime::LayerRange> ranges;
  int32_t begin = 0;
  for (int32_t i = 0; i < n_stages; ++i) {
    const int32_t size = n_layer / n_stages + (i < n_layer % n_stages ? 1 : 0);
    ranges.push_back({begin, begin + size});
    begin += size;
  }
  return ranges;
}

absl::StatusOr<std::vector<runtime::LayerRange>> ParseLayerRanges(const std::string& text,
                                                                  int32_t n_layer) {
  std::vector<runtime::LayerRange> ranges;
  int32_t expected_begin = 0;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    std::vector<absl::string_view> ends = absl::StrSplit(part, ':');
    runtime::LayerRange r;
    if (ends.size() != 2 || !absl::SimpleAtoi(ends[0], &r.begin) ||
        !absl::SimpleAtoi(ends[1], &r.end)) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad layer range '", std::string(part), "': write BEGIN:END, e.g. 0:9"));
    }
    if (r.begin != expected_begin || r.end <= r.begin || r.end > n_layer) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer ranges must be contiguous, non-empty and cover 0:", n_layer, "; '",
                       std::string(part), "' should start at ", expected_begin));
    }
    expected_begin = r.end;
    ranges.push_back(r);
  }
  if (expected_begin != n_layer) {
    return absl::InvalidArgumentError(absl::StrCat("layer ranges end at ", expected_begin,
                                                   " but the model has ", n_layer, " layers"));
  }
  return ranges;
}

absl::StatusOr<std::unique_ptr<Pipeline>> Pipeline::Connect(const PipelineOptions& options) {
  if (options.stages.empty()) return absl::InvalidArgumentError("a pipeline needs stages");
  std::unique_ptr<Pipeline> p(new Pipeline(options));
  if (options.layers.empty()) {
    ASSIGN_OR_RETURN(p->layers_, SplitLayersEvenly(options.n_layer,
                                                   static_cast<int32_t>(options.stages.size())));
  } else {
    p->layers_ = options.layers;
    if (p->layers_.size() != options.stages.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(options.stages.size(), " stages but ", p->layers_.size(), " layer ranges"));
    }
  }
  const int32_t n = static_cast<int32_t>(options.stages.size());
  std::vector<absl::Status> loaded(n);
  auto load = [&options, &p, &loaded, n](int32_t i) {
    auto stub = v1::NodeService::NewStub(MakePeerChannel(options.stages[i]));
    grpc::ClientContext ctx;
    if (options.authorize) options.authorize(ctx);
    v1::LoadShardRequest request;
    request.set_plan_epoch(options.plan_epoch);
    IdentityToProto(options.model, request.mutable_model());
    request.set_layer_begin(p->layers_[i].begin);
    request.set_layer_end(p->layers_[i].end);
    request.set_has_embedding(i == 0);
    request.set_has_head(i == n - 1);
    request.set_context_length(options.context);
    request.set_max_sequences(options.max_sequences);
    request.set_max_batch_tokens(options.prefill_chunk);
    if (i + 1 < n) request.set_next_stage(options.stages[i + 1]);
    request.set_fetch_from(options.fetch_from);
    v1::LoadShardResponse response;
    const grpc::Status status = stub->LoadShard(&ctx, request, &response);
    if (!status.ok()) {
      loaded[i] = absl::Status(
          static_cast<absl::StatusCode>(status.error_code()),
          absl::StrCat("stage ", i, " at ", options.stages[i], " could not load layers ",
                       p->layers_[i].begin, ":", p->layers_[i].end, ": ", status.error_message()));
    }
  };
  // Stages load (and possibly fetch tensors) at the same time, one thread per LoadShard call.
  std::vector<std::thread> loaders;
  for (int32_t i = 0; i < n; ++i) loaders.emplace_back(load, i);
  for (std::thread& t : loaders) t.join();
  for (const absl::Status& status : loaded) RETURN_IF_ERROR(status);
  p->channel_ = MakePeerChannel(options.stages[0]);
  p->stub_ = v1::NodeService::NewStub(p->channel_);
  if (options.authorize) options.authorize(p->context_);
  p->stream_ = p->stub_->Forward(&p->context_);
  Pipeline* raw = p.get();
  // The reader turns each result from the first stage into the sequence's next step.
  p->reader_ = std::thread([raw] { raw->ReadResults(); });
  return p;
}

Pipeline::~Pipeline() {
  if (!stream_) return;
  {
    absl::MutexLock lock(&write_mu_);
    stream_->WritesDone();
  }
  // Sequences still running end here; cancelling the call also frees a reader blocked on a
  // stage that stopped answering.
  context_.TryCancel();
  reader_.join();
}

bool Pipeline::Send(const v1::ForwardFrame& frame) {
  absl::MutexLock lock(&write_mu_);
  return stream_->Write(frame);
}

void Pipeline::SendCancel(uint64_t id) {
  v1::ForwardFrame frame;
  frame.set_sequence_id(id);
  frame.set_plan_epoch(options_.plan_epoch);
  frame.set_dtype(static_cast<v1::DType>(options_.dtype));
  frame.set_end_of_sequence(true);
  Send(frame);
}

void Pipeline::Finish(Sequence& s, const absl::Status& status) {
  if (s.stats.generated_tokens > 0) {
    s.stats.generate_seconds = SecondsBetween(s.first_token, std::chrono::steady_clock::now());
  }
  if (s.request.on_done) s.request.on_done(status, s.stats);
}

absl::StatusOr<uint64_t> Pipeline::Start(SequenceRequest request) {
  if (request.prompt.empty()) return absl::InvalidArgumentError("the prompt is empty");
  if (static_cast<int64_t>(request.prompt.size()) >= options_.context) {
    return absl::OutOfRangeError(absl::StrCat("the prompt has ", request.prompt.size(),
                                              " tokens but the context holds ", options_.context));
  }
  RETURN_IF_ERROR(runtime::ValidateSamplingParams(request.sampling));
  uint64_t id;
  std::vector<int32_t> prompt = request.prompt;
  const runtime::SamplingParams sampling = request.sampling;
  const int32_t top_logprobs = request.top_logprobs;
  const bool speculative = request.drafter != nullptr;
  const int32_t total = static_cast<int32_t>(prompt.size());
  // With a drafter every step starts with the newest token, so the prompt's last token waits for
  // the first step (as in the single-node loop), which carries the first drafts.
  const int32_t prefill_end = speculative ? total - 1 : total;
  std::optional<v1::ForwardFrame> first_step;
  {
    absl::MutexLock lock(&mu_);
    RETURN_IF_ERROR(broken_);
    if (static_cast<int32_t>(sequences_.size()) >= options_.max_sequences) {
      return absl::ResourceExhaustedError(
          absl::StrCat("all ", options_.max_sequences, " sequence slots of the pipeline are busy"));
    }
    id = next_id_++;
    Sequence& s = sequences_[id];
    s.history = prompt;
    s.stats.prompt_tokens = total;
    s.start = std::chrono::steady_clock::now();
    s.request = std::move(request);
    s.cached = total;
    if (speculative) {
      runtime::SpeculativeOptions spec = s.request.speculative;
      spec.draft_max = std::max(
          0, std::min({spec.draft_max, StageHost::kMaxDraftTokens, options_.prefill_chunk - 1}));
      s.length.emplace(spec);
      s.cached = prefill_end;
      first_step.emplace();
      const absl::Status prepared = PrepareStep(id, s, *first_step);
      if (!prepared.ok()) {
        sequences_.erase(id);
        return prepared;
      }
      s.timed = false;  // its round trip includes the prompt's
      SamplingToProto(sampling, top_logprobs, first_step->mutable_sampling());
    }
  }
  for (int32_t pos = 0; pos < prefill_end; pos += options_.prefill_chunk) {
    const int32_t n = std::min(options_.prefill_chunk, prefill_end - pos);
    v1::ForwardFrame frame;
    frame.set_sequence_id(id);
    frame.set_plan_epoch(options_.plan_epoch);
    frame.set_first_position(pos);
    frame.set_token_count(n);
    frame.set_dtype(static_cast<v1::DType>(options_.dtype));
    for (int32_t i = pos; i < pos + n; ++i) frame.add_tokens(prompt[i]);
    frame.set_no_sample(speculative || pos + n < total);
    SamplingToProto(sampling, top_logprobs, frame.mutable_sampling());
    if (!Send(frame)) return id;  // the reader reports the broken stream
  }
  if (first_step.has_value()) Send(*first_step);
  return id;
}

absl::Status Pipeline::PrepareStep(uint64_t id, Sequence& s, v1::ForwardFrame& frame) {
  const int32_t first_position = static_cast<int32_t>(s.history.size()) - 1;
  frame.Clear();
  frame.set_sequence_id(id);
  frame.set_plan_epoch(options_.plan_epoch);
  frame.set_first_position(first_position);
  frame.set_dtype(static_cast<v1::DType>(options_.dtype));
  frame.add_tokens(s.history.back());
  // The stages hold rejected drafts past the accepted length: this frame rolls them back.
  if (first_position < s.cached && first_position > 0) frame.set_kv_keep_length(first_position);
  s.drafts.clear();
  s.requested = 0;
  s.draft_seconds = 0;
  if (s.request.drafter != nullptr) {
    // Room: the frame writes positions up to first_position + k, which must fit the context, and
    // drafting past the remaining tokens would be wasted.
    const int32_t room = std::min(options_.context - 1 - first_position,
                                  s.request.max_tokens - s.stats.generated_tokens - 1);
    const int32_t want = std::max(0, std::min(s.length->Next(), room));
    if (want > 0) {
      const auto draft_start = std::chrono::steady_clock::now();
      const absl::Status drafted = s.request.drafter->Draft(s.history, want, proposal_);
      s.draft_seconds = SecondsBetween(draft_start, std::chrono::steady_clock::now());
      s.stats.speculative.draft_seconds += s.draft_seconds;
      if (!drafted.ok()) {
        return absl::Status(drafted.code(), absl::StrCat("drafting failed: ", drafted.message()));
      }
      if (!proposal_.deterministic()) {
        return absl::FailedPreconditionError(
            "the drafter proposed sampled tokens, but the pipeline's last stage verifies one-hot "
            "proposals only; use prompt lookup or a draft model with one-hot (greedy) proposals");
      }
      // Keep the usable prefix: at most `want` tokens, all inside the target's vocabulary.
      for (int32_t token : proposal_.tokens) {
        if (static_cast<int32_t>(s.drafts.size()) == want || token < 0 ||
            (options_.n_vocab > 0 && token >= options_.n_vocab)) {
          break;
        }
        s.drafts.push_back(token);
      }
    }
    s.requested = want;
    for (int32_t token : s.drafts) frame.add_draft_tokens(token);
  }
  frame.set_token_count(1 + static_cast<int32_t>(s.drafts.size()));
  s.cached = first_position + frame.token_count();
  s.timed = true;
  s.sent = std::chrono::steady_clock::now();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<SampledToken>> Pipeline::TakeStepResult(
    Sequence& s, const v1::ForwardResult& result) {
  const int32_t drafted = static_cast<int32_t>(s.drafts.size());
  const int32_t accepted = result.accepted_draft_count();
  const int32_t n = result.tokens_size();
  bool consistent = n >= 1 && n <= drafted + 1 && accepted == n - 1;
  for (int32_t i = 0; consistent && i < accepted; ++i) {
    consistent = result.tokens(i).token() == s.drafts[i];
  }
  if (!consistent) {
    return absl::InternalError(
        absl::StrCat("the last stage answered a frame with ", drafted, " draft tokens with ", n,
                     " tokens and accepted_draft_count ", accepted, " (expected 1 to ", drafted + 1,
                     " tokens: the accepted drafts, then one more)"));
  }
  std::vector<SampledToken> tokens(n);
  for (int32_t i = 0; i < n; ++i) {
    const v1::SampledToken& t = result.tokens(i);
    tokens[i].token = t.token();
    tokens[i].logprob = t.logprob();
    for (const auto& alt : t.top_logprobs()) {
      tokens[i].top_logprobs.push_back({alt.token(), alt.logprob()});
    }
  }
  if (s.length.has_value()) {
    const double pass_seconds =
        s.timed ? SecondsBetween(s.sent, std::chrono::steady_clock::now()) : 0.0;
    runtime::SpeculativeStats& spec = s.stats.speculative;
    ++spec.passes;
    spec.drafted_tokens += drafted;
    spec.accepted_tokens += accepted;
    spec.verify_seconds += pass_seconds;
    s.length->Update(s.requested, drafted, accepted, pass_seconds, s.draft_seconds);
  }
  return tokens;
}

void Pipeline::Cancel(uint64_t id) {
  std::optional<Sequence> s;
  {
    absl::MutexLock lock(&mu_);
    auto it = sequences_.find(id);
    if (it == sequences_.end()) return;
    s = std::move(it->second);
    sequences_.erase(it);
  }
  SendCancel(id);
  Finish(*s, absl::CancelledError("the sequence was cancelled"));
}

void Pipeline::ReadResults() {
  v1::ForwardResult result;
  while (stream_->Read(&result)) {
    const uint64_t id = result.sequence_id();
    std::optional<Sequence> finished;
    absl::Status finish_status;
    std::function<bool(const SampledToken&)> on_token;
    std::vector<SampledToken> tokens;
    {
      absl::MutexLock lock(&mu_);
      auto it = sequences_.find(id);
      if (it == sequences_.end()) continue;  // ended or cancelled meanwhile
      Sequence& s = it->second;
      const absl::Status status = ResultStatus(result);
      if (!status.ok()) {
        finish_status = absl::Status(status.code(), absl::StrCat("the pipeline refused sequence ",
                                                                 id, ": ", status.message()));
      } else if (result.tokens_size() == 0) {
        continue;
      } else {
        absl::StatusOr<std::vector<SampledToken>> taken = TakeStepResult(s, result);
        if (taken.ok()) {
          tokens = std::move(*taken);
          on_token = s.request.on_token;
        } else {
          finish_status = absl::Status(
              taken.status().code(), absl::StrCat("sequence ", id, ": ", taken.status().message()));
        }
      }
      if (!finish_status.ok()) {
        finished = std::move(s);
        sequences_.erase(it);
      }
    }
    // Emit the step's tokens one by one (callbacks outside the lock); the sequence may end at
    // any of them, or be cancelled from a callback.
    bool ended = finished.has_value();
    for (const SampledToken& token : tokens) {
      {
        absl::MutexLock lock(&mu_);
        auto it = sequences_.find(id);
        if (it == sequences_.end()) {
          ended = true;  // cancelled from the callback
          break;
        }
        Sequence& s = it->second;
        if (s.stats.generated_tokens == 0) {
          s.first_token = std::chrono::steady_clock::now();
          s.stats.prompt_seconds = SecondsBetween(s.start, s.first_token);
        }
        if (s.request.is_stop_token && s.request.is_stop_token(token.token)) {
          s.stats.stopped_by_token = true;
          finished = std::move(s);
          sequences_.erase(it);
          ended = true;
          break;
        }
        s.history.push_back(token.token);
        ++s.stats.generated_tokens;
        if (s.length.has_value()) ++s.stats.speculative.emitted_tokens;
      }
      const bool keep_going = !on_token || on_token(token);
      absl::MutexLock lock(&mu_);
      auto it = sequences_.find(id);
      if (it == sequences_.end()) {
        ended = true;
        break;
      }
      Sequence& s = it->second;
      const bool context_full = static_cast<int64_t>(s.history.size()) >= options_.context;
      if (!keep_going || s.stats.generated_tokens >= s.request.max_tokens || context_full) {
        s.stats.stopped_by_context =
            context_full && keep_going && s.stats.generated_tokens < s.request.max_tokens;
        finished = std::move(s);
        sequences_.erase(it);
        ended = true;
        break;
      }
    }
    std::optional<v1::ForwardFrame> next;
    if (!ended) {
      absl::MutexLock lock(&mu_);
      auto it = sequences_.find(id);
      if (it != sequences_.end()) {
        next.emplace();
        const absl::Status prepared = PrepareStep(id, it->second, *next);
        if (!prepared.ok()) {
          next.reset();
          finish_status = absl::Status(prepared.code(),
                                       absl::StrCat("sequence ", id, ": ", prepared.message()));
          finished = std::move(it->second);
          sequences_.erase(it);
        }
      }
    }
    if (next.has_value()) Send(*next);
    if (finished.has_value()) {
      SendCancel(id);
      Finish(*finished, finish_status);
    }
  }
  const grpc::Status status = stream_->Finish();
  std::map<uint64_t, Sequence> orphans;
  const absl::Status broken = absl::UnavailableError(
      absl::StrCat("the stream to the first stage at ", options_.stages[0], " ended",
                   status.ok() ? "" : absl::StrCat(": ", status.error_message())));
  {
    absl::MutexLock lock(&mu_);
    broken_ = broken;
    orphans.swap(sequences_);
  }
  for (auto& [id, s] : orphans) Finish(s, broken);
}

absl::StatusOr<std::vector<int32_t>> Pipeline::Generate(SequenceRequest request,
                                                        SequenceStats* stats) {
  absl::Notification done;
  absl::Status status;
  std::vector<int32_t> tokens;
  auto user_on_token = std::move(request.on_token);
  request.on_token = [&](const SampledToken& t) {
    tokens.push_back(t.token);
    return user_on_token ? user_on_token(t) : true;
  };
  request.on_done = [&](const absl::Status& s, const SequenceStats& st) {
    status = s;
    if (stats != nullptr) *stats = st;
    done.Notify();
  };
  RETURN_IF_ERROR(Start(std::move(request)).status());
  done.WaitForNotification();
  RETURN_IF_ERROR(status);
  return tokens;
}

}  // namespace exo::node
