#include "node/cluster_cli.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "discovery/mdns_diagnostics.h"
#include "nlohmann/json.hpp"
#include "node/cluster_node.h"
#include "node/identity.h"

namespace exo::node {
namespace {

bool PidAlive(int64_t pid) {
  return pid > 0 && (kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM);
}

NodeStatus EvaluateNodeStatusOrThrow(nlohmann::json status_json, const std::string& state_dir,
                                     int64_t now_unix_millis,
                                     const std::function<bool(int64_t pid)>& pid_alive) {
  NodeStatus status;
  status.path = absl::StrCat(state_dir, "/", kStatusFile);
  if (status_json.is_discarded() || !status_json.is_object()) {
    status.why_not_running = absl::StrCat(status.path, " is not valid JSON");
    return status;
  }
  status.json = std::move(status_json);
  status.age_millis = now_unix_millis - status.json.value("updated_unix_millis", int64_t{0});
  const int64_t pid = status.json.value("pid", int64_t{0});
  if (!status.json.value("running", false)) {
    status.why_not_running =
        absl::StrCat("the node with state directory ", state_dir, " has stopped");
  } else if (!pid_alive(pid)) {
    status.why_not_running = absl::StrCat("the node with state directory ", state_dir, " (pid ",
                                          pid, ") is no longer running");
  } else if (status.age_millis > kStatusStaleMillis) {
    status.why_not_running =
        absl::StrCat("the node with state directory ", state_dir,
                     " has not updated its status for ", status.age_millis / 1000, " s (hung?)");
  } else {
    status.running = true;
  }
  return status;
}

}  // namespace

// The status file is written by exo-node, but may be damaged or from another version: a field of
// the wrong type makes the file count as unreadable rather than crashing the command.
NodeStatus EvaluateNodeStatus(nlohmann::json status_json, const std::string& state_dir,
                              int64_t now_unix_millis,
                              const std::function<bool(int64_t pid)>& pid_alive) {
  try {
    return EvaluateNodeStatusOrThrow(std::move(status_json), state_dir, now_unix_millis, pid_alive);
  } catch (const nlohmann::json::exception& e) {
    NodeStatus status;
    status.path = absl::StrCat(state_dir, "/", kStatusFile);
    status.why_not_running = absl::StrCat(status.path, " is damaged (", e.what(), ")");
    return status;
  }
}

NodeStatus ReadNodeStatus(const std::string& state_dir) {
  const std::string path = absl::StrCat(state_dir, "/", kStatusFile);
  std::ifstream in(path);
  if (!in) {
    NodeStatus status;
    status.path = path;
    status.why_not_running = absl::StrCat("no node has run with state directory ", state_dir, " (",
                                          path, " is missing)");
    return status;
  }
  nlohmann::json parsed = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  return EvaluateNodeStatus(std::move(parsed), state_dir, absl::ToUnixMillis(absl::Now()),
                            PidAlive);
}

namespace {

std::string Gib(uint64_t bytes) { return absl::StrFormat("%.1f", bytes / 1073741824.0); }

std::string Age(int64_t millis) {
  if (millis < 0) millis = 0;
  if (millis > int64_t{365} * 24 * 3600 * 1000) return "never";
  return absl::StrFormat("%.1fs", millis / 1000.0);
}

}  // namespace

static int RunPeersOrThrow(const PeersCommand& command, std::ostream& out, std::ostream& err) {
  const std::string state_dir = command.state_dir.empty() ? DefaultStateDir() : command.state_dir;
  NodeStatus status = ReadNodeStatus(state_dir);
  if (!status.running) {
    err << "exo-node: error: " << status.why_not_running
        << "; start one with `exo-node serve` (or pass its --state_dir)\n";
    return 1;
  }
  const nlohmann::json& s = status.json;
  if (command.json) {
    out << s.dump(1) << "\n";
    return 0;
  }
  const nlohmann::json caps = s.value("capabilities", nlohmann::json::object());
  out << absl::StrFormat("%-32s  %-5s  %-21s  %-10s  %5s  %-15s  %5s  %s\n", "NODE", "STATE",
                         "ADDRESS", "DEVICE", "CORES", "MEM GiB free/all", "LOAD",
                         "LAST HEARTBEAT");
  out << absl::StrFormat("%-32s  %-5s  %-21s  %-10s  %5d  %-15s  %5s  %s\n", s.value("node_id", ""),
                         "self",
                         absl::StrCat(s.value("bind_address", ""), ":", s.value("grpc_port", 0)),
                         caps.value("device_kind", ""), caps.value("cpu_cores", 0),
                         absl::StrCat(Gib(caps.value("memory_bytes", uint64_t{0})), "/",
                                      Gib(caps.value("total_memory_bytes", uint64_t{0}))),
                         "-", "-");
  int up = 0;
  for (const nlohmann::json& p : s.value("peers", nlohmann::json::array())) {
    const nlohmann::json pc = p.value("capabilities", nlohmann::json::object());
    const std::string state = p.value("state", "");
    if (state == "up") ++up;
    out << absl::StrFormat(
        "%-32s  %-5s  %-21s  %-10s  %5d  %-15s  %5.2f  %s%s\n", p.value("node_id", ""), state,
        p.value("grpc_address", ""), pc.value("device_kind", ""), pc.value("cpu_cores", 0),
        absl::StrCat(Gib(p.value("free_memory_bytes", uint64_t{0})), "/",
                     Gib(pc.value("total_memory_bytes", uint64_t{0}))),
        p.value("utilisation", 0.0),
        Age(p.value("last_heard_ms_ago", int64_t{0}) + status.age_millis),
        state == "up" ? "" : absl::StrCat(" (", p.value("down_reason", ""), ")"));
  }
  out << up << " peer" << (up == 1 ? "" : "s") << " up, cluster key fingerprint "
      << s.value("cluster_fingerprint", "") << "\n";
  return 0;
}

namespace {

class Report {
 public:
  explicit Report(std::ostream& out) : out_(out) {}
  void Ok(const std::string& line) { out_ << "ok:      " << line << "\n"; }
  void Note(const std::string& line) { out_ << "note:    " << line << "\n"; }
  void Problem(const std::string& line, const std::string& fix) {
    ++problems_;
    out_ << "problem: " << line << "\n         fix: " << fix << "\n";
  }
  int problems() const { return problems_; }

