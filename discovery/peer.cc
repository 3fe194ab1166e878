#include "discovery/peer.h"

#include <arpa/inet.h>

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace exo::discovery {
namespace {

constexpr absl::string_view kExample = "write host:port, e.g. node-a.local:50051 or [::1]:50051";

absl::Status EntryError(size_t index, absl::string_view entry, absl::string_view problem) {
  return absl::InvalidArgumentError(
      absl::StrFormat("peer list entry %d ('%s'): %s", index + 1, entry, problem));
}

// Parses a decimal port in [1, 65535]; digits only, no sign.
absl::StatusOr<uint16_t> ParsePort(absl::string_view text) {
  if (text.empty()) return absl::InvalidArgumentError(absl::StrCat("missing port; ", kExample));
  if (text.size() > 5) {
    return absl::InvalidArgumentError(
        absl::StrFormat("port '%s' is out of range: ports are 1 to 65535", text));
  }
  uint32_t value = 0;
  for (char c : text) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) {
      return absl::InvalidArgumentError(absl::StrFormat("port '%s' is not a decimal number", text));
    }
    value = value * 10 + static_cast<uint32_t>(c - '0');
  }
  if (value == 0 || value > 65535) {
    return absl::InvalidArgumentError(
        absl::StrFormat("port '%s' is out of range: ports are 1 to 65535", text));
  }
  return static_cast<uint16_t>(value);
}

// Canonical text of an IPv6 literal (inside the brackets), keeping a zone suffix.
absl::StatusOr<std::string> CanonicalIpv6(absl::string_view text) {
  absl::string_view address = text;
  absl::string_view zone;
  if (size_t percent = text.find('%'); percent != absl::string_view::npos) {
    address = text.substr(0, percent);
    zone = text.substr(percent + 1);
    if (zone.empty()) return absl::InvalidArgumentError("empty IPv6 zone after '%'");
    for (char c : zone) {
      if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-' && c != '.') {
        return absl::InvalidArgumentError(absl::StrFormat("bad IPv6 zone '%s'", zone));
      }
    }
  }
  in6_addr parsed;
  const std::string address_string(address);
  if (address.empty() || inet_pton(AF_INET6, address_string.c_str(), &parsed) != 1) {
    return absl::InvalidArgumentError(absl::StrFormat("'%s' is not a valid IPv6 address", address));
  }
  char buffer[INET6_ADDRSTRLEN];
  if (inet_ntop(AF_INET6, &parsed, buffer, sizeof(buffer)) == nullptr) {
    return absl::InternalError("inet_ntop failed on a parsed IPv6 address");
  }
  return zone.empty() ? std::string(buffer) : absl::StrCat(buffer, "%", zone);
}

// Canonical text of a host name (lower case, no trailing dot) or dotted IPv4 address.
absl::StatusOr<std::string> CanonicalHost(absl::string_view text) {
  if (text.empty()) return absl::InvalidArgumentError(absl::StrCat("missing host; ", kExample));
  bool digits_and_dots = true;
  for (char c : text) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c)) && c != '.') digits_and_dots = false;
  }
  if (digits_and_dots) {
    in_addr parsed;
    const std::string address(text);
    if (inet_pton(AF_INET, address.c_str(), &parsed) != 1) {
      return absl::InvalidArgumentError(absl::StrFormat("'%s' is not a valid IPv4 address", text));
    }
    char buffer[INET_ADDRSTRLEN];
    if (inet_ntop(AF_INET, &parsed, buffer, sizeof(buffer)) == nullptr) {
      return absl::InternalError("inet_ntop failed on a parsed IPv4 address");
    }
    return std::string(buffer);
  }
  absl::string_view name = text;
  if (absl::EndsWith(name, ".")) name.remove_suffix(1);
  if (name.size() > 253) {
    return absl::InvalidArgumentError(
        absl::StrFormat("host name is %d characters long; at most 253 are allowed", name.size()));
  }
  for (absl::string_view label : absl::StrSplit(name, '.')) {
    if (label.empty() || label.size() > 63) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "host name '%s' has a label of %d characters; labels are 1 to 63", text, label.size()));
    }
    if (label.front() == '-' || label.back() == '-') {
      return absl::InvalidArgumentError(
          absl::StrFormat("host name '%s' has a label starting or ending with '-'", text));
    }
    for (char c : label) {
      if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-') {
        return absl::InvalidArgumentError(absl::StrFormat(
            "host name '%s' contains '%c'; host names use letters, digits, '-' and '.'", text, c));
      }
    }
  }
  return absl::AsciiStrToLower(name);
}

