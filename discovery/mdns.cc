#include "discovery/mdns.h"

#include <arpa/inet.h>
#include <unistd.h>

#include <algorithm>
#include <asio.hpp>
#include <optional>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "common/status_macros.h"
#include "discovery/internal/mdns_engine.h"
#include "discovery/internal/mdns_socket.h"
#include "discovery/mdns_diagnostics.h"

namespace exo::discovery {

using mdns_internal::Clock;
using mdns_internal::MdnsEngine;
using mdns_internal::MdnsInterface;

const char* PeerEventKindName(PeerEventKind kind) {
  switch (kind) {
    case PeerEventKind::kAdded:
      return "added";
    case PeerEventKind::kUpdated:
      return "updated";
    case PeerEventKind::kRemoved:
      return "removed";
  }
  return "unknown";
}

namespace {

std::string LocalHostLabel() {
  char buffer[256] = {};
  if (gethostname(buffer, sizeof(buffer) - 1) != 0 || buffer[0] == '\0') return "exo-node";
  std::string label;
  for (char c : std::string(buffer)) {
    if (c == '.') break;
    label.push_back(absl::ascii_isalnum(static_cast<unsigned char>(c)) ? absl::ascii_tolower(c)
                                                                       : '-');
  }
  return label.empty() ? "exo-node" : label.substr(0, 50);
}

// Fills defaults: instance and host names from the machine's host name, ".local" on the host.
MdnsOptions Normalize(MdnsOptions options) {
  if (options.instance_name.empty()) options.instance_name = LocalHostLabel();
  if (options.host_name.empty()) options.host_name = LocalHostLabel();
  while (absl::EndsWith(options.host_name, ".")) options.host_name.pop_back();
  if (!absl::EndsWithIgnoreCase(options.host_name, ".local")) {
    options.host_name = absl::StrCat(options.host_name, ".local");
  }
  return options;
}

}  // namespace

absl::Status ValidateMdnsOptions(const MdnsOptions& raw) {
  const MdnsOptions options = Normalize(raw);
  if (!options.ipv4 && !options.ipv6) {
    return absl::InvalidArgumentError("mDNS: enable IPv4, IPv6 or both");
  }
  if (options.instance_name.size() > kMaxDnsLabelLength) {
    return absl::InvalidArgumentError(absl::StrCat("mDNS: instance name '", options.instance_name,
                                                   "' is over 63 bytes; choose a shorter one"));
  }
  absl::StatusOr<DnsName> service = DnsName::Parse(options.service_type);
  if (!service.ok() || service->labels().size() != 3 ||
      !absl::EqualsIgnoreCase(service->labels()[2], "local")) {
    return absl::InvalidArgumentError(absl::StrCat("mDNS: service type '", options.service_type,
                                                   "' must look like _name._tcp.local"));
  }
  if (!service->Prepend(options.instance_name).ok()) {
    return absl::InvalidArgumentError(absl::StrCat("mDNS: instance name '", options.instance_name,
                                                   "' does not fit in a DNS name"));
  }
  absl::StatusOr<DnsName> host = DnsName::Parse(options.host_name);
  if (!host.ok() || host->labels().size() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("mDNS: host name '", options.host_name, "' is not valid; write e.g. node-a"));
  }
  if (options.publish && options.port == 0) {
    return absl::InvalidArgumentError("mDNS: the SRV port (gRPC port) must be set to publish");
  }
  if (absl::StatusOr<TxtRdata> txt = MakeTxtRdata(options.txt); !txt.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("mDNS TXT: ", txt.status().message()));
  }
  const MdnsTimings& t = options.timings;
  if (t.probe_interval.count() <= 0 || t.probe_count < 1 || t.announce_interval.count() <= 0 ||
      t.announce_count < 1 || t.query_initial_interval.count() <= 0 ||
      t.query_max_interval < t.query_initial_interval || t.host_record_ttl.count() <= 0 ||
      t.other_record_ttl.count() <= 0 || t.goodbye_grace.count() < 0) {
    return absl::InvalidArgumentError("mDNS: timings must be positive (see MdnsTimings)");
  }
  return absl::OkStatus();
}

// Owns the sockets, the engine and the thread that runs the io_context: it waits for datagrams
// and timers, feeds them to the engine and sends what the engine produces.
class MdnsService::Impl {
 public:
  Impl(MdnsOptions options, std::vector<MdnsInterface> interfaces)
      : options_(std::move(options)), engine_(options_, interfaces), timer_(io_) {
    for (const MdnsInterface& interface : interfaces) interface_names_.push_back(interface.name);
  }

  ~Impl() { Stop(); }

