// The mDNS responder and browser as a pure state machine: no sockets, no threads, no clock of its
// own. The caller feeds it received packets and the current time, asks when to wake it next, and
// sends the packets it produces. MdnsService (mdns.cc) is the Asio shell around it; the unit tests
// drive it with a made-up clock. Not thread-safe: one owner thread.
#ifndef EXO_DISCOVERY_INTERNAL_MDNS_ENGINE_H_
#define EXO_DISCOVERY_INTERNAL_MDNS_ENGINE_H_

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "discovery/dns_message.h"
#include "discovery/mdns.h"
#include "discovery/peer.h"

namespace exo::discovery::mdns_internal {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;
using Duration = Clock::duration;

// An IPv4 (first 4 bytes used) or IPv6 address with its UDP port.
struct Endpoint {
  bool ipv6 = false;
  std::array<uint8_t, 16> address{};
  uint16_t port = 0;
  friend bool operator==(const Endpoint&, const Endpoint&) = default;
};

// A network interface as the engine sees it: where to send, which addresses to announce.
struct MdnsInterface {
  uint32_t index = 0;
  std::string name;
  std::vector<std::array<uint8_t, 4>> ipv4;
  std::vector<std::array<uint8_t, 16>> ipv6;
};

struct OutgoingPacket {
  uint32_t interface_index = 0;
  bool ipv6 = false;
  std::optional<Endpoint> unicast_to;  // empty: the mDNS group (224.0.0.251 / ff02::fb)
  std::vector<uint8_t> bytes;
};

enum class ResponderState { kIdle, kProbing, kAnnouncing, kAnnounced, kStopped };

// Text of an address: "10.0.0.1", "fe80::1" (no zone).
std::string AddressToString(bool ipv6, const std::array<uint8_t, 16>& address);
// Canonical uncompressed rdata bytes, as compared by the probe tie-break (RFC 6762 §8.2).
std::vector<uint8_t> CanonicalRdata(const DnsRecord& record);
// "name (n)" for n >= 2, shortening `base` at a UTF-8 boundary to stay within 63 bytes.
std::string RenamedInstance(const std::string& base, int n);
// -1, 0, 1: the RFC 6762 §8.2 lexicographic comparison of two record sets (sorted first).
int CompareRecordSets(std::vector<DnsRecord> ours, std::vector<DnsRecord> theirs);

class MdnsEngine {
 public:
  // `options` must have passed ValidateMdnsOptions; interfaces, on_peer_event and mdns_port of it
  // are not used here.
  MdnsEngine(const MdnsOptions& options, std::vector<MdnsInterface> interfaces);

  void Start(TimePoint now);
  // A datagram that arrived on `interface_index` from `source`. Malformed ones are counted.
  void HandlePacket(uint32_t interface_index, const Endpoint& source,
                    absl::Span<const uint8_t> bytes, TimePoint now);
  // Runs every timer due at `now`.
  void Advance(TimePoint now);
  // When Advance should run next; empty when nothing is scheduled.
  std::optional<TimePoint> NextWakeup() const;
  // Queues goodbyes for our records; the engine does nothing afterwards.
  void Stop(TimePoint now);
  absl::Status UpdateTxt(const std::vector<TxtEntry>& txt, TimePoint now);

  std::vector<OutgoingPacket> TakeOutgoing();
  std::vector<PeerEvent> TakeEvents();

  std::vector<PeerInfo> Peers() const;
  ResponderState state() const { return state_; }
  std::string instance_label() const { return instance_label_; }
  std::string host_name() const { return host_.ToString(); }
  const MdnsStats& stats() const { return stats_; }
  // Our records for one interface (PTR, SRV, TXT, A, AAAA), TTLs as configured.
  std::vector<DnsRecord> OwnRecords(const MdnsInterface& interface) const;
  const std::vector<MdnsInterface>& interfaces() const { return interfaces_; }

 private:
  struct CacheEntry {
    DnsRecord record;
    uint32_t interface_index = 0;
    TimePoint received;
    TimePoint expires;
    int refreshes_sent = 0;  // of the queries at 80, 85, 90, 95% of the TTL
    Duration refresh_jitter{};
    bool goodbye = false;  // TTL 0 received; expires after the grace period
  };
  struct ResolveState {
    TimePoint next;
    Duration interval;
    uint32_t interface_index = 0;
  };

  const MdnsInterface* FindInterface(uint32_t index) const;
  std::vector<bool> Families(const MdnsInterface& interface) const;  // {v4, v6}
  void Emit(uint32_t interface_index, bool ipv6, std::optional<Endpoint> to,
            const DnsMessage& message);
  void EmitOnAllFamilies(const MdnsInterface& interface, const DnsMessage& message);

  void SendProbe(TimePoint now);
  void SendAnnouncement(TimePoint now, uint32_t ttl_override, bool goodbye);
  void SendBrowseQuery(TimePoint now);
  void HandleQuery(const DnsMessage& message, const MdnsInterface& interface,
                   const Endpoint& source, TimePoint now);
  void HandleResponse(const DnsMessage& message, const MdnsInterface& interface, TimePoint now);
  void CheckConflicts(const std::vector<const DnsRecord*>& records, TimePoint now);
  void OnConflict(TimePoint now, bool rename);
  void CacheRecord(const DnsRecord& record, uint32_t interface_index, TimePoint now);
  bool IsRelevant(const DnsRecord& record) const;
  bool IsOwnRecord(const DnsRecord& record) const;
  void ExpireAndRefresh(TimePoint now);
  void Resolve(TimePoint now);
  std::optional<TimePoint> NextRefresh(const CacheEntry& entry) const;

  MdnsOptions options_;
  std::vector<MdnsInterface> interfaces_;
  std::mt19937_64 random_;
  MdnsStats stats_;

  // Responder.
  ResponderState state_ = ResponderState::kIdle;
  DnsName service_;
  DnsName services_enumeration_;  // _services._dns-sd._udp.local
  std::string instance_base_;
  std::string instance_label_;
  DnsName instance_;
  std::string host_base_;  // first label of the configured host name
  DnsName host_;
  int instance_suffix_ = 1;
  int host_suffix_ = 1;
  TxtRdata txt_;
  int probes_sent_ = 0;
  TimePoint next_probe_;
  int announcements_left_ = 0;
  TimePoint next_announcement_;
  std::vector<TimePoint> recent_conflicts_;
  std::map<uint32_t, TimePoint> last_multicast_;  // per interface: our last full response
  struct Pending {
    TimePoint due;
    OutgoingPacket packet;
  };
  std::vector<Pending> pending_;

  // Browser.
  bool browsing_ = false;
  TimePoint next_query_;
  Duration query_interval_{};
  std::vector<CacheEntry> cache_;
  std::map<std::string, PeerInfo> peers_;  // by instance name CanonicalKey
  std::map<std::string, ResolveState> resolving_;

  std::vector<OutgoingPacket> outgoing_;
  std::vector<PeerEvent> events_;
};

}  // namespace exo::discovery::mdns_internal

#endif  // EXO_DISCOVERY_INTERNAL_MDNS_ENGINE_H_
