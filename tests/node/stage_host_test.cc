// StageHost on a tiny synthetic gemma3 model: splits match one stage, bad frames are refused with
// clear statuses and change nothing, sequences batched together match running alone.
#include "node/stage_host.h"

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/generator.h"
#include "runtime/gguf.h"
#include "synthetic_model_testlib.h"

namespace exo::node {
namespace {

using ::testing::HasSubstr;

constexpr int kLayers = 6;

class StageHostTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    runtime::synthetic::SyntheticModelOptions o;
    o.arch = "gemma3";
    o.n_layer = kLayers;
    o.vocab_size = 96;
    o.context_length = 128;
    path_ = new std::string(absl::StrCat(::testing::TempDir(), "/stage_host_", getpid(), ".gguf"));
    ASSERT_TRUE(runtime::synthetic::WriteSyntheticModel(o, *path_).ok());
    file_ = runtime::GgufFile::Open(*path_)->release();
  }
  static void TearDownTestSuite() {
    delete file_;
    unlink(path_->c_str());
    delete path_;
  }

  static std::unique_ptr<StageHost> MakeHost(int begin, int end, bool emb, bool head,
                                             int max_sequences = 4, uint64_t epoch = 7) {
    StageHostOptions o;
    o.plan_epoch = epoch;
    o.layers = {begin, end};
    o.has_embedding = emb;
    o.has_head = head;
    o.context = 64;
    o.max_sequences = max_sequences;
    o.max_batch_tokens = 32;
    auto host = StageHost::Create(*file_, o);
    EXPECT_TRUE(host.ok()) << host.status();
    return std::move(*host);
  }

  static StageFrame TokenFrame(uint64_t id, int32_t pos, std::vector<int32_t> tokens,
                               uint64_t epoch = 7) {
    StageFrame f;
    f.sequence_id = id;
    f.plan_epoch = epoch;
    f.first_position = pos;
    f.token_count = static_cast<int32_t>(tokens.size());
    f.tokens = std::move(tokens);
    f.sampling.params.temperature = 0;
    return f;
  }

  // Runs one frame through a chain of hosts; returns the last host's output.
  static StageOutput RunChain(const std::vector<StageHost*>& chain, StageFrame frame) {
    StageOutput out;
    for (StageHost* host : chain) {
      std::vector<StageFrame> in;
      in.push_back(std::move(frame));
      out = std::move(host->Step(std::move(in))[0]);
      if (!out.status.ok() || !out.next.has_value()) break;
      frame = std::move(*out.next);
    }
    return out;
  }

  // Greedy generation of `n` tokens through the chain.
  static std::vector<int32_t> Greedy(const std::vector<StageHost*>& chain, uint64_t id,
                                     std::vector<int32_t> prompt, int n, int32_t dtype = 1) {
    std::vector<int32_t> out;
    StageFrame f = TokenFrame(id, 0, prompt);
    f.dtype = dtype;
    int32_t pos = static_cast<int32_t>(prompt.size());
    for (int i = 0; i < n; ++i) {
      StageOutput o = RunChain(chain, f);
      EXPECT_TRUE(o.status.ok()) << o.status;
      if (!o.status.ok() || o.tokens.size() != 1) return out;
      out.push_back(o.tokens[0].token);
      f = TokenFrame(id, pos++, {o.tokens[0].token});
      f.dtype = dtype;
    }
    return out;
  }

  static std::string* path_;
  static runtime::GgufFile* file_;
};

std::string* StageHostTest::path_ = nullptr;
runtime::GgufFile* StageHostTest::file_ = nullptr;

