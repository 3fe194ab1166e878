#include "node/shard_handler.h"

#include <algorithm>
#include <deque>
#include <map>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "kernels/thread_pool.h"
#include "node/stage_host.h"
#include "node/tensor_fetch.h"
#include "node/wire.h"
#include "runtime/gguf.h"
#include "runtime/model_config.h"

namespace exo::node {

bool SessionTokenAuthenticator::IsAuthenticated(const grpc::ServerContext& context) {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find(kSessionTokenMetadataKey);
  return it != metadata.end() && !token_.empty() &&
         std::string(it->second.data(), it->second.size()) == token_;
}

namespace internal {

// The model file this node serves from: the local file (opened once, identity computed once), or
// sparse copies fetched from a peer.
class ModelSource {
 public:
  explicit ModelSource(const ShardHandlerOptions& options) : options_(options) {}

  // The local file and its identity; FailedPrecondition when this node has none.
  absl::StatusOr<std::pair<std::shared_ptr<const runtime::GgufFile>, ModelIdentity>> Local() {
    absl::MutexLock lock(&mu_);
    if (options_.model_path.empty()) {
      return absl::FailedPreconditionError(
          "this node has no model file (it was started without --model)");
    }
    if (!local_) {
      ASSIGN_OR_RETURN(std::unique_ptr<runtime::GgufFile> file,
                       runtime::GgufFile::Open(options_.model_path));
      ASSIGN_OR_RETURN(identity_, ComputeModelIdentity(options_.model_path));
      local_ = std::move(file);
    }
    return std::make_pair(local_, identity_);
  }

 private:
  const ShardHandlerOptions& options_;
  absl::Mutex mu_;
  std::shared_ptr<const runtime::GgufFile> local_ ABSL_GUARDED_BY(mu_);
  ModelIdentity identity_ ABSL_GUARDED_BY(mu_);
};

// The upstream end of a Forward stream: results for the sequences that came in on it are written
// here by the shard's worker and downstream reader, under a lock, until the handler returns.
class Upstream {
 public:
  explicit Upstream(grpc::ServerReaderWriter<v1::ForwardResult, v1::ForwardFrame>* stream)
      : stream_(stream) {}
  bool Write(const v1::ForwardResult& result) {
    absl::MutexLock lock(&mu_);
    return stream_ != nullptr && stream_->Write(result);
  }
  void Close() {
    absl::MutexLock lock(&mu_);
    stream_ = nullptr;
  }

 private:
  absl::Mutex mu_;
  grpc::ServerReaderWriter<v1::ForwardResult, v1::ForwardFrame>* stream_ ABSL_GUARDED_BY(mu_);
};

// A loaded shard: the StageHost, the worker thread that batches queued frames into steps, and the
// persistent stream to the next stage.
class Shard {
 public:
  Shard(std::shared_ptr<const runtime::GgufFile> file, std::unique_ptr<kernels::ThreadPool> pool,
        std::unique_ptr<StageHost> host, std::string next_stage,
        std::function<void(grpc::ClientContext&)> authorize)
      : file_(std::move(file)),
        pool_(std::move(pool)),
        host_(std::move(host)),
        next_stage_(std::move(next_stage)),
        authorize_(std::move(authorize)) {
    // The worker runs every StageHost step and sends its outputs on.
    worker_ = std::thread([this] { WorkerLoop(); });
  }

  ~Shard() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    worker_.join();
    CloseDownstream();
  }

  uint64_t plan_epoch() const { return host_->options().plan_epoch; }
  uint64_t resident_bytes() const { return host_->weight_bytes() + host_->kv_cache_bytes(); }

  void Submit(StageFrame frame, std::shared_ptr<Upstream> upstream) {
    absl::MutexLock lock(&mu_);
    queue_.push_back(Item{std::move(frame), std::move(upstream)});
  }

  // The stream `upstream` ended: its sequences are cancelled here and downstream.
  void DropUpstream(const Upstream* upstream) {
    std::vector<uint64_t> ids;
    {
      absl::MutexLock lock(&routes_mu_);
      for (const auto& [id, up] : routes_) {
        if (up.get() == upstream) ids.push_back(id);
      }
    }
    absl::MutexLock lock(&mu_);
    for (uint64_t id : ids) {
      StageFrame cancel;
      cancel.sequence_id = id;
      cancel.plan_epoch = plan_epoch();
      cancel.end_of_sequence = true;
      queue_.push_back(Item{std::move(cancel), nullptr});
    }
  }

