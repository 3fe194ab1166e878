#include "node/bus.h"

#include <set>
#include <zmq.hpp>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace exo::node {
namespace {

constexpr char kBusContext[] = "exo-node bus event v1";
constexpr size_t kProofBytes = 32;
// Field 3 (cluster_key_proof), wire type 2 (length-delimited), then its length.
constexpr char kProofTag = (3 << 3) | 2;

}  // namespace

std::string EncodeBusEvent(const ClusterKey& key, exo::v1::BusEvent event) {
  event.clear_cluster_key_proof();
  std::string bytes = event.SerializeAsString();
  const std::string proof = key.Prove(kBusContext, {bytes});
  bytes.push_back(kProofTag);
  bytes.push_back(static_cast<char>(proof.size()));
  bytes += proof;
  return bytes;
}

absl::StatusOr<exo::v1::BusEvent> DecodeBusEvent(const ClusterKey& key, std::string_view bytes) {
  if (bytes.size() < kProofBytes + 2 || bytes[bytes.size() - kProofBytes - 2] != kProofTag ||
      static_cast<unsigned char>(bytes[bytes.size() - kProofBytes - 1]) != kProofBytes) {
    return absl::InvalidArgumentError("bus message does not end with a cluster key proof");
  }
  const absl::string_view signed_part(bytes.data(), bytes.size() - kProofBytes - 2);
  const absl::string_view proof(bytes.data() + bytes.size() - kProofBytes, kProofBytes);
  if (!key.Verify(proof, kBusContext, {signed_part})) {
    return absl::PermissionDeniedError(
        "bus message signed with another cluster key (or altered on the way)");
  }
  exo::v1::BusEvent event;
  if (!event.ParseFromArray(signed_part.data(), static_cast<int>(signed_part.size()))) {
    return absl::InvalidArgumentError("bus message is not a valid BusEvent");
  }
  event.set_cluster_key_proof(std::string(proof));
  return event;
}

struct Bus::Sockets {
  zmq::context_t context{1};
  zmq::socket_t publisher{context, zmq::socket_type::pub};
  zmq::socket_t subscriber{context, zmq::socket_type::sub};
  std::set<std::string> subscribed;
};

Bus::Bus(BusOptions options, ClusterKey key, HeartbeatSource heartbeat, EventHandler on_event,
         RejectHandler on_reject)
    : options_(std::move(options)),
      key_(std::move(key)),
      heartbeat_(std::move(heartbeat)),
      on_event_(std::move(on_event)),
      on_reject_(std::move(on_reject)),
      sockets_(std::make_unique<Sockets>()),
      flush_(absl::ZeroDuration()) {}

absl::StatusOr<std::unique_ptr<Bus>> Bus::Start(const BusOptions& options, ClusterKey key,
                                                HeartbeatSource heartbeat, EventHandler on_event,
                                                RejectHandler on_reject) {
  std::unique_ptr<Bus> bus(new Bus(options, std::move(key), std::move(heartbeat),
                                   std::move(on_event), std::move(on_reject)));
  Sockets& s = *bus->sockets_;
  const bool ipv6 = options.bind_address.find(':') != std::string::npos;
  const std::string host =
      ipv6 ? absl::StrCat("[", options.bind_address, "]") : options.bind_address;
  const std::string endpoint =
      absl::StrCat("tcp://", host, ":", options.port == 0 ? "*" : absl::StrCat(options.port));
  try {
    s.publisher.set(zmq::sockopt::linger, 0);
    if (ipv6) s.publisher.set(zmq::sockopt::ipv6, 1);
    s.publisher.bind(endpoint);
    s.subscriber.set(zmq::sockopt::linger, 0);
    s.subscriber.set(zmq::sockopt::ipv6, 1);
    s.subscriber.set(zmq::sockopt::maxmsgsize, options.max_message_bytes);
    s.subscriber.set(zmq::sockopt::reconnect_ivl, 100);
    s.subscriber.set(zmq::sockopt::reconnect_ivl_max, 1000);
    s.subscriber.set(zmq::sockopt::subscribe, "");
  } catch (const zmq::error_t& e) {
    return absl::UnavailableError(absl::StrCat("cannot listen for the bus on ", endpoint, ": ",
                                               e.what(),
                                               " (choose another --bus_port, or 0 for any)"));
  }
  const std::string bound = s.publisher.get(zmq::sockopt::last_endpoint);
  const size_t colon = bound.rfind(':');
  uint32_t port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(bound.substr(colon + 1), &port)) {
    return absl::InternalError(absl::StrCat("ZeroMQ reported an odd endpoint: ", bound));
  }
  bus->port_ = static_cast<uint16_t>(port);
  // The bus thread owns both sockets: it publishes heartbeats, applies (un)subscribe commands,
  // and hands verified incoming events to the handler.
  bus->thread_ = std::thread([b = bus.get()] { b->Run(); });
  return bus;
}

