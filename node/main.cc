// exo-node: parses flags and dispatches to a subcommand. No logic lives here.
#include <algorithm>
#include <iostream>
#include <string>
#include <tuple>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "discovery/peer.h"
#include "node/api_serve.h"
#include "node/cli.h"
#include "node/cluster_cli.h"
#include "node/cluster_key.h"
#include "node/cluster_node.h"
#include "node/paths.h"
#include "node/pipeline_cli.h"
#include "node/plan_cmd.h"

ABSL_FLAG(std::string, model, "",
          "Path to a GGUF model file. Default: the default model in $EXO_HOME/models "
          "(EXO_HOME defaults to ~/.cache/exo-node).");
ABSL_FLAG(std::string, prompt, "", "generate: the text to continue.");
ABSL_FLAG(int32_t, n, 128, "Maximum number of tokens to generate.");
ABSL_FLAG(double, temp, 0.8, "Sampling temperature; 0 picks the most likely token (greedy).");
ABSL_FLAG(uint64_t, seed, 0, "Random seed for sampling; 0 picks one. Same seed, same output.");
ABSL_FLAG(int32_t, top_k, 40, "Keep only the k most likely tokens; 0 turns it off.");
ABSL_FLAG(double, top_p, 0.95,
          "Keep the smallest set of tokens with this probability mass; 1 = off.");
ABSL_FLAG(double, min_p, 0.05,
          "Drop tokens less likely than min_p times the most likely; 0 = off.");
ABSL_FLAG(double, repeat_penalty, 1.0, "Penalty on repeating recent tokens; 1 = off.");
ABSL_FLAG(double, presence_penalty, 0.0, "OpenAI-style presence penalty in [-2, 2].");
ABSL_FLAG(double, frequency_penalty, 0.0, "OpenAI-style frequency penalty in [-2, 2].");
ABSL_FLAG(int32_t, ctx, 4096, "Context size in tokens (capped at the model's own).");
ABSL_FLAG(int32_t, threads, 0, "Compute threads; 0 uses one per physical core.");
ABSL_FLAG(int32_t, batch, 256, "Prompt tokens processed per forward pass.");
ABSL_FLAG(bool, local, false,
          "generate: run the model in this process even when a running node (exo-node serve) "
          "serves it over the cluster.");
ABSL_FLAG(int32_t, ready_timeout_s, 600,
          "generate: how long to wait while the running node loads its model or re-plans.");
ABSL_FLAG(bool, chat_template, false,
          "generate: wrap --prompt as a user turn of the model's chat template.");
ABSL_FLAG(std::string, system, "", "chat: a system prompt.");
ABSL_FLAG(std::string, json_out, "",
          "generate: also write prompt and generated token ids and the text as JSON to this file.");
ABSL_FLAG(std::string, logits_out, "",
          "generate: write the logits of the first generated step (float32) to this file.");
ABSL_FLAG(std::string, speculative, "",
          "generate, serve: speculative decoding: off, draft (needs --draft_model) or ngram "
          "(prompt lookup, no model needed). Default: draft when --draft_model is given, else "
          "off. serve verifies the drafts in each pass through the pipeline (a model on this "
          "node alone then runs through its own stage instead of the batching Engine).");
ABSL_FLAG(std::string, draft_model, "",
          "generate, serve: a smaller GGUF model with the target's vocabulary that drafts "
          "tokens; serve loads it once on the node with the API, with a KV slot per sequence.");
ABSL_FLAG(int32_t, draft_max, 8,
          "generate, serve: most tokens drafted per verification pass (1-15).");
ABSL_FLAG(int32_t, draft_min, 0,
          "generate, serve: fewest tokens the adaptive draft length goes down to (0 lets it stop "
          "drafting when drafts do not pay); = --draft_max fixes the length.");
ABSL_FLAG(double, draft_p_min, 0.5,
          "generate, serve: the draft model stops drafting when its top probability is below "
          "this.");
ABSL_FLAG(bool, draft_greedy, false,
          "generate: the draft model proposes its most likely token even when sampling (the "
          "output still follows the target's distribution); always on with --pipeline and serve.");
