// Multicast DNS (RFC 6762) and DNS-SD (RFC 6763) for exo-node: one object that both publishes
// this node's `_exo-node._tcp.local` instance (responder) and finds the other nodes' instances
// (browser), on its own thread running an asio::io_context.
//
// Responder: probes its instance and host names (3 probes 250 ms apart), renames itself on a
// conflict ("name (2)", host "name-2.local"), announces twice 1 s apart, answers PTR/SRV/TXT/A/AAAA
// questions (multicast, unicast for QU questions, legacy unicast with the query id for queries from
// ports other than 5353), re-announces when the TXT changes, and sends a goodbye (TTL 0) at Stop.
// Browser: queries for the service with exponential back-off (1 s doubling to 60 s) and
// known-answer suppression, caches records by TTL (refresh queries at 80-95% of TTL), follows
// PTR -> SRV/TXT -> A/AAAA, and reports peers added, updated and removed.
//
// Port 5353 is shared with any system responder (Avahi, mDNSResponder) through SO_REUSEADDR and
// SO_REUSEPORT. Every packet goes through the hardened codec (dns_message.h); malformed packets
// are dropped and counted. See docs/discovery.md.
#ifndef EXO_DISCOVERY_MDNS_H_
#define EXO_DISCOVERY_MDNS_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "discovery/dns_message.h"
#include "discovery/peer.h"

namespace exo::discovery {

inline constexpr char kExoServiceType[] = "_exo-node._tcp.local";
inline constexpr uint16_t kMdnsPort = 5353;

// Protocol timings; the defaults are those of RFC 6762. Tests shorten them.
struct MdnsTimings {
  std::chrono::milliseconds probe_interval{250};           // §8.1
  int probe_count = 3;                                     // §8.1
  std::chrono::milliseconds announce_interval{1000};       // §8.3
  int announce_count = 2;                                  // §8.3: at least two
  std::chrono::milliseconds query_initial_interval{1000};  // §5.2
  std::chrono::milliseconds query_max_interval{60000};     // §5.2: cap of the doubling
  std::chrono::seconds host_record_ttl{120};               // SRV, A, AAAA (§10)
  std::chrono::seconds other_record_ttl{4500};             // PTR, TXT (§10)
  // How long a record stays cached after its goodbye (§10.1). The peer itself is reported removed
  // as soon as the goodbye arrives; a re-announcement within this time brings it back.
  std::chrono::milliseconds goodbye_grace{1000};
};

enum class PeerEventKind { kAdded, kUpdated, kRemoved };
// "added", "updated", "removed".
const char* PeerEventKindName(PeerEventKind kind);

struct PeerEvent {
  PeerEventKind kind = PeerEventKind::kAdded;
  PeerInfo peer;  // for kRemoved: the last known record
};

struct MdnsStats {
  uint64_t packets_received = 0;
  uint64_t packets_malformed = 0;  // refused by the codec, dropped
  uint64_t packets_ignored = 0;    // wrong interface, response not from port 5353, opcode != 0
  uint64_t packets_sent = 0;
  uint64_t send_errors = 0;
  uint64_t queries_answered = 0;
  uint64_t answers_suppressed = 0;  // known-answer suppression (§7.1)
  uint64_t conflicts = 0;           // probe or record conflicts seen (§8.1, §9)
  uint64_t cache_entries = 0;
  uint64_t cache_full_drops = 0;  // records not cached because the cache was full
};

struct MdnsOptions {
  // Interface names ("eth0"). Empty: every interface that is up, multicast-capable and not
  // loopback. Packets arriving on other interfaces are ignored.
  std::vector<std::string> interfaces;
  bool ipv4 = true;
  bool ipv6 = true;

  bool publish = true;  // run the responder for our own instance
  bool browse = true;   // run the browser for other instances

  std::string service_type = kExoServiceType;
  // Preferred DNS-SD instance label (UTF-8, at most 63 bytes), e.g. "node-a". Renamed
  // "node-a (2)", "node-a (3)" ... on conflict; instance_name() tells the current one.
  std::string instance_name;
  // Host name for the SRV target and A/AAAA records, e.g. "node-a.local" (".local" is appended if
  // missing). Renamed "node-a-2.local" on conflict.
  std::string host_name;
  uint16_t port = 0;  // SRV port: the node's gRPC port
  // TXT key/values. exo-node passes id, proto, bus, ckf (cluster-key fingerprint), mem, dev.
  std::vector<TxtEntry> txt;

  MdnsTimings timings;
  uint16_t mdns_port = kMdnsPort;   // UDP port to bind and send to; only tests change it
  size_t max_cache_entries = 4096;  // bound on memory a hostile LAN can make us use
  uint64_t random_seed = 0;         // 0: seeded from the clock

  // Called on the service's thread for every peer change; must not block or call Stop().
  std::function<void(const PeerEvent&)> on_peer_event;
};

// Checks an Options struct without opening sockets: names, TXT, port, timings. InvalidArgument
// saying what to change.
absl::Status ValidateMdnsOptions(const MdnsOptions& options);

namespace mdns_internal {
class MdnsEngine;
}

// Thread-safe. Start() opens the sockets and starts the thread; Stop() (or the destructor) sends
// the goodbye and joins it.
class MdnsService {
 public:
  // InvalidArgument for bad options or unknown interface names, Unavailable when no selected
  // interface can be used or port 5353 cannot be bound (the message says why and what to do).
  static absl::StatusOr<std::unique_ptr<MdnsService>> Start(MdnsOptions options);
  ~MdnsService();
  MdnsService(const MdnsService&) = delete;
  MdnsService& operator=(const MdnsService&) = delete;

  // Sends the goodbye on every interface and stops the thread. Idempotent.
  void Stop();
  // Replaces the TXT entries and re-announces them. InvalidArgument for bad entries.
  absl::Status UpdateTxt(std::vector<TxtEntry> txt);
  // Resolved peers other than ourselves, sorted by instance name.
  std::vector<PeerInfo> Peers() const;
  // Current instance label and host name (after any conflict renaming).
  std::string instance_name() const;
  std::string host_name() const;
  // True once probing finished and the instance is announced.
  bool announced() const;
  // Names of the interfaces in use.
  std::vector<std::string> interfaces() const;
  MdnsStats stats() const;

  class Impl;

 private:
  explicit MdnsService(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace exo::discovery

#endif  // EXO_DISCOVERY_MDNS_H_