TEST_F(StageHostTest, SplitsMatchTheSingleNodeGenerator) {
  const std::vector<int32_t> prompt = {1, 17, 42, 5, 9, 33};
  // Single node: the runtime's own generator over a whole-model Stage.
  runtime::StageOptions so;
  so.layers = {0, kLayers};
  so.context = 64;
  auto stage = runtime::Stage::Create(*file_, so);
  ASSERT_TRUE(stage.ok()) << stage.status();
  std::vector<int32_t> history = prompt;
  runtime::GenerateOptions go;
  go.max_tokens = 12;
  go.sampling.temperature = 0;
  ASSERT_TRUE(runtime::Generate(**stage, 0, history, go, [](int32_t) { return true; }).ok());
  const std::vector<int32_t> expected(history.begin() + prompt.size(), history.end());
  ASSERT_EQ(expected.size(), 12u);

  auto whole = MakeHost(0, kLayers, true, true);
  EXPECT_EQ(Greedy({whole.get()}, 1, prompt, 12), expected);
  auto a = MakeHost(0, 2, true, false), b = MakeHost(2, 5, false, false),
       c = MakeHost(5, kLayers, false, true);
  EXPECT_EQ(Greedy({a.get(), b.get(), c.get()}, 1, prompt, 12), expected);
  auto d = MakeHost(0, 3, true, false), e = MakeHost(3, kLayers, false, true);
  EXPECT_EQ(Greedy({d.get(), e.get()}, 2, prompt, 12), expected);
  // f16 on the wire runs (not necessarily bit-exact).
  auto f = MakeHost(0, 3, true, false), g = MakeHost(3, kLayers, false, true);
  EXPECT_EQ(Greedy({f.get(), g.get()}, 3, prompt, 12, /*dtype=*/2).size(), 12u);
  EXPECT_EQ(Greedy({f.get(), g.get()}, 4, prompt, 12, /*dtype=*/3).size(), 12u);
}