absl::StatusOr<PeerInfo> ParseEntry(size_t index, absl::string_view entry) {
  PeerInfo peer;
  peer.source = PeerSource::kStatic;
  absl::string_view port_text;
  if (absl::StartsWith(entry, "[")) {
    const size_t close = entry.find(']');
    if (close == absl::string_view::npos) {
      return EntryError(index, entry, "'[' without a closing ']'");
    }
    absl::StatusOr<std::string> host = CanonicalIpv6(entry.substr(1, close - 1));
    if (!host.ok()) return EntryError(index, entry, host.status().message());
    peer.host = *std::move(host);
    absl::string_view rest = entry.substr(close + 1);
    if (!absl::StartsWith(rest, ":")) {
      return EntryError(index, entry,
                        rest.empty() ? "missing port after ']'; write [address]:port"
                                     : "expected ':' and a port after ']'");
    }
    port_text = rest.substr(1);
  } else {
    const size_t colon = entry.find(':');
    if (colon == absl::string_view::npos) {
      return EntryError(index, entry, absl::StrCat("missing port; ", kExample));
    }
    if (entry.find(':', colon + 1) != absl::string_view::npos) {
      return EntryError(index, entry, "IPv6 addresses must be in brackets, e.g. [fe80::1]:50051");
    }
    if (entry.find(']') != absl::string_view::npos) {
      return EntryError(index, entry, "']' without an opening '['");
    }
    absl::StatusOr<std::string> host = CanonicalHost(entry.substr(0, colon));
    if (!host.ok()) return EntryError(index, entry, host.status().message());
    peer.host = *std::move(host);
    port_text = entry.substr(colon + 1);
  }
  absl::StatusOr<uint16_t> port = ParsePort(port_text);
  if (!port.ok()) return EntryError(index, entry, port.status().message());
  peer.grpc_port = *port;
  return peer;
}

}  // namespace

std::string PeerAddress(const PeerInfo& peer) {
  if (peer.host.find(':') != std::string::npos) {
    return absl::StrCat("[", peer.host, "]:", peer.grpc_port);
  }
  return absl::StrCat(peer.host, ":", peer.grpc_port);
}

absl::StatusOr<std::vector<PeerInfo>> ParseStaticPeers(std::string_view text) {
  // The packaged Abseil has its own string_view type.
  const absl::string_view list(text.data(), text.size());
  std::vector<PeerInfo> peers;
  if (absl::StripAsciiWhitespace(list).empty()) return peers;
  std::vector<absl::string_view> entries = absl::StrSplit(list, ',');
  for (size_t i = 0; i < entries.size(); ++i) {
    const absl::string_view entry = absl::StripAsciiWhitespace(entries[i]);
    if (entry.empty()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("peer list entry %d is empty; separate peers with single commas, e.g. "
                          "a.local:50051,b.local:50051",
                          i + 1));
    }
    absl::StatusOr<PeerInfo> peer = ParseEntry(i, entry);
    if (!peer.ok()) return peer.status();
    for (size_t j = 0; j < peers.size(); ++j) {
      if (peers[j].host == peer->host && peers[j].grpc_port == peer->grpc_port) {
        return EntryError(
            i, entry, absl::StrFormat("duplicate of entry %d (%s)", j + 1, PeerAddress(peers[j])));
      }
    }
    peers.push_back(*std::move(peer));
  }
  return peers;
}

}  // namespace exo::discovery
