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
    s.stats.prompt_tokens = static_cast<int32_t>(prompt.size());
    s.start = std::chrono::steady_clock::now();
    s.request = std::move(request);
  }
  const int32_t total = static_cast<int32_t>(prompt.size());
  for (int32_t pos = 0; pos < total; pos += options_.prefill_chunk) {
    const int32_t n = std::min(options_.prefill_chunk, total - pos);
    v1::ForwardFrame frame;
    frame.set_sequence_id(id);
    frame.set_plan_epoch(options_.plan_epoch);
    frame.set_first_position(pos);
    frame.set_token_count(n);
    frame.set_dtype(static_cast<v1::DType>(options_.dtype));
    for (int32_t i = pos; i < pos + n; ++i) frame.add_tokens(prompt[i]);
    frame.set_no_sample(pos + n < total);
    SamplingToProto(sampling, top_logprobs, frame.mutable_sampling());
    if (!Send(frame)) break;  // the reader reports the broken stream
  }
  return id;
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
    bool emitted = false;  // a token to hand out; the sequence may go on
    SampledToken token;
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
        const v1::SampledToken& t = result.tokens(0);
        token.token = t.token();
        token.logprob = t.logprob();
        for (const auto& alt : t.top_logprobs()) {
          token.top_logprobs.push_back({alt.token(), alt.logprob()});
        }
        if (s.stats.generated_tokens == 0) {
          s.first_token = std::chrono::steady_clock::now();
          s.stats.prompt_seconds = SecondsBetween(s.start, s.first_token);
        }
        if (s.request.is_stop_token && s.request.is_stop_token(token.token)) {
          s.stats.stopped_by_token = true;
        } else {
          s.history.push_back(token.token);
          ++s.stats.generated_tokens;
          on_token = s.request.on_token;
          emitted = true;
        }
      }
      if (!emitted) {
        finished = std::move(s);
        sequences_.erase(it);
      }
    }
    const bool keep_going = !on_token || on_token(token);
    std::optional<v1::ForwardFrame> next;
    if (emitted) {
      absl::MutexLock lock(&mu_);
      auto it = sequences_.find(id);
      if (it == sequences_.end()) continue;  // cancelled from the callback
      Sequence& s = it->second;
      const bool context_full = static_cast<int64_t>(s.history.size()) >= options_.context;
      if (!keep_going || s.stats.generated_tokens >= s.request.max_tokens || context_full) {
        s.stats.stopped_by_context =
            context_full && keep_going && s.stats.generated_tokens < s.request.max_tokens;
        finished = std::move(s);
        sequences_.erase(it);
      } else {
        next.emplace();
        next->set_sequence_id(id);
        next->set_plan_epoch(options_.plan_epoch);
        next->set_first_position(static_cast<int32_t>(s.history.size()) - 1);
        next->set_token_count(1);
        next->set_dtype(static_cast<v1::DType>(options_.dtype));
        next->add_tokens(s.history.back());
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