ABSL_FLAG(int32_t, ngram_max, 4, "generate --speculative=ngram: longest context suffix matched.");
ABSL_FLAG(int32_t, ngram_min, 2, "generate --speculative=ngram: shortest context suffix matched.");
ABSL_FLAG(bool, all, false, "inspect: print metadata arrays in full.");
ABSL_FLAG(int32_t, pp, 512, "bench: prompt tokens in the prompt-processing test.");
ABSL_FLAG(int32_t, tg, 128, "bench: tokens in the decode test.");
ABSL_FLAG(int32_t, depth, 0,
          "bench: tokens already in the context when each test starts (long-context speed).");
ABSL_FLAG(int32_t, reps, 3, "bench: repetitions of each test.");
ABSL_FLAG(std::string, fleet, "",
          "plan: JSON file describing the nodes (id, memory, bandwidth, kind) and links "
          "(latency); see docs/planner.md.");
ABSL_FLAG(std::string, strategy, "optimal",
          "plan, serve: 'optimal' (fastest estimated time per token) or 'ring' (exo's "
          "memory-weighted split).");
ABSL_FLAG(int32_t, max_stages, 0, "plan, serve: at most this many pipeline stages; 0 = no limit.");
ABSL_FLAG(bool, json, false, "bench, peers: print the figures as JSON.");
ABSL_FLAG(std::string, state_dir, "",
          "serve, peers, doctor, generate, plan: the node's state directory (node id, status "
          "file). Default: $EXO_HOME/state.");
ABSL_FLAG(std::string, cluster_key, "",
          "serve: the shared secret of this cluster. Nodes with another key never join. Default: "
          "the built-in key \"exo-default\", so unconfigured nodes on one network cluster.");
ABSL_FLAG(std::string, cluster_key_file, "",
          "serve: read the cluster key from this file instead (trailing newline ignored).");
ABSL_FLAG(std::string, bind, "0.0.0.0",
          "serve: address the gRPC and bus ports listen on (0.0.0.0 = all IPv4, :: = all).");
ABSL_FLAG(int32_t, grpc_port, 52416,
          "serve, stage: TCP port of the node's gRPC service; 0 = any free (printed).");
ABSL_FLAG(int32_t, bus_port, 52417, "serve: TCP port of the node's event bus; 0 = any free.");
ABSL_FLAG(std::string, peers, "",
          "serve: static peers, host:port of their gRPC port, comma-separated "
          "(\"10.0.0.2:52416,[fd00::3]:52416\").");
ABSL_FLAG(std::string, discovery, "mdns,static",
          "serve: discovery sources, comma-separated: mdns, static.");
ABSL_FLAG(std::string, interface, "",
          "serve, doctor: network interface(s) for mDNS, comma-separated (default: every one that "
          "is up and multicast-capable, loopback excluded).");
ABSL_FLAG(int32_t, heartbeat_timeout_ms, 3000,
          "serve: a peer whose heartbeats stop for this long counts as down.");
// Pipeline stages (docs/pipeline.md).
ABSL_FLAG(std::string, grpc_host, "127.0.0.1",
          "stage: address to serve gRPC on (--grpc_port gives the port); 0.0.0.0 serves every "
          "interface.");
ABSL_FLAG(std::string, fetch_from, "",
          "stage: HOST:PORT of a peer with the model file; this stage then fetches only the "
          "tensors of its layers (cached in $EXO_HOME/models).");
ABSL_FLAG(std::string, pipeline, "",
          "generate: run through these stages, HOST:PORT[,HOST:PORT...] in pipeline order.");
ABSL_FLAG(std::string, layers, "",
          "generate --pipeline: layer range of each stage, e.g. 0:6,6:12,12:18; default: even.");
ABSL_FLAG(
    std::string, wire_dtype, "f32",
    "generate --pipeline, serve: hidden states between stages as f32 (exact), bf16 or f16 (half "
    "the bytes, not bit-exact; f16 overflows on models with large activations, e.g. "
    "Gemma).");