TEST_F(StageHostTest, RefusesBadFramesAndKeepsServing) {
  auto first = MakeHost(0, 3, true, false);
  auto last = MakeHost(3, kLayers, false, true);
  // A good frame gives a good next frame to corrupt.
  StageOutput o = first->Step({TokenFrame(1, 0, {1, 2, 3})})[0];
  ASSERT_TRUE(o.status.ok()) << o.status;
  ASSERT_TRUE(o.next.has_value());
  const StageFrame good = *o.next;

  struct Case {
    const char* name;
    std::function<void(StageFrame&)> corrupt;
    absl::StatusCode code;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"epoch", [](StageFrame& f) { f.plan_epoch = 6; }, absl::StatusCode::kFailedPrecondition,
       "plan epoch 6 but this stage serves epoch 7"},
      {"dtype", [](StageFrame& f) { f.dtype = 4; }, absl::StatusCode::kInvalidArgument,
       "unsupported hidden dtype 4"},
      {"dtype0", [](StageFrame& f) { f.dtype = 0; }, absl::StatusCode::kInvalidArgument,
       "unsupported hidden dtype 0"},
      {"shape",
       [](StageFrame& f) {
         f.shape = {3, 65};
       },
       absl::StatusCode::kInvalidArgument, "shape must be [3, 64], got [3, 65]"},
      {"rank", [](StageFrame& f) { f.shape = {192}; }, absl::StatusCode::kInvalidArgument,
       "shape must be [3, 64], got [192]"},
      {"bytes", [](StageFrame& f) { f.hidden.pop_back(); }, absl::StatusCode::kInvalidArgument,
       "needs 768 bytes, got 767"},
      {"count", [](StageFrame& f) { f.token_count = 2; }, absl::StatusCode::kInvalidArgument,
       "token_count 2 but 3 token ids"},
      {"gap", [](StageFrame& f) { f.first_position = 2; }, absl::StatusCode::kFailedPrecondition,
       "not running on this stage"},
      {"keep", [](StageFrame& f) { f.kv_keep_length = 1; }, absl::StatusCode::kInvalidArgument,
       "kv_keep_length 1 must equal first_position 0"},
      {"nan",
       [](StageFrame& f) {
         const float nan = std::nanf("");
         std::memcpy(f.hidden.data() + 8, &nan, 4);
       },
       absl::StatusCode::kInvalidArgument, "row 0, column 2 is nan"},
      {"sampling", [](StageFrame& f) { f.sampling.params.temperature = -1; },
       absl::StatusCode::kInvalidArgument, "temperature"},
      {"logprobs", [](StageFrame& f) { f.sampling.top_logprobs = 99; },
       absl::StatusCode::kInvalidArgument, "top_logprobs must be 0 to 20"},
      {"token", [](StageFrame& f) { f.tokens[1] = 96; }, absl::StatusCode::kInvalidArgument,
       "token id 96 is outside the vocabulary [0, 96)"},
      {"empty", [](StageFrame& f) { f.token_count = 0; }, absl::StatusCode::kInvalidArgument,
       "token_count must be positive"},
      {"draft ids", [](StageFrame& f) { f.draft_tokens = {5}; }, absl::StatusCode::kInvalidArgument,
       "carries exactly one token id before them"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    StageFrame bad = good;
    c.corrupt(bad);
    StageOutput r = last->Step({bad})[0];
    EXPECT_EQ(r.status.code(), c.code) << r.status;
    EXPECT_THAT(std::string(r.status.message()), HasSubstr(c.message));
    EXPECT_EQ(last->active_sequences(), 0);  // nothing changed
  }
  // The stage still serves: the good frame gives a token, and the sequence continues.
  StageOutput r = last->Step({good})[0];
  ASSERT_TRUE(r.status.ok()) << r.status;
  ASSERT_EQ(r.tokens.size(), 1u);
  // A frame that skips positions of a running sequence is refused.
  StageFrame skip = good;
  skip.first_position = 5;
  skip.token_count = 3;
  EXPECT_THAT(std::string(last->Step({skip})[0].status.message()),
              HasSubstr("starts at position 5 but this stage holds 3 positions"));
  // The first stage refuses hidden states and a frame past the context.
  StageFrame hidden = TokenFrame(9, 0, {1});
  hidden.shape = {1, 64};
  hidden.hidden.assign(256, '\0');
  EXPECT_THAT(std::string(first->Step({hidden})[0].status.message()), HasSubstr("takes token ids"));
  StageFrame past = TokenFrame(10, 0, std::vector<int32_t>(33, 1));
  EXPECT_THAT(std::string(first->Step({past})[0].status.message()), HasSubstr("at most 32 tokens"));
}

TEST_F(StageHostTest, SlotsAreClaimedOnFirstFrameAndFreedAtTheEnd) {
  auto host = MakeHost(0, kLayers, true, true, /*max_sequences=*/2);
  EXPECT_TRUE(host->Step({TokenFrame(1, 0, {1, 2})})[0].status.ok());
  EXPECT_TRUE(host->Step({TokenFrame(2, 0, {3})})[0].status.ok());
  StageOutput full = host->Step({TokenFrame(3, 0, {4})})[0];
  EXPECT_EQ(full.status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(full.status.message()), HasSubstr("all 2 sequence slots"));
  // A cancel (end_of_sequence, no tokens) frees the slot; so does a last frame.
  StageFrame cancel;
  cancel.sequence_id = 1;
  cancel.plan_epoch = 7;
  cancel.end_of_sequence = true;
  EXPECT_TRUE(host->Step({cancel})[0].status.ok());
  EXPECT_EQ(host->active_sequences(), 1);
  StageFrame last = TokenFrame(3, 0, {4});
  last.end_of_sequence = true;
  StageOutput r = host->Step({last})[0];
  EXPECT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.tokens.size(), 1u);
  EXPECT_EQ(host->active_sequences(), 1);
  // A cancelled sequence is unknown afterwards.
  EXPECT_EQ(host->Step({TokenFrame(1, 2, {5})})[0].status.code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(StageHostTest, BatchedSequencesMatchRunningAlone) {
  const std::vector<std::vector<int32_t>> prompts = {{1, 5, 9}, {2, 7, 11, 13, 17}, {3}};
  std::vector<std::vector<int32_t>> alone;
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto a = MakeHost(0, 3, true, false), b = MakeHost(3, kLayers, false, true);
    alone.push_back(Greedy({a.get(), b.get()}, 1, prompts[i], 8));
  }
  auto a = MakeHost(0, 3, true, false), b = MakeHost(3, kLayers, false, true);
  std::vector<std::vector<int32_t>> together(prompts.size());
  std::vector<StageFrame> frames;
  for (size_t i = 0; i < prompts.size(); ++i) frames.push_back(TokenFrame(100 + i, 0, prompts[i]));
  for (int step = 0; step < 8; ++step) {
    std::vector<StageOutput> mid = a->Step(std::move(frames));
    std::vector<StageFrame> next;
    for (auto& o : mid) {
      ASSERT_TRUE(o.status.ok()) << o.status;
      next.push_back(std::move(*o.next));
    }
    std::vector<StageOutput> out = b->Step(std::move(next));
    frames.clear();
    for (size_t i = 0; i < out.size(); ++i) {
      ASSERT_TRUE(out[i].status.ok()) << out[i].status;
      const int32_t t = out[i].tokens[0].token;
      together[i].push_back(t);
      frames.push_back(TokenFrame(
          100 + i, static_cast<int32_t>(prompts[i].size() + together[i].size() - 1), {t}));
    }
  }
  EXPECT_EQ(together, alone);
}

