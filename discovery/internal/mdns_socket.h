// Socket helpers shared by MdnsService and the diagnostics: plain POSIX calls on file
// descriptors, errors as absl::Status with the failing call and errno text.
#ifndef EXO_DISCOVERY_INTERNAL_MDNS_SOCKET_H_
#define EXO_DISCOVERY_INTERNAL_MDNS_SOCKET_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "discovery/internal/mdns_engine.h"

namespace exo::discovery::mdns_internal {

// A UDP socket bound to [any]:port with SO_REUSEADDR and SO_REUSEPORT, multicast TTL/hops 255,
// multicast loopback on, and packet info (receiving interface) enabled. Non-blocking.
absl::StatusOr<int> OpenMdnsSocket(bool ipv6, uint16_t port);
// Joins 224.0.0.251 / ff02::fb on the interface.
absl::Status JoinMdnsGroup(int fd, bool ipv6, uint32_t interface_index);
// Sends on the interface: to the group (port `mdns_port`) when `to` is empty.
absl::Status SendMdns(int fd, bool ipv6, uint32_t interface_index,
                      const std::optional<Endpoint>& to, uint16_t mdns_port,
                      absl::Span<const uint8_t> bytes);

struct Received {
  uint32_t interface_index = 0;
  Endpoint source;
  std::vector<uint8_t> bytes;
};
// One datagram if any is waiting; empty when none (EAGAIN). Unavailable on other errors.
absl::StatusOr<std::optional<Received>> ReceiveMdns(int fd, bool ipv6);

}  // namespace exo::discovery::mdns_internal

#endif  // EXO_DISCOVERY_INTERNAL_MDNS_SOCKET_H_
