// exo-node: parses flags and dispatches to a subcommand. No logic lives here.
#include <algorithm>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "node/api_serve.h"
#include "node/cli.h"
#include "node/paths.h"

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
ABSL_FLAG(bool, chat_template, false,
          "generate: wrap --prompt as a user turn of the model's chat template.");
ABSL_FLAG(std::string, system, "", "chat: a system prompt.");
ABSL_FLAG(std::string, json_out, "",
          "generate: also write prompt and generated token ids and the text as JSON to this file.");
ABSL_FLAG(std::string, logits_out, "",
          "generate: write the logits of the first generated step (float32) to this file.");
ABSL_FLAG(bool, all, false, "inspect: print metadata arrays in full.");
ABSL_FLAG(int32_t, pp, 512, "bench: prompt tokens in the prompt-processing test.");
ABSL_FLAG(int32_t, tg, 128, "bench: tokens in the decode test.");
ABSL_FLAG(int32_t, reps, 3, "bench: repetitions of each test.");
ABSL_FLAG(bool, json, false, "bench: print the figures as JSON.");
ABSL_FLAG(int32_t, http_port, 52415, "serve: HTTP API port (0 picks a free one).");
ABSL_FLAG(std::string, http_bind, "0.0.0.0", "serve: address the HTTP API listens on.");
ABSL_FLAG(std::string, api_key, "",
          "serve: require 'Authorization: Bearer KEY' on the HTTP API (empty: no key).");
ABSL_FLAG(int32_t, max_queue, 64, "serve: requests that may wait for a free sequence slot.");
ABSL_FLAG(int32_t, max_sequences, 16,
          "serve: sequences generated together (continuous batching); each has a KV cache of "
          "--ctx positions.");

namespace {

constexpr char kUsage[] = R"(peer-to-peer cluster inference for GGUF models.

Usage:
  exo-node generate [--model PATH] --prompt TEXT [-n N] [--temp T] [--seed S] ...
      Continue TEXT with the model, streaming tokens; prints speed figures at the end.
  exo-node chat [--model PATH] [--system TEXT] ...
      Interactive chat using the model's own chat template.
  exo-node serve [--model PATH] [--http_port 52415] [--http_bind 0.0.0.0] [--api_key KEY]
      Serve the OpenAI- and Ollama-compatible HTTP API and the web UI at http://HOST:PORT/.
  exo-node inspect FILE [--all]
      Print a GGUF file's metadata and tensor table.
  exo-node bench [--model PATH] [--pp 512] [--tg 128] [--reps 3] [--json]
      Prompt-processing and decode speed, bytes per token, memory bandwidth and roofline,
      peak RSS and cold start, as llama-bench reports them.

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
    b.repetitions = absl::GetFlag(FLAGS_reps);
    b.json = absl::GetFlag(FLAGS_json);
    return exo::node::RunBench(b, std::cout, std::cerr);
  }
  if (command == "serve") {
    if (args.size() > 2) return UsageError(absl::StrCat("unexpected argument '", args[2], "'"));
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
    return exo::node::RunHttpServe(s, std::cout, std::cerr);
  }
  if (command == "inspect") {
    if (args.size() != 3) return UsageError("inspect needs exactly one FILE");
    return exo::node::RunInspect(args[2], absl::GetFlag(FLAGS_all), std::cout, std::cerr);
  }
  return UsageError(absl::StrCat("unknown command '", command, "'"));
}