TEST_F(StageHostTest, TwoFramesOfOneSequenceInOneStepRunInOrder) {
  auto host = MakeHost(0, kLayers, true, true);
  StageFrame chunk1 = TokenFrame(1, 0, {1, 2, 3});
  chunk1.no_sample = true;
  std::vector<StageOutput> out = host->Step({chunk1, TokenFrame(1, 3, {4, 5})});
  ASSERT_TRUE(out[0].status.ok()) << out[0].status;
  EXPECT_TRUE(out[0].tokens.empty());  // no_sample
  ASSERT_TRUE(out[1].status.ok()) << out[1].status;
  auto whole = MakeHost(0, kLayers, true, true);
  StageOutput alone = whole->Step({TokenFrame(1, 0, {1, 2, 3, 4, 5})})[0];
  EXPECT_EQ(out[1].tokens[0].token, alone.tokens[0].token);
}

TEST_F(StageHostTest, RollbackReplaysFromTheKeptLength) {
  auto host = MakeHost(0, kLayers, true, true);
  const std::vector<int32_t> first = Greedy({host.get()}, 1, {1, 2, 3, 4}, 3);
  // Roll sequence 1 back to 2 positions and continue with other tokens; a fresh sequence with
  // the same tokens must give the same next token.
  StageFrame back = TokenFrame(1, 2, {9, 8});
  back.kv_keep_length = 2;
  StageOutput r = host->Step({back})[0];
  ASSERT_TRUE(r.status.ok()) << r.status;
  auto fresh = MakeHost(0, kLayers, true, true);
  StageOutput f = fresh->Step({TokenFrame(5, 0, {1, 2, 9, 8})})[0];
  EXPECT_EQ(r.tokens[0].token, f.tokens[0].token);
  EXPECT_EQ(first.size(), 3u);
}

TEST_F(StageHostTest, ReportsLogprobsWhenAsked) {
  auto host = MakeHost(0, kLayers, true, true);
  StageFrame f = TokenFrame(1, 0, {1, 2, 3});
  f.sampling.top_logprobs = 3;
  StageOutput r = host->Step({f})[0];
  ASSERT_TRUE(r.status.ok()) << r.status;
  ASSERT_EQ(r.tokens[0].top_logprobs.size(), 3u);
  EXPECT_EQ(r.tokens[0].top_logprobs[0].id, r.tokens[0].token);  // greedy picks the top one
  EXPECT_LE(r.tokens[0].logprob, 0.0f);
}