// HTTP API (docs/api.md).
ABSL_FLAG(int32_t, http_port, 52415, "serve: HTTP API port (0 picks a free one).");
ABSL_FLAG(std::string, http_bind, "0.0.0.0", "serve: address the HTTP API listens on.");
ABSL_FLAG(std::string, api_key, "",
          "serve: require 'Authorization: Bearer KEY' on the HTTP API (empty: no key). "
          "generate, plan: the key to send to the running node's API.");
ABSL_FLAG(int32_t, max_queue, 64, "serve: requests that may wait for a free sequence slot.");
ABSL_FLAG(int32_t, max_sequences, 16,
          "serve, plan: sequences generated together (continuous batching); each has a KV "
          "cache of --ctx positions.");
ABSL_FLAG(bool, api, true,
          "serve: serve the HTTP API and web UI (--noapi: a node that only contributes capacity).");
ABSL_FLAG(
    bool, cluster, true,
    "serve: join the cluster (gRPC, event bus, discovery); --nocluster serves the API alone.");
ABSL_FLAG(std::string, memory_limit, "",
          "serve: most memory this node offers the cluster for weights, KV cache and scratch "
          "(\"2GiB\", \"512MB\", bytes); default: what is free at start.");
ABSL_FLAG(int32_t, plan_wait_ms, 2000,
          "serve: how long the node serving the API waits for peers before planning the model "
          "over the cluster.");

namespace {

constexpr char kUsage[] = R"(peer-to-peer cluster inference for GGUF models.

Usage:
  exo-node generate [--model PATH] --prompt TEXT [-n N] [--temp T] [--seed S] [--local] ...
      Continue TEXT with the model, streaming tokens; prints speed figures at the end. When
      `exo-node serve` runs here (--state_dir) with its API and that model, generate goes
      through it, so the model runs over the cluster; --local runs it in this process.
      Speculative decoding: --draft_model PATH (same vocabulary) or --speculative=ngram.
  exo-node chat [--model PATH] [--system TEXT] ...
      Interactive chat using the model's own chat template.
  exo-node stage [--model PATH | --fetch_from HOST:PORT] [--grpc_port N]
      Serve a pipeline stage over gRPC; `generate --pipeline` tells it which layers to load.
  exo-node generate --pipeline HOST:PORT,HOST:PORT[,...] [--layers 0:9,9:18] --prompt TEXT
      Generate through those stages (the local --model supplies the tokenizer); speculative
      decoding (--speculative=ngram, --draft_model PATH) drafts here, the last stage verifies.
  exo-node serve [--model PATH] [--http_port 52415] [--http_bind 0.0.0.0] [--api_key KEY]
                 [--peers HOST:PORT,...] [--cluster_key KEY] [--grpc_port 52416] ...
      Run a node: serve the OpenAI- and Ollama-compatible HTTP API and the web UI at
      http://HOST:PORT/, find peers (mDNS and --peers) and join the cluster. --noapi runs a
      node that only contributes capacity; --nocluster serves the API alone. Stops gracefully
      on SIGINT or SIGTERM.
  exo-node inspect FILE [--all]
      Print a GGUF file's metadata and tensor table.
  exo-node bench [--model PATH] [--pp 512] [--tg 128] [--depth 0] [--reps 3] [--json]
      Prompt-processing and decode speed, bytes per token, memory bandwidth and roofline,
      peak RSS and cold start, as llama-bench reports them; --depth N runs both tests with N
      tokens already in the context.
  exo-node plan [--fleet FILE | --state_dir DIR] [--model PATH] [--strategy optimal|ring]
                [--max_stages N] [--ctx N] [--max_sequences N]
      The plan the running node's cluster (this node and its up peers) would use, or, with
      --fleet, a cluster of the nodes described in FILE: each stage's memory and estimated
      time per token, against the single-node and ring baselines.
  exo-node peers [--state_dir DIR] [--json]
      The cluster as the node running on this machine sees it.
  exo-node doctor [--state_dir DIR]
      Explains why a peer may be missing, and what to do.

Without --model the default model is used (installed by ./scripts/setup.sh).
Run `exo-node --help` for every flag.)";

