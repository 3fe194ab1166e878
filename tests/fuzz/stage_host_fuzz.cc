// Feeds random frames to a three-stage chain of StageHosts over a tiny synthetic gemma3 model:
// every frame must be refused with a status or run; nothing may crash, hang or read out of
// bounds. Frames are built from the input with field values near the valid ones (right shapes
// and sizes most of the time) so the fuzzer reaches the deeper checks and the forward pass.
// About a third carry draft tokens (mostly one token id plus 1 to 7 drafts, the shape the last
// stage verifies), so speculative verification and the rollbacks after it are fuzzed too.
#include <fuzzer/FuzzedDataProvider.h>
#include <unistd.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "node/stage_host.h"
#include "runtime/gguf.h"
#include "synthetic_model_testlib.h"

namespace {

using exo::node::StageFrame;
using exo::node::StageHost;

constexpr int kEmbd = 64;
constexpr int kVocab = 96;

struct Chain {
  std::unique_ptr<exo::runtime::GgufFile> file;
  std::unique_ptr<StageHost> first, middle, last;
};

std::unique_ptr<StageHost> MakeHost(const exo::runtime::GgufFile& file, int begin, int end,
                                    bool emb, bool head) {
  exo::node::StageHostOptions o;
  o.plan_epoch = 5;
  o.layers = {begin, end};
  o.has_embedding = emb;
  o.has_head = head;
  o.context = 32;
  o.max_sequences = 3;
  o.max_batch_tokens = 8;
  auto host = StageHost::Create(file, o);
  if (!host.ok()) abort();
  return std::move(*host);
}

Chain& GetChain() {
  static Chain* chain = [] {
    exo::runtime::synthetic::SyntheticModelOptions o;
    o.arch = "gemma3";
    o.n_layer = 6;
    o.n_embd = kEmbd;
    o.vocab_size = kVocab;
    o.context_length = 32;
    const std::string path = "/tmp/stage_host_fuzz_" + std::to_string(getpid()) + ".gguf";
    if (!exo::runtime::synthetic::WriteSyntheticModel(o, path).ok()) abort();
    auto* c = new Chain;
    c->file = std::move(*exo::runtime::GgufFile::Open(path));
    unlink(path.c_str());  // the mapping stays valid
    c->first = MakeHost(*c->file, 0, 2, true, false);
    c->middle = MakeHost(*c->file, 2, 4, false, false);
    c->last = MakeHost(*c->file, 4, 6, false, true);
    return c;
  }();
  return *chain;
}

StageFrame RandomFrame(FuzzedDataProvider& in, bool first_stage) {
  StageFrame f;
  f.sequence_id = in.ConsumeIntegralInRange<uint64_t>(0, 4);
  f.plan_epoch = in.ConsumeProbability<float>() < 0.9f ? 5 : in.ConsumeIntegral<uint64_t>();
  f.first_position =
      in.ConsumeBool() ? in.ConsumeIntegralInRange<int32_t>(0, 40) : in.ConsumeIntegral<int32_t>();
  // Draft tokens: usually 1 to 7 (max_batch_tokens 8 allows 7), sometimes too many.
  const bool drafts = in.ConsumeProbability<float>() < 0.35f;
  const int n_drafts = !drafts ? 0
                       : in.ConsumeProbability<float>() < 0.9f
                           ? in.ConsumeIntegralInRange<int>(1, 7)
                           : in.ConsumeIntegralInRange<int>(8, 20);
  f.token_count = drafts && in.ConsumeProbability<float>() < 0.9f ? 1 + n_drafts
                  : in.ConsumeBool() ? in.ConsumeIntegralInRange<int32_t>(0, 10)
                                     : in.ConsumeIntegral<int32_t>();
  f.dtype =
      in.ConsumeBool() ? in.ConsumeIntegralInRange<int32_t>(1, 2) : in.ConsumeIntegral<int32_t>();
  const int32_t rows = f.token_count >= 0 && f.token_count <= 10 ? f.token_count : 1;
  const int32_t element = f.dtype == 2 ? 2 : 4;
  if (!first_stage || in.ConsumeProbability<float>() < 0.05f) {
    if (in.ConsumeProbability<float>() < 0.9f) {
      f.shape = {rows, kEmbd};
    } else {
      const int n = in.ConsumeIntegralInRange<int>(0, 4);
      for (int i = 0; i < n; ++i) f.shape.push_back(in.ConsumeIntegral<int64_t>());
    }
    const size_t bytes = in.ConsumeProbability<float>() < 0.9f
                             ? size_t(rows) * kEmbd * element
                             : in.ConsumeIntegralInRange<size_t>(0, 4096);
    f.hidden = in.ConsumeBytesAsString(bytes);
    f.hidden.resize(bytes, '\0');
  }
  const int n_tokens = in.ConsumeProbability<float>() < 0.9f ? (drafts ? 1 : rows)
                                                             : in.ConsumeIntegralInRange(0, 12);
  for (int i = 0; i < n_tokens; ++i) {
    f.tokens.push_back(in.ConsumeProbability<float>() < 0.95f
                           ? in.ConsumeIntegralInRange<int32_t>(0, kVocab - 1)
                           : in.ConsumeIntegral<int32_t>());
  }
  f.kv_keep_length = in.ConsumeBool() ? 0 : in.ConsumeIntegralInRange<int32_t>(-2, 40);
  f.end_of_sequence = in.ConsumeProbability<float>() < 0.1f;
  f.no_sample = in.ConsumeBool();
  for (int i = 0; i < n_drafts; ++i) {
    f.draft_tokens.push_back(in.ConsumeProbability<float>() < 0.95f
                                 ? in.ConsumeIntegralInRange<int32_t>(0, kVocab - 1)
                                 : in.ConsumeIntegral<int32_t>());
  }
  if (drafts && in.ConsumeProbability<float>() < 0.8f) f.no_sample = false;
  auto& s = f.sampling.params;
  // Greedy, a sane temperature (the sampled verification path), or anything.
  const int temperature_kind = in.ConsumeIntegralInRange<int>(0, 2);
  s.temperature = temperature_kind == 0   ? 0.0f
                  : temperature_kind == 1 ? in.ConsumeFloatingPointInRange<float>(0.1f, 3.0f)
                                          : in.ConsumeFloatingPoint<float>();
  s.top_k = in.ConsumeIntegralInRange<int32_t>(-1, 200);
  s.top_p = in.ConsumeBool() ? 1.0f : in.ConsumeFloatingPoint<float>();
  s.min_p = in.ConsumeBool() ? 0.0f : in.ConsumeFloatingPoint<float>();
  s.repetition_penalty = in.ConsumeBool() ? 1.0f : in.ConsumeFloatingPoint<float>();
  s.presence_penalty = in.ConsumeBool() ? 0.0f : in.ConsumeFloatingPoint<float>();
  s.frequency_penalty = in.ConsumeBool() ? 0.0f : in.ConsumeFloatingPoint<float>();
  s.penalty_last_n = in.ConsumeIntegralInRange<int32_t>(-2, 100);
  s.seed = in.ConsumeIntegral<uint64_t>();
  f.sampling.top_logprobs = in.ConsumeIntegralInRange<int32_t>(-1, 25);
  return f;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Chain& chain = GetChain();
  FuzzedDataProvider in(data, size);
  while (in.remaining_bytes() > 0) {
    const int target = in.ConsumeIntegralInRange(0, 2);
    StageHost* host = target == 0   ? chain.first.get()
                      : target == 1 ? chain.middle.get()
                                    : chain.last.get();
    std::vector<StageFrame> frames;
    const int n = in.ConsumeIntegralInRange(1, 4);
    for (int i = 0; i < n; ++i) frames.push_back(RandomFrame(in, target == 0));
    std::vector<exo::node::StageOutput> out = host->Step(std::move(frames));
    if (static_cast<int>(out.size()) != n) abort();
    // Pass valid outputs on down the chain, as a real stage would.
    std::vector<StageFrame> next;
    for (auto& o : out) {
      if (o.status.ok() && o.next.has_value()) next.push_back(std::move(*o.next));
    }
    if (!next.empty() && target < 2) {
      (target == 0 ? chain.middle : chain.last)->Step(std::move(next));
    }
  }
  // Each input starts from empty stages.
  chain.first->CancelAll();
  chain.middle->CancelAll();
  chain.last->CancelAll();
  return 0;
}
