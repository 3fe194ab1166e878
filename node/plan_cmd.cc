#include "node/plan_cmd.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "node/cluster_cli.h"
#include "node/cluster_generate.h"
#include "node/identity.h"
#include "node/paths.h"
#include "partition/plan.h"
#include "runtime/gguf.h"
#include "runtime/model_config.h"

namespace exo::node {
namespace {

using Json = nlohmann::json;

absl::StatusOr<double> Quantity(const Json& value, const std::string& where, bool allow_rate) {
  if (value.is_number()) {
    const double number = value.get<double>();
    if (!std::isfinite(number) || number < 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s must be a finite number >= 0, got %g", where, number));
    }
    return number;
  }
  if (value.is_string()) {
    absl::StatusOr<double> parsed = ParseByteQuantity(value.get<std::string>(), allow_rate);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": ", parsed.status().message()));
    }
    return parsed;
  }
  return absl::InvalidArgumentError(absl::StrCat(where, " must be a number or a string such as \"",
                                                 allow_rate ? "400GB/s" : "64GiB", "\""));
}

absl::StatusOr<double> Milliseconds(const Json& object, const char* key, const std::string& where,
                                    double fallback) {
  if (!object.contains(key)) return fallback;
  const Json& value = object[key];
  if (!value.is_number() || !std::isfinite(value.get<double>()) || value.get<double>() < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s.%s must be a number of milliseconds >= 0", where, key));
  }
  return value.get<double>() / 1000.0;
}

absl::StatusOr<std::string> Text(const Json& object, const char* key, const std::string& where,
                                 bool required) {
  if (!object.contains(key)) {
    if (required) return absl::InvalidArgumentError(absl::StrCat(where, " has no \"", key, "\""));
    return std::string();
  }
  if (!object[key].is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".", key, " must be a string"));
  }
  return object[key].get<std::string>();
}

std::string Milliseconds(double seconds) {
  if (std::isinf(seconds)) return "inf";
  return absl::StrFormat("%.3f ms", seconds * 1000.0);
}

// "1.50 GiB" or "240.0 MiB": short, for the table.
std::string ShortBytes(uint64_t bytes) {
  if (bytes >= (uint64_t{1} << 30)) return absl::StrFormat("%.2f GiB", bytes / 1073741824.0);
  return absl::StrFormat("%.1f MiB", bytes / 1048576.0);
}

std::string TokensPerSecond(double seconds) {
  if (!(seconds > 0) || std::isinf(seconds)) return "0";
  return absl::StrFormat("%.1f", 1.0 / seconds);
}

const partition::DeviceProfile* FindDevice(const Fleet& fleet, const std::string& id) {
  for (const partition::DeviceProfile& device : fleet.devices) {
    if (device.node_id == id) return &device;
  }
  return nullptr;
}

}  // namespace

absl::StatusOr<double> ParseByteQuantity(const std::string& text, bool allow_rate) {
  std::string s(absl::StripAsciiWhitespace(text));
  if (allow_rate && absl::EndsWith(s, "/s")) s.resize(s.size() - 2);
  size_t unit_at = s.size();
  while (unit_at > 0 && std::isalpha(static_cast<unsigned char>(s[unit_at - 1]))) --unit_at;
  const std::string unit = absl::AsciiStrToLower(s.substr(unit_at));
  const std::string number_text(absl::StripAsciiWhitespace(s.substr(0, unit_at)));
  double number = 0;
  if (number_text.empty() || !absl::SimpleAtod(number_text, &number) || !std::isfinite(number) ||
      number < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "'%s' is not a byte %s: write a number >= 0 with an optional unit, e.g. %s", text,
        allow_rate ? "rate" : "count", allow_rate ? "\"400GB/s\"" : "\"64GiB\""));
  }
  static const std::pair<const char*, double> kUnits[] = {{"", 1},
                                                          {"b", 1},
                                                          {"kb", 1e3},
                                                          {"mb", 1e6},
                                                          {"gb", 1e9},
                                                          {"tb", 1e12},
                                                          {"kib", 1024.0},
                                                          {"mib", 1048576.0},
                                                          {"gib", 1073741824.0},
                                                          {"tib", 1099511627776.0}};
  for (const auto& [name, scale] : kUnits) {
    if (unit == name) return number * scale;
  }
  return absl::InvalidArgumentError(
      absl::StrFormat("'%s' has an unknown unit '%s': use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB",
                      text, s.substr(unit_at)));
}

