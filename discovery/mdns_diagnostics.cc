#include "discovery/mdns_diagnostics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <random>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "discovery/dns_message.h"
#include "discovery/internal/mdns_socket.h"

namespace exo::discovery {

absl::StatusOr<std::vector<NetworkInterface>> ListNetworkInterfaces() {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) {
    return absl::InternalError(absl::StrCat("getifaddrs: ", strerror(errno)));
  }
  std::vector<NetworkInterface> interfaces;
  for (ifaddrs* entry = list; entry != nullptr; entry = entry->ifa_next) {
    if (entry->ifa_name == nullptr) continue;
    auto it = std::find_if(interfaces.begin(), interfaces.end(),
                           [&](const NetworkInterface& i) { return i.name == entry->ifa_name; });
    if (it == interfaces.end()) {
      NetworkInterface interface;
      interface.name = entry->ifa_name;
      interface.index = if_nametoindex(entry->ifa_name);
      interface.up = (entry->ifa_flags & IFF_UP) != 0;
      interface.running = (entry->ifa_flags & IFF_RUNNING) != 0;
      interface.multicast = (entry->ifa_flags & IFF_MULTICAST) != 0;
      interface.loopback = (entry->ifa_flags & IFF_LOOPBACK) != 0;
      interfaces.push_back(std::move(interface));
      it = interfaces.end() - 1;
    }
    if (entry->ifa_addr == nullptr) continue;
    char buffer[INET6_ADDRSTRLEN] = {};
    if (entry->ifa_addr->sa_family == AF_INET) {
      const auto* in = reinterpret_cast<const sockaddr_in*>(entry->ifa_addr);
      if (inet_ntop(AF_INET, &in->sin_addr, buffer, sizeof(buffer)) != nullptr) {
        it->ipv4.push_back(buffer);
      }
    } else if (entry->ifa_addr->sa_family == AF_INET6) {
      const auto* in6 = reinterpret_cast<const sockaddr_in6*>(entry->ifa_addr);
      if (inet_ntop(AF_INET6, &in6->sin6_addr, buffer, sizeof(buffer)) != nullptr) {
        it->ipv6.push_back(buffer);
      }
    }
  }
  freeifaddrs(list);
  std::sort(interfaces.begin(), interfaces.end(),
            [](const NetworkInterface& a, const NetworkInterface& b) { return a.index < b.index; });
  return interfaces;
}

DiagnosticResult CheckInterfaces(const std::vector<NetworkInterface>& interfaces) {
  std::vector<std::string> usable;
  std::vector<std::string> notes;
  for (const NetworkInterface& interface : interfaces) {
    if (interface.loopback) continue;
    if (interface.mdns_default()) {
      if (interface.ipv4.empty() && interface.ipv6.empty()) {
        notes.push_back(absl::StrCat(interface.name, " has no address"));
      } else {
        usable.push_back(absl::StrCat(interface.name, " (", absl::StrJoin(interface.ipv4, ","),
                                      interface.ipv4.empty() || interface.ipv6.empty() ? "" : ",",
                                      absl::StrJoin(interface.ipv6, ","), ")"));
      }
    } else if (!interface.up) {
      notes.push_back(absl::StrCat(interface.name, " is down"));
    } else if (!interface.multicast) {
      notes.push_back(absl::StrCat(interface.name, " lacks MULTICAST"));
    }
  }
  DiagnosticResult result;
  result.ok = !usable.empty();
  result.finding = usable.empty() ? "no interface is up, multicast-capable and addressed"
                                  : absl::StrCat("mDNS uses ", absl::StrJoin(usable, ", "));
  if (!notes.empty()) absl::StrAppend(&result.finding, "; ", absl::StrJoin(notes, "; "));
  if (!result.ok) {
    result.advice =
        "connect to a LAN (Wi-Fi or Ethernet), enable multicast on the interface "
        "(ip link set DEV multicast on), or list peers statically with --peers";
  }
  return result;
}