 private:
  struct Item {
    StageFrame frame;
    std::shared_ptr<Upstream> upstream;  // null for internal cancels
    bool ends = false;                   // the frame ends its sequence
  };

  void WorkerLoop() {
    std::vector<Item> items;
    std::vector<StageFrame> frames;
    while (true) {
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](Shard* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu_) {
              return s->stopping_ || !s->queue_.empty();
            },
            this));
        if (queue_.empty() && stopping_) return;
        items.assign(std::make_move_iterator(queue_.begin()),
                     std::make_move_iterator(queue_.end()));
        queue_.clear();
      }
      frames.clear();
      for (Item& item : items) {
        if (item.upstream) {
          absl::MutexLock lock(&routes_mu_);
          routes_[item.frame.sequence_id] = item.upstream;
        }
        item.ends = item.frame.end_of_sequence;
        frames.push_back(std::move(item.frame));
      }
      std::vector<StageOutput> outputs = host_->Step(std::move(frames));
      for (size_t i = 0; i < outputs.size(); ++i) Dispatch(std::move(outputs[i]), items[i]);
      items.clear();
    }
  }

  void Dispatch(StageOutput output, const Item& item) {
    const uint64_t id = output.sequence_id;
    bool result_comes_back = false;  // from downstream, relayed by RelayResults
    if (output.status.ok() && output.next.has_value()) {
      const bool cancel = output.next->token_count == 0;
      absl::Status sent = SendDownstream(std::move(*output.next));
      if (!sent.ok()) {
        output.status = std::move(sent);
      } else {
        result_comes_back = !cancel;
      }
    }
    if (item.ends && !result_comes_back) {  // the sequence is over on this stage
      absl::MutexLock lock(&routes_mu_);
      routes_.erase(id);
    }
    if (result_comes_back) return;
    if (output.status.ok() && output.tokens.empty()) return;  // no_sample chunk or cancel
    if (item.upstream) {
      v1::ForwardResult result;
      OutputToResult(output, plan_epoch(), &result);
      item.upstream->Write(result);
    }
  }

  absl::Status SendDownstream(StageFrame frame) {
    if (next_stage_.empty()) {
      return absl::FailedPreconditionError(
          "this stage has no head and no next stage (LoadShard without next_stage)");
    }
    if (!downstream_) {
      auto d = std::make_unique<Downstream>();
      d->channel = MakePeerChannel(next_stage_);
      d->stub = v1::NodeService::NewStub(d->channel);
      if (authorize_) authorize_(d->context);
      d->stream = d->stub->Forward(&d->context);
      Downstream* raw = d.get();
      // The reader relays results from the next stage to the stream each sequence came from.
      d->reader = std::thread([this, raw] { RelayResults(raw); });
      downstream_ = std::move(d);
    }
    v1::ForwardFrame proto;
    FrameToProto(std::move(frame), &proto);
    if (!downstream_->stream->Write(proto)) {
      CloseDownstream();
      return absl::UnavailableError(
          absl::StrCat("the next stage at ", next_stage_, " closed the stream"));
    }
    return absl::OkStatus();
  }

  struct Downstream {
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<v1::NodeService::Stub> stub;
    grpc::ClientContext context;
    std::unique_ptr<grpc::ClientReaderWriter<v1::ForwardFrame, v1::ForwardResult>> stream;
    std::thread reader;
  };

  void RelayResults(Downstream* d) {
    v1::ForwardResult result;
    while (d->stream->Read(&result)) {
      std::shared_ptr<Upstream> up;
      {
        absl::MutexLock lock(&routes_mu_);
        auto it = routes_.find(result.sequence_id());
        if (it != routes_.end()) up = it->second;
      }
      if (up) up->Write(result);
    }
    // The next stage is gone (or refused us): every sequence routed through here waits for a
    // result that will not come, so each gets an error now instead of hanging.
    std::map<uint64_t, std::shared_ptr<Upstream>> orphans;
    {
      absl::MutexLock lock(&routes_mu_);
      orphans.swap(routes_);
    }
    for (const auto& [id, up] : orphans) {
      v1::ForwardResult result;
      result.set_sequence_id(id);
      result.set_plan_epoch(plan_epoch());
      StatusToResult(absl::UnavailableError(
                         absl::StrCat("the stream to the next stage at ", next_stage_, " ended")),
                     &result);
      up->Write(result);
    }
  }

  // Ends the downstream stream (worker thread or destructor only).
  void CloseDownstream() {
    if (!downstream_) return;
    downstream_->stream->WritesDone();
    downstream_->context.TryCancel();  // never wait on a next stage that stopped answering
    downstream_->reader.join();
    const grpc::Status status = downstream_->stream->Finish();
    (void)status;
    downstream_.reset();
  }

  std::shared_ptr<const runtime::GgufFile> file_;
  std::unique_ptr<kernels::ThreadPool> pool_;
  std::unique_ptr<StageHost> host_;  // used by the worker thread only
  const std::string next_stage_;
  const std::function<void(grpc::ClientContext&)> authorize_;
  std::unique_ptr<Downstream> downstream_;  // worker thread only (and the destructor)

  absl::Mutex mu_;
  std::deque<Item> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Mutex routes_mu_;
  std::map<uint64_t, std::shared_ptr<Upstream>> routes_ ABSL_GUARDED_BY(routes_mu_);
  std::thread worker_;
};

}  // namespace internal