 private:
  std::ostream& out_;
  int problems_ = 0;
};

// 0 if the kernel has a route for mDNS multicast (connect() on UDP sends nothing), else errno.
int MulticastRouteError() {
  const int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) return errno;
  sockaddr_in group{};
  group.sin_family = AF_INET;
  group.sin_port = htons(5353);
  inet_pton(AF_INET, "224.0.0.251", &group.sin_addr);
  const int result = connect(fd, reinterpret_cast<sockaddr*>(&group), sizeof(group));
  const int error = result == 0 ? 0 : errno;
  close(fd);
  return error;
}

// Tries to bind `port` (nothing is sent). 0 on success, else errno.
int TryBind(int type, uint16_t port, bool share) {
  const int fd = socket(AF_INET, type, 0);
  if (fd < 0) return errno;
  const int one = 1;
  if (share) {
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  }
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_ANY);
  const int result = bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  const int error = result == 0 ? 0 : errno;
  close(fd);
  return error;
}

bool FileContains(const std::string& path, const std::string& text) {
  std::ifstream in(path);
  std::stringstream contents;
  contents << in.rdbuf();
  return contents.str().find(text) != std::string::npos;
}

}  // namespace

static int RunDoctorOrThrow(const DoctorCommand& command, std::ostream& out, std::ostream& err) {
  const std::string state_dir = command.state_dir.empty() ? DefaultStateDir() : command.state_dir;
  Report report(out);
  NodeStatus status = ReadNodeStatus(state_dir);
  const nlohmann::json& s = status.json;
  uint16_t grpc_port = command.grpc_port != 0 ? command.grpc_port : kDefaultGrpcPort;
  uint16_t bus_port = command.bus_port != 0 ? command.bus_port : kDefaultBusPort;

  // 1. Is a node running here?
  if (status.running) {
    grpc_port = s.value("grpc_port", grpc_port);
    bus_port = s.value("bus_port", bus_port);
    report.Ok(absl::StrCat("node ", s.value("node_id", ""), " is running (pid ", s.value("pid", 0),
                           "), gRPC port ", grpc_port, ", bus port ", bus_port,
                           ", cluster key fingerprint ", s.value("cluster_fingerprint", ""),
                           s.value("default_cluster_key", false) ? " (default key)" : ""));
  } else {
    report.Problem(status.why_not_running,
                   absl::StrCat("start the node with `exo-node serve` (state directory ", state_dir,
                                "); peers can only find a running node"));
  }

  // 2. mDNS: interfaces, the multicast route, port 5353, and a multicast round trip on the
  // interfaces the node uses (or the one named with --interface).
  const auto modes = s.value("discovery", std::vector<std::string>{"mdns", "static"});
  const bool mdns_wanted = std::find(modes.begin(), modes.end(), "mdns") != modes.end();
  absl::StatusOr<std::vector<discovery::NetworkInterface>> interfaces =
      discovery::ListNetworkInterfaces();
  if (!interfaces.ok()) {
    report.Problem(absl::StrCat("cannot list network interfaces: ", interfaces.status().message()),
                   "run doctor on a normal Linux host or container with networking");
  } else {
    const discovery::DiagnosticResult check = discovery::CheckInterfaces(*interfaces);
    if (check.ok) {
      report.Ok(check.finding);
    } else {
      report.Problem(check.finding, absl::StrCat(check.advice,
                                                 "; or list peers by hand: "
                                                 "exo-node serve --peers host:port"));
    }
    if (!command.interface.empty()) {
      const bool exists = std::any_of(interfaces->begin(), interfaces->end(),
                                      [&](const auto& i) { return i.name == command.interface; });
      if (!exists) {
        report.Problem(absl::StrCat("interface ", command.interface, " does not exist"),
                       "pass an existing interface to --interface (see `ip link`)");
      }
    }
  }
  if (const int error = MulticastRouteError(); error != 0) {
    report.Problem(
        absl::StrCat("no route for multicast to 224.0.0.251 (", std::strerror(error), ")"),
        "add a default route or `ip route add 224.0.0.0/4 dev <interface>`; "
        "or use --peers host:port,...");
  } else {
    report.Ok("the kernel has a route for mDNS multicast (224.0.0.251)");
  }
  for (const bool ipv6 : {false, true}) {
    const discovery::DiagnosticResult port = discovery::CheckMdnsPortBindable(ipv6);
    if (port.ok) {
      report.Ok(port.finding);
    } else {
      report.Problem(port.finding, port.advice);
    }
  }
  std::vector<std::string> probe_interfaces;
  if (!command.interface.empty()) {
    probe_interfaces.push_back(command.interface);
  } else if (status.running) {
    probe_interfaces = s.value("mdns_interfaces", std::vector<std::string>{});
  }
  for (const std::string& name : probe_interfaces) {
    const discovery::DiagnosticResult loop = discovery::CheckMulticastLoopback(name, false);
    if (loop.ok) {
      report.Ok(loop.finding);
    } else {
      report.Problem(loop.finding, loop.advice);
    }
  }
  if (status.running && mdns_wanted && !s.value("mdns_active", false)) {
    report.Problem(absl::StrCat("the node runs without mDNS: ", s.value("mdns_error", "")),
                   "fix the finding above and restart the node, or give --peers host:port,...");
  }

  // 3. Ports.
  if (!status.running) {
    for (auto [port, what] : {std::pair<uint16_t, const char*>{grpc_port, "gRPC (--grpc_port)"},
                              {bus_port, "bus (--bus_port)"}}) {
      if (const int error = TryBind(SOCK_STREAM, port, false); error != 0) {
        report.Problem(
            absl::StrCat("TCP port ", port, " for the ", what, " is taken: ", std::strerror(error)),
            absl::StrCat("find the owner with `ss -ltnp 'sport = :", port,
                         "'`, or pick another port with the flag"));
      } else {
        report.Ok(absl::StrCat("TCP port ", port, " for the ", what, " is free"));
      }
    }
  }

  // 4. Firewalls.
  const bool ufw = FileContains("/etc/ufw/ufw.conf", "ENABLED=yes");
  const bool firewalld = std::filesystem::exists("/run/firewalld");
  if (ufw || firewalld) {
    report.Note(absl::StrCat(
        ufw ? "ufw" : "firewalld", " is active: peers need UDP 5353 and TCP ", grpc_port, " and ",
        bus_port, " open; e.g. ",
        ufw ? absl::StrCat("`ufw allow 5353/udp && ufw allow ", grpc_port, ":", bus_port, "/tcp`")
            : absl::StrCat("`firewall-cmd --add-service=mdns --add-port=", grpc_port, "-", bus_port,
                           "/tcp`")));
  } else {
    report.Note(
        absl::StrCat("if a peer on another machine cannot see this node, check that its "
                     "firewall and this one allow UDP 5353 and TCP ",
                     grpc_port, " and ", bus_port));
  }

  // 5. What the running node has seen.
  if (status.running) {
    for (const nlohmann::json& r : s.value("refusals", nlohmann::json::array())) {
      const std::string reason = r.value("reason", "");
      report.Problem(absl::StrCat(r.value("address", ""), " was refused ", r.value("count", 0),
                                  " time(s), last ", Age(r.value("last_seen_ms_ago", int64_t{0})),
                                  " ago: ", reason),
                     reason.find("protocol version") != std::string::npos
                         ? "run the same exo-node release on every node"
                         : "give both nodes the same --cluster_key (or --cluster_key_file); "
                           "if that node belongs to someone else's cluster, ignore this");
    }
    for (const nlohmann::json& c : s.value("candidates", nlohmann::json::array())) {
      const std::string error = c.value("last_error", "");
      if (error.empty() || c.value("is_self", false)) continue;
      if (error.find("cluster key") != std::string::npos ||
          error.find("protocol version") != std::string::npos) {
        continue;  // reported as a refusal above
      }
      report.Problem(
          absl::StrCat(c.value("address", ""), " (", c.value("source", ""),
                       ") does not answer: ", error, " (", c.value("failures", 0), " tries)"),
          "check that `exo-node serve` runs there, that the address and --grpc_port are right, "
          "and that no firewall blocks the port");
    }
    for (const nlohmann::json& p : s.value("peers", nlohmann::json::array())) {
      if (p.value("state", "") == "up") continue;
      const std::string reason = p.value("down_reason", "");
      if (reason.find("no heartbeat") != std::string::npos) {
        report.Note(absl::StrCat("peer ", p.value("node_id", ""), " at ",
                                 p.value("grpc_address", ""), " is down: ", reason,
                                 "; if it is still running, its bus port (",
                                 p.value("bus_endpoint", ""), ") may be blocked by a firewall"));
      } else {
        report.Note(absl::StrCat("peer ", p.value("node_id", ""), " is ", p.value("state", ""),
                                 ": ", reason));
      }
    }
    for (const nlohmann::json& reject : s.value("bus_rejects", nlohmann::json::array())) {
      report.Note(absl::StrCat("bus: ", reject.get<std::string>()));
    }
    report.Note(absl::StrCat(
        "discovery: ", absl::StrJoin(modes, ", "),
        s.value("mdns_active", false)
            ? absl::StrCat(
                  " (mDNS on ",
                  absl::StrJoin(s.value("mdns_interfaces", std::vector<std::string>{}), ", "), ")")
            : ""));
  }
  out << (report.problems() == 0 ? "no problems found\n"
                                 : absl::StrCat(report.problems(), " problem(s) found\n"));
  return report.problems() == 0 ? 0 : 1;
}

int RunPeers(const PeersCommand& command, std::ostream& out, std::ostream& err) {
  try {
    return RunPeersOrThrow(command, out, err);
  } catch (const nlohmann::json::exception& e) {
    err << "exo-node: error: the node's status file is damaged (" << e.what()
        << "); restart `exo-node serve`\n";
    return 1;
  }
}

int RunDoctor(const DoctorCommand& command, std::ostream& out, std::ostream& err) {
  try {
    return RunDoctorOrThrow(command, out, err);
  } catch (const nlohmann::json::exception& e) {
    err << "exo-node: error: the node's status file is damaged (" << e.what()
        << "); restart `exo-node serve`\n";
    return 1;
  }
}

}  // namespace exo::node