  absl::Status OpenSockets() {
    std::vector<std::string> problems;
    for (bool ipv6 : {false, true}) {
      if (ipv6 ? !options_.ipv6 : !options_.ipv4) continue;
      bool wanted = false;
      for (const MdnsInterface& interface : engine_.interfaces()) {
        wanted = wanted || (ipv6 ? !interface.ipv6.empty() : !interface.ipv4.empty());
      }
      if (!wanted) continue;
      absl::StatusOr<int> fd = mdns_internal::OpenMdnsSocket(ipv6, options_.mdns_port);
      if (!fd.ok()) {
        problems.push_back(std::string(fd.status().message()));
        continue;
      }
      int joined = 0;
      for (const MdnsInterface& interface : engine_.interfaces()) {
        if (ipv6 ? interface.ipv6.empty() : interface.ipv4.empty()) continue;
        absl::Status status = mdns_internal::JoinMdnsGroup(*fd, ipv6, interface.index);
        if (status.ok()) {
          ++joined;
        } else {
          problems.push_back(absl::StrCat(interface.name, ": ", status.message()));
        }
      }
      if (joined == 0) {
        close(*fd);
        continue;
      }
      auto descriptor = std::make_unique<asio::posix::stream_descriptor>(io_, *fd);
      (ipv6 ? v6_ : v4_) = std::move(descriptor);
    }
    if (!v4_ && !v6_) {
      return absl::UnavailableError(absl::StrCat(
          "mDNS: no usable socket (", absl::StrJoin(problems, "; "),
          "). Check that the interfaces have MULTICAST and an address, that UDP 5353 is not held "
          "without SO_REUSEPORT, or run `exo-node doctor`"));
    }
    return absl::OkStatus();
  }

  void Run() {
    asio::post(io_, [this] {
      {
        absl::MutexLock lock(&mu_);
        engine_.Start(Clock::now());
      }
      Pump();
    });
    if (v4_) WaitRead(*v4_, false);
    if (v6_) WaitRead(*v6_, true);
    // The thread: runs the io_context until Stop, handling datagrams and protocol timers.
    thread_ = std::thread([this] { io_.run(); });
  }

  void Stop() {
    if (!thread_.joinable()) return;
    asio::post(io_, [this] {
      {
        absl::MutexLock lock(&mu_);
        engine_.Stop(Clock::now());
      }
      Flush();
      io_.stop();
    });
    thread_.join();
    if (v4_) v4_->close();
    if (v6_) v6_->close();
  }

  absl::Status UpdateTxt(std::vector<TxtEntry> txt) {
    if (absl::StatusOr<TxtRdata> rdata = MakeTxtRdata(txt); !rdata.ok()) return rdata.status();
    asio::post(io_, [this, txt = std::move(txt)] {
      {
        absl::MutexLock lock(&mu_);
        (void)engine_.UpdateTxt(txt, Clock::now());
      }
      Pump();
    });
    return absl::OkStatus();
  }

  std::vector<PeerInfo> Peers() const {
    absl::MutexLock lock(&mu_);
    return engine_.Peers();
  }
  std::string instance_name() const {
    absl::MutexLock lock(&mu_);
    return engine_.instance_label();
  }
  std::string host_name() const {
    absl::MutexLock lock(&mu_);
    return engine_.host_name();
  }
  bool announced() const {
    absl::MutexLock lock(&mu_);
    return engine_.state() == mdns_internal::ResponderState::kAnnounced;
  }
  MdnsStats stats() const {
    absl::MutexLock lock(&mu_);
    MdnsStats stats = engine_.stats();
    stats.send_errors += send_errors_;
    return stats;
  }
  const std::vector<std::string>& interface_names() const { return interface_names_; }

 private:
  void WaitRead(asio::posix::stream_descriptor& descriptor, bool ipv6) {
    descriptor.async_wait(
        asio::posix::stream_descriptor::wait_read,
        [this, &descriptor, ipv6](const asio::error_code& error) {
          if (error) return;
          for (int i = 0; i < 64; ++i) {
            auto received = mdns_internal::ReceiveMdns(descriptor.native_handle(), ipv6);
            if (!received.ok() || !received->has_value()) break;
            absl::MutexLock lock(&mu_);
            engine_.HandlePacket((*received)->interface_index, (*received)->source,
                                 (*received)->bytes, Clock::now());
          }
          Pump();
          WaitRead(descriptor, ipv6);
        });
  }

  // Sends what the engine produced; returns the events to deliver.
  std::vector<PeerEvent> Flush() {
    std::vector<mdns_internal::OutgoingPacket> packets;
    std::vector<PeerEvent> events;
    {
      absl::MutexLock lock(&mu_);
      packets = engine_.TakeOutgoing();
      events = engine_.TakeEvents();
    }
    for (const mdns_internal::OutgoingPacket& packet : packets) {
      const auto& descriptor = packet.ipv6 ? v6_ : v4_;
      if (!descriptor) continue;
      absl::Status status =
          mdns_internal::SendMdns(descriptor->native_handle(), packet.ipv6, packet.interface_index,
                                  packet.unicast_to, options_.mdns_port, packet.bytes);
      if (!status.ok()) {
        absl::MutexLock lock(&mu_);
        ++send_errors_;
      }
    }
    return events;
  }

