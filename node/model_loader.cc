#include "node/model_loader.h"

#include <algorithm>
#include <chrono>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "node/paths.h"
#include "runtime/model_config.h"

namespace exo::node {

absl::StatusOr<LoadedModel> LoadModel(const ModelOptions& options, int32_t num_slots) {
  const auto start = std::chrono::steady_clock::now();
  std::string path = options.model_path;
  if (path.empty()) {
    path = DefaultModelPath();
    if (std::ifstream(path).fail()) {
      return absl::NotFoundError(
          absl::StrCat("the default model is not installed at ", path,
                       "; run ./scripts/setup.sh to install it, or pass --model PATH"));
    }
  }
  LoadedModel model;
  ASSIGN_OR_RETURN(model.file, runtime::GgufFile::Open(path));
  ASSIGN_OR_RETURN(runtime::ModelConfig config, runtime::ReadModelConfig(*model.file));
  ASSIGN_OR_RETURN(model.tokenizer, runtime::Tokenizer::FromGguf(*model.file));
  if (model.tokenizer->vocab_size() != config.n_vocab) {
    return absl::InvalidArgumentError(
        absl::StrCat("the tokenizer has ", model.tokenizer->vocab_size(),
                     " tokens but the embedding has ", config.n_vocab, " rows"));
  }
  if (options.threads < 0) return absl::InvalidArgumentError("--threads must be 0 or more");
  model.pool = std::make_unique<kernels::ThreadPool>(options.threads);
  runtime::StageOptions stage_options;
  stage_options.layers = {0, config.n_layer};
  stage_options.context = std::min(options.context, config.context_length);
  stage_options.max_batch_tokens = options.batch;
  stage_options.num_slots = num_slots;
  stage_options.pool = model.pool.get();
  ASSIGN_OR_RETURN(model.stage, runtime::Stage::Create(*model.file, stage_options));
  model.load_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return model;
}

absl::StatusOr<std::unique_ptr<runtime::Drafter>> MakeDrafter(
    const SpeculativeCommand& command, const ModelOptions& model,
    const runtime::SamplingParams& sampling, const runtime::Tokenizer& target,
    std::optional<LoadedModel>& draft, std::ostream& err) {
  if (command.mode == SpeculativeMode::kOff) return nullptr;
  if (command.draft_max < 1 || command.draft_max > 15) {
    return absl::InvalidArgumentError(
        absl::StrCat("--draft_max must be in [1, 15], got ", command.draft_max));
  }
  if (command.draft_min < 0 || command.draft_min > command.draft_max) {
    return absl::InvalidArgumentError(
        absl::StrCat("--draft_min must be in [0, --draft_max], got ", command.draft_min));
  }
  switch (command.mode) {
    case SpeculativeMode::kOff:
      return nullptr;
    case SpeculativeMode::kNgram: {
      if (command.ngram_min < 1 || command.ngram_max < command.ngram_min) {
        return absl::InvalidArgumentError(absl::StrCat("need 1 <= --ngram_min <= --ngram_max, got ",
                                                       command.ngram_min, " and ",
                                                       command.ngram_max));
      }
      runtime::NgramOptions options;
      options.ngram_min = command.ngram_min;
      options.ngram_max = command.ngram_max;
      return std::make_unique<runtime::NgramDrafter>(options);
    }
    case SpeculativeMode::kDraftModel: {
      if (command.draft_model_path.empty()) {
        return absl::InvalidArgumentError(
            "--speculative=draft needs --draft_model PATH (a smaller model of the same family)");
      }
      ModelOptions options = model;
      options.model_path = command.draft_model_path;
      absl::StatusOr<LoadedModel> loaded = LoadModel(options);
      if (!loaded.ok()) {
        return absl::Status(loaded.status().code(),
                            absl::StrCat("draft model: ", loaded.status().message()));
      }
      draft = std::move(*loaded);
      RETURN_IF_ERROR(runtime::CheckDraftVocabulary(target, *draft->tokenizer));
      err << "draft model: " << draft->stage->config().name << " (" << draft->load_seconds
          << " s to load)\n";
      runtime::DraftModelOptions draft_options;
      draft_options.min_confidence = command.draft_min_confidence;
      draft_options.one_hot_proposals = command.draft_one_hot;
      ASSIGN_OR_RETURN(
          std::unique_ptr<runtime::DraftModelDrafter> drafter,
          runtime::DraftModelDrafter::Create(*draft->stage, 0, sampling, draft_options));
      return std::unique_ptr<runtime::Drafter>(std::move(drafter));
    }
  }
  return nullptr;
}

}  // namespace exo::node
