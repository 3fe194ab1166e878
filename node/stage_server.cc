#include "node/stage_server.h"

#include "absl/strings/str_cat.h"
#include "node/wire.h"

namespace exo::node {

grpc::Status StageNodeService::Hello(grpc::ServerContext* context, const v1::HelloRequest* request,
                                     v1::HelloResponse* response) {
  if (request->protocol_version() != v1::PROTOCOL_VERSION_1) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        absl::StrCat("protocol version ", request->protocol_version(),
                                     " is not supported; this node speaks version 1"));
  }
  response->set_protocol_version(v1::PROTOCOL_VERSION_1);
  response->set_node_id(node_id_);
  return grpc::Status::OK;
}

absl::StatusOr<StartedServer> StartServer(grpc::Service* service, const std::string& host,
                                          int port) {
  if (port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("port must be 0 to 65535, got ", port));
  }
  StartedServer started;
  grpc::ServerBuilder builder;
  const std::string address = host.find(':') != std::string::npos
                                  ? absl::StrCat("[", host, "]:", port)
                                  : absl::StrCat(host, ":", port);
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &started.port);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.SetMaxSendMessageSize(kMaxMessageBytes);
  builder.RegisterService(service);
  started.server = builder.BuildAndStart();
  if (!started.server || started.port == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", address, " (port in use or address not local?)"));
  }
  return started;
}

}  // namespace exo::node