namespace {

grpc::Status Unauthenticated(const char* rpc) {
  return grpc::Status(
      grpc::StatusCode::UNAUTHENTICATED,
      absl::StrCat(rpc,
                   " refused: the caller did not prove this cluster's key (missing "
                   "or invalid token in metadata '",
                   kSessionTokenMetadataKey, "'; every node needs the same --cluster_key)"));
}

}  // namespace

ShardHandler::ShardHandler(ShardHandlerOptions options, PeerAuthenticator* authenticator)
    : options_(std::move(options)),
      authenticator_(authenticator),
      source_(std::make_unique<internal::ModelSource>(options_)) {}

ShardHandler::~ShardHandler() {
  absl::MutexLock lock(&mu_);
  shard_.reset();
}

std::shared_ptr<internal::Shard> ShardHandler::CurrentShard() {
  absl::MutexLock lock(&mu_);
  return shard_;
}

grpc::Status ShardHandler::LoadShard(grpc::ServerContext* context,
                                     const v1::LoadShardRequest* request,
                                     v1::LoadShardResponse* response) {
  if (!authenticator_->IsAuthenticated(*context)) return Unauthenticated("LoadShard");
  if (request->experts_size() > 0) {
    return grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                        "expert placement (LoadShardRequest.experts) is not supported yet");
  }
  absl::MutexLock load_lock(&load_mu_);
  const ModelIdentity want = IdentityFromProto(request->model());
  // Where this node's tensors come from when it lacks the file: the flag, else the plan.
  const std::string fetch_from =
      !options_.fetch_from.empty() ? options_.fetch_from : request->fetch_from();
  std::shared_ptr<const runtime::GgufFile> file;
  if (!options_.model_path.empty()) {
    auto local = source_->Local();
    if (!local.ok()) return ToGrpcStatus(local.status());
    const ModelIdentity& have = local->second;
    const bool same = (want.file_size == 0 || want.file_size == have.file_size) &&
                      (want.sha256.empty() || want.sha256 == have.sha256);
    if (same) {
      file = local->first;
    } else if (fetch_from.empty()) {
      return grpc::Status(
          grpc::StatusCode::FAILED_PRECONDITION,
          absl::StrCat("the plan names model ", want.name, " (sha256 ",
                       HexString(want.sha256).substr(0, 16), "...) but this node's file ",
                       options_.model_path, " is sha256 ", HexString(have.sha256).substr(0, 16),
                       "...; give this node the same file"));
    } else if (options_.log != nullptr) {
      *options_.log << "this node's " << options_.model_path << " is not " << want.name
                    << "; fetching the shard's tensors from " << fetch_from << "\n"
                    << std::flush;
    }
  }
  if (file == nullptr && !fetch_from.empty()) {
    auto stub = v1::NodeService::NewStub(MakePeerChannel(fetch_from));
    FetchOptions fetch;
    fetch.model = want;
    fetch.layers = {request->layer_begin(), request->layer_end()};
    fetch.has_embedding = request->has_embedding();
    fetch.has_head = request->has_head();
    fetch.models_dir = options_.models_dir;
    fetch.progress = options_.log;
    fetch.authorize = options_.authorize_outgoing;
    absl::StatusOr<FetchResult> fetched = FetchShardTensors(*stub, fetch);
    if (!fetched.ok()) {
      return grpc::Status(static_cast<grpc::StatusCode>(fetched.status().code()),
                          absl::StrCat("fetching the shard's tensors from ", fetch_from,
                                       " failed: ", fetched.status().message()));
    }
    absl::StatusOr<std::unique_ptr<runtime::GgufFile>> opened =
        runtime::GgufFile::Open(fetched->path);
    if (!opened.ok()) return ToGrpcStatus(opened.status());
    file = std::move(*opened);
  } else if (file == nullptr) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "this node has neither a model file nor a peer to fetch it from");
  }

  absl::StatusOr<runtime::ModelConfig> config = runtime::ReadModelConfig(*file);
  if (!config.ok()) return ToGrpcStatus(config.status());
  StageHostOptions ho;
  ho.plan_epoch = request->plan_epoch();
  ho.layers = {request->layer_begin(), request->layer_end()};
  ho.has_embedding = request->has_embedding();
  ho.has_head = request->has_head();
  ho.context = request->context_length() > 0
                   ? std::min(request->context_length(), config->context_length)
                   : std::min(4096, config->context_length);
  ho.max_sequences = request->max_sequences() > 0 ? request->max_sequences() : 4;
  ho.max_batch_tokens = request->max_batch_tokens() > 0 ? request->max_batch_tokens() : 256;
  if (!ho.has_head && request->next_stage().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "a stage without the head needs next_stage (where to send its output)");
  }
  // Free the old shard (its memory and its link) before loading the new one.
  {
    std::shared_ptr<internal::Shard> old;
    {
      absl::MutexLock lock(&mu_);
      old = std::move(shard_);
    }
  }
  auto pool = std::make_unique<kernels::ThreadPool>(options_.threads);
  ho.pool = pool.get();
  absl::StatusOr<std::unique_ptr<StageHost>> host = StageHost::Create(*file, ho);
  if (!host.ok()) return ToGrpcStatus(host.status());
  auto shard = std::make_shared<internal::Shard>(
      file, std::move(pool), std::move(*host), request->next_stage(), options_.authorize_outgoing);
  response->set_plan_epoch(request->plan_epoch());
  response->set_resident_bytes(shard->resident_bytes());
  if (options_.log != nullptr) {
    *options_.log
        << absl::StrFormat(
               "loaded layers %d to %d%s%s for plan epoch %d (%.1f MiB weights and KV)%s\n",
               ho.layers.begin, ho.layers.end, ho.has_embedding ? " + embedding" : "",
               ho.has_head ? " + head" : "", ho.plan_epoch, shard->resident_bytes() / 1048576.0,
               request->next_stage().empty() ? ""
                                             : absl::StrCat(", next stage ", request->next_stage()))
        << std::flush;
  }
  absl::MutexLock lock(&mu_);
  shard_ = std::move(shard);
  return grpc::Status::OK;
}

