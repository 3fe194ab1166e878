// Checks for `exo-node doctor`: why might mDNS discovery not work on this machine? Each check
// returns plain structs with a finding and advice a person can act on. The multicast check sends
// one mDNS query for a random name on the interface it is given (and nowhere else).
#ifndef EXO_DISCOVERY_MDNS_DIAGNOSTICS_H_
#define EXO_DISCOVERY_MDNS_DIAGNOSTICS_H_

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace exo::discovery {

struct NetworkInterface {
  std::string name;
  uint32_t index = 0;
  bool up = false;
  bool running = false;
  bool multicast = false;
  bool loopback = false;
  std::vector<std::string> ipv4;  // "192.168.1.5"
  std::vector<std::string> ipv6;  // "fe80::1" (no zone)
  // Up, multicast-capable and not loopback: what MdnsOptions with no interfaces uses.
  bool mdns_default() const { return up && multicast && !loopback; }
};

// Every interface getifaddrs reports, sorted by index. Internal on a getifaddrs failure.
absl::StatusOr<std::vector<NetworkInterface>> ListNetworkInterfaces();

struct DiagnosticResult {
  bool ok = false;
  std::string finding;  // what was seen, one sentence
  std::string advice;   // what to do; empty when ok
};

// Describes the interfaces: which mDNS would use by default, which are down or lack MULTICAST.
DiagnosticResult CheckInterfaces(const std::vector<NetworkInterface>& interfaces);

// Whether UDP `port` (5353) can be bound with SO_REUSEADDR/SO_REUSEPORT next to any system
// responder, for IPv4 or IPv6.
DiagnosticResult CheckMdnsPortBindable(bool ipv6, uint16_t port = 5353);

// Joins the mDNS group on `interface_name`, sends a query for a random name there with multicast
// loopback on, and waits up to `timeout` to receive it back: fails when the interface has no
// multicast route, the join is refused, or a firewall drops it.
DiagnosticResult CheckMulticastLoopback(
    const std::string& interface_name, bool ipv6,
    std::chrono::milliseconds timeout = std::chrono::milliseconds(1000), uint16_t port = 5353);

}  // namespace exo::discovery

#endif  // EXO_DISCOVERY_MDNS_DIAGNOSTICS_H_