exo::runtime::SamplingParams SamplingFromFlags() {
  exo::runtime::SamplingParams p;
  p.temperature = static_cast<float>(absl::GetFlag(FLAGS_temp));
  p.seed = absl::GetFlag(FLAGS_seed);
  p.top_k = absl::GetFlag(FLAGS_top_k);
  p.top_p = static_cast<float>(absl::GetFlag(FLAGS_top_p));
  p.min_p = static_cast<float>(absl::GetFlag(FLAGS_min_p));
  p.repetition_penalty = static_cast<float>(absl::GetFlag(FLAGS_repeat_penalty));
  p.presence_penalty = static_cast<float>(absl::GetFlag(FLAGS_presence_penalty));
  p.frequency_penalty = static_cast<float>(absl::GetFlag(FLAGS_frequency_penalty));
  return p;
}

exo::node::ModelOptions ModelFromFlags() {
  exo::node::ModelOptions m;
  m.model_path = absl::GetFlag(FLAGS_model);
  m.context = absl::GetFlag(FLAGS_ctx);
  m.threads = absl::GetFlag(FLAGS_threads);
  m.batch = absl::GetFlag(FLAGS_batch);
  return m;
}

// generate's speculative-decoding flags (single node and --pipeline); false when --speculative
// names no mode.
bool SpeculativeFromFlags(exo::node::SpeculativeCommand& spec) {
  spec.draft_model_path = absl::GetFlag(FLAGS_draft_model);
  const std::string mode = absl::GetFlag(FLAGS_speculative);
  if (mode == "draft" || (mode.empty() && !spec.draft_model_path.empty())) {
    spec.mode = exo::node::SpeculativeMode::kDraftModel;
  } else if (mode == "ngram") {
    spec.mode = exo::node::SpeculativeMode::kNgram;
  } else if (mode != "off" && !mode.empty()) {
    return false;
  }
  spec.draft_max = absl::GetFlag(FLAGS_draft_max);
  spec.draft_min = absl::GetFlag(FLAGS_draft_min);
  spec.draft_min_confidence = static_cast<float>(absl::GetFlag(FLAGS_draft_p_min));
  spec.draft_one_hot = absl::GetFlag(FLAGS_draft_greedy);
  spec.ngram_max = absl::GetFlag(FLAGS_ngram_max);
  spec.ngram_min = absl::GetFlag(FLAGS_ngram_min);
  return true;
}

int UsageError(const std::string& message);

// serve's options from the flags; InvalidArgument names the flag at fault.
absl::StatusOr<exo::node::ClusterNodeOptions> ClusterOptionsFromFlags() {
  exo::node::ClusterNodeOptions o;
  o.state_dir = absl::GetFlag(FLAGS_state_dir);
  o.bind_address = absl::GetFlag(FLAGS_bind);
  const std::string key = absl::GetFlag(FLAGS_cluster_key);
  const std::string key_file = absl::GetFlag(FLAGS_cluster_key_file);
  if (!key.empty() && !key_file.empty()) {
    return absl::InvalidArgumentError("give --cluster_key or --cluster_key_file, not both");
  }
  if (!key.empty()) {
    ASSIGN_OR_RETURN(o.cluster_key, exo::node::ClusterKey::FromString(key));
  } else if (!key_file.empty()) {
    ASSIGN_OR_RETURN(o.cluster_key, exo::node::ClusterKey::FromFile(key_file));
  }
  for (auto [flag, value, out] :
       {std::tuple{"--grpc_port", absl::GetFlag(FLAGS_grpc_port), &o.grpc_port},
        std::tuple{"--bus_port", absl::GetFlag(FLAGS_bus_port), &o.bus_port}}) {
    if (value < 0 || value > 65535) {
      return absl::InvalidArgumentError(absl::StrCat(flag, " must be in [0, 65535]"));
    }
    *out = static_cast<uint16_t>(value);
  }
  if (const std::string limit = absl::GetFlag(FLAGS_memory_limit); !limit.empty()) {
    absl::StatusOr<double> bytes = exo::node::ParseByteQuantity(limit, /*allow_rate=*/false);
    if (!bytes.ok() || *bytes < 1048576.0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--memory_limit: '", limit, "' is not a size of at least 1 MiB (e.g. 2GiB, 512MB)"));
    }
    o.memory_limit_bytes = static_cast<uint64_t>(*bytes);
  }
  o.model_path = absl::GetFlag(FLAGS_model);
  if (o.model_path.empty()) o.model_path = exo::node::InstalledDefaultModel();
  o.models_dir = exo::node::ModelsDir();
  o.stage_threads = absl::GetFlag(FLAGS_threads);
  const int32_t timeout = absl::GetFlag(FLAGS_heartbeat_timeout_ms);
  if (timeout < 1000) {
    return absl::InvalidArgumentError(
        "--heartbeat_timeout_ms must be at least 1000 (heartbeats go out every 500 ms)");
  }
  o.heartbeat_timeout = absl::Milliseconds(timeout);
  o.discovery_modes.clear();
  for (absl::string_view mode :
       absl::StrSplit(absl::GetFlag(FLAGS_discovery), ',', absl::SkipWhitespace())) {
    if (mode != "mdns" && mode != "static") {
      return absl::InvalidArgumentError(absl::StrCat("--discovery: unknown source '",
                                                     std::string(mode),
                                                     "' (use mdns, static, or both: mdns,static)"));
    }
    o.discovery_modes.emplace_back(mode);
  }
  const bool use_static = std::find(o.discovery_modes.begin(), o.discovery_modes.end(), "static") !=
                          o.discovery_modes.end();
  ASSIGN_OR_RETURN(auto peers, exo::discovery::ParseStaticPeers(absl::GetFlag(FLAGS_peers)));
  if (!peers.empty() && !use_static) {
    return absl::InvalidArgumentError("--peers needs static in --discovery");
  }
  o.static_peers = std::move(peers);
  for (absl::string_view name :
       absl::StrSplit(absl::GetFlag(FLAGS_interface), ',', absl::SkipWhitespace())) {
    o.mdns_interfaces.emplace_back(name);
  }
  return o;
}