  // Runs due timers, sends, delivers events and re-arms the timer.
  void Pump() {
    std::optional<Clock::time_point> next;
    {
      absl::MutexLock lock(&mu_);
      engine_.Advance(Clock::now());
      next = engine_.NextWakeup();
    }
    for (const PeerEvent& event : Flush()) {
      if (options_.on_peer_event) options_.on_peer_event(event);
    }
    if (!next) return;
    timer_.expires_at(*next);
    timer_.async_wait([this](const asio::error_code& error) {
      if (!error) Pump();
    });
  }

  MdnsOptions options_;
  mutable absl::Mutex mu_;
  MdnsEngine engine_ ABSL_GUARDED_BY(mu_);
  uint64_t send_errors_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::string> interface_names_;
  asio::io_context io_;
  asio::steady_timer timer_;
  std::unique_ptr<asio::posix::stream_descriptor> v4_;
  std::unique_ptr<asio::posix::stream_descriptor> v6_;
  std::thread thread_;
};

absl::StatusOr<std::unique_ptr<MdnsService>> MdnsService::Start(MdnsOptions raw_options) {
  RETURN_IF_ERROR(ValidateMdnsOptions(raw_options));
  MdnsOptions options = Normalize(std::move(raw_options));
  ASSIGN_OR_RETURN(std::vector<NetworkInterface> all, ListNetworkInterfaces());
  std::vector<MdnsInterface> selected;
  for (const std::string& name : options.interfaces) {
    auto it = std::find_if(all.begin(), all.end(),
                           [&](const NetworkInterface& i) { return i.name == name; });
    if (it == all.end()) {
      std::vector<std::string> names;
      for (const NetworkInterface& i : all) names.push_back(i.name);
      return absl::InvalidArgumentError(absl::StrCat(
          "mDNS: no interface named '", name, "'; this machine has: ", absl::StrJoin(names, ", ")));
    }
    if (!it->up) {
      return absl::UnavailableError(absl::StrCat("mDNS: interface '", name,
                                                 "' is down; bring it up (ip link set ", name,
                                                 " up) or choose another"));
    }
  }
  for (const NetworkInterface& interface : all) {
    const bool chosen = options.interfaces.empty()
                            ? interface.mdns_default()
                            : std::find(options.interfaces.begin(), options.interfaces.end(),
                                        interface.name) != options.interfaces.end();
    if (!chosen) continue;
    MdnsInterface mdns_interface;
    mdns_interface.index = interface.index;
    mdns_interface.name = interface.name;
    for (const std::string& text : interface.ipv4) {
      std::array<uint8_t, 4> bytes{};
      if (inet_pton(AF_INET, text.c_str(), bytes.data()) == 1) mdns_interface.ipv4.push_back(bytes);
    }
    for (const std::string& text : interface.ipv6) {
      std::array<uint8_t, 16> bytes{};
      if (inet_pton(AF_INET6, text.c_str(), bytes.data()) == 1)
        mdns_interface.ipv6.push_back(bytes);
    }
    if ((options.ipv4 && !mdns_interface.ipv4.empty()) ||
        (options.ipv6 && !mdns_interface.ipv6.empty())) {
      selected.push_back(std::move(mdns_interface));
    }
  }
  if (selected.empty()) {
    return absl::UnavailableError(
        "mDNS: no interface is up, multicast-capable and has an address of the enabled IP "
        "families; name one with the interface option, or use static peers");
  }
  if (options.random_seed == 0) {
    options.random_seed = static_cast<uint64_t>(Clock::now().time_since_epoch().count()) ^
                          (static_cast<uint64_t>(getpid()) << 32);
  }
  auto impl = std::make_unique<Impl>(std::move(options), std::move(selected));
  RETURN_IF_ERROR(impl->OpenSockets());
  impl->Run();
  return std::unique_ptr<MdnsService>(new MdnsService(std::move(impl)));
}

MdnsService::MdnsService(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MdnsService::~MdnsService() { Stop(); }
void MdnsService::Stop() { impl_->Stop(); }
absl::Status MdnsService::UpdateTxt(std::vector<TxtEntry> txt) {
  return impl_->UpdateTxt(std::move(txt));
}
std::vector<PeerInfo> MdnsService::Peers() const { return impl_->Peers(); }
std::string MdnsService::instance_name() const { return impl_->instance_name(); }
std::string MdnsService::host_name() const { return impl_->host_name(); }
bool MdnsService::announced() const { return impl_->announced(); }
std::vector<std::string> MdnsService::interfaces() const { return impl_->interface_names(); }
MdnsStats MdnsService::stats() const { return impl_->stats(); }

}  // namespace exo::discovery
