// Credentials on the data path (LoadShard, Forward, FetchTensors) between nodes of one cluster.
//
// Every such call carries, in metadata `x-exo-session`, a token "<node id>.<unix seconds>.<hex
// HMAC-SHA256 of both under the cluster key>". The callee accepts it when the proof verifies
// and the time is within `max_skew` of its own clock, so a node without the key can neither
// load shards, send frames nor read tensors, and a captured token stops working after a few
// minutes. (Gap: within that window a token seen on the LAN could be replayed; the Hello
// handshake's nonce-based proof has no such window. Per-connection session keys would close it.)
#ifndef EXO_NODE_CLUSTER_AUTH_H_
#define EXO_NODE_CLUSTER_AUTH_H_

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "node/cluster_key.h"
#include "node/shard_handler.h"

namespace grpc {
class ClientContext;
}

namespace exo::node {

inline constexpr absl::Duration kDataPathTokenMaxSkew = absl::Minutes(5);

// A token for calls made by `node_id` at `now`.
std::string MakeDataPathToken(const ClusterKey& key, const std::string& node_id, absl::Time now);

// OK for a token made with the same key within `max_skew` of `now`; PermissionDenied otherwise
// (malformed, wrong key, or too old / too far in the future), saying which.
absl::Status CheckDataPathToken(const ClusterKey& key, absl::string_view token, absl::Time now,
                                absl::Duration max_skew = kDataPathTokenMaxSkew);

// Accepts calls whose metadata carries a valid token for `key`.
class ClusterKeyAuthenticator : public PeerAuthenticator {
 public:
  explicit ClusterKeyAuthenticator(ClusterKey key) : key_(std::move(key)) {}
  bool IsAuthenticated(const grpc::ServerContext& context) override;

 private:
  const ClusterKey key_;
};

// Adds a fresh token for `node_id` to each outgoing call.
std::function<void(grpc::ClientContext&)> DataPathAuthorizer(ClusterKey key, std::string node_id);

}  // namespace exo::node

#endif  // EXO_NODE_CLUSTER_AUTH_H_
