// A minimal NodeService for `exo-node stage` and the pipeline tests: Hello answers with the node's
// id, and LoadShard, Forward and FetchTensors go to a ShardHandler. The cluster daemon's own
// NodeService (membership, with the cluster-key handshake) delegates to ShardHandler the same way.
#ifndef EXO_NODE_STAGE_SERVER_H_
#define EXO_NODE_STAGE_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "exo/v1/node.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "node/shard_handler.h"

namespace exo::node {

class StageNodeService final : public v1::NodeService::Service {
 public:
  StageNodeService(std::string node_id, ShardHandler* handler)
      : node_id_(std::move(node_id)), handler_(handler) {}

  grpc::Status Hello(grpc::ServerContext* context, const v1::HelloRequest* request,
                     v1::HelloResponse* response) override;
  grpc::Status LoadShard(grpc::ServerContext* context, const v1::LoadShardRequest* request,
                         v1::LoadShardResponse* response) override {
    return handler_->LoadShard(context, request, response);
  }
  grpc::Status Forward(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::ForwardResult, v1::ForwardFrame>* stream) override {
    return handler_->Forward(context, stream);
  }
  grpc::Status FetchTensors(grpc::ServerContext* context, const v1::FetchTensorsRequest* request,
                            grpc::ServerWriter<v1::TensorChunk>* writer) override {
    return handler_->FetchTensors(context, request, writer);
  }

 private:
  std::string node_id_;
  ShardHandler* handler_;
};

struct StartedServer {
  std::unique_ptr<grpc::Server> server;
  int port = 0;  // the bound port (useful with port 0)
};

// Serves `service` on host:port (port 0 picks a free one).
absl::StatusOr<StartedServer> StartServer(grpc::Service* service, const std::string& host,
                                          int port);

}  // namespace exo::node

#endif  // EXO_NODE_STAGE_SERVER_H_
