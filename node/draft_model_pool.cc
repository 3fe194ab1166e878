#include "node/draft_model_pool.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace exo::node {

// One sequence's drafter: a DraftModelDrafter on a borrowed slot, run under the pool's lock.
class DraftModelPool::SlotDrafter : public runtime::Drafter {
 public:
  SlotDrafter(std::shared_ptr<DraftModelPool> pool, int32_t slot,
              std::unique_ptr<runtime::DraftModelDrafter> drafter)
      : pool_(std::move(pool)), slot_(slot), drafter_(std::move(drafter)) {}
  ~SlotDrafter() override { pool_->Release(slot_); }

  absl::Status Draft(absl::Span<const int32_t> context, int32_t max_tokens,
                     runtime::DraftProposal& proposal) override {
    absl::MutexLock lock(&pool_->mu_);
    // The slot holds the target's --ctx positions, capped at the draft's own trained context:
    // past it the draft proposes nothing rather than failing the sequence.
    const int32_t room =
        pool_->model_.stage->options().context - static_cast<int32_t>(context.size());
    if (std::min(max_tokens, room) <= 0) {
      proposal.Clear();
      return absl::OkStatus();
    }
    return drafter_->Draft(context, std::min(max_tokens, room), proposal);
  }

 private:
  std::shared_ptr<DraftModelPool> pool_;
  int32_t slot_;
  std::unique_ptr<runtime::DraftModelDrafter> drafter_;
};

DraftModelPool::DraftModelPool(LoadedModel model, const DraftModelPoolOptions& options)
    : options_(options), model_(std::move(model)), free_(options.slots, true) {
  name_ = model_.stage->config().name;
}

absl::StatusOr<std::shared_ptr<DraftModelPool>> DraftModelPool::Load(
    const DraftModelPoolOptions& options, const runtime::Tokenizer& target) {
  if (options.path.empty()) return absl::InvalidArgumentError("no draft model path given");
  if (options.slots < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("a draft model needs at least one slot, got ", options.slots));
  }
  if (!(options.min_confidence >= 0.0f && options.min_confidence <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--draft_p_min must be in [0, 1], got ", options.min_confidence));
  }
  ModelOptions model_options;
  model_options.model_path = options.path;
  model_options.context = options.context;
  model_options.threads = options.threads;
  model_options.batch = options.batch;
  absl::StatusOr<LoadedModel> loaded = LoadModel(model_options, options.slots);
  if (!loaded.ok()) {
    return absl::Status(loaded.status().code(), absl::StrCat("draft model ", options.path, ": ",
                                                             loaded.status().message()));
  }
  const absl::Status vocabulary = runtime::CheckDraftVocabulary(target, *loaded->tokenizer);
  if (!vocabulary.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "draft model ", options.path, " cannot draft for this model: ", vocabulary.message()));
  }
  return std::shared_ptr<DraftModelPool>(new DraftModelPool(*std::move(loaded), options));
}

std::unique_ptr<runtime::Drafter> DraftModelPool::Acquire(const runtime::SamplingParams& sampling) {
  absl::MutexLock lock(&mu_);
  int32_t slot = -1;
  for (int32_t i = 0; i < static_cast<int32_t>(free_.size()); ++i) {
    if (free_[i]) {
      slot = i;
      break;
    }
  }
  if (slot < 0) return nullptr;
  runtime::DraftModelOptions draft;
  draft.min_confidence = options_.min_confidence;
  // Only token ids travel to the last stage, which verifies one-hot proposals.
  draft.one_hot_proposals = true;
  absl::StatusOr<std::unique_ptr<runtime::DraftModelDrafter>> drafter =
      runtime::DraftModelDrafter::Create(*model_.stage, slot, sampling, draft);
  // Only invalid sampling parameters fail here, and the pipeline refuses the request for them.
  if (!drafter.ok()) return nullptr;
  free_[slot] = false;
  return std::make_unique<SlotDrafter>(shared_from_this(), slot, *std::move(drafter));
}

void DraftModelPool::Release(int32_t slot) {
  absl::MutexLock lock(&mu_);
  free_[slot] = true;
}

uint64_t DraftModelPool::weight_bytes() const {
  absl::MutexLock lock(&mu_);
  return model_.stage->weight_bytes();
}

uint64_t DraftModelPool::kv_cache_bytes() const {
  absl::MutexLock lock(&mu_);
  return model_.stage->kv_cache_bytes();
}

}  // namespace exo::node
