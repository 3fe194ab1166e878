#include "discovery/internal/mdns_socket.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace exo::discovery::mdns_internal {
namespace {

absl::Status Errno(const char* call) {
  const int error = errno;
  if (error == EADDRINUSE || error == EACCES || error == EPERM || error == ENODEV ||
      error == EADDRNOTAVAIL || error == ENETUNREACH) {
    return absl::UnavailableError(absl::StrCat(call, ": ", strerror(error)));
  }
  return absl::InternalError(absl::StrCat(call, ": ", strerror(error)));
}

template <typename T>
absl::Status SetOption(int fd, int level, int name, const T& value, const char* what) {
  if (setsockopt(fd, level, name, &value, sizeof(value)) != 0) return Errno(what);
  return absl::OkStatus();
}

in6_addr GroupV6() {
  in6_addr group{};
  inet_pton(AF_INET6, "ff02::fb", &group);
  return group;
}

}  // namespace

absl::StatusOr<int> OpenMdnsSocket(bool ipv6, uint16_t port) {
  const int fd = socket(ipv6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Errno("socket");
  auto fail = [fd](absl::Status status) {
    close(fd);
    return status;
  };
  const int one = 1;
  const int ttl = 255;
  absl::Status status = SetOption(fd, SOL_SOCKET, SO_REUSEADDR, one, "setsockopt(SO_REUSEADDR)");
  if (status.ok())
    status = SetOption(fd, SOL_SOCKET, SO_REUSEPORT, one, "setsockopt(SO_REUSEPORT)");
  if (ipv6) {
    if (status.ok()) status = SetOption(fd, IPPROTO_IPV6, IPV6_V6ONLY, one, "IPV6_V6ONLY");
    if (status.ok())
      status = SetOption(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, one, "IPV6_RECVPKTINFO");
    if (status.ok())
      status = SetOption(fd, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, ttl, "IPV6_MULTICAST_HOPS");
    if (status.ok())
      status = SetOption(fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS, ttl, "IPV6_UNICAST_HOPS");
    if (status.ok())
      status = SetOption(fd, IPPROTO_IPV6, IPV6_MULTICAST_LOOP, one, "IPV6_MULTICAST_LOOP");
  } else {
    const unsigned char ttl_byte = 255;
    const unsigned char loop = 1;
    if (status.ok()) status = SetOption(fd, IPPROTO_IP, IP_PKTINFO, one, "IP_PKTINFO");
    if (status.ok())
      status = SetOption(fd, IPPROTO_IP, IP_MULTICAST_TTL, ttl_byte, "IP_MULTICAST_TTL");
    if (status.ok()) status = SetOption(fd, IPPROTO_IP, IP_TTL, ttl, "IP_TTL");
    if (status.ok())
      status = SetOption(fd, IPPROTO_IP, IP_MULTICAST_LOOP, loop, "IP_MULTICAST_LOOP");
  }
  if (!status.ok()) return fail(status);
  int rc;
  if (ipv6) {
    sockaddr_in6 address{};
    address.sin6_family = AF_INET6;
    address.sin6_port = htons(port);
    address.sin6_addr = in6addr_any;
    rc = bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  } else {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_ANY);
    rc = bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  }
  if (rc != 0) {
    return fail(absl::Status(Errno("bind").code(),
                             absl::StrCat("bind UDP port ", port, (ipv6 ? " (IPv6)" : " (IPv4)"),
                                          ": ", strerror(errno))));
  }
  return fd;
}

absl::Status JoinMdnsGroup(int fd, bool ipv6, uint32_t interface_index) {
  if (ipv6) {
    ipv6_mreq request{};
    request.ipv6mr_multiaddr = GroupV6();
    request.ipv6mr_interface = interface_index;
    return SetOption(fd, IPPROTO_IPV6, IPV6_JOIN_GROUP, request, "IPV6_JOIN_GROUP ff02::fb");
  }
  ip_mreqn request{};
  inet_pton(AF_INET, "224.0.0.251", &request.imr_multiaddr);
  request.imr_ifindex = static_cast<int>(interface_index);
  return SetOption(fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, request, "IP_ADD_MEMBERSHIP 224.0.0.251");
}

