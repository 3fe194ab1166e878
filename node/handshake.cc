#include "node/handshake.h"

#include <openssl/rand.h>

#include "absl/strings/str_cat.h"
#include "node/identity.h"

namespace exo::node {
namespace {

constexpr char kRequestContext[] = "exo-node hello request v1";
constexpr char kResponseContext[] = "exo-node hello response v1";

std::string Decimal(uint64_t value) { return absl::StrCat(value); }

absl::Status CheckVersion(int theirs, absl::string_view who) {
  if (theirs == kProtocolVersion) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat(who, " speaks protocol version ", theirs, ", this node speaks ",
                   kProtocolVersion, ": run the same exo-node release on every node"));
}

}  // namespace

exo::v1::HelloRequest MakeHelloRequest(const ClusterKey& key, const LocalInstance& self,
                                       const exo::v1::Capabilities& capabilities,
                                       int protocol_version) {
  std::string nonce(kHelloNonceBytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(nonce.data()), kHelloNonceBytes) != 1) {
    // Falls back to two random words from the same source used for ids (which aborts on failure).
    const uint64_t a = RandomUint64(), b = RandomUint64();
    nonce.assign(reinterpret_cast<const char*>(&a), 8);
    nonce.append(reinterpret_cast<const char*>(&b), 8);
  }
  exo::v1::HelloRequest request;
  request.set_protocol_version(static_cast<exo::v1::ProtocolVersion>(protocol_version));
  request.set_node_id(self.node_id);
  request.set_nonce(nonce);
  request.set_boot_id(self.boot_id);
  request.set_started_unix_millis(self.started_unix_millis);
  request.set_cluster_fingerprint(key.Fingerprint());
  *request.mutable_capabilities() = capabilities;
  request.set_cluster_key_proof(key.Prove(
      kRequestContext, {Decimal(protocol_version), self.node_id, Decimal(self.boot_id), nonce}));
  return request;
}

absl::Status CheckHelloRequest(const ClusterKey& key, const exo::v1::HelloRequest& request) {
  if (absl::Status version = CheckVersion(request.protocol_version(), "the caller");
      !version.ok()) {
    return version;
  }
  if (!IsValidNodeId(request.node_id())) {
    return absl::InvalidArgumentError("Hello: node_id must be 32 lower-case hex digits");
  }
  if (request.nonce().size() != kHelloNonceBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("Hello: the nonce must be ", kHelloNonceBytes, " bytes"));
  }
  if (!key.Verify(request.cluster_key_proof(), kRequestContext,
                  {Decimal(request.protocol_version()), request.node_id(),
                   Decimal(request.boot_id()), request.nonce()})) {
    return absl::PermissionDeniedError(absl::StrCat(
        "cluster key mismatch: the calling node's key has fingerprint ",
        request.cluster_fingerprint().empty() ? "(not given)"
                                              : request.cluster_fingerprint().substr(0, 32),
        ", the called node's has ", key.Fingerprint(),
        "; give every node the same --cluster_key or --cluster_key_file"));
  }
  return absl::OkStatus();
}

exo::v1::HelloResponse MakeHelloResponse(const ClusterKey& key, const LocalInstance& self,
                                         const exo::v1::Capabilities& capabilities,
                                         const exo::v1::HelloRequest& request) {
  exo::v1::HelloResponse response;
  response.set_protocol_version(static_cast<exo::v1::ProtocolVersion>(kProtocolVersion));
  response.set_node_id(self.node_id);
  response.set_boot_id(self.boot_id);
  response.set_started_unix_millis(self.started_unix_millis);
  *response.mutable_capabilities() = capabilities;
  response.set_cluster_key_proof(
      key.Prove(kResponseContext, {Decimal(kProtocolVersion), request.nonce(), request.node_id(),
                                   self.node_id, Decimal(self.boot_id)}));
  return response;
}

absl::Status CheckHelloResponse(const ClusterKey& key, const exo::v1::HelloRequest& request,
                                const exo::v1::HelloResponse& response) {
  if (absl::Status version = CheckVersion(response.protocol_version(), "the peer"); !version.ok()) {
    return version;
  }
  if (!IsValidNodeId(response.node_id())) {
    return absl::InvalidArgumentError("Hello answer: node_id must be 32 lower-case hex digits");
  }
  if (!key.Verify(response.cluster_key_proof(), kResponseContext,
                  {Decimal(response.protocol_version()), request.nonce(), request.node_id(),
                   response.node_id(), Decimal(response.boot_id())})) {
    return absl::PermissionDeniedError(absl::StrCat(
        "cluster key mismatch: the peer could not prove this node's key ", "(fingerprint ",
        key.Fingerprint(), "); give every node the same --cluster_key or --cluster_key_file"));
  }
  return absl::OkStatus();
}

}  // namespace exo::node
