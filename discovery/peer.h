// Peers: who a node may talk to. Found by mDNS / DNS-SD or given as a static list.
#ifndef EXO_DISCOVERY_PEER_H_
#define EXO_DISCOVERY_PEER_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace exo::discovery {

enum class PeerSource {
  kStatic,  // from --peers
  kMdns,    // from a DNS-SD answer
};

struct PeerInfo {
  std::string node_id;  // empty until learned (static peers: from the Hello handshake)
  std::string host;     // host name (lower case) or IP literal; IPv6 without brackets
  uint16_t grpc_port = 0;
  PeerSource source = PeerSource::kStatic;
  std::string cluster_fingerprint;  // mDNS TXT fingerprint of the cluster key; empty if unknown

  // Filled for mDNS peers only (empty for static peers).
  std::string instance_name;  // DNS-SD instance label, e.g. "node-a" or "node-a (2)"
  std::string host_name;      // SRV target, e.g. "node-a.local"
  // Every A/AAAA address of host_name as text, IPv4 first; link-local IPv6 with "%interface".
  // `host` is the first of these.
  std::vector<std::string> addresses;
  std::string interface_name;              // interface the service was last heard on
  std::map<std::string, std::string> txt;  // TXT key/values, keys lower-cased; "key" alone -> ""

  friend bool operator==(const PeerInfo&, const PeerInfo&) = default;
};

// "host:port" with IPv6 literals in brackets ("[::1]:50051"), e.g. for a gRPC target.
std::string PeerAddress(const PeerInfo& peer);

// Parses a comma-separated static peer list: "host:port,10.0.0.2:port,[::1]:port".
// Whitespace around entries is ignored; an empty or all-blank string is an empty list. Each
// entry needs a port in [1, 65535]; IPv6 literals must be bracketed (a zone as in
// "[fe80::1%eth0]" is allowed); host names follow RFC 1123; dotted numbers must be a valid IPv4
// address. Duplicates (same host, compared case-insensitively and by IP value, and same port)
// are refused. InvalidArgument naming the entry and what to write instead on any error.
absl::StatusOr<std::vector<PeerInfo>> ParseStaticPeers(std::string_view list);

}  // namespace exo::discovery

#endif  // EXO_DISCOVERY_PEER_H_