// ---- Speculative verification (draft tokens) --------------------------------------------------

// A draft frame: the sequence's last token, then the drafts.
StageFrame DraftFrame(uint64_t id, int32_t pos, int32_t last, std::vector<int32_t> drafts) {
  StageFrame f;
  f.sequence_id = id;
  f.plan_epoch = 7;
  f.first_position = pos;
  f.token_count = 1 + static_cast<int32_t>(drafts.size());
  f.tokens = {last};
  f.draft_tokens = std::move(drafts);
  f.sampling.params.temperature = 0;
  return f;
}

std::vector<int32_t> TokensOf(const StageOutput& out) {
  std::vector<int32_t> tokens;
  for (const SampledToken& t : out.tokens) tokens.push_back(t.token);
  return tokens;
}

TEST_F(StageHostTest, DraftFramesAcceptWhatGreedyDecodingPicksAndRollBackEveryStage) {
  const std::vector<int32_t> prompt = {1, 17, 42, 5, 9, 33};
  auto whole = MakeHost(0, kLayers, true, true);
  const std::vector<int32_t> g = Greedy({whole.get()}, 1, prompt, 12);
  ASSERT_EQ(g.size(), 12u);
  const int32_t n = static_cast<int32_t>(prompt.size());
  const int32_t wrong = (g[2] + 1) % 96;

  for (int split : {1, 2, 3}) {
    SCOPED_TRACE(absl::StrCat(split, " stages"));
    std::vector<std::unique_ptr<StageHost>> hosts;
    if (split == 1) {
      hosts.push_back(MakeHost(0, kLayers, true, true));
    } else if (split == 2) {
      hosts.push_back(MakeHost(0, 3, true, false));
      hosts.push_back(MakeHost(3, kLayers, false, true));
    } else {
      hosts.push_back(MakeHost(0, 2, true, false));
      hosts.push_back(MakeHost(2, 5, false, false));
      hosts.push_back(MakeHost(5, kLayers, false, true));
    }
    std::vector<StageHost*> chain;
    for (auto& h : hosts) chain.push_back(h.get());
    // The prompt but its last token, sampling nothing.
    StageFrame prefill = TokenFrame(1, 0, std::vector<int32_t>(prompt.begin(), prompt.end() - 1));
    prefill.no_sample = true;
    StageOutput o = RunChain(chain, prefill);
    ASSERT_TRUE(o.status.ok()) << o.status;
    EXPECT_TRUE(o.tokens.empty());

    // Two right drafts, a wrong one, and one after it that is never looked at.
    o = RunChain(chain, DraftFrame(1, n - 1, prompt.back(), {g[0], g[1], wrong, g[3]}));
    ASSERT_TRUE(o.status.ok()) << o.status;
    EXPECT_EQ(TokensOf(o), std::vector<int32_t>({g[0], g[1], g[2]}));
    EXPECT_EQ(o.accepted_draft_count, 2);

    // The next frame starts at the accepted length: every stage rolls back over the wrong draft
    // and the one after it (cached n + 4 positions, continue at n + 2).
    StageFrame next = DraftFrame(1, n + 2, g[2], {g[3], g[4], g[5]});
    next.kv_keep_length = n + 2;
    o = RunChain(chain, next);
    ASSERT_TRUE(o.status.ok()) << o.status;
    EXPECT_EQ(TokensOf(o), std::vector<int32_t>({g[3], g[4], g[5], g[6]}));  // all + one more
    EXPECT_EQ(o.accepted_draft_count, 3);

    // A wrong first draft: the target's own token, nothing accepted.
    o = RunChain(chain, DraftFrame(1, n + 6, g[6], {(g[7] + 1) % 96}));
    ASSERT_TRUE(o.status.ok()) << o.status;
    EXPECT_EQ(TokensOf(o), std::vector<int32_t>({g[7]}));
    EXPECT_EQ(o.accepted_draft_count, 0);
    // A plain one-token frame continues after a rollback too.
    StageFrame plain = TokenFrame(1, n + 7, {g[7]});
    plain.kv_keep_length = n + 7;
    o = RunChain(chain, plain);
    ASSERT_TRUE(o.status.ok()) << o.status;
    EXPECT_EQ(TokensOf(o), std::vector<int32_t>({g[8]}));
  }
}

