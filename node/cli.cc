#include "node/cli.h"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "kernels/thread_pool.h"
#include "kernels/types.h"
#include "nlohmann/json.hpp"
#include "node/cluster_cli.h"
#include "node/cluster_generate.h"
#include "node/identity.h"
#include "node/model_loader.h"
#include "node/paths.h"
#include "runtime/chat_template.h"
#include "runtime/generator.h"
#include "runtime/gguf.h"
#include "runtime/model_config.h"
#include "runtime/speculative.h"
#include "runtime/stage.h"
#include "runtime/tokenizer.h"

namespace exo::node {
namespace {

// Set when the program image initialises: close enough to process start for the cold-start
// figure `generate` prints.
const auto kProcessStart = std::chrono::steady_clock::now();

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// Prints `status` as the one-line error every command ends with, and returns exit code 1.
int Fail(std::ostream& err, const absl::Status& status) {
  err << "exo-node: error: " << status.message() << "\n";
  return 1;
}

// Tokenizes a chat-template rendering: the template writes BOS itself when it wants one.
std::vector<int32_t> EncodeRendered(const runtime::Tokenizer& tokenizer, const std::string& text) {
  const std::string bos(tokenizer.TokenText(tokenizer.bos_id()));  // "" when there is none
  const bool has_bos = !bos.empty() && text.rfind(bos, 0) == 0;
  return tokenizer.Encode(text, tokenizer.add_bos() && !has_bos, /*parse_special=*/true);
}

// The model's chat template (its own, or the built-in one for its architecture), parsed once.
absl::StatusOr<runtime::ChatTemplate> LoadChatTemplate(const runtime::GgufFile& file) {
  ASSIGN_OR_RETURN(std::string source, runtime::ChatTemplateSourceFor(file));
  return runtime::ChatTemplate::Parse(source);
}

absl::StatusOr<std::string> RenderChat(const runtime::ChatTemplate& chat_template,
                                       const runtime::Tokenizer& tokenizer,
                                       const nlohmann::json& messages) {
  const std::string bos(tokenizer.TokenText(tokenizer.bos_id()));  // "" when there is none
  const std::string eos(tokenizer.TokenText(tokenizer.eos_id()));  // "" when there is none
  return chat_template.Render(messages, /*add_generation_prompt=*/true, bos, eos);
}

std::string Rate(int32_t tokens, double seconds) {
  return seconds > 0 ? absl::StrFormat("%.1f tok/s", tokens / seconds) : "- tok/s";
}

absl::Status WriteFile(const std::string& path, const void* data, size_t size) {
  std::ofstream out(path, std::ios::binary);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
  if (!out) return absl::UnavailableError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::Status Generate(const GenerateCommand& command, std::ostream& out, std::ostream& err) {
  ASSIGN_OR_RETURN(LoadedModel model, LoadModel(command.model));
  std::optional<LoadedModel> draft_model;
  ASSIGN_OR_RETURN(std::unique_ptr<runtime::Drafter> drafter,
                   MakeDrafter(command.speculative, command.model, command.sampling,
                               *model.tokenizer, draft_model, err));
  const runtime::Tokenizer& tokenizer = *model.tokenizer;
  std::vector<int32_t> tokens;
  if (command.chat_template) {
    nlohmann::json messages = nlohmann::json::array();
    messages.push_back({{"role", "user"}, {"content", command.prompt}});
    ASSIGN_OR_RETURN(runtime::ChatTemplate chat_template, LoadChatTemplate(*model.file));
    ASSIGN_OR_RETURN(std::string rendered, RenderChat(chat_template, tokenizer, messages));
    tokens = EncodeRendered(tokenizer, rendered);
  } else {
    tokens = tokenizer.Encode(command.prompt, tokenizer.add_bos(), /*parse_special=*/false);
  }
  if (command.max_tokens < 0) return absl::InvalidArgumentError("-n must be 0 or more");
  const std::vector<int32_t> prompt_tokens = tokens;

  runtime::GenerateOptions options;
  options.max_tokens = command.max_tokens;
  options.sampling = command.sampling;
  options.is_stop_token = [&](int32_t id) { return tokenizer.IsEndOfGeneration(id); };
  std::vector<float> first_logits;
  if (!command.logits_out.empty()) options.first_logits = &first_logits;
  options.drafter = drafter.get();
  options.speculative.draft_max = command.speculative.draft_max;
  options.speculative.draft_min = command.speculative.draft_min;
  options.speculative.adaptive = command.speculative.draft_min < command.speculative.draft_max;

  runtime::StreamingDecoder decoder(tokenizer);
  std::string text;
  std::chrono::steady_clock::time_point first_token_time;
  auto on_token = [&](int32_t token) {
    if (first_token_time == std::chrono::steady_clock::time_point{}) {
      first_token_time = std::chrono::steady_clock::now();
    }
    const std::string piece = decoder.Push(token);
    text += piece;
    out << piece << std::flush;
    return true;
  };
  ASSIGN_OR_RETURN(runtime::GenerateStats stats,
                   runtime::Generate(*model.stage, 0, tokens, options, on_token));
  const std::string tail = decoder.Flush();
  text += tail;
  out << tail << "\n" << std::flush;

  err << absl::StrFormat(
      "prompt: %d tokens in %.3f s (%s) | generation: %d tokens in %.3f s (%s) | load %.3f s",
      stats.prompt_tokens, stats.prompt_seconds, Rate(stats.prompt_tokens, stats.prompt_seconds),
      stats.generated_tokens, stats.generate_seconds,
      Rate(stats.generated_tokens - 1, stats.generate_seconds), model.load_seconds);
  if (stats.generated_tokens > 0) {
    err << absl::StrFormat(" | start to first token %.3f s",
                           Seconds(first_token_time - kProcessStart));
  }
  err << (stats.stopped_by_context ? " | stopped: context full" : "") << "\n";
  const runtime::SpeculativeStats& spec = stats.speculative;
  if (drafter != nullptr) {
    err << absl::StrFormat(
        "speculative (%s): %d passes, %.2f tokens/pass | drafted %d, accepted %d (%.1f%%) | "
        "draft %.3f s, verify %.3f s\n",
        command.speculative.mode == SpeculativeMode::kNgram ? "n-gram" : "draft model", spec.passes,
        spec.TokensPerPass(), spec.drafted_tokens, spec.accepted_tokens,
        100.0 * spec.AcceptanceRate(), spec.draft_seconds, spec.verify_seconds);
  }

  if (!command.json_out.empty()) {
    nlohmann::json result = {
        {"prompt_tokens", prompt_tokens},
        {"tokens", std::vector<int32_t>(tokens.begin() + prompt_tokens.size(), tokens.end())},
        {"text", text},
        {"prompt_seconds", stats.prompt_seconds},
        {"generate_seconds", stats.generate_seconds},
        {"speculative",
         {{"passes", spec.passes},
          {"drafted_tokens", spec.drafted_tokens},
          {"accepted_tokens", spec.accepted_tokens},
          {"acceptance_rate", spec.AcceptanceRate()},
          {"tokens_per_pass", spec.TokensPerPass()},
          {"draft_seconds", spec.draft_seconds},
          {"verify_seconds", spec.verify_seconds}}}};
    const std::string json = result.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
    RETURN_IF_ERROR(WriteFile(command.json_out, json.data(), json.size()));
  }
  if (!command.logits_out.empty()) {
    RETURN_IF_ERROR(
        WriteFile(command.logits_out, first_logits.data(), first_logits.size() * sizeof(float)));
  }
  return absl::OkStatus();
}

absl::Status Chat(const ChatCommand& command, std::istream& in, std::ostream& out,
                  std::ostream& err) {
  ASSIGN_OR_RETURN(LoadedModel model, LoadModel(command.model));
  const runtime::Tokenizer& tokenizer = *model.tokenizer;
  // Load and try the template before the first prompt, so a broken one fails at once.
  ASSIGN_OR_RETURN(runtime::ChatTemplate chat_template, LoadChatTemplate(*model.file));
  RETURN_IF_ERROR(RenderChat(chat_template, tokenizer,
                             nlohmann::json::array({{{"role", "user"}, {"content", "hi"}}}))
                      .status());
  err << "exo-node chat: " << model.stage->config().name << " (" << model.load_seconds
      << " s to load). Type a message; /reset starts over, /exit or Ctrl-D quits.\n";

  nlohmann::json messages = nlohmann::json::array();
  if (!command.system_prompt.empty()) {
    messages.push_back({{"role", "system"}, {"content", command.system_prompt}});
  }
  const size_t base_messages = messages.size();
  std::vector<int32_t> cached;  // the tokens the KV slot holds
  std::string line;
  while (true) {
    out << "> " << std::flush;
    if (!std::getline(in, line)) break;
    if (line == "/exit" || line == "/quit") break;
    if (line == "/reset") {
      messages.erase(messages.begin() + base_messages, messages.end());
      cached.clear();
      model.stage->ResetSlot(0);
      continue;
    }
    if (line.empty()) continue;
    messages.push_back({{"role", "user"}, {"content", line}});
    absl::StatusOr<std::string> rendered = RenderChat(chat_template, tokenizer, messages);
    if (!rendered.ok()) {
      messages.erase(messages.end() - 1);
      err << "exo-node: error: " << rendered.status().message() << "\n";
      continue;
    }
    std::vector<int32_t> tokens = EncodeRendered(tokenizer, *rendered);
    const size_t common =
        std::mismatch(cached.begin(), cached.end(), tokens.begin(), tokens.end()).first -
        cached.begin();
    runtime::GenerateOptions options;
    options.max_tokens = command.max_tokens;
    options.sampling = command.sampling;
    options.cached_prefix = static_cast<int32_t>(common);
    options.is_stop_token = [&](int32_t id) { return tokenizer.IsEndOfGeneration(id); };
    runtime::StreamingDecoder decoder(tokenizer);
    std::string reply;
    absl::StatusOr<runtime::GenerateStats> stats =
        runtime::Generate(*model.stage, 0, tokens, options, [&](int32_t token) {
          const std::string piece = decoder.Push(token);
          reply += piece;
          out << piece << std::flush;
          return true;
        });
    reply += decoder.Flush();
    out << "\n";
    if (!stats.ok()) {
      // Typically the conversation outgrew the context: drop the turn and say what to do.
      messages.erase(messages.end() - 1);
      cached.clear();
      model.stage->ResetSlot(0);
      err << "exo-node: error: " << stats.status().message() << " (use /reset)\n";
      continue;
    }
    cached = tokens;
    messages.push_back({{"role", "assistant"}, {"content", reply}});
    err << absl::StrFormat("[%d tokens, %s]\n", stats->generated_tokens,
                           Rate(stats->generated_tokens - 1, stats->generate_seconds));
  }
  return absl::OkStatus();
}

std::string Dims(const std::vector<int64_t>& dims) {
  return absl::StrCat("[", absl::StrJoin(dims, ", "), "]");
}

absl::Status Inspect(const std::string& path, bool all_values, std::ostream& out) {
  ASSIGN_OR_RETURN(std::unique_ptr<runtime::GgufFile> file, runtime::GgufFile::Open(path));
  out << absl::StrFormat("file: %s\nGGUF version %u, %d bytes, alignment %d, data at %d\n", path,
                         file->version(), file->file_size(), file->alignment(),
                         file->data_offset());
  out << absl::StrFormat("\nmetadata (%d keys):\n", file->metadata().size());
  for (const auto& [key, value] : file->metadata()) {
    out << "  " << key << " (" << runtime::GgufValueTypeName(value.type)
        << ") = " << value.DebugString(all_values ? SIZE_MAX : 8) << "\n";
  }
  out << absl::StrFormat("\ntensors (%d):\n", file->tensors().size());
  out << absl::StrFormat("  %-40s %-8s %-22s %14s %14s\n", "name", "type", "shape", "offset",
                         "bytes");
  std::map<std::string, std::pair<int, uint64_t>> per_type;
  uint64_t total = 0;
  int64_t params = 0;
  for (const runtime::GgufTensorInfo& t : file->tensors()) {
    const char* type = kernels::TypeName(t.type);
    out << absl::StrFormat("  %-40s %-8s %-22s %14d %14d\n", t.name, type, Dims(t.dims), t.offset,
                           t.nbytes);
    per_type[type].first++;
    per_type[type].second += t.nbytes;
    total += t.nbytes;
    params += t.num_elements();
  }
  out << absl::StrFormat("\n%d parameters, %.1f MiB of tensor data:", params, total / 1048576.0);
  for (const auto& [type, count_bytes] : per_type) {
    out << absl::StrFormat(" %s x%d (%.1f MiB)", type, count_bytes.first,
                           count_bytes.second / 1048576.0);
  }
  out << "\n";
  absl::StatusOr<runtime::ModelConfig> config = runtime::ReadModelConfig(*file);
  if (config.ok()) {
    out << absl::StrFormat(
        "model: %s (%s), %d layers, n_embd %d, %d heads (%d kv, head dim %d), n_ff %d, vocab %d, "
        "context %d%s\n",
        config->name, runtime::ArchitectureName(config->arch), config->n_layer, config->n_embd,
        config->n_head, config->n_head_kv, config->head_dim, config->n_ff, config->n_vocab,
        config->context_length,
        config->sliding_window > 0 ? absl::StrCat(", sliding window ", config->sliding_window)
                                   : "");
  } else {
    out << "model: not runnable: " << config.status().message() << "\n";
  }
  return absl::OkStatus();
}

}  // namespace

int RunGenerate(const GenerateCommand& command, std::ostream& out, std::ostream& err) {
  const NodeStatus node =
      ReadNodeStatus(command.state_dir.empty() ? DefaultStateDir() : command.state_dir);
  if (node.running) {
    // What only the in-process path can do.
    std::string needs_local;
    if (command.local) {
      needs_local = "--local";
    } else if (!command.logits_out.empty()) {
      needs_local = "--logits_out needs the model in this process";
    } else if (command.speculative.mode != SpeculativeMode::kOff) {
      needs_local = "speculative decoding runs in-process (or with --pipeline)";
    } else if (command.max_tokens <= 0) {
      needs_local = "-n is not above 0";
    }
    const DaemonChoice daemon = ChooseDaemon(node, command.model.model_path);
    if (daemon.use && needs_local.empty()) {
      ClusterGenerateOptions options;
      options.api_key = command.api_key;
      options.ready_timeout_s = command.ready_timeout_s;
      return RunClusterGenerate(command, daemon, options, out, err);
    }
    err << "exo-node: generating in-process ("
        << (needs_local.empty() ? daemon.why_not : needs_local) << ")\n";
  }
  absl::Status status = Generate(command, out, err);
  return status.ok() ? 0 : Fail(err, status);
}

int RunChat(const ChatCommand& command, std::istream& in, std::ostream& out, std::ostream& err) {
  absl::Status status = Chat(command, in, out, err);
  return status.ok() ? 0 : Fail(err, status);
}

int RunInspect(const std::string& path, bool all_values, std::ostream& out, std::ostream& err) {
  absl::Status status = Inspect(path, all_values, out);
  return status.ok() ? 0 : Fail(err, status);
}

}  // namespace exo::node
