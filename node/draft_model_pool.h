// A draft model shared by every sequence a server runs (serve --draft_model): the file is mapped
// once, and one Stage holds the whole draft model with a KV-cache slot per sequence that may draft
// at once. Each sequence borrows a slot through its own runtime::DraftModelDrafter (the same
// drafter `generate --draft_model` uses), which proposes the draft's argmax (one-hot), as the
// pipeline's last stage verifies only token ids. When every slot is taken, a sequence runs
// without speculation rather than wait.
//
// Drafting is serialised by the pool's lock: a Pipeline already calls its drafters one at a time,
// but two pipelines (the old one still finishing its sequences while a re-plan brings up the new
// one) may share the pool.
#ifndef EXO_NODE_DRAFT_MODEL_POOL_H_
#define EXO_NODE_DRAFT_MODEL_POOL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "node/model_loader.h"
#include "runtime/sampler.h"
#include "runtime/speculative.h"
#include "runtime/tokenizer.h"

namespace exo::node {

struct DraftModelPoolOptions {
  std::string path;             // the draft GGUF; must be set
  int32_t slots = 4;            // sequences that may draft at once (one KV slot each)
  int32_t context = 4096;       // KV positions per slot (the target's context)
  int32_t threads = 0;          // the draft's own thread pool; 0: one per physical core
  int32_t batch = 256;          // tokens per draft Forward when catching a slot up
  float min_confidence = 0.5f;  // stop drafting when the draft's top probability is lower
};

class DraftModelPool : public std::enable_shared_from_this<DraftModelPool> {
 public:
  // Loads the draft model and checks that its vocabulary can stand in for `target`'s
  // (runtime::CheckDraftVocabulary); errors name the draft file.
  static absl::StatusOr<std::shared_ptr<DraftModelPool>> Load(const DraftModelPoolOptions& options,
                                                              const runtime::Tokenizer& target);
  DraftModelPool(const DraftModelPool&) = delete;
  DraftModelPool& operator=(const DraftModelPool&) = delete;

  // A drafter on a free slot that draws with `sampling`'s penalties, or null when every slot is
  // drafting for another sequence (or `sampling` is invalid, which the request's own validation
  // reports). The drafter keeps the pool alive and frees its slot when destroyed.
  std::unique_ptr<runtime::Drafter> Acquire(const runtime::SamplingParams& sampling)
      ABSL_LOCKS_EXCLUDED(mu_);

  const std::string& name() const { return name_; }
  int32_t slots() const { return options_.slots; }
  uint64_t weight_bytes() const;
  uint64_t kv_cache_bytes() const;

 private:
  class SlotDrafter;
  DraftModelPool(LoadedModel model, const DraftModelPoolOptions& options);
  void Release(int32_t slot) ABSL_LOCKS_EXCLUDED(mu_);

  const DraftModelPoolOptions options_;
  std::string name_;
  mutable absl::Mutex mu_;
  LoadedModel model_ ABSL_GUARDED_BY(mu_);  // its stage runs under mu_
  std::vector<bool> free_ ABSL_GUARDED_BY(mu_);
};

}  // namespace exo::node

#endif  // EXO_NODE_DRAFT_MODEL_POOL_H_
