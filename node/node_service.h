// The gRPC NodeService every node serves. Hello (the handshake) is answered by a function the
// cluster node provides; the pipeline RPCs (LoadShard, Forward, FetchTensors) go to a
// StageHandlers object that the stage server (issue 5) provides, and answer UNIMPLEMENTED until
// one is installed.
#ifndef EXO_NODE_NODE_SERVICE_H_
#define EXO_NODE_NODE_SERVICE_H_

#include <functional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "exo/v1/node.grpc.pb.h"
#include "node/wire.h"  // ToGrpcStatus, FromGrpcStatus

namespace exo::node {

// The pipeline half of NodeService. Implementations must be thread-safe (gRPC calls them from
// its own threads).
class StageHandlers {
 public:
  virtual ~StageHandlers() = default;
  virtual grpc::Status LoadShard(grpc::ServerContext* context,
                                 const exo::v1::LoadShardRequest* request,
                                 exo::v1::LoadShardResponse* response) = 0;
  virtual grpc::Status Forward(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<exo::v1::ForwardResult, exo::v1::ForwardFrame>* stream) = 0;
  virtual grpc::Status FetchTensors(grpc::ServerContext* context,
                                    const exo::v1::FetchTensorsRequest* request,
                                    grpc::ServerWriter<exo::v1::TensorChunk>* writer) = 0;
};

class NodeServiceImpl final : public exo::v1::NodeService::Service {
 public:
  // Answers one Hello; `peer` is gRPC's description of the caller ("ipv4:10.0.0.2:41234").
  using HelloHandler = std::function<grpc::Status(
      const std::string& peer, const exo::v1::HelloRequest&, exo::v1::HelloResponse*)>;

  explicit NodeServiceImpl(HelloHandler hello) : hello_(std::move(hello)) {}

  // Installs the pipeline handlers (not owned; must outlive the server). nullptr removes them.
  void SetStageHandlers(StageHandlers* stages) ABSL_LOCKS_EXCLUDED(mu_);

  grpc::Status Hello(grpc::ServerContext* context, const exo::v1::HelloRequest* request,
                     exo::v1::HelloResponse* response) override;
  grpc::Status LoadShard(grpc::ServerContext* context, const exo::v1::LoadShardRequest* request,
                         exo::v1::LoadShardResponse* response) override;
  grpc::Status Forward(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<exo::v1::ForwardResult, exo::v1::ForwardFrame>* stream) override;
  grpc::Status FetchTensors(grpc::ServerContext* context,
                            const exo::v1::FetchTensorsRequest* request,
                            grpc::ServerWriter<exo::v1::TensorChunk>* writer) override;

 private:
  StageHandlers* stages() ABSL_LOCKS_EXCLUDED(mu_);

  const HelloHandler hello_;
  absl::Mutex mu_;
  StageHandlers* stages_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace exo::node

#endif  // EXO_NODE_NODE_SERVICE_H_