absl::StatusOr<Fleet> ParseFleet(const std::string& json_text) {
  const Json root = Json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return absl::InvalidArgumentError("the fleet file is not valid JSON");
  if (!root.is_object() || !root.contains("nodes") || !root["nodes"].is_array()) {
    return absl::InvalidArgumentError(
        "the fleet file must be an object with a \"nodes\" array, e.g. {\"nodes\": [{\"id\": "
        "\"mac\", \"memory\": \"64GiB\", \"bandwidth\": \"400GB/s\"}]}");
  }
  Fleet fleet;
  const Json& nodes = root["nodes"];
  for (size_t i = 0; i < nodes.size(); ++i) {
    const Json& node = nodes[i];
    const std::string where = absl::StrCat("nodes[", i, "]");
    if (!node.is_object()) return absl::InvalidArgumentError(where + " must be an object");
    partition::DeviceProfile device;
    ASSIGN_OR_RETURN(device.node_id, Text(node, "id", where, /*required=*/true));
    if (device.node_id.empty()) return absl::InvalidArgumentError(where + ".id is empty");
    const std::string named = absl::StrCat(where, " ('", device.node_id, "')");
    if (!node.contains("memory") || !node.contains("bandwidth")) {
      return absl::InvalidArgumentError(named + " needs \"memory\" and \"bandwidth\"");
    }
    ASSIGN_OR_RETURN(double memory, Quantity(node["memory"], named + ".memory", false));
    if (memory >= 1.8e19) return absl::InvalidArgumentError(named + ".memory is too large");
    device.memory_bytes = static_cast<uint64_t>(memory);
    ASSIGN_OR_RETURN(device.decode_bytes_per_second,
                     Quantity(node["bandwidth"], named + ".bandwidth", true));
    ASSIGN_OR_RETURN(device.device_kind, Text(node, "kind", named, /*required=*/false));
    for (const partition::DeviceProfile& other : fleet.devices) {
      if (other.node_id == device.node_id) {
        return absl::InvalidArgumentError(
            absl::StrFormat("node '%s' is listed twice in the fleet", device.node_id));
      }
    }
    fleet.devices.push_back(std::move(device));
  }
  if (fleet.devices.empty()) return absl::InvalidArgumentError("the fleet has no nodes");
  if (root.contains("links")) {
    const Json& links = root["links"];
    if (!links.is_object()) return absl::InvalidArgumentError("\"links\" must be an object");
    ASSIGN_OR_RETURN(
        fleet.links.default_latency_seconds,
        Milliseconds(links, "default_latency_ms", "links", fleet.links.default_latency_seconds));
    if (links.contains("default_bandwidth")) {
      ASSIGN_OR_RETURN(fleet.links.default_bytes_per_second,
                       Quantity(links["default_bandwidth"], "links.default_bandwidth", true));
    }
    if (links.contains("pairs")) {
      const Json& pairs = links["pairs"];
      if (!pairs.is_array()) return absl::InvalidArgumentError("links.pairs must be an array");
      for (size_t i = 0; i < pairs.size(); ++i) {
        const Json& pair = pairs[i];
        const std::string where = absl::StrCat("links.pairs[", i, "]");
        if (!pair.is_object()) return absl::InvalidArgumentError(where + " must be an object");
        partition::LinkProfile link;
        ASSIGN_OR_RETURN(link.from, Text(pair, "from", where, true));
        ASSIGN_OR_RETURN(link.to, Text(pair, "to", where, true));
        for (const std::string* id : {&link.from, &link.to}) {
          if (FindDevice(fleet, *id) == nullptr) {
            return absl::InvalidArgumentError(
                absl::StrFormat("%s names node '%s', which is not in \"nodes\"", where, *id));
          }
        }
        ASSIGN_OR_RETURN(link.latency_seconds, Milliseconds(pair, "latency_ms", where,
                                                            fleet.links.default_latency_seconds));
        link.bytes_per_second = fleet.links.default_bytes_per_second;
        if (pair.contains("bandwidth")) {
          ASSIGN_OR_RETURN(link.bytes_per_second,
                           Quantity(pair["bandwidth"], where + ".bandwidth", true));
        }
        fleet.links.links.push_back(std::move(link));
      }
    }
  }
  return fleet;
}

namespace {

absl::StatusOr<partition::DeviceProfile> DeviceFromCapabilities(const Json& caps,
                                                                const std::string& node_id,
                                                                const std::string& where) {
  if (node_id.empty()) return absl::InvalidArgumentError(where + " has no node_id");
  if (!caps.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(where, " (", node_id, ") has no capabilities"));
  }
  partition::DeviceProfile device;
  device.node_id = node_id;
  device.memory_bytes = caps.value("memory_bytes", uint64_t{0});
  device.decode_bytes_per_second = caps.value("memory_bandwidth_bytes_per_second", 0.0);
  device.device_kind = caps.value("device_kind", "");
  if (!std::isfinite(device.decode_bytes_per_second) || device.decode_bytes_per_second < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, " (", node_id, ") has a bad memory bandwidth"));
  }
  return device;
}

}  // namespace

