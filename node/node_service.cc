#include "node/node_service.h"

namespace exo::node {
namespace {

grpc::Status NotYet(const char* rpc) {
  return grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                      std::string(rpc) +
                          " is not available on this node yet: this build serves cluster "
                          "membership only (pipeline stages arrive with issue 5)");
}

}  // namespace

void NodeServiceImpl::SetStageHandlers(StageHandlers* stages) {
  absl::MutexLock lock(&mu_);
  stages_ = stages;
}

StageHandlers* NodeServiceImpl::stages() {
  absl::MutexLock lock(&mu_);
  return stages_;
}

grpc::Status NodeServiceImpl::Hello(grpc::ServerContext* context,
                                    const exo::v1::HelloRequest* request,
                                    exo::v1::HelloResponse* response) {
  return hello_(context->peer(), *request, response);
}

grpc::Status NodeServiceImpl::LoadShard(grpc::ServerContext* context,
                                        const exo::v1::LoadShardRequest* request,
                                        exo::v1::LoadShardResponse* response) {
  if (StageHandlers* s = stages()) return s->LoadShard(context, request, response);
  return NotYet("LoadShard");
}

grpc::Status NodeServiceImpl::Forward(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<exo::v1::ForwardResult, exo::v1::ForwardFrame>* stream) {
  if (StageHandlers* s = stages()) return s->Forward(context, stream);
  return NotYet("Forward");
}

grpc::Status NodeServiceImpl::FetchTensors(grpc::ServerContext* context,
                                           const exo::v1::FetchTensorsRequest* request,
                                           grpc::ServerWriter<exo::v1::TensorChunk>* writer) {
  if (StageHandlers* s = stages()) return s->FetchTensors(context, request, writer);
  return NotYet("FetchTensors");
}

}  // namespace exo::node
