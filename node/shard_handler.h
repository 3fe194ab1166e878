// ShardHandler: the data-path RPCs of NodeService (LoadShard, Forward, FetchTensors). The node's
// NodeService implementation delegates these three calls here; Hello and membership live
// elsewhere.
//
// Topology (docs/pipeline.md): a chain. The coordinator opens one persistent Forward stream to
// the first stage; each stage without the head opens one persistent Forward stream to the next
// stage (LoadShardRequest.next_stage) and sends its output frames there; the last stage samples
// and writes the tokens back on the stream the frame came in on, and every stage relays results
// arriving from downstream to the upstream stream that sent that sequence. Per token that is N
// hops carrying hidden states and N small hops carrying tokens back.
#ifndef EXO_NODE_SHARD_HANDLER_H_
#define EXO_NODE_SHARD_HANDLER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <ostream>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "exo/v1/node.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "node/node_service.h"

namespace exo::node {

// Decides whether a call comes from a peer that completed the Hello handshake. The membership
// layer implements it (a session token in the call's metadata); handlers refuse everyone else
// with UNAUTHENTICATED.
class PeerAuthenticator {
 public:
  virtual ~PeerAuthenticator() = default;
  virtual bool IsAuthenticated(const grpc::ServerContext& context) = 0;
};

// Metadata key that carries the session token Hello handed out.
inline constexpr char kSessionTokenMetadataKey[] = "x-exo-session";

// Accepts every caller (a stage run without a cluster key, and tests).
class AllowAllPeers : public PeerAuthenticator {
 public:
  bool IsAuthenticated(const grpc::ServerContext&) override { return true; }
};

// Accepts calls whose kSessionTokenMetadataKey equals `token`.
class SessionTokenAuthenticator : public PeerAuthenticator {
 public:
  explicit SessionTokenAuthenticator(std::string token) : token_(std::move(token)) {}
  bool IsAuthenticated(const grpc::ServerContext& context) override;

 private:
  std::string token_;
};

struct ShardHandlerOptions {
  std::string model_path;  // a local GGUF file; empty: fetch tensors from `fetch_from`
  std::string fetch_from;  // host:port of a peer that has the model file
  std::string models_dir;  // where fetched tensors are cached
  int32_t threads = 0;     // compute threads of a loaded shard; 0: one per physical core
  // Adds this node's credentials to the calls it makes (downstream Forward, FetchTensors).
  std::function<void(grpc::ClientContext&)> authorize_outgoing;
  std::ostream* log = nullptr;  // load and fetch progress; null: quiet
};

namespace internal {
class Shard;
class ModelSource;
}  // namespace internal

class ShardHandler : public StageHandlers {
 public:
  // `authenticator` must outlive the handler.
  ShardHandler(ShardHandlerOptions options, PeerAuthenticator* authenticator);
  ~ShardHandler() override;
  ShardHandler(const ShardHandler&) = delete;
  ShardHandler& operator=(const ShardHandler&) = delete;

  // Loads (or replaces) this node's shard: opens the model (fetching the shard's tensors from
  // the peer when the file is absent), creates the stage, and links to the next stage.
  grpc::Status LoadShard(grpc::ServerContext* context, const v1::LoadShardRequest* request,
                         v1::LoadShardResponse* response) override;
  // One persistent stream of frames in and results out; returns when the peer closes it, after
  // cancelling the sequences that came in on it.
  grpc::Status Forward(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::ForwardResult, v1::ForwardFrame>* stream) override;
  grpc::Status FetchTensors(grpc::ServerContext* context, const v1::FetchTensorsRequest* request,
                            grpc::ServerWriter<v1::TensorChunk>* writer) override;

 private:
  std::shared_ptr<internal::Shard> CurrentShard();

  const ShardHandlerOptions options_;
  PeerAuthenticator* const authenticator_;
  const std::unique_ptr<internal::ModelSource> source_;  // thread-safe
  absl::Mutex load_mu_;                                  // one LoadShard at a time
  absl::Mutex mu_;
  std::shared_ptr<internal::Shard> shard_ ABSL_GUARDED_BY(mu_);
};

}  // namespace exo::node

#endif  // EXO_NODE_SHARD_HANDLER_H_