grpc::Status ShardHandler::Forward(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::ForwardResult, v1::ForwardFrame>* stream) {
  if (!authenticator_->IsAuthenticated(*context)) return Unauthenticated("Forward");
  auto upstream = std::make_shared<internal::Upstream>(stream);
  std::set<std::shared_ptr<internal::Shard>> used;
  v1::ForwardFrame frame;
  while (stream->Read(&frame)) {
    std::shared_ptr<internal::Shard> shard = CurrentShard();
    if (!shard) {
      v1::ForwardResult result;
      result.set_sequence_id(frame.sequence_id());
      result.set_plan_epoch(frame.plan_epoch());
      StatusToResult(
          absl::FailedPreconditionError("no shard is loaded on this node; send LoadShard first"),
          &result);
      upstream->Write(result);
      continue;
    }
    used.insert(shard);
    shard->Submit(FrameFromProto(std::move(frame)), upstream);
    frame.Clear();
  }
  for (const auto& shard : used) shard->DropUpstream(upstream.get());
  upstream->Close();
  return grpc::Status::OK;
}

grpc::Status ShardHandler::FetchTensors(grpc::ServerContext* context,
                                        const v1::FetchTensorsRequest* request,
                                        grpc::ServerWriter<v1::TensorChunk>* writer) {
  if (!authenticator_->IsAuthenticated(*context)) return Unauthenticated("FetchTensors");
  auto local = source_->Local();
  if (!local.ok()) return ToGrpcStatus(local.status());
  return ServeTensors(*local->first, options_.model_path, local->second, *request, writer);
}

}  // namespace exo::node