absl::StatusOr<Fleet> FleetFromStatus(const Json& status) {
  if (!status.is_object()) return absl::InvalidArgumentError("the status is not a JSON object");
  try {
    Fleet fleet;
    const std::string self_id = status.value("node_id", "");
    ASSIGN_OR_RETURN(
        partition::DeviceProfile self,
        DeviceFromCapabilities(status.value("capabilities", Json()), self_id, "this node"));
    fleet.devices.push_back(std::move(self));
    const Json peers = status.value("peers", Json::array());
    if (!peers.is_array()) return absl::InvalidArgumentError("\"peers\" is not an array");
    for (const Json& peer : peers) {
      if (!peer.is_object() || peer.value("state", "") != "up") continue;
      const std::string id = peer.value("node_id", "");
      if (FindDevice(fleet, id) != nullptr) continue;  // a peer reporting our own id
      ASSIGN_OR_RETURN(partition::DeviceProfile device,
                       DeviceFromCapabilities(peer.value("capabilities", Json()), id, "a peer"));
      fleet.devices.push_back(std::move(device));
    }
    std::sort(fleet.devices.begin(), fleet.devices.end(),
              [](const auto& a, const auto& b) { return a.node_id < b.node_id; });
    return fleet;
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("the status is damaged (", e.what(), ")"));
  }
}

std::string FormatPlanReport(const partition::Plan& plan, const partition::ModelProfile& model,
                             const Fleet& fleet, partition::Strategy strategy) {
  std::ostringstream out;
  absl::StatusOr<partition::PlanEstimate> estimate =
      partition::EstimatePlan(plan, model, fleet.devices, fleet.links);
  if (!estimate.ok())
    return absl::StrCat("cannot estimate the plan: ", estimate.status().message());
  out << absl::StrFormat("strategy %s: %d stage%s over %d node%s in the fleet\n",
                         partition::StrategyName(strategy), plan.stages.size(),
                         plan.stages.size() == 1 ? "" : "s", fleet.devices.size(),
                         fleet.devices.size() == 1 ? "" : "s");
  out << absl::StrFormat("%-5s %-14s %-16s %-12s %-24s %-12s %-12s %s\n", "stage", "node", "kind",
                         "layers", "memory / available", "read/token", "compute", "hop to next");
  for (size_t i = 0; i < estimate->stages.size(); ++i) {
    const partition::StageEstimate& stage = estimate->stages[i];
    const partition::DeviceProfile* device = FindDevice(fleet, stage.node_id);
    std::string layers = absl::StrFormat("[%d, %d)", stage.layer_begin, stage.layer_end);
    if (plan.stages[i].has_embedding) absl::StrAppend(&layers, "+E");
    if (plan.stages[i].has_head) absl::StrAppend(&layers, "+H");
    out << absl::StrFormat(
        "%-5d %-14s %-16s %-12s %-24s %-12s %-12s %s\n", i, stage.node_id,
        device->device_kind.empty() ? "-" : device->device_kind, layers,
        absl::StrCat(ShortBytes(stage.memory_bytes), " / ", ShortBytes(device->memory_bytes)),
        ShortBytes(stage.bytes_read_per_token), Milliseconds(stage.compute_seconds),
        Milliseconds(stage.hop_seconds));
  }
  out << absl::StrFormat(
      "total: %s per token (%s tokens/s): compute %s, hops %s (E = embedding, H = head)\n",
      Milliseconds(estimate->seconds_per_token), TokensPerSecond(estimate->seconds_per_token),
      Milliseconds(estimate->compute_seconds), Milliseconds(estimate->hop_seconds));
  absl::StatusOr<partition::Plan> single = partition::SingleNodePlan(model, fleet.devices, 0);
  if (single.ok()) {
    absl::StatusOr<partition::PlanEstimate> single_estimate =
        partition::EstimatePlan(*single, model, fleet.devices, fleet.links);
    if (single_estimate.ok()) {
      out << absl::StrFormat("single-node baseline: %s, %s per token (%s tokens/s)\n",
                             single->stages[0].node_id,
                             Milliseconds(single_estimate->seconds_per_token),
                             TokensPerSecond(single_estimate->seconds_per_token));
    }
  } else {
    out << "single-node baseline: none, " << single.status().message() << "\n";
  }
  if (strategy != partition::Strategy::kRing) {
    absl::StatusOr<partition::Plan> ring = partition::MakePlan(
        model, fleet.devices, fleet.links, {.strategy = partition::Strategy::kRing});
    if (ring.ok()) {
      absl::StatusOr<partition::PlanEstimate> ring_estimate =
          partition::EstimatePlan(*ring, model, fleet.devices, fleet.links);
      if (ring_estimate.ok()) {
        out << absl::StrFormat("ring (exo) baseline: %d stages, %s per token (%s tokens/s)\n",
                               ring->stages.size(), Milliseconds(ring_estimate->seconds_per_token),
                               TokensPerSecond(ring_estimate->seconds_per_token));
      }
    }
  }
  return out.str();
}

