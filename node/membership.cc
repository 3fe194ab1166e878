#include "node/membership.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace exo::node {
namespace {

using Effect = MembershipEffect;

// True if `other` holds our id and should keep it, i.e. it started before us (ties: the smaller
// boot id keeps it).
bool OtherKeepsId(const Instance& self, const Instance& other) {
  if (other.started_unix_millis != self.started_unix_millis) {
    return other.started_unix_millis < self.started_unix_millis;
  }
  return other.boot_id < self.boot_id;
}

// Handles a message from a process that claims our own node id. Returns true if the event was
// about our id (and so must not touch the peer table).
bool HandleOwnId(MembershipState& state, const Instance& other, absl::string_view address,
                 std::vector<Effect>& effects) {
  if (other.node_id != state.self.node_id) return false;
  if (other.boot_id == state.self.boot_id) {
    effects.push_back({Effect::Kind::kSelfDialed, other.node_id, std::string(address), "",
                       absl::StrCat("address ", address, " is this node itself")});
    return true;
  }
  if (OtherKeepsId(state.self, other)) {
    effects.push_back({Effect::Kind::kRenameSelf, other.node_id, std::string(address), "",
                       absl::StrCat("node id ", other.node_id, " is also used by a node",
                                    address.empty() ? "" : absl::StrCat(" at ", address),
                                    " that started earlier (a copied state directory?)")});
  }
  return true;
}

std::string ShortId(absl::string_view id) { return std::string(id.substr(0, 8)); }

void Visit(MembershipState& state, const HelloSucceeded& e, const MembershipOptions&,
           std::vector<Effect>& effects) {
  if (HandleOwnId(state, e.peer, e.grpc_address, effects)) return;
  auto it = state.peers.find(e.peer.node_id);
  if (it != state.peers.end()) {
    PeerRecord& old = it->second;
    // A late answer from a process that already said goodbye does not bring it back.
    if (old.state == PeerState::kLeft && old.instance.boot_id == e.peer.boot_id) return;
    if (old.state == PeerState::kUp && old.instance.boot_id == e.peer.boot_id) {
      old.last_heard = std::max(old.last_heard, e.now);
      old.capabilities = e.capabilities;
      return;
    }
    if (old.state == PeerState::kUp) {
      // The same node restarted (new boot id) before its old process timed out.
      effects.push_back({Effect::Kind::kPeerDown, old.instance.node_id, old.grpc_address,
                         old.bus_endpoint,
                         absl::StrCat("peer ", ShortId(old.instance.node_id), " at ",
                                      old.grpc_address, " restarted")});
    }
  }
  PeerRecord record;
  record.instance = e.peer;
  record.grpc_address = e.grpc_address;
  record.bus_endpoint = e.bus_endpoint;
  record.state = PeerState::kUp;
  record.capabilities = e.capabilities;
  record.up_since = e.now;
  record.last_heard = e.now;
  effects.push_back(
      {Effect::Kind::kPeerUp, e.peer.node_id, e.grpc_address, e.bus_endpoint,
       absl::StrFormat("peer up: %s at %s (%s, %d cores, %.1f GiB)", e.peer.node_id, e.grpc_address,
                       e.capabilities.device_kind, e.capabilities.cpu_cores,
                       e.capabilities.total_memory_bytes / 1073741824.0)});
  state.peers[e.peer.node_id] = std::move(record);
}

void Visit(MembershipState& state, const HelloRefused& e, const MembershipOptions&,
           std::vector<Effect>& effects) {
  for (Refusal& refusal : state.refusals) {
    if (refusal.address == e.address && refusal.reason == e.reason) {
      refusal.last_seen = e.now;
      ++refusal.count;
      if (!e.node_id.empty()) refusal.node_id = e.node_id;
      return;
    }
  }
  if (state.refusals.size() >= kMaxRefusals) state.refusals.erase(state.refusals.begin());
  state.refusals.push_back({e.address, e.node_id, e.reason, e.now, e.now, 1});
  effects.push_back({Effect::Kind::kRefused, e.node_id, e.address, "",
                     absl::StrCat("ignoring ", e.address,
                                  e.node_id.empty() ? "" : absl::StrCat(" (node ", e.node_id, ")"),
                                  ": ", e.reason)});
}

void Visit(MembershipState& state, const HelloReceived& e, const MembershipOptions&,
           std::vector<Effect>& effects) {
  HandleOwnId(state, e.peer, e.address, effects);
}

void Visit(MembershipState& state, const HeartbeatReceived& e, const MembershipOptions&,
           std::vector<Effect>& effects) {
  if (HandleOwnId(state, e.peer, "", effects)) {
    // Our own heartbeat echoed back is not news; only a clone triggers anything.
    if (!effects.empty() && effects.back().kind == Effect::Kind::kSelfDialed) effects.pop_back();
    return;
  }
  auto it = state.peers.find(e.peer.node_id);
  if (it == state.peers.end()) return;  // not admitted by a Hello
  PeerRecord& peer = it->second;
  if (peer.state != PeerState::kUp || peer.instance.boot_id != e.peer.boot_id) return;
  peer.last_heard = std::max(peer.last_heard, e.now);
  peer.capabilities = e.capabilities;
  peer.load = e.load;
}

void Visit(MembershipState& state, const LeavingReceived& e, const MembershipOptions&,
           std::vector<Effect>& effects) {
  auto it = state.peers.find(e.peer.node_id);
  if (it == state.peers.end()) return;
  PeerRecord& peer = it->second;
  if (peer.state != PeerState::kUp || peer.instance.boot_id != e.peer.boot_id) return;
  peer.state = PeerState::kLeft;
  peer.down_reason = e.reason.empty() ? "left" : absl::StrCat("left: ", e.reason);
  effects.push_back({Effect::Kind::kPeerDown, peer.instance.node_id, peer.grpc_address,
                     peer.bus_endpoint,
                     absl::StrCat("peer down: ", peer.instance.node_id, " at ", peer.grpc_address,
                                  " (", peer.down_reason, ")")});
}

void Visit(MembershipState& state, const Tick& e, const MembershipOptions& options,
           std::vector<Effect>& effects) {
  for (auto& [id, peer] : state.peers) {
    if (peer.state != PeerState::kUp) continue;
    if (e.now - peer.last_heard <= options.heartbeat_timeout) continue;
    peer.state = PeerState::kDown;
    peer.down_reason =
        absl::StrFormat("no heartbeat for %.1f s", absl::ToDoubleSeconds(e.now - peer.last_heard));
    effects.push_back(
        {Effect::Kind::kPeerDown, id, peer.grpc_address, peer.bus_endpoint,
         absl::StrCat("peer down: ", id, " at ", peer.grpc_address, " (", peer.down_reason, ")")});
  }
}

void Visit(MembershipState& state, const SelfRenamed& e, const MembershipOptions&,
           std::vector<Effect>&) {
  state.self.node_id = e.new_node_id;
  // A record under the new id could only be a stranger's coincidence; drop it to stay consistent.
  state.peers.erase(e.new_node_id);
}

}  // namespace

const char* PeerStateName(PeerState state) {
  switch (state) {
    case PeerState::kUp:
      return "up";
    case PeerState::kDown:
      return "down";
    case PeerState::kLeft:
      return "left";
  }
  return "?";
}

MembershipTransition Apply(MembershipState state, const MembershipEvent& event,
                           const MembershipOptions& options) {
  std::vector<Effect> effects;
  std::visit([&](const auto& e) { Visit(state, e, options, effects); }, event);
  return {std::move(state), std::move(effects)};
}

std::vector<const PeerRecord*> UpPeers(const MembershipState& state) {
  std::vector<const PeerRecord*> up;
  for (const auto& [id, peer] : state.peers) {
    if (peer.state == PeerState::kUp) up.push_back(&peer);
  }
  return up;
}

}  // namespace exo::node