Bus::~Bus() { Stop(); }

void Bus::Subscribe(const std::string& endpoint) {
  absl::MutexLock lock(&mu_);
  commands_.push_back({Command::Kind::kSubscribe, endpoint});
}

void Bus::Unsubscribe(const std::string& endpoint) {
  absl::MutexLock lock(&mu_);
  commands_.push_back({Command::Kind::kUnsubscribe, endpoint});
}

void Bus::Stop(std::optional<exo::v1::BusEvent> last_event, absl::Duration flush) {
  {
    absl::MutexLock lock(&mu_);
    last_event_ = std::move(last_event);
    flush_ = flush;
  }
  stopping_ = true;
  if (thread_.joinable()) thread_.join();
}

void Bus::Run() {
  Sockets& s = *sockets_;
  absl::Time next_heartbeat = absl::Now();
  while (!stopping_) {
    std::deque<Command> commands;
    {
      absl::MutexLock lock(&mu_);
      commands.swap(commands_);
    }
    for (const Command& command : commands) {
      const std::string endpoint = absl::StrCat("tcp://", command.endpoint);
      try {
        if (command.kind == Command::Kind::kSubscribe) {
          if (s.subscribed.insert(endpoint).second) s.subscriber.connect(endpoint);
        } else if (s.subscribed.erase(endpoint) > 0) {
          s.subscriber.disconnect(endpoint);
        }
      } catch (const zmq::error_t& e) {
        on_reject_(absl::InvalidArgumentError(
            absl::StrCat("bus endpoint ", command.endpoint, ": ", e.what())));
      }
    }
    if (absl::Now() >= next_heartbeat) {
      const std::string bytes = EncodeBusEvent(key_, heartbeat_());
      s.publisher.send(zmq::buffer(bytes), zmq::send_flags::dontwait);
      if (options_.periodic) {
        for (exo::v1::BusEvent& event : options_.periodic()) {
          const std::string more = EncodeBusEvent(key_, std::move(event));
          s.publisher.send(zmq::buffer(more), zmq::send_flags::dontwait);
        }
      }
      next_heartbeat = absl::Now() + options_.heartbeat_interval;
    }
    zmq::pollitem_t items[] = {{s.subscriber.handle(), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, 1, std::chrono::milliseconds(50));
    while (true) {
      zmq::message_t message;
      if (!s.subscriber.recv(message, zmq::recv_flags::dontwait)) break;
      absl::StatusOr<exo::v1::BusEvent> event =
          DecodeBusEvent(key_, std::string_view(message.data<char>(), message.size()));
      if (event.ok()) {
        on_event_(*event);
      } else {
        on_reject_(event.status());
      }
    }
  }
  std::optional<exo::v1::BusEvent> last;
  absl::Duration flush;
  {
    absl::MutexLock lock(&mu_);
    last = std::move(last_event_);
    flush = flush_;
  }
  if (last.has_value()) {
    const std::string bytes = EncodeBusEvent(key_, *last);
    s.publisher.set(zmq::sockopt::linger, static_cast<int>(absl::ToInt64Milliseconds(flush)));
    s.publisher.send(zmq::buffer(bytes), zmq::send_flags::dontwait);
  }
  s.subscriber.close();
  s.publisher.close();
  s.context.close();
}

}  // namespace exo::node
