#include "node/cluster_auth.h"

#include <grpcpp/grpcpp.h>

#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

namespace exo::node {
namespace {

constexpr char kTokenContext[] = "exo-node data path v1";
constexpr size_t kMaxTokenBytes = 512;

}  // namespace

std::string MakeDataPathToken(const ClusterKey& key, const std::string& node_id, absl::Time now) {
  const std::string seconds = absl::StrCat(absl::ToUnixSeconds(now));
  const std::string proof = key.Prove(kTokenContext, {node_id, seconds});
  return absl::StrCat(node_id, ".", seconds, ".", absl::BytesToHexString(proof));
}

absl::Status CheckDataPathToken(const ClusterKey& key, absl::string_view token, absl::Time now,
                                absl::Duration max_skew) {
  if (token.size() > kMaxTokenBytes) {
    return absl::PermissionDeniedError("the data-path token is too long");
  }
  std::vector<absl::string_view> parts = absl::StrSplit(token, '.');
  if (parts.size() != 3 || parts[0].empty()) {
    return absl::PermissionDeniedError(
        "the data-path token is malformed (want <node id>.<unix seconds>.<proof>)");
  }
  int64_t seconds = 0;
  if (!absl::SimpleAtoi(parts[1], &seconds)) {
    return absl::PermissionDeniedError("the data-path token's time is not a number");
  }
  const std::string proof = absl::HexStringToBytes(parts[2]);
  if (proof.size() != 32 ||
      absl::BytesToHexString(proof) != absl::AsciiStrToLower(std::string(parts[2]))) {
    return absl::PermissionDeniedError("the data-path token's proof is not 64 hex digits");
  }
  if (!key.Verify(proof, kTokenContext, {parts[0], parts[1]})) {
    return absl::PermissionDeniedError(
        "the data-path token was not made with this cluster's key (another cluster, or "
        "--cluster_key differs)");
  }
  const absl::Duration skew = absl::AbsDuration(absl::FromUnixSeconds(seconds) - now);
  if (skew > max_skew) {
    return absl::PermissionDeniedError(
        absl::StrCat("the data-path token is ", absl::FormatDuration(skew),
                     " away from this node's clock (at "
                     "most ",
                     absl::FormatDuration(max_skew), " allowed); check both machines' clocks"));
  }
  return absl::OkStatus();
}

bool ClusterKeyAuthenticator::IsAuthenticated(const grpc::ServerContext& context) {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find(kSessionTokenMetadataKey);
  if (it == metadata.end()) return false;
  const absl::string_view token(it->second.data(), it->second.size());
  return CheckDataPathToken(key_, token, absl::Now()).ok();
}

std::function<void(grpc::ClientContext&)> DataPathAuthorizer(ClusterKey key, std::string node_id) {
  return [key = std::move(key), node_id = std::move(node_id)](grpc::ClientContext& context) {
    context.AddMetadata(kSessionTokenMetadataKey, MakeDataPathToken(key, node_id, absl::Now()));
  };
}

}  // namespace exo::node