int UsageError(const std::string& message) {
  std::cerr << "exo-node: error: " << message << " (see exo-node --help)\n";
  return 2;
}

// --help lists the flags defined in this file (Abseil's default looks for a file named after
// the binary).
bool IsMainFile(absl::string_view path) { return absl::EndsWith(path, "node/main.cc"); }

// `exo-node --help` (or -h, or `help`): usage and every flag of this file, on stdout, exit 0.
// Abseil's own --help handler exits with status 1, which scripts read as a failure.
bool WantsHelp(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--help" || arg == "-help" || arg == "-h" || (i == 1 && arg == "help")) return true;
  }
  return false;
}

// `serve`: the cluster node (gRPC, bus, discovery) and the HTTP API with the web UI, each
// optional, until SIGINT or SIGTERM.
int Serve() {
  const bool cluster = absl::GetFlag(FLAGS_cluster);
  const bool api = absl::GetFlag(FLAGS_api);
  if (!cluster && !api) return UsageError("serve with --nocluster and --noapi has nothing to do");
  const std::string speculative_mode = absl::GetFlag(FLAGS_speculative);
  if ((!absl::GetFlag(FLAGS_draft_model).empty() ||
       (!speculative_mode.empty() && speculative_mode != "off")) &&
      !(cluster && api)) {
    return UsageError(
        "--draft_model and --speculative apply to the node that serves the API over the cluster "
        "(drafts are verified in each pass through the pipeline); drop them, or serve without "
        "--noapi / --nocluster");
  }
  exo::node::BlockShutdownSignals();  // before any thread starts
  std::unique_ptr<exo::node::ClusterNode> node;
  if (cluster) {
    auto options = ClusterOptionsFromFlags();
    if (!options.ok()) return UsageError(std::string(options.status().message()));
    auto started = exo::node::ClusterNode::Start(*std::move(options));
    if (!started.ok()) {
      std::cerr << "exo-node: error: " << started.status().message() << "\n";
      return 1;
    }
    node = *std::move(started);
    exo::node::PrintReady(*node, std::cout);
  }
  std::unique_ptr<exo::node::HttpService> http;
  if (api) {
    exo::node::HttpServiceOptions s;
    s.http.port = absl::GetFlag(FLAGS_http_port);
    s.http.host = absl::GetFlag(FLAGS_http_bind);
    s.http.api_key = absl::GetFlag(FLAGS_api_key);
    s.http.threads = absl::GetFlag(FLAGS_max_sequences) + absl::GetFlag(FLAGS_max_queue) + 16;
    s.model.path = absl::GetFlag(FLAGS_model);
    if (s.model.path.empty()) s.model.path = exo::node::InstalledDefaultModel();
    s.model.context = absl::GetFlag(FLAGS_ctx);
    s.model.threads = absl::GetFlag(FLAGS_threads);
    s.model.batch = absl::GetFlag(FLAGS_batch);
    s.model.num_slots = absl::GetFlag(FLAGS_max_sequences);
    s.model.max_queue = absl::GetFlag(FLAGS_max_queue);
    s.cluster = node.get();  // null with --nocluster
    if (node != nullptr && !s.model.path.empty()) {
      const int32_t wait = absl::GetFlag(FLAGS_plan_wait_ms);
      if (wait < 0) return UsageError("--plan_wait_ms must be 0 or more");
      s.coordinator.settle = absl::Milliseconds(wait);
      const std::string strategy = absl::GetFlag(FLAGS_strategy);
      if (strategy == "ring") {
        s.coordinator.strategy = exo::partition::Strategy::kRing;
      } else if (strategy != "optimal") {
        return UsageError("--strategy must be optimal or ring");
      }
      s.coordinator.max_stages = absl::GetFlag(FLAGS_max_stages);
      exo::node::SpeculativeCommand spec;
      if (!SpeculativeFromFlags(spec)) {
        return UsageError(absl::StrCat("--speculative must be off, draft or ngram, got '",
                                       absl::GetFlag(FLAGS_speculative), "'"));
      }
      if (spec.mode != exo::node::SpeculativeMode::kOff) {
        if (spec.draft_max < 1 || spec.draft_max > 15) {
          return UsageError("--draft_max must be in [1, 15]");
        }
        if (spec.draft_min < 0 || spec.draft_min > spec.draft_max) {
          return UsageError("--draft_min must be in [0, --draft_max]");
        }
        s.coordinator.speculative.draft_max = spec.draft_max;
        s.coordinator.speculative.draft_min = spec.draft_min;
        s.coordinator.speculative.adaptive = spec.draft_min < spec.draft_max;
      }
      if (spec.mode == exo::node::SpeculativeMode::kDraftModel) {
        if (spec.draft_model_path.empty()) {
          return UsageError(
              "--speculative=draft needs --draft_model PATH (a smaller model with "
              "the same vocabulary)");
        }
        if (!(spec.draft_min_confidence >= 0.0f && spec.draft_min_confidence <= 1.0f)) {
          return UsageError("--draft_p_min must be in [0, 1]");
        }
        s.coordinator.draft_model_path = spec.draft_model_path;
        s.coordinator.draft_min_confidence = spec.draft_min_confidence;
      }
      if (spec.mode == exo::node::SpeculativeMode::kNgram) {
        if (spec.ngram_min < 1 || spec.ngram_max < spec.ngram_min) {
          return UsageError("need 1 <= --ngram_min <= --ngram_max");
        }
        s.coordinator.ngram_speculation = true;
        s.coordinator.ngram.ngram_max = spec.ngram_max;
        s.coordinator.ngram.ngram_min = spec.ngram_min;
      }
      const std::string dtype = absl::GetFlag(FLAGS_wire_dtype);
      if (dtype == "bf16") {
        s.coordinator.wire_dtype = exo::node::WireDType::kBf16;
      } else if (dtype == "f16") {
        s.coordinator.wire_dtype = exo::node::WireDType::kF16;
      } else if (dtype != "f32") {
        return UsageError("--wire_dtype must be f32, bf16 or f16");
      }
    }
    auto started = exo::node::HttpService::Start(s, std::cout, std::cerr);
    if (!started.ok()) {
      std::cerr << "exo-node: error: " << started.status().message() << "\n";
      if (node != nullptr) node->Stop("the HTTP API did not start");
      return 1;
    }
    http = *std::move(started);
  }
  const std::string signal = exo::node::WaitForShutdownSignal();
  std::cerr << "exo-node: stopping (" << signal << ")\n";
  http.reset();
  if (node != nullptr) node->Stop(absl::StrCat("received ", signal));
  return 0;
}

