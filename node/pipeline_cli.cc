#include "node/pipeline_cli.h"

#include <unistd.h>

#include <chrono>
#include <fstream>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "node/model_loader.h"
#include "node/paths.h"
#include "node/pipeline.h"
#include "node/shard_handler.h"
#include "node/stage_server.h"
#include "runtime/gguf.h"
#include "runtime/model_config.h"
#include "runtime/tokenizer.h"

namespace exo::node {
namespace {

int Fail(std::ostream& err, const absl::Status& status) {
  err << "exo-node: error: " << status.message() << "\n";
  return 1;
}

std::string RateText(double count, double seconds) {
  return seconds > 0 ? absl::StrFormat("%.2f tok/s", count / seconds) : "n/a";
}

absl::Status Stage(const StageCommand& command, std::ostream& out, std::ostream& err) {
  ShardHandlerOptions options;
  options.model_path = command.model_path;
  options.fetch_from = command.fetch_from;
  if (options.model_path.empty() && options.fetch_from.empty()) {
    options.model_path = DefaultModelPath();
    if (std::ifstream(options.model_path).fail()) {
      return absl::NotFoundError(absl::StrCat(
          "the default model is not installed at ", options.model_path,
          "; pass --model PATH, or --fetch_from HOST:PORT to fetch this stage's tensors"));
    }
  }
  options.models_dir = ModelsDir();
  options.threads = command.threads;
  options.log = &err;
  AllowAllPeers allow_all;
  ShardHandler handler(options, &allow_all);
  char hostname[256] = {};
  gethostname(hostname, sizeof(hostname) - 1);
  StageNodeService service(absl::StrCat(hostname, "-", getpid()), &handler);
  ASSIGN_OR_RETURN(StartedServer started, StartServer(&service, command.host, command.port));
  out << "exo-node stage: listening on " << command.host << ":" << started.port
      << (options.model_path.empty() ? absl::StrCat(", fetching tensors from ", options.fetch_from)
                                     : absl::StrCat(", model ", options.model_path))
      << std::endl;
  started.server->Wait();
  return absl::OkStatus();
}

absl::Status PipelineGenerate(const PipelineGenerateCommand& command, std::ostream& out,
                              std::ostream& err) {
  std::string path =
      command.model.model_path.empty() ? DefaultModelPath() : command.model.model_path;
  ASSIGN_OR_RETURN(std::unique_ptr<runtime::GgufFile> file, runtime::GgufFile::Open(path));
  ASSIGN_OR_RETURN(runtime::ModelConfig config, runtime::ReadModelConfig(*file));
  ASSIGN_OR_RETURN(std::unique_ptr<runtime::Tokenizer> tokenizer,
                   runtime::Tokenizer::FromGguf(*file));
  ASSIGN_OR_RETURN(ModelIdentity identity, ComputeModelIdentity(path));
  if (command.max_tokens < 0) return absl::InvalidArgumentError("-n must be 0 or more");

  PipelineOptions options;
  for (absl::string_view s : absl::StrSplit(command.pipeline, ',', absl::SkipEmpty())) {
    options.stages.emplace_back(s);
  }
  if (options.stages.empty()) {
    return absl::InvalidArgumentError("--pipeline needs HOST:PORT[,HOST:PORT...]");
  }
  if (!command.layers.empty()) {
    ASSIGN_OR_RETURN(options.layers, ParseLayerRanges(command.layers, config.n_layer));
  }
  if (command.wire_dtype == "f16") {
    options.dtype = WireDType::kF16;
  } else if (command.wire_dtype == "bf16") {
    options.dtype = WireDType::kBf16;
  } else if (command.wire_dtype != "f32") {
    return absl::InvalidArgumentError(
        absl::StrCat("--wire_dtype must be f32, bf16 or f16, got '", command.wire_dtype, "'"));
  }
  options.model = identity;
  options.n_layer = config.n_layer;
  options.n_vocab = config.n_vocab;
  options.context = std::min(command.model.context, config.context_length);
  options.prefill_chunk = command.model.batch;
  options.max_sequences = 1;
  // The drafter runs here, on the coordinator; it is built before the stages are asked to load
  // anything, so a bad draft model fails fast. Only token ids travel, so a draft model proposes
  // its argmax (one-hot q), which keeps sampled output on the target's distribution.
  SpeculativeCommand speculative = command.speculative;
  speculative.draft_one_hot = true;
  std::optional<LoadedModel> draft_model;
  ASSIGN_OR_RETURN(
      std::unique_ptr<runtime::Drafter> drafter,
      MakeDrafter(speculative, command.model, command.sampling, *tokenizer, draft_model, err));

  const auto load_start = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(std::unique_ptr<Pipeline> pipeline, Pipeline::Connect(options));
  const double load_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();

  SequenceRequest request;
  request.prompt = tokenizer->Encode(command.prompt, tokenizer->add_bos(), false);
  request.drafter = drafter.get();
  request.speculative.draft_max = speculative.draft_max;
  request.speculative.draft_min = speculative.draft_min;
  request.speculative.adaptive = speculative.draft_min < speculative.draft_max;
  request.max_tokens = command.max_tokens;
  request.sampling = command.sampling;
  request.is_stop_token = [&](int32_t id) { return tokenizer->IsEndOfGeneration(id); };
  runtime::StreamingDecoder decoder(*tokenizer);
  std::string text;
  request.on_token = [&](const SampledToken& t) {
    const std::string piece = decoder.Push(t.token);
    text += piece;
    out << piece << std::flush;
    return true;
  };
  const std::vector<int32_t> prompt_tokens = request.prompt;
  std::vector<int32_t> tokens;
  SequenceStats stats;
  if (command.max_tokens > 0) {
    ASSIGN_OR_RETURN(tokens, pipeline->Generate(std::move(request), &stats));
  }
  const std::string tail = decoder.Flush();
  text += tail;
  out << tail << "\n" << std::flush;
  std::string ranges;
  for (const auto& r : pipeline->layers()) {
    absl::StrAppend(&ranges, ranges.empty() ? "" : ",", r.begin, ":", r.end);
  }
  err << absl::StrFormat(
      "pipeline of %d stages (layers %s, %s hidden states) | prompt: %d tokens, first "
      "token after %.3f s | generation: %d tokens in %.3f s (%s) | load %.3f s%s\n",
      options.stages.size(), ranges, command.wire_dtype, stats.prompt_tokens, stats.prompt_seconds,
      stats.generated_tokens, stats.generate_seconds,
      RateText(stats.generated_tokens - 1, stats.generate_seconds), load_seconds,
      stats.stopped_by_context ? " | stopped: context full" : "");
  const runtime::SpeculativeStats& spec = stats.speculative;
  if (drafter != nullptr) {
    // As single-node generate prints it; "verify" is the passes' round trips through the stages.
    err << absl::StrFormat(
        "speculative (%s): %d passes, %.2f tokens/pass | drafted %d, accepted %d (%.1f%%) | "
        "draft %.3f s, verify %.3f s\n",
        speculative.mode == SpeculativeMode::kNgram ? "n-gram" : "draft model", spec.passes,
        spec.TokensPerPass(), spec.drafted_tokens, spec.accepted_tokens,
        100.0 * spec.AcceptanceRate(), spec.draft_seconds, spec.verify_seconds);
  }
  if (!command.json_out.empty()) {
    nlohmann::json result = {{"prompt_tokens", prompt_tokens},
                             {"tokens", tokens},
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
    std::ofstream f(command.json_out, std::ios::trunc);
    f << result.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
    if (!f) return absl::InternalError(absl::StrCat("cannot write ", command.json_out));
  }
  return absl::OkStatus();
}

}  // namespace

int RunStage(const StageCommand& command, std::ostream& out, std::ostream& err) {
  const absl::Status status = Stage(command, out, err);
  return status.ok() ? 0 : Fail(err, status);
}

int RunPipelineGenerate(const PipelineGenerateCommand& command, std::ostream& out,
                        std::ostream& err) {
  const absl::Status status = PipelineGenerate(command, out, err);
  return status.ok() ? 0 : Fail(err, status);
}

}  // namespace exo::node