namespace {

absl::StatusOr<Fleet> ReadFleetFile(const std::string& path) {
  std::ifstream fleet_file(path);
  if (!fleet_file) {
    return absl::NotFoundError(absl::StrCat("cannot open the fleet file ", path));
  }
  std::stringstream fleet_text;
  fleet_text << fleet_file.rdbuf();
  absl::StatusOr<Fleet> fleet = ParseFleet(fleet_text.str());
  if (!fleet.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", fleet.status().message()));
  }
  return fleet;
}

// The plan the node's coordinator runs now, from its API's GET /v1/cluster; "" when the node
// serves no API or has no plan in force.
std::string PlanInForce(const NodeStatus& node, const std::string& api_key) {
  const Json caps = node.json.value("capabilities", Json::object());
  const int64_t port = caps.is_object() ? caps.value("http_port", int64_t{0}) : 0;
  if (port <= 0 || port > 65535) return "";
  absl::StatusOr<Json> view =
      GetNodeJson("127.0.0.1", static_cast<uint16_t>(port), api_key, "/v1/cluster");
  if (!view.ok()) return absl::StrCat("(cannot read it: ", view.status().message(), ")");
  std::string plan = DescribePlanInForce(*view);
  if (plan.empty()) return "";
  const Json& p = (*view)["plan"];
  if (p.contains("model") && p["model"].is_string()) {
    plan = absl::StrCat("model ", p["model"].get<std::string>(), ", ", plan);
  }
  if (p.contains("epoch") && p["epoch"].is_number()) {
    absl::StrAppend(&plan, " (epoch ", p["epoch"].dump(), ")");
  }
  return plan;
}

}  // namespace

int RunPlan(const PlanCommand& command, std::ostream& out, std::ostream& err) {
  auto fail = [&](const absl::Status& status) {
    err << "exo-node plan: error: " << status.message() << "\n";
    return 1;
  };
  absl::StatusOr<Fleet> fleet;
  std::string in_force;
  std::string fleet_source;
  if (!command.fleet_path.empty()) {
    fleet = ReadFleetFile(command.fleet_path);
  } else {
    const std::string state_dir = command.state_dir.empty() ? DefaultStateDir() : command.state_dir;
    const NodeStatus node = ReadNodeStatus(state_dir);
    if (!node.running) {
      return fail(absl::FailedPreconditionError(absl::StrCat(
          "no running node in ", state_dir, "; start `exo-node serve` or pass --fleet FILE (",
          node.why_not_running, ")")));
    }
    fleet = FleetFromStatus(node.json);
    if (!fleet.ok()) {
      return fail(
          absl::InvalidArgumentError(absl::StrCat(node.path, ": ", fleet.status().message())));
    }
    fleet_source = absl::StrCat("the live cluster of node ", node.json.value("node_id", ""),
                                " (this node and its up peers, 1 ms links)");
    in_force = PlanInForce(node, command.api_key);
  }
  if (!fleet.ok()) return fail(fleet.status());
  std::string path = command.model_path.empty() ? DefaultModelPath() : command.model_path;
  absl::StatusOr<std::unique_ptr<runtime::GgufFile>> file = runtime::GgufFile::Open(path);
  if (!file.ok()) {
    return fail(absl::Status(
        file.status().code(),
        absl::StrCat(file.status().message(), command.model_path.empty()
                                                  ? "; run ./scripts/setup.sh or pass --model PATH"
                                                  : "")));
  }
  absl::StatusOr<runtime::ModelConfig> config = runtime::ReadModelConfig(**file);
  if (!config.ok()) return fail(config.status());
  absl::StatusOr<partition::ModelProfile> model =
      BuildModelProfile(**file, *config, command.profile);
  if (!model.ok()) return fail(model.status());
  out << absl::StrFormat("model: %s (%s), %d layers, context %d tokens: %s to hold in one stage\n",
                         config->name, path, model->n_layers, model->context_length,
                         partition::FormatBytes(partition::ModelMemoryBytes(*model)));
  if (command.fleet_path.empty()) out << "fleet: " << fleet_source << "\n";
  partition::PlannerOptions options{.strategy = command.strategy, .max_stages = command.max_stages};
  absl::StatusOr<partition::Plan> plan =
      partition::MakePlan(*model, fleet->devices, fleet->links, options);
  if (!plan.ok()) return fail(plan.status());
  out << FormatPlanReport(*plan, *model, *fleet, command.strategy);
  if (!in_force.empty()) out << "in force on the node: " << in_force << "\n";
  return 0;
}

}  // namespace exo::node
