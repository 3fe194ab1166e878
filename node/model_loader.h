// Loads a GGUF model for the single-node commands: file, tokenizer, thread pool and a Stage that
// holds every layer.
#ifndef EXO_NODE_MODEL_LOADER_H_
#define EXO_NODE_MODEL_LOADER_H_

#include <memory>

#include "absl/status/statusor.h"
#include "kernels/thread_pool.h"
#include "node/cli.h"
#include "runtime/gguf.h"
#include "runtime/stage.h"
#include "runtime/tokenizer.h"

namespace exo::node {

struct LoadedModel {
  std::unique_ptr<runtime::GgufFile> file;
  std::unique_ptr<runtime::Tokenizer> tokenizer;
  std::unique_ptr<kernels::ThreadPool> pool;
  std::unique_ptr<runtime::Stage> stage;
  double load_seconds = 0;
};

// The default model when options.model_path is empty; a clear error says how to install it.
absl::StatusOr<LoadedModel> LoadModel(const ModelOptions& options);

}  // namespace exo::node

#endif  // EXO_NODE_MODEL_LOADER_H_
