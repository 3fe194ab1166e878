// The cluster bus: ZeroMQ PUB/SUB carrying BusEvent messages signed with the cluster key.
//
// Each node binds one PUB socket and connects one SUB socket to the PUB socket of every peer it
// admitted. On the wire an event is its Protobuf encoding with the proof field (field 3, 32 bytes)
// appended last; the proof is HMAC-SHA256 over all the bytes before it, so a receiver checks the
// exact bytes it got, whatever fields a newer sender added.
#ifndef EXO_NODE_BUS_H_
#define EXO_NODE_BUS_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "exo/v1/bus.pb.h"
#include "node/cluster_key.h"

namespace exo::node {

// Signs `event` (its proof field is replaced) and returns the bytes to send.
std::string EncodeBusEvent(const ClusterKey& key, exo::v1::BusEvent event);
// Checks the proof over the exact bytes and parses them. PermissionDenied for a bad proof (another
// cluster key or tampering), InvalidArgument for bytes that are not a signed BusEvent.
absl::StatusOr<exo::v1::BusEvent> DecodeBusEvent(const ClusterKey& key, std::string_view bytes);

struct BusOptions {
  std::string bind_address = "0.0.0.0";
  uint16_t port = 0;  // 0: an ephemeral port
  absl::Duration heartbeat_interval = absl::Milliseconds(500);
  int64_t max_message_bytes = 1 << 20;  // larger messages are dropped by ZeroMQ
  // Events published with every heartbeat (e.g. the plan in force), so a node that subscribed
  // late still hears them; called on the bus thread, must not block. Unset: none.
  std::function<std::vector<exo::v1::BusEvent>()> periodic;
};

class Bus {
 public:
  // Builds the next heartbeat to publish (called on the bus thread; must not block).
  using HeartbeatSource = std::function<exo::v1::BusEvent()>;
  // Receives every verified event from a peer (called on the bus thread).
  using EventHandler = std::function<void(const exo::v1::BusEvent&)>;
  // Receives bytes that failed verification, with the reason (called on the bus thread).
  using RejectHandler = std::function<void(const absl::Status&)>;

  // Binds the PUB socket and starts the bus thread. Unavailable if the port is in use.
  static absl::StatusOr<std::unique_ptr<Bus>> Start(const BusOptions& options, ClusterKey key,
                                                    HeartbeatSource heartbeat,
                                                    EventHandler on_event, RejectHandler on_reject);
  ~Bus();  // Stop() if not yet stopped

  uint16_t port() const { return port_; }

  // Connects the SUB socket to "host:port" (IPv6 literals bracketed); ZeroMQ reconnects by itself.
  void Subscribe(const std::string& endpoint);
  void Unsubscribe(const std::string& endpoint);

  // Publishes `last_event` (e.g. NodeLeaving), flushes for at most `flush`, and stops the thread.
  void Stop(std::optional<exo::v1::BusEvent> last_event = std::nullopt,
            absl::Duration flush = absl::Milliseconds(300));

 private:
  Bus(BusOptions options, ClusterKey key, HeartbeatSource heartbeat, EventHandler on_event,
      RejectHandler on_reject);
  void Run();

  struct Command {
    enum class Kind { kSubscribe, kUnsubscribe } kind;
    std::string endpoint;
  };

  const BusOptions options_;
  const ClusterKey key_;
  HeartbeatSource heartbeat_;
  EventHandler on_event_;
  RejectHandler on_reject_;
  uint16_t port_ = 0;
  struct Sockets;
  std::unique_ptr<Sockets> sockets_;  // owned by the bus thread once it runs

  absl::Mutex mu_;
  std::deque<Command> commands_ ABSL_GUARDED_BY(mu_);
  std::optional<exo::v1::BusEvent> last_event_ ABSL_GUARDED_BY(mu_);
  absl::Duration flush_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace exo::node

#endif  // EXO_NODE_BUS_H_