TEST_F(StageHostTest, RefusesBadDraftFramesAndKeepsServing) {
  auto first = MakeHost(0, 2, true, false);
  auto middle = MakeHost(2, 4, false, false);
  auto last = MakeHost(4, kLayers, false, true);
  // A good draft frame as each stage sees it.
  const StageFrame good_first = DraftFrame(1, 0, 3, {4, 5});
  StageOutput o = first->Step({good_first})[0];
  ASSERT_TRUE(o.status.ok()) << o.status;
  const StageFrame good_middle = *o.next;
  EXPECT_EQ(good_middle.draft_tokens, std::vector<int32_t>({4, 5}));  // passed on
  o = middle->Step({good_middle})[0];
  ASSERT_TRUE(o.status.ok()) << o.status;
  const StageFrame good_last = *o.next;

  struct Case {
    const char* name;
    std::function<void(StageFrame&)> corrupt;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"too many",
       [](StageFrame& f) {
         f.draft_tokens.assign(16, 4);
         f.token_count = 17;
       },
       "at most 15 draft tokens"},
      {"vocabulary", [](StageFrame& f) { f.draft_tokens[1] = 96; },
       "draft token id 96 is outside the vocabulary [0, 96)"},
      {"negative", [](StageFrame& f) { f.draft_tokens[0] = -1; }, "draft token id -1"},
      {"count", [](StageFrame& f) { f.token_count = 2; },
       "a frame with 2 draft tokens carries exactly one token id before them"},
      {"two tokens",
       [](StageFrame& f) {
         f.tokens = {3, 3};
         f.token_count = 4;
       },
       "got 2 token ids and token_count 4"},
      {"no tokens",
       [](StageFrame& f) {
         f.tokens.clear();
         f.token_count = 2;
       },
       "got 0 token ids"},
      {"no_sample", [](StageFrame& f) { f.no_sample = true; }, "cannot be no_sample"},
  };
  const std::vector<std::pair<StageHost*, const StageFrame*>> stages = {
      {first.get(), &good_first}, {middle.get(), &good_middle}, {last.get(), &good_last}};
  for (const Case& c : cases) {
    for (size_t i = 0; i < stages.size(); ++i) {
      SCOPED_TRACE(absl::StrCat(c.name, " on stage ", i));
      StageFrame bad = *stages[i].second;
      bad.sequence_id = 2;  // a new sequence: a refusal must not claim a slot
      c.corrupt(bad);
      const int32_t before = stages[i].first->active_sequences();
      StageOutput r = stages[i].first->Step({bad})[0];
      EXPECT_EQ(r.status.code(), absl::StatusCode::kInvalidArgument) << r.status;
      EXPECT_THAT(std::string(r.status.message()), HasSubstr(c.message));
      EXPECT_EQ(stages[i].first->active_sequences(), before);
    }
  }
  // Fewer rows per frame allow fewer drafts.
  StageHostOptions small;
  small.plan_epoch = 7;
  small.layers = {0, kLayers};
  small.context = 64;
  small.max_batch_tokens = 4;
  auto tiny = StageHost::Create(*file_, small);
  ASSERT_TRUE(tiny.ok()) << tiny.status();
  EXPECT_EQ((*tiny)->max_draft_tokens(), 3);
  EXPECT_THAT(std::string((*tiny)->Step({DraftFrame(1, 0, 3, {4, 5, 6, 7})})[0].status.message()),
              HasSubstr("at most 3 draft tokens"));
  EXPECT_TRUE((*tiny)->Step({DraftFrame(1, 0, 3, {4, 5, 6})})[0].status.ok());
  // The good frame still verifies on the last stage.
  o = last->Step({good_last})[0];
  ASSERT_TRUE(o.status.ok()) << o.status;
  EXPECT_GE(o.tokens.size(), 1u);
  EXPECT_EQ(o.accepted_draft_count, static_cast<int32_t>(o.tokens.size()) - 1);
}