absl::Status SendMdns(int fd, bool ipv6, uint32_t interface_index,
                      const std::optional<Endpoint>& to, uint16_t mdns_port,
                      absl::Span<const uint8_t> bytes) {
  ssize_t sent;
  if (ipv6) {
    const unsigned int index = interface_index;
    if (absl::Status status =
            SetOption(fd, IPPROTO_IPV6, IPV6_MULTICAST_IF, index, "IPV6_MULTICAST_IF");
        !status.ok()) {
      return status;
    }
    sockaddr_in6 address{};
    address.sin6_family = AF_INET6;
    if (to.has_value()) {
      std::memcpy(&address.sin6_addr, to->address.data(), 16);
      address.sin6_port = htons(to->port);
      address.sin6_scope_id = interface_index;
    } else {
      address.sin6_addr = GroupV6();
      address.sin6_port = htons(mdns_port);
      address.sin6_scope_id = interface_index;
    }
    sent = sendto(fd, bytes.data(), bytes.size(), 0, reinterpret_cast<sockaddr*>(&address),
                  sizeof(address));
  } else {
    ip_mreqn request{};
    request.imr_ifindex = static_cast<int>(interface_index);
    if (absl::Status status =
            SetOption(fd, IPPROTO_IP, IP_MULTICAST_IF, request, "IP_MULTICAST_IF");
        !status.ok()) {
      return status;
    }
    sockaddr_in address{};
    address.sin_family = AF_INET;
    if (to.has_value()) {
      std::memcpy(&address.sin_addr, to->address.data(), 4);
      address.sin_port = htons(to->port);
    } else {
      inet_pton(AF_INET, "224.0.0.251", &address.sin_addr);
      address.sin_port = htons(mdns_port);
    }
    sent = sendto(fd, bytes.data(), bytes.size(), 0, reinterpret_cast<sockaddr*>(&address),
                  sizeof(address));
  }
  if (sent < 0) return Errno("sendto");
  return absl::OkStatus();
}

absl::StatusOr<std::optional<Received>> ReceiveMdns(int fd, bool ipv6) {
  Received received;
  received.bytes.resize(kMaxDnsMessageSize);
  sockaddr_storage source{};
  iovec vector{received.bytes.data(), received.bytes.size()};
  alignas(cmsghdr) char control[256];
  msghdr message{};
  message.msg_name = &source;
  message.msg_namelen = sizeof(source);
  message.msg_iov = &vector;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof(control);
  const ssize_t n = recvmsg(fd, &message, 0);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return std::nullopt;
    return absl::UnavailableError(absl::StrCat("recvmsg: ", strerror(errno)));
  }
  received.bytes.resize(static_cast<size_t>(n));
  for (cmsghdr* c = CMSG_FIRSTHDR(&message); c != nullptr; c = CMSG_NXTHDR(&message, c)) {
    if (!ipv6 && c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
      in_pktinfo info;
      std::memcpy(&info, CMSG_DATA(c), sizeof(info));
      received.interface_index = static_cast<uint32_t>(info.ipi_ifindex);
    } else if (ipv6 && c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
      in6_pktinfo info;
      std::memcpy(&info, CMSG_DATA(c), sizeof(info));
      received.interface_index = info.ipi6_ifindex;
    }
  }
  if (source.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&source);
    received.source.ipv6 = false;
    std::memcpy(received.source.address.data(), &in->sin_addr, 4);
    received.source.port = ntohs(in->sin_port);
  } else if (source.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&source);
    received.source.ipv6 = true;
    std::memcpy(received.source.address.data(), &in6->sin6_addr, 16);
    received.source.port = ntohs(in6->sin6_port);
  }
  return received;
}

}  // namespace exo::discovery::mdns_internal
