// The cluster key: a shared secret that decides which nodes form one cluster. Nodes prove they
// hold it with HMAC-SHA256 over handshake transcripts and bus events; mDNS only ever carries a
// short fingerprint, never the key.
#ifndef EXO_NODE_CLUSTER_KEY_H_
#define EXO_NODE_CLUSTER_KEY_H_

#include <initializer_list>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace exo::node {

class ClusterKey {
 public:
  // The key of an unconfigured node, so that nodes on one home network cluster with zero
  // configuration. Any other key isolates a cluster from default nodes and from other keys.
  static constexpr char kDefaultKey[] = "exo-default";

  // The built-in default key.
  static ClusterKey Default();
  // A key given as text (--cluster_key). InvalidArgument if empty.
  static absl::StatusOr<ClusterKey> FromString(absl::string_view key);
  // A key read from a file (--cluster_key_file); trailing whitespace (a newline) is ignored.
  // InvalidArgument if the file cannot be read or holds nothing.
  static absl::StatusOr<ClusterKey> FromFile(const std::string& path);

  bool is_default() const { return key_ == kDefaultKey; }

  // 16 hex digits of SHA-256 over a domain tag and the key: safe to publish (mDNS TXT, logs),
  // enough to tell two clusters apart, useless for forging proofs.
  std::string Fingerprint() const;

  // HMAC-SHA256 (32 bytes) keyed with the cluster key over `context` and `fields`, each
  // length-prefixed so that no two different field lists give the same transcript.
  std::string Prove(absl::string_view context,
                    std::initializer_list<absl::string_view> fields) const;
  // Constant-time check of a proof made by Prove with the same context and fields.
  bool Verify(absl::string_view proof, absl::string_view context,
              std::initializer_list<absl::string_view> fields) const;

 private:
  explicit ClusterKey(std::string key) : key_(std::move(key)) {}
  std::string key_;
};

}  // namespace exo::node

#endif  // EXO_NODE_CLUSTER_KEY_H_
