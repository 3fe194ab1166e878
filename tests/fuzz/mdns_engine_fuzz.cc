// libFuzzer target for the mDNS engine (discovery/internal/mdns_engine.h): hostile packets must
// never crash the responder/browser, break its invariants or make it send unparsable packets.
//
// Input: records of [control byte][2-byte big-endian length][packet]. The control byte picks the
// source port (bit 0: 5353 or an ephemeral port, i.e. legacy unicast), the interface (bit 1: ours
// or another), and how far the clock moves before the packet (bits 2-7, in 100 ms steps).
#include <cstddef>
#include <cstdint>
#include <vector>

#include "discovery/internal/mdns_engine.h"

namespace {

using namespace exo::discovery;
using namespace exo::discovery::mdns_internal;

void Drain(MdnsEngine& engine) {
  for (const OutgoingPacket& packet : engine.TakeOutgoing()) {
    // Everything we send must parse.
    if (!ParseDnsMessage(packet.bytes).ok()) __builtin_trap();
  }
  for (const PeerEvent& event : engine.TakeEvents()) {
    if (event.peer.addresses.empty() || event.peer.host != event.peer.addresses.front()) {
      __builtin_trap();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  MdnsOptions options;
  options.instance_name = "node-a";
  options.host_name = "node-a.local";
  options.port = 50051;
  options.txt = {{"id", std::string("aaa")}};
  options.random_seed = 1;
  options.max_cache_entries = 64;
  MdnsInterface interface;
  interface.index = 2;
  interface.name = "veth0";
  interface.ipv4.push_back({10, 0, 0, 1});
  interface.ipv6.push_back({0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1});
  MdnsEngine engine(options, {interface});
  TimePoint now = TimePoint() + std::chrono::seconds(100);
  engine.Start(now);
  // Finish probing and announcing so that queries get answers.
  for (int i = 0; i < 40; ++i) {
    now += std::chrono::milliseconds(100);
    engine.Advance(now);
  }
  Drain(engine);
  size_t offset = 0;
  while (offset + 3 <= size) {
    const uint8_t control = data[offset];
    const size_t length = (size_t{data[offset + 1]} << 8) | data[offset + 2];
    offset += 3;
    const size_t take = length < size - offset ? length : size - offset;
    Endpoint source;
    source.address = {10, 0, 0, 2};
    source.port = (control & 1) ? 40000 : 5353;
    now += std::chrono::milliseconds(100) * (control >> 2);
    engine.Advance(now);
    engine.HandlePacket((control & 2) ? 3 : 2, source,
                        absl::Span<const uint8_t>(data + offset, take), now);
    offset += take;
    Drain(engine);
  }
  // Let every timer run out: expiry, refreshes, goodbye.
  for (int i = 0; i < 100; ++i) {
    std::optional<TimePoint> next = engine.NextWakeup();
    if (!next) break;
    now = *next > now ? *next : now;
    engine.Advance(now);
    Drain(engine);
  }
  engine.Stop(now);
  Drain(engine);
  return 0;
}