DiagnosticResult CheckMdnsPortBindable(bool ipv6, uint16_t port) {
  DiagnosticResult result;
  absl::StatusOr<int> fd = mdns_internal::OpenMdnsSocket(ipv6, port);
  if (!fd.ok()) {
    result.finding = absl::StrCat("cannot bind UDP ", port, ipv6 ? " (IPv6)" : " (IPv4)",
                                  " with SO_REUSEPORT: ", fd.status().message());
    result.advice =
        "another program holds the port without SO_REUSEPORT (ss -ulpn 'sport = :5353' shows "
        "it); stop it or let Avahi be the only responder and use static peers";
    return result;
  }
  close(*fd);
  result.ok = true;
  result.finding = absl::StrCat("UDP ", port, ipv6 ? " (IPv6)" : " (IPv4)",
                                " can be bound next to other responders");
  return result;
}

DiagnosticResult CheckMulticastLoopback(const std::string& interface_name, bool ipv6,
                                        std::chrono::milliseconds timeout, uint16_t port) {
  DiagnosticResult result;
  const uint32_t index = if_nametoindex(interface_name.c_str());
  const std::string family = ipv6 ? "IPv6 ff02::fb" : "IPv4 224.0.0.251";
  if (index == 0) {
    result.finding = absl::StrCat("no interface named '", interface_name, "'");
    result.advice = "check the name with `ip link`";
    return result;
  }
  absl::StatusOr<int> fd = mdns_internal::OpenMdnsSocket(ipv6, port);
  if (!fd.ok()) {
    result.finding = absl::StrCat("cannot bind UDP ", port, ": ", fd.status().message());
    result.advice = "see the port check above";
    return result;
  }
  if (absl::Status status = mdns_internal::JoinMdnsGroup(*fd, ipv6, index); !status.ok()) {
    close(*fd);
    result.finding =
        absl::StrCat("cannot join ", family, " on ", interface_name, ": ", status.message());
    result.advice = absl::StrCat("give ", interface_name, " an address and MULTICAST (ip link set ",
                                 interface_name, " multicast on)");
    return result;
  }
  // A query for a random name nobody owns: harmless to other responders, recognisable here.
  std::random_device device;
  const std::string label = absl::StrCat("exo-doctor-", device(), device());
  DnsMessage query;
  query.header.id = 0;
  query.questions.push_back(DnsQuestion{*DnsName::Parse(absl::StrCat(label, ".local")),
                                        DnsType::kTxt, kDnsClassIn, false});
  absl::StatusOr<std::vector<uint8_t>> bytes = SerializeDnsMessage(query);
  absl::Status sent = bytes.ok()
                          ? mdns_internal::SendMdns(*fd, ipv6, index, std::nullopt, port, *bytes)
                          : bytes.status();
  if (!sent.ok()) {
    close(*fd);
    result.finding =
        absl::StrCat("cannot send to ", family, " on ", interface_name, ": ", sent.message());
    result.advice = absl::StrCat("add a multicast route: ip route add 224.0.0.0/4 dev ",
                                 interface_name, " (or check the firewall)");
    return result;
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{*fd, POLLIN, 0};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (poll(&p, 1, static_cast<int>(std::max<int64_t>(left.count(), 1))) <= 0) continue;
    absl::StatusOr<std::optional<mdns_internal::Received>> received =
        mdns_internal::ReceiveMdns(*fd, ipv6);
    if (!received.ok() || !received->has_value()) continue;
    absl::StatusOr<DnsMessage> message = ParseDnsMessage((*received)->bytes);
    if (message.ok() && !message->questions.empty() &&
        message->questions.front().name == query.questions.front().name) {
      close(*fd);
      result.ok = true;
      result.finding = absl::StrCat(family, " works on ", interface_name,
                                    " (joined, sent and received our own query)");
      return result;
    }
  }
  close(*fd);
  result.finding = absl::StrCat("our own ", family, " query did not come back on ", interface_name,
                                " within ", timeout.count(), " ms");
  result.advice =
      "a firewall may drop UDP 5353 (allow it: e.g. ufw allow 5353/udp, or firewalld "
      "--add-service=mdns), or the interface does not loop multicast back; use --peers if the "
      "network blocks multicast";
  return result;
}

}  // namespace exo::discovery
