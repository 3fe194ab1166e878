// Loads a GGUF model for the single-node commands: file, tokenizer, thread pool and a Stage that
// holds every layer. Also builds `generate`'s drafter (single node and --pipeline), which may load
// a draft model the same way.
#ifndef EXO_NODE_MODEL_LOADER_H_
#define EXO_NODE_MODEL_LOADER_H_

#include <memory>
#include <optional>
#include <ostream>

#include "absl/status/statusor.h"
#include "kernels/thread_pool.h"
#include "node/cli.h"
#include "runtime/gguf.h"
#include "runtime/sampler.h"
#include "runtime/speculative.h"
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
// `num_slots`: sequences the stage keeps a KV cache for (serve's shared draft model has several).
absl::StatusOr<LoadedModel> LoadModel(const ModelOptions& options, int32_t num_slots = 1);

// The drafter speculative `generate` asks for proposals, or null when command.mode is kOff.
// Checks the flags' ranges; for a draft model, loads it with `model`'s context, threads and batch
// into `draft` (which must outlive the drafter), checks its vocabulary against `target` and
// reports the load on `err`. The draft model draws with `sampling`.
absl::StatusOr<std::unique_ptr<runtime::Drafter>> MakeDrafter(
    const SpeculativeCommand& command, const ModelOptions& model,
    const runtime::SamplingParams& sampling, const runtime::Tokenizer& target,
    std::optional<LoadedModel>& draft, std::ostream& err);

}  // namespace exo::node

#endif  // EXO_NODE_MODEL_LOADER_H_
