// Speculative decoding: drafters, the acceptance rule, adaptive length, and the generator loop on
// tiny synthetic models (greedy identity, and the sampled distribution against the target's).
#include "runtime/speculative.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/generator.h"
#include "runtime/gguf.h"
#include "runtime/stage.h"
#include "runtime/tokenizer.h"
#include "speculative_testlib.h"
#include "synthetic_model_testlib.h"

namespace exo::runtime {
namespace {

using synthetic::SyntheticModelOptions;
using synthetic::WriteSyntheticModel;

using spectest::ChiSquare;
using spectest::ChiSquareCritical;
using spectest::ChiSquareTest;
using spectest::ExactDistribution;
using spectest::TargetDistribution;

// ---- The acceptance rule alone -----------------------------------------------------------------

// A plausible-looking but wrong rule: accept with min(1, p/q), but on rejection draw from p
// instead of the residual max(0, p - q). It over-weights tokens the draft favours.
VerifyOutcome WrongRuleResampleFromP(int32_t x, absl::Span<const float> p,
                                     absl::Span<const float> q, Sampler& sampler) {
  const float qx = q.empty() ? 1.0f : q[x];
  if (sampler.Uniform() * qx < p[x]) return {true, x};
  return {false, sampler.SampleFromWeights(p)};
}

using Rule = std::function<VerifyOutcome(int32_t, absl::Span<const float>, absl::Span<const float>,
                                         Sampler&)>;

// Draws x ~ q (or takes the fixed token for one-hot q), applies `rule`, and tests the resulting
// token frequencies against p.
ChiSquare RunRule(const std::vector<float>& p, const std::vector<float>& q, int32_t fixed_draft,
                  const Rule& rule, int draws, uint64_t seed) {
  SamplingParams params;
  params.seed = seed;
  Sampler sampler(params, static_cast<int32_t>(p.size()));
  std::vector<int64_t> counts(p.size(), 0);
  for (int i = 0; i < draws; ++i) {
    const int32_t x = q.empty() ? fixed_draft : sampler.SampleFromWeights(q);
    const VerifyOutcome outcome = rule(x, p, q, sampler);
    EXPECT_GE(outcome.token, 0);
    if (outcome.token >= 0) ++counts[outcome.token];
  }
  return ChiSquareTest(counts, std::vector<double>(p.begin(), p.end()));
}

const std::vector<float> kTarget = {0.30f, 0.25f, 0.20f, 0.10f, 0.10f, 0.05f, 0.0f};
const std::vector<float> kDraft = {0.05f, 0.10f, 0.40f, 0.05f, 0.0f, 0.20f, 0.20f};

TEST(VerifyDraftToken, OutputFollowsTargetDistributionForSampledDraft) {
  std::vector<float> residual(kTarget.size());
  const Rule correct = [&](int32_t x, absl::Span<const float> p, absl::Span<const float> q,
                           Sampler& s) {
    return VerifyDraftToken(x, p, q, s, absl::MakeSpan(residual));
  };
  const ChiSquare chi = RunRule(kTarget, kDraft, -1, correct, 200000, 7);
  EXPECT_FALSE(chi.Rejects()) << "chi2 " << chi.statistic << " df " << chi.df;
}

TEST(VerifyDraftToken, OutputFollowsTargetDistributionForOneHotDraft) {
  std::vector<float> residual(kTarget.size());
  const Rule correct = [&](int32_t x, absl::Span<const float> p, absl::Span<const float> q,
                           Sampler& s) {
    return VerifyDraftToken(x, p, q, s, absl::MakeSpan(residual));
  };
  for (int32_t fixed : {0, 2, 6}) {  // likely, middling, and impossible under p
    const ChiSquare chi = RunRule(kTarget, {}, fixed, correct, 100000, 11 + fixed);
    EXPECT_FALSE(chi.Rejects()) << "draft " << fixed << ": chi2 " << chi.statistic;
  }
}

// The test above can fail: the same harness rejects a wrong rule decisively.
TEST(VerifyDraftToken, ChiSquareHarnessRejectsAWrongRule) {
  const ChiSquare sampled = RunRule(kTarget, kDraft, -1, WrongRuleResampleFromP, 200000, 7);
  EXPECT_TRUE(sampled.Rejects()) << "chi2 " << sampled.statistic << " df " << sampled.df;
  const ChiSquare one_hot = RunRule(kTarget, {}, 2, WrongRuleResampleFromP, 100000, 13);
  EXPECT_TRUE(one_hot.Rejects()) << "chi2 " << one_hot.statistic << " df " << one_hot.df;
}

TEST(VerifyDraftToken, AcceptsWhenTargetIsAtLeastDraftAndRejectsImpossibleTokens) {
  SamplingParams params;
  params.seed = 3;
  Sampler sampler(params, 3);
  std::vector<float> residual(3);
  const std::vector<float> p = {0.5f, 0.5f, 0.0f};
  const std::vector<float> q = {0.2f, 0.2f, 0.6f};
  for (int i = 0; i < 100; ++i) {
    EXPECT_TRUE(VerifyDraftToken(0, p, q, sampler, absl::MakeSpan(residual)).accepted);
    const VerifyOutcome impossible = VerifyDraftToken(2, p, q, sampler, absl::MakeSpan(residual));
    EXPECT_FALSE(impossible.accepted);
    EXPECT_NE(impossible.token, 2);
  }
}

// ---- Sampler::Distribution ---------------------------------------------------------------------

TEST(SamplerDistribution, MatchesSampleFrequenciesWithFiltersAndPenalties) {
  SamplingParams params;
  params.temperature = 0.7f;
  params.top_k = 5;
  params.top_p = 0.9f;
  params.min_p = 0.02f;
  params.repetition_penalty = 1.3f;
  params.seed = 5;
  const std::vector<float> logits = {1.0f, 2.0f, 0.5f, 3.0f, -1.0f, 2.5f, 0.0f, 1.5f};
  const std::vector<int32_t> history = {3, 3, 1};
  Sampler sampler(params, 8);
  std::vector<float> scratch = logits;
  std::vector<float> probabilities(8);
  sampler.Distribution(absl::MakeSpan(scratch), history, absl::MakeSpan(probabilities));
  double sum = 0;
  for (float v : probabilities) sum += v;
  EXPECT_NEAR(sum, 1.0, 1e-5);
  std::vector<int64_t> counts(8, 0);
  for (int i = 0; i < 100000; ++i) {
    scratch = logits;
    ++counts[sampler.Sample(absl::MakeSpan(scratch), history)];
  }
  const ChiSquare chi =
      ChiSquareTest(counts, std::vector<double>(probabilities.begin(), probabilities.end()));
  EXPECT_FALSE(chi.Rejects()) << "chi2 " << chi.statistic << " df " << chi.df;
  for (int i = 0; i < 8; ++i) {
    if (probabilities[i] == 0.0f) EXPECT_EQ(counts[i], 0) << "token " << i;
  }
}

TEST(SamplerDistribution, GreedyIsOneHotAtTheSampledToken) {
  SamplingParams params;
  params.temperature = 0.0f;
  Sampler sampler(params, 4);
  std::vector<float> logits = {0.5f, 2.0f, 2.0f, -1.0f};
  std::vector<float> probabilities(4);
  sampler.Distribution(absl::MakeSpan(logits), {}, absl::MakeSpan(probabilities));
  EXPECT_EQ(probabilities, (std::vector<float>{0.0f, 1.0f, 0.0f, 0.0f}));
}

// ---- Draft length, n-gram drafter, vocabulary check ---------------------------------------------

// Feeds the controller passes whose cost is base + rows_cost * drafted and whose acceptance
// follows `accept(drafted)`, for `passes` passes; returns the last choice.
int32_t Drive(DraftLengthController& length, double base, double row_cost,
              const std::function<int32_t(int32_t)>& accept, int passes) {
  for (int i = 0; i < passes; ++i) {
    const int32_t k = length.Next();
    length.Update(k, k, k > 0 ? accept(k) : 0, base + row_cost * k, 0.0);
  }
  return length.Next();
}

TEST(DraftLengthController, DraftsLongWhenRowsAreCheapAndAccepted) {
  SpeculativeOptions options;
  DraftLengthController length(options);
  EXPECT_EQ(length.Next(), 0);  // the first pass measures the cost of a pass without drafts
  // Pipeline-like: a pass is mostly fixed latency, rows are cheap.
  EXPECT_EQ(Drive(
                length, 1.0, 0.02, [](int32_t k) { return k; }, 50),
            options.draft_max);
}

TEST(DraftLengthController, StaysShortWhenRowsAreExpensive) {
  SpeculativeOptions options;
  DraftLengthController length(options);
  // CPU-like: a row costs 0.8 of a pass; 90% of drafts accepted. E/cost peaks at k = 1 or 2.
  int32_t count = 0;
  const int32_t k = Drive(
      length, 1.0, 0.8, [&](int32_t drafted) { return ++count % 10 == 0 ? 0 : drafted; }, 200);
  EXPECT_GE(k, 0);
  EXPECT_LE(k, 2);
}

TEST(DraftLengthController, StopsDraftingWhenNothingIsAcceptedAndRetriesLater) {
  SpeculativeOptions options;
  DraftLengthController length(options);
  // After a few failed passes it stops drafting: most of passes 10-40 draft nothing.
  Drive(
      length, 1.0, 0.3, [](int32_t) { return 0; }, 10);
  int idle = 0;
  for (int i = 0; i < 30; ++i) {
    const int32_t k = length.Next();
    if (k == 0) ++idle;
    length.Update(k, k, 0, 1.0 + 0.3 * k, 0.0);
  }
  EXPECT_GE(idle, 25);
  // While not drafting the estimate recovers, so drafting is retried now and then, but the
  // wasted verification rows stay a small part of the time.
  int retried = 0;
  double seconds = 0, wasted = 0;
  for (int i = 0; i < 200; ++i) {
    const int32_t k = length.Next();
    if (k > 0) ++retried;
    length.Update(k, k, 0, 1.0 + 0.3 * k, 0.0);
    seconds += 1.0 + 0.3 * k;
    wasted += 0.3 * k;
  }
  EXPECT_GT(retried, 0);
  EXPECT_LT(wasted / seconds, 0.1) << retried << " retries";
}

TEST(DraftLengthController, CostlyEmptyProposalsCountAsRejections) {
  SpeculativeOptions options;
  DraftLengthController costly(options), free(options);
  costly.Update(0, 0, 0, 1.0, 0.0);  // measures the base pass
  free.Update(0, 0, 0, 1.0, 0.0);
  for (int i = 0; i < 20; ++i) {
    costly.Update(4, 0, 0, 1.0, 0.3);  // a draft model that stopped at low confidence
    free.Update(4, 0, 0, 1.0, 1e-6);   // prompt lookup that found no match
  }
  EXPECT_LT(costly.acceptance_estimate(), 0.2);
  EXPECT_GT(free.acceptance_estimate(), 0.7);
  EXPECT_EQ(costly.Next(), 0);  // stops asking
  EXPECT_GT(free.Next(), 0);
}

TEST(DraftLengthController, FixedLengthWhenNotAdaptive) {
  SpeculativeOptions options;
  options.adaptive = false;
  options.draft_max = 5;
  DraftLengthController fixed(options);
  fixed.Update(5, 5, 0, 1.0, 0.0);
  EXPECT_EQ(fixed.Next(), 5);
}

TEST(NgramDrafter, CopiesWhatFollowedTheMostRecentMatch) {
  NgramDrafter drafter(NgramOptions{});
  DraftProposal proposal;
  // "7 8" occurs twice before the end; the later occurrence is followed by 4 5.
  const std::vector<int32_t> context = {1, 7, 8, 9, 9, 7, 8, 4, 5, 6, 7, 8};
  ASSERT_TRUE(drafter.Draft(context, 3, proposal).ok());
  EXPECT_TRUE(proposal.deterministic());
  EXPECT_EQ(proposal.tokens, (std::vector<int32_t>{4, 5, 6}));
  // A repeating pattern is extended past the context's end.
  ASSERT_TRUE(drafter.Draft(std::vector<int32_t>{3, 1, 2, 1, 2}, 5, proposal).ok());
  EXPECT_EQ(proposal.tokens, (std::vector<int32_t>{1, 2, 1, 2, 1}));
  // No earlier occurrence of the last two tokens: nothing.
  ASSERT_TRUE(drafter.Draft(std::vector<int32_t>{1, 2, 3, 4}, 4, proposal).ok());
  EXPECT_TRUE(proposal.tokens.empty());
}

std::unique_ptr<Tokenizer> MakeTokenizer(int32_t size, int32_t bos, int32_t eos,
                                         const std::string& odd_token = "", int32_t odd_id = -1) {
  TokenizerVocab vocab;
  vocab.kind = TokenizerKind::kSentencePiece;
  for (int32_t i = 0; i < size; ++i) {
    vocab.tokens.push_back(i == odd_id ? odd_token : "tok" + std::to_string(i));
    vocab.scores.push_back(0.0f);
  }
  vocab.bos_id = bos;
  vocab.eos_id = eos;
  vocab.add_bos = true;
  auto tokenizer = Tokenizer::FromVocab(vocab);
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return tokenizer.ok() ? std::move(*tokenizer) : nullptr;
}

TEST(CheckDraftVocabulary, AcceptsSameFamilyAndNamesTheFirstDifference) {
  auto target = MakeTokenizer(300, 1, 2);
  EXPECT_TRUE(CheckDraftVocabulary(*target, *MakeTokenizer(300, 1, 2)).ok());
  EXPECT_TRUE(CheckDraftVocabulary(*target, *MakeTokenizer(400, 1, 2)).ok());  // padded

  absl::Status size = CheckDraftVocabulary(*target, *MakeTokenizer(500, 1, 2));
  EXPECT_EQ(size.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(size.message().find("differ by more than 128"), std::string::npos) << size;

  absl::Status bos = CheckDraftVocabulary(*target, *MakeTokenizer(300, 0, 2));
  EXPECT_NE(bos.message().find("BOS"), std::string::npos) << bos;
  absl::Status eos = CheckDraftVocabulary(*target, *MakeTokenizer(300, 1, 3));
  EXPECT_NE(eos.message().find("EOS"), std::string::npos) << eos;

  absl::Status text = CheckDraftVocabulary(*target, *MakeTokenizer(300, 1, 2, "other", 123));
  EXPECT_NE(text.message().find("token 123"), std::string::npos) << text;
  // Differences below first_checked_id are tolerated, as in llama.cpp.
  EXPECT_TRUE(CheckDraftVocabulary(*target, *MakeTokenizer(300, 1, 2, "other", 4)).ok());
}

// ---- The generator loop on synthetic models -----------------------------------------------------

struct LoadedSynthetic {
  std::unique_ptr<GgufFile> file;
  std::unique_ptr<Stage> stage;
};

LoadedSynthetic Load(const SyntheticModelOptions& options, const std::string& name) {
  LoadedSynthetic loaded;
  const std::string path =
      ::testing::TempDir() + "/spec_" + name + "_" + std::to_string(::getpid()) + ".gguf";
  absl::StatusOr<std::string> written = WriteSyntheticModel(options, path);
  EXPECT_TRUE(written.ok()) << written.status();
  if (!written.ok()) return loaded;
  auto file = GgufFile::Open(path);
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return loaded;
  loaded.file = std::move(*file);
  StageOptions stage_options;
  stage_options.layers = {0, options.n_layer};
  stage_options.context = options.context_length;
  stage_options.max_batch_tokens = 32;
  stage_options.max_logit_rows = 9;
  auto stage = Stage::Create(*loaded.file, stage_options);
  EXPECT_TRUE(stage.ok()) << stage.status();
  if (stage.ok()) loaded.stage = std::move(*stage);
  return loaded;
}

SyntheticModelOptions TargetOptions(const std::string& arch) {
  SyntheticModelOptions o;
  o.arch = arch;
  o.n_layer = arch == "gemma3" ? 6 : 3;
  o.seed = 42;
  return o;
}

SyntheticModelOptions DraftOptions(const std::string& arch) {
  SyntheticModelOptions o = TargetOptions(arch);
  o.n_layer = arch == "gemma3" ? 2 : 1;
  o.seed = 43;
  return o;
}

std::vector<int32_t> GenerateTokens(Stage& stage, const std::vector<int32_t>& prompt,
                                    GenerateOptions options, GenerateStats* stats_out = nullptr) {
  std::vector<int32_t> history = prompt;
  auto stats = Generate(stage, 0, history, options, [](int32_t) { return true; });
  EXPECT_TRUE(stats.ok()) << stats.status();
  if (stats_out != nullptr && stats.ok()) *stats_out = *stats;
  return std::vector<int32_t>(history.begin() + prompt.size(), history.end());
}

// A prompt with repeats, so the n-gram drafter finds matches.
const std::vector<int32_t> kPrompt = {1, 17, 42, 5, 9, 33, 60, 17, 42, 5, 9, 33, 60, 17, 42, 5};

class SpeculativeGreedy : public ::testing::TestWithParam<std::string> {};

TEST_P(SpeculativeGreedy, OutputIsIdenticalWithEveryDrafter) {
  const std::string arch = GetParam();
  LoadedSynthetic target = Load(TargetOptions(arch), "target_" + arch);
  LoadedSynthetic draft = Load(DraftOptions(arch), "draft_" + arch);
  LoadedSynthetic self = Load(TargetOptions(arch), "self_" + arch);
  ASSERT_TRUE(target.stage && draft.stage && self.stage);

  for (float repetition_penalty : {1.0f, 1.3f}) {
    GenerateOptions options;
    options.max_tokens = 60;
    options.sampling.temperature = 0.0f;
    options.sampling.repetition_penalty = repetition_penalty;
    const std::vector<int32_t> expected = GenerateTokens(*target.stage, kPrompt, options);
    ASSERT_EQ(expected.size(), 60u);

    NgramDrafter ngram(NgramOptions{});
    DraftModelOptions draft_options;
    draft_options.min_confidence = 0.0f;  // random weights are never confident
    auto small = DraftModelDrafter::Create(*draft.stage, 0, options.sampling, draft_options);
    auto same = DraftModelDrafter::Create(*self.stage, 0, options.sampling, draft_options);
    ASSERT_TRUE(small.ok() && same.ok());
    for (Drafter* drafter : {static_cast<Drafter*>(&ngram), static_cast<Drafter*>(small->get()),
                             static_cast<Drafter*>(same->get())}) {
      for (int32_t draft_max : {1, 3, 8}) {
        for (bool adaptive : {false, true}) {
          GenerateOptions spec = options;
          spec.drafter = drafter;
          spec.speculative.draft_max = draft_max;
          spec.speculative.adaptive = adaptive;
          GenerateStats stats;
          EXPECT_EQ(GenerateTokens(*target.stage, kPrompt, spec, &stats), expected)
              << arch << " draft_max " << draft_max << " adaptive " << adaptive << " penalty "
              << repetition_penalty;
          EXPECT_EQ(stats.generated_tokens, 60);
          EXPECT_EQ(stats.speculative.emitted_tokens, 60);
          EXPECT_GT(stats.speculative.passes, 0);
          EXPECT_LE(stats.speculative.accepted_tokens, stats.speculative.drafted_tokens);
          EXPECT_EQ(stats.speculative.emitted_tokens,
                    stats.speculative.accepted_tokens + stats.speculative.passes);
          if (drafter == same->get() && !adaptive) {
            // The target drafting for itself: every draft is accepted.
            EXPECT_EQ(stats.speculative.accepted_tokens, stats.speculative.drafted_tokens);
            EXPECT_GT(stats.speculative.TokensPerPass(), draft_max == 1 ? 1.9 : 2.5);
          }
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Archs, SpeculativeGreedy, ::testing::Values("llama", "qwen2", "gemma3"));

TEST(SpeculativeGenerate, StopsAtMaxTokensStopTokenAndContext) {
  LoadedSynthetic target = Load(TargetOptions("llama"), "stops");
  ASSERT_TRUE(target.stage);
  GenerateOptions options;
  options.max_tokens = 30;
  options.sampling.temperature = 0.0f;
  const std::vector<int32_t> plain = GenerateTokens(*target.stage, kPrompt, options);
  NgramDrafter ngram(NgramOptions{});
  options.drafter = &ngram;

  options.max_tokens = 7;
  EXPECT_EQ(GenerateTokens(*target.stage, kPrompt, options),
            std::vector<int32_t>(plain.begin(), plain.begin() + 7));

  // Stop at the first occurrence of plain[10]'s token.
  const int32_t stop = plain[10];
  const size_t first = std::find(plain.begin(), plain.end(), stop) - plain.begin();
  options.max_tokens = 30;
  options.is_stop_token = [stop](int32_t id) { return id == stop; };
  GenerateStats stats;
  EXPECT_EQ(GenerateTokens(*target.stage, kPrompt, options, &stats),
            std::vector<int32_t>(plain.begin(), plain.begin() + first));
  EXPECT_TRUE(stats.stopped_by_token);
  EXPECT_LE(stats.reusable_prefix, static_cast<int32_t>(kPrompt.size() + first));

  // The synthetic context is 128 positions: a long prompt stops by context.
  options.is_stop_token = nullptr;
  std::vector<int32_t> long_prompt;
  for (int i = 0; i < 120; ++i) long_prompt.push_back(kPrompt[i % kPrompt.size()]);
  options.max_tokens = 50;
  const std::vector<int32_t> out = GenerateTokens(*target.stage, long_prompt, options, &stats);
  EXPECT_EQ(out.size(), 8u);
  EXPECT_TRUE(stats.stopped_by_context);
}

// ---- The sampled distribution against the target's -----------------------------------------

enum class DrafterKind { kDraftModel, kDraftModelOneHot, kNgram };
class SpeculativeSampling : public ::testing::TestWithParam<DrafterKind> {};

// Many seeds, two tokens each: the first token is decided by the first drafted token's
// acceptance test (or the residual draw), the second by the next row or a new pass, after a
// cache rollback. Both marginals must match the target's exact distribution.
TEST_P(SpeculativeSampling, TokenFrequenciesMatchTheTargetDistribution) {
  const DrafterKind kind = GetParam();
  LoadedSynthetic target = Load(TargetOptions("llama"), "chi_target");
  LoadedSynthetic draft = Load(DraftOptions("llama"), "chi_draft");
  ASSERT_TRUE(target.stage && draft.stage);
  SamplingParams params;
  params.temperature = 1.5f;  // flatten the random model: dozens of cells get >= 5 counts
  params.top_k = 0;
  params.top_p = 1.0f;
  params.min_p = 0.0f;
  const std::vector<int32_t> prompt = {1, 17, 42, 5, 9, 17, 42, 5};
  const ExactDistribution exact = TargetDistribution(*target.stage, prompt, params);

  const int kRuns = 6000;
  std::vector<int64_t> first(exact.first.size(), 0), second(exact.second.size(), 0);
  int64_t drafted = 0, accepted = 0;
  NgramOptions ngram_options;
  ngram_options.ngram_min = 1;
  NgramDrafter ngram(ngram_options);
  for (int run = 0; run < kRuns; ++run) {
    GenerateOptions options;
    options.max_tokens = 3;
    options.sampling = params;
    options.sampling.seed = 1000 + run;
    options.speculative.draft_max = 3;
    options.speculative.adaptive = false;
    std::unique_ptr<DraftModelDrafter> model_drafter;
    if (kind != DrafterKind::kNgram) {
      DraftModelOptions draft_options;
      draft_options.min_confidence = 0.0f;
      draft_options.one_hot_proposals = kind == DrafterKind::kDraftModelOneHot;
      auto created = DraftModelDrafter::Create(*draft.stage, 0, options.sampling, draft_options);
      ASSERT_TRUE(created.ok()) << created.status();
      model_drafter = std::move(*created);
      options.drafter = model_drafter.get();
    } else {
      options.drafter = &ngram;
    }
    GenerateStats stats;
    const std::vector<int32_t> out = GenerateTokens(*target.stage, prompt, options, &stats);
    ASSERT_EQ(out.size(), 3u);
    ++first[out[0]];
    ++second[out[1]];
    drafted += stats.speculative.drafted_tokens;
    accepted += stats.speculative.accepted_tokens;
  }
  // The rule was exercised both ways.
  EXPECT_GT(drafted, kRuns);
  EXPECT_GT(accepted, 0);
  EXPECT_LT(accepted, drafted);
  const ChiSquare chi_first = ChiSquareTest(first, exact.first);
  const ChiSquare chi_second = ChiSquareTest(second, exact.second);
  EXPECT_GE(chi_first.df, 20);
  EXPECT_GE(chi_second.df, 20);
  EXPECT_FALSE(chi_first.Rejects())
      << "first token: chi2 " << chi_first.statistic << " df " << chi_first.df << " critical "
      << ChiSquareCritical(chi_first.df);
  EXPECT_FALSE(chi_second.Rejects())
      << "second token: chi2 " << chi_second.statistic << " df " << chi_second.df << " critical "
      << ChiSquareCritical(chi_second.df);
}

INSTANTIATE_TEST_SUITE_P(Drafters, SpeculativeSampling,
                         ::testing::Values(DrafterKind::kDraftModel, DrafterKind::kDraftModelOneHot,
                                           DrafterKind::kNgram),
                         [](const auto& info) {
                           switch (info.param) {
                             case DrafterKind::kDraftModel:
                               return "DraftModel";
                             case DrafterKind::kDraftModelOneHot:
                               return "DraftModelOneHot";
                             case DrafterKind::kNgram:
                               return "Ngram";
                           }
                           return "Unknown";
                         });

}  // namespace
}  // namespace exo::runtime
