#include "node/model_loader.h"

#include <algorithm>
#include <chrono>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "node/paths.h"
#include "runtime/model_config.h"

namespace exo::node {

absl::StatusOr<LoadedModel> LoadModel(const ModelOptions& options) {
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
  stage_options.pool = model.pool.get();
  ASSIGN_OR_RETURN(model.stage, runtime::Stage::Create(*model.file, stage_options));
  model.load_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return model;
}

}  // namespace exo::node
