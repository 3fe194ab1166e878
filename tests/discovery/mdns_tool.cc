// mdns_tool: publishes an exo-node mDNS instance and/or browses for others, printing one JSON line
// per event on stdout, for the interop tests (tests/e2e/test_mdns*.py) and for manual checks.
//
//   mdns_tool --interface=veth0 --publish=node-a --host=node-a --port=50051 --txt=id=abc
//             [--browse] [--ipv4-only|--ipv6-only] [--duration=SECONDS]
//             [--update-txt-after=MS --update-txt=k=v ...]
//   mdns_tool --doctor --interface=veth0
//
// Lines: {"event":"started",...}, {"event":"announced","instance":...},
// {"event":"added"|"updated"|"removed","peer":{...}}, {"event":"stopped","stats":{...}}.
// Runs until SIGTERM/SIGINT or --duration; stops with a goodbye.
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "discovery/mdns.h"
#include "discovery/mdns_diagnostics.h"
#include "nlohmann/json.hpp"

namespace {

using exo::discovery::PeerInfo;
using nlohmann::json;

std::atomic<bool> stop_requested{false};
std::mutex output_mutex;

void Print(const json& line) {
  std::lock_guard<std::mutex> lock(output_mutex);
  std::cout << line.dump(-1, ' ', false, json::error_handler_t::replace) << std::endl;
}

json PeerJson(const PeerInfo& peer) {
  return json{{"instance", peer.instance_name},
              {"host_name", peer.host_name},
              {"host", peer.host},
              {"port", peer.grpc_port},
              {"node_id", peer.node_id},
              {"fingerprint", peer.cluster_fingerprint},
              {"addresses", peer.addresses},
              {"interface", peer.interface_name},
              {"txt", peer.txt}};
}

json StatsJson(const exo::discovery::MdnsStats& s) {
  return json{{"packets_received", s.packets_received},
              {"packets_malformed", s.packets_malformed},
              {"packets_ignored", s.packets_ignored},
              {"packets_sent", s.packets_sent},
              {"send_errors", s.send_errors},
              {"queries_answered", s.queries_answered},
              {"answers_suppressed", s.answers_suppressed},
              {"conflicts", s.conflicts},
              {"cache_entries", s.cache_entries}};
}

json ResultJson(const exo::discovery::DiagnosticResult& r) {
  return json{{"ok", r.ok}, {"finding", r.finding}, {"advice", r.advice}};
}

absl::StatusOr<exo::discovery::TxtEntry> ParseTxt(const std::string& text) {
  exo::discovery::TxtEntry entry;
  const size_t eq = text.find('=');
  entry.key = text.substr(0, eq);
  if (eq != std::string::npos) entry.value = text.substr(eq + 1);
  return entry;
}

int Usage(const std::string& problem) {
  std::cerr << "mdns_tool: " << problem
            << "\nusage: mdns_tool --interface=DEV [--publish=NAME --host=HOST --port=N "
               "--txt=k=v ...] [--browse] [--ipv4-only|--ipv6-only] [--duration=S] "
               "[--update-txt-after=MS --update-txt=k=v ...] | --doctor --interface=DEV\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  exo::discovery::MdnsOptions options;
  options.publish = false;
  options.browse = false;
  bool doctor = false;
  double duration = 0;
  int update_after_ms = -1;
  std::vector<exo::discovery::TxtEntry> update_txt;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const char* prefix) { return arg.substr(std::string(prefix).size()); };
    if (absl::StartsWith(arg, "--interface=")) {
      options.interfaces.push_back(value("--interface="));
    } else if (absl::StartsWith(arg, "--publish=")) {
      options.publish = true;
      options.instance_name = value("--publish=");
    } else if (absl::StartsWith(arg, "--host=")) {
      options.host_name = value("--host=");
    } else if (absl::StartsWith(arg, "--port=")) {
      uint32_t port = 0;
      if (!absl::SimpleAtoi(value("--port="), &port) || port > 65535) return Usage("bad --port");
      options.port = static_cast<uint16_t>(port);
    } else if (absl::StartsWith(arg, "--txt=")) {
      options.txt.push_back(*ParseTxt(value("--txt=")));
    } else if (absl::StartsWith(arg, "--update-txt=")) {
      update_txt.push_back(*ParseTxt(value("--update-txt=")));
    } else if (absl::StartsWith(arg, "--update-txt-after=")) {
      if (!absl::SimpleAtoi(value("--update-txt-after="), &update_after_ms)) {
        return Usage("bad --update-txt-after");
      }
    } else if (arg == "--browse") {
      options.browse = true;
    } else if (arg == "--ipv4-only") {
      options.ipv6 = false;
    } else if (arg == "--ipv6-only") {
      options.ipv4 = false;
    } else if (absl::StartsWith(arg, "--duration=")) {
      if (!absl::SimpleAtod(value("--duration="), &duration)) return Usage("bad --duration");
    } else if (arg == "--doctor") {
      doctor = true;
    } else {
      return Usage("unknown argument " + arg);
    }
  }
  if (doctor) {
    absl::StatusOr<std::vector<exo::discovery::NetworkInterface>> interfaces =
        exo::discovery::ListNetworkInterfaces();
    if (!interfaces.ok()) return Usage(std::string(interfaces.status().message()));
    json list = json::array();
    for (const auto& i : *interfaces) {
      list.push_back(json{{"name", i.name},
                          {"index", i.index},
                          {"up", i.up},
                          {"multicast", i.multicast},
                          {"loopback", i.loopback},
                          {"ipv4", i.ipv4},
                          {"ipv6", i.ipv6},
                          {"default", i.mdns_default()}});
    }
    Print(json{{"event", "interfaces"},
               {"interfaces", list},
               {"check", ResultJson(exo::discovery::CheckInterfaces(*interfaces))}});
    Print(json{{"event", "port"},
               {"ipv4", ResultJson(exo::discovery::CheckMdnsPortBindable(false))},
               {"ipv6", ResultJson(exo::discovery::CheckMdnsPortBindable(true))}});
    for (const std::string& name : options.interfaces) {
      Print(json{{"event", "multicast"},
                 {"interface", name},
                 {"ipv4", ResultJson(exo::discovery::CheckMulticastLoopback(name, false))}});
    }
    return 0;
  }
  if (!options.publish && !options.browse) return Usage("give --publish=NAME, --browse or both");
  options.on_peer_event = [](const exo::discovery::PeerEvent& event) {
    Print(json{{"event", exo::discovery::PeerEventKindName(event.kind)},
               {"peer", PeerJson(event.peer)}});
  };
  signal(SIGTERM, [](int) { stop_requested = true; });
  signal(SIGINT, [](int) { stop_requested = true; });

  absl::StatusOr<std::unique_ptr<exo::discovery::MdnsService>> service =
      exo::discovery::MdnsService::Start(options);
  if (!service.ok()) {
    Print(json{{"event", "error"}, {"message", std::string(service.status().message())}});
    return 1;
  }
  Print(json{{"event", "started"},
             {"interfaces", (*service)->interfaces()},
             {"instance", (*service)->instance_name()},
             {"host", (*service)->host_name()}});
  const auto start = std::chrono::steady_clock::now();
  bool announced = false;
  bool updated = false;
  std::string last_instance = (*service)->instance_name();
  while (!stop_requested) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    const auto elapsed = std::chrono::steady_clock::now() - start;
    if (options.publish) {
      const std::string instance = (*service)->instance_name();
      if (instance != last_instance) {
        Print(json{{"event", "renamed"},
                   {"from", last_instance},
                   {"instance", instance},
                   {"host", (*service)->host_name()}});
        last_instance = instance;
      }
      const bool now_announced = (*service)->announced();
      if (now_announced && !announced) {
        Print(json{
            {"event", "announced"}, {"instance", instance}, {"host", (*service)->host_name()}});
      }
      announced = now_announced;
    }
    if (update_after_ms >= 0 && !updated && elapsed >= std::chrono::milliseconds(update_after_ms)) {
      updated = true;
      absl::Status status = (*service)->UpdateTxt(update_txt);
      Print(json{{"event", "txt_updated"},
                 {"ok", status.ok()},
                 {"message", std::string(status.message())}});
    }
    if (duration > 0 && elapsed >= std::chrono::duration<double>(duration)) break;
  }
  (*service)->Stop();
  Print(json{{"event", "stopped"}, {"stats", StatsJson((*service)->stats())}});
  return 0;
}
