// The Hello handshake, without sockets: building and checking requests and responses.
//
// The caller sends a fresh random nonce and proves its key over (version, its id, boot id,
// nonce); the callee answers with a proof over the caller's nonce and both ids, so the caller
// knows the answer is fresh. A caller only admits a peer after its own Hello was answered with a
// valid proof; a callee treats an incoming Hello only as a hint to dial back, so a replayed
// request admits nobody.
#ifndef EXO_NODE_HANDSHAKE_H_
#define EXO_NODE_HANDSHAKE_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "exo/v1/node.pb.h"
#include "node/cluster_key.h"

namespace exo::node {

inline constexpr int kProtocolVersion = exo::v1::PROTOCOL_VERSION_1;
inline constexpr size_t kHelloNonceBytes = 16;

// Who is speaking: the node id, and this process's boot id and start time.
struct LocalInstance {
  std::string node_id;
  uint64_t boot_id = 0;
  uint64_t started_unix_millis = 0;
};

// A request with a fresh random nonce and the caller's proof. `protocol_version` is a parameter
// only so tests can play an incompatible peer.
exo::v1::HelloRequest MakeHelloRequest(const ClusterKey& key, const LocalInstance& self,
                                       const exo::v1::Capabilities& capabilities,
                                       int protocol_version = kProtocolVersion);

// Callee side. FailedPrecondition for another protocol version, PermissionDenied for a proof that
// does not match our key (the message names both fingerprints), InvalidArgument for a malformed
// request (bad id or nonce).
absl::Status CheckHelloRequest(const ClusterKey& key, const exo::v1::HelloRequest& request);

exo::v1::HelloResponse MakeHelloResponse(const ClusterKey& key, const LocalInstance& self,
                                         const exo::v1::Capabilities& capabilities,
                                         const exo::v1::HelloRequest& request);

// Caller side: the response answers `request` (same nonce) from a node holding our key and
// speaking our version. Same codes as CheckHelloRequest.
absl::Status CheckHelloResponse(const ClusterKey& key, const exo::v1::HelloRequest& request,
                                const exo::v1::HelloResponse& response);

}  // namespace exo::node

#endif  // EXO_NODE_HANDSHAKE_H_