int PrintHelp() {
  std::cout << "exo-node: " << kUsage << "\n\nFlags:\n";
  std::vector<std::pair<std::string, const absl::CommandLineFlag*>> flags;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (IsMainFile(flag->Filename())) flags.emplace_back(std::string(name), flag);
  }
  std::sort(flags.begin(), flags.end());
  for (const auto& [name, flag] : flags) {
    std::cout << "  --" << name << "  (default: " << flag->DefaultValue() << ")\n      "
              << flag->Help() << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::FlagsUsageConfig usage_config;
  usage_config.contains_help_flags = IsMainFile;
  usage_config.contains_helpshort_flags = IsMainFile;
  absl::SetFlagsUsageConfig(usage_config);
  absl::SetProgramUsageMessage(kUsage);
  if (WantsHelp(argc, argv)) return PrintHelp();
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() < 2) {
    std::cerr << "exo-node: " << kUsage << "\n";
    return 2;
  }
  const std::string command = args[1];
  if (command == "generate" && !absl::GetFlag(FLAGS_pipeline).empty()) {
    if (args.size() > 2) return UsageError(absl::StrCat("unexpected argument '", args[2], "'"));
    exo::node::PipelineGenerateCommand g;
    g.model = ModelFromFlags();
    g.pipeline = absl::GetFlag(FLAGS_pipeline);
    g.layers = absl::GetFlag(FLAGS_layers);
    g.wire_dtype = absl::GetFlag(FLAGS_wire_dtype);
    g.prompt = absl::GetFlag(FLAGS_prompt);
    if (g.prompt.empty()) return UsageError("generate needs --prompt TEXT");
    g.max_tokens = absl::GetFlag(FLAGS_n);
    g.sampling = SamplingFromFlags();
    g.json_out = absl::GetFlag(FLAGS_json_out);
    if (!SpeculativeFromFlags(g.speculative)) {
      return UsageError(absl::StrCat("--speculative must be off, draft or ngram, got '",
                                     absl::GetFlag(FLAGS_speculative), "'"));
    }
    return exo::node::RunPipelineGenerate(g, std::cout, std::cerr);
  }
  if (command == "stage") {
    if (args.size() > 2) return UsageError(absl::StrCat("unexpected argument '", args[2], "'"));
    exo::node::StageCommand s;
    s.model_path = absl::GetFlag(FLAGS_model);
    s.fetch_from = absl::GetFlag(FLAGS_fetch_from);
    s.host = absl::GetFlag(FLAGS_grpc_host);
    s.port = absl::GetFlag(FLAGS_grpc_port);
    s.threads = absl::GetFlag(FLAGS_threads);
    return exo::node::RunStage(s, std::cout, std::cerr);
  }
  if (command == "generate") {
    if (args.size() > 2) return UsageError(absl::StrCat("unexpected argument '", args[2], "'"));
    exo::node::GenerateCommand g;
    g.model = ModelFromFlags();
    g.prompt = absl::GetFlag(FLAGS_prompt);
    if (g.prompt.empty()) return UsageError("generate needs --prompt TEXT");
    g.max_tokens = absl::GetFlag(FLAGS_n);
    g.sampling = SamplingFromFlags();
    g.chat_template = absl::GetFlag(FLAGS_chat_template);
    g.json_out = absl::GetFlag(FLAGS_json_out);
    g.logits_out = absl::GetFlag(FLAGS_logits_out);
    if (!SpeculativeFromFlags(g.speculative)) {
      return UsageError(absl::StrCat("--speculative must be off, draft or ngram, got '",
                                     absl::GetFlag(FLAGS_speculative), "'"));
    }
    g.local = absl::GetFlag(FLAGS_local);
    g.state_dir = absl::GetFlag(FLAGS_state_dir);
    g.api_key = absl::GetFlag(FLAGS_api_key);
    g.ready_timeout_s = absl::GetFlag(FLAGS_ready_timeout_s);
    if (g.ready_timeout_s < 0) return UsageError("--ready_timeout_s must be 0 or more");
    return exo::node::RunGenerate(g, std::cout, std::cerr);
  }
  if (command == "chat") {
    if (args.size() > 2) return UsageError(absl::StrCat("unexpected argument '", args[2], "'"));
    exo::node::ChatCommand c;
    c.model = ModelFromFlags();
    c.system_prompt = absl::GetFlag(FLAGS_system);
    c.max_tokens = absl::GetFlag(FLAGS_n);
    c.sampling = SamplingFromFlags();
    return exo::node::RunChat(c, std::cin, std::cout, std::cerr);
  }
  if (command == "bench") {
    if (args.size() > 2) return UsageError(absl::StrCat("unexpected argument '", args[2], "'"));
    exo::node::BenchCommand b;
    b.model = ModelFromFlags();
    b.prompt_tokens = absl::GetFlag(FLAGS_pp);
    b.generate_tokens = absl::GetFlag(FLAGS_tg);
    b.depth = absl::GetFlag(FLAGS_depth);
    b.repetitions = absl::GetFlag(FLAGS_reps);
    b.json = absl::GetFlag(FLAGS_json);
    return exo::node::RunBench(b, std::cout, std::cerr);
  }
  if (command == "plan") {
    if (args.size() > 2) return UsageError(absl::StrCat("unexpected argument '", args[2], "'"));
    exo::node::PlanCommand p;
    p.model_path = absl::GetFlag(FLAGS_model);
    p.fleet_path = absl::GetFlag(FLAGS_fleet);
    p.state_dir = absl::GetFlag(FLAGS_state_dir);
    p.api_key = absl::GetFlag(FLAGS_api_key);
    const std::string strategy = absl::GetFlag(FLAGS_strategy);
    if (strategy == "ring") {
      p.strategy = exo::partition::Strategy::kRing;
    } else if (strategy != "optimal") {
      return UsageError(
          absl::StrCat("--strategy must be 'optimal' or 'ring', not '", strategy, "'"));
    }
    p.max_stages = absl::GetFlag(FLAGS_max_stages);
    if (p.max_stages < 0) return UsageError("--max_stages must be >= 0");
    p.profile.context = absl::GetFlag(FLAGS_ctx);
    p.profile.max_batch_tokens = absl::GetFlag(FLAGS_batch);
    if (p.fleet_path.empty()) {
      // The live cluster: size the model as `serve` does with the same flags.
      p.profile.num_slots = absl::GetFlag(FLAGS_max_sequences);
      if (p.profile.num_slots < 1) return UsageError("--max_sequences must be at least 1");
      p.profile.max_logit_rows = p.profile.num_slots;
      p.profile.max_batch_tokens = std::max(p.profile.max_batch_tokens, p.profile.num_slots);
    }
    return exo::node::RunPlan(p, std::cout, std::cerr);
  }
  if (command == "serve") {
    if (args.size() > 2) return UsageError(absl::StrCat("unexpected argument '", args[2], "'"));
    return Serve();
  }
  if (command == "inspect") {
    if (args.size() != 3) return UsageError("inspect needs exactly one FILE");
    return exo::node::RunInspect(args[2], absl::GetFlag(FLAGS_all), std::cout, std::cerr);
  }
  if (command == "peers") {
    if (args.size() > 2) return UsageError(absl::StrCat("unexpected argument '", args[2], "'"));
    return exo::node::RunPeers({absl::GetFlag(FLAGS_state_dir), absl::GetFlag(FLAGS_json)},
                               std::cout, std::cerr);
  }
  if (command == "doctor") {
    if (args.size() > 2) return UsageError(absl::StrCat("unexpected argument '", args[2], "'"));
    exo::node::DoctorCommand d;
    d.state_dir = absl::GetFlag(FLAGS_state_dir);
    d.grpc_port = static_cast<uint16_t>(absl::GetFlag(FLAGS_grpc_port));
    d.bus_port = static_cast<uint16_t>(absl::GetFlag(FLAGS_bus_port));
    d.interface = absl::GetFlag(FLAGS_interface);
    return exo::node::RunDoctor(d, std::cout, std::cerr);
  }
  return UsageError(absl::StrCat("unknown command '", command, "'"));
}