TEST_F(StageHostTest, DraftFramesBatchWithOtherSequencesWithinTheLogitRowLimit) {
  const std::vector<int32_t> a = {1, 5, 9}, b = {2, 7, 11, 13}, c = {3, 8};
  // Alone: the greedy continuation of each, and the verification of 15 drafts of a.
  auto whole = MakeHost(0, kLayers, true, true);
  const std::vector<int32_t> ga = Greedy({whole.get()}, 1, a, 16);
  const std::vector<int32_t> gb = Greedy({whole.get()}, 2, b, 1);
  const std::vector<int32_t> gc = Greedy({whole.get()}, 3, c, 16);

  auto host = MakeHost(0, kLayers, true, true);
  std::vector<StageFrame> prefill;
  for (auto [id, p] : {std::pair{1, &a}, std::pair{3, &c}}) {
    StageFrame f = TokenFrame(id, 0, std::vector<int32_t>(p->begin(), p->end() - 1));
    f.no_sample = true;
    prefill.push_back(f);
  }
  for (const StageOutput& o : host->Step(prefill)) ASSERT_TRUE(o.status.ok()) << o.status;
  // Two frames of 16 logit rows each and a plain one: 33 rows do not fit one pass (16 logit rows
  // at most), so the step runs several; each result equals the sequence alone.
  std::vector<int32_t> drafts_a(ga.begin(), ga.begin() + 15);
  std::vector<int32_t> drafts_c(gc.begin(), gc.begin() + 15);
  drafts_c[7] = (drafts_c[7] + 1) % 96;  // rejected at the eighth
  std::vector<StageOutput> out =
      host->Step({DraftFrame(1, 2, a.back(), drafts_a), TokenFrame(2, 0, b),
                  DraftFrame(3, 1, c.back(), drafts_c)});
  ASSERT_EQ(out.size(), 3u);
  for (const StageOutput& o : out) ASSERT_TRUE(o.status.ok()) << o.status;
  EXPECT_EQ(TokensOf(out[0]), ga);
  EXPECT_EQ(out[0].accepted_draft_count, 15);
  EXPECT_EQ(TokensOf(out[1]), gb);
  EXPECT_EQ(TokensOf(out[2]), std::vector<int32_t>(gc.begin(), gc.begin() + 8));
  EXPECT_EQ(out[2].accepted_draft_count, 7);
}

TEST_F(StageHostTest, DraftFramesReportLogprobsForEveryToken) {
  auto host = MakeHost(0, kLayers, true, true);
  const std::vector<int32_t> g = Greedy({host.get()}, 1, {1, 2, 3}, 3);
  StageFrame prefill = TokenFrame(2, 0, {1, 2});
  prefill.no_sample = true;
  prefill.sampling.top_logprobs = 2;
  ASSERT_TRUE(host->Step({prefill})[0].status.ok());
  StageOutput o = host->Step({DraftFrame(2, 2, 3, {g[0], g[1]})})[0];
  ASSERT_TRUE(o.status.ok()) << o.status;
  ASSERT_EQ(o.tokens.size(), 3u);
  for (const SampledToken& t : o.tokens) {
    ASSERT_EQ(t.top_logprobs.size(), 2u);
    EXPECT_EQ(t.top_logprobs[0].id, t.token);  // greedy picks the most likely
    EXPECT_LE(t.logprob, 0.0f);
    EXPECT_NEAR(t.logprob, t.top_logprobs[0].logprob, 1e-5);
  }
}

}  // namespace
}  // namespace exo::node
