// The pieces `serve` uses to run a model over the cluster: data-path tokens, planning from the
// membership view, and the API's pipeline backend (real gRPC stages on loopback, in-process, on a
// tiny synthetic model).
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "node/cluster_auth.h"
#include "node/cluster_plan.h"
#include "node/coordinator.h"
#include "node/draft_model_pool.h"
#include "node/pipeline.h"
#include "node/pipeline_backend.h"
#include "node/shard_handler.h"
#include "node/stage_server.h"
#include "node/tensor_fetch.h"
#include "runtime/generator.h"
#include "runtime/gguf.h"
#include "runtime/tokenizer.h"
#include "synthetic_model_testlib.h"

namespace exo::node {
namespace {

using ::testing::HasSubstr;

// ---- Data-path tokens ---------------------------------------------------------------------------

TEST(DataPathToken, VerifiesWithTheSameKeyWithinTheSkew) {
  const ClusterKey key = *ClusterKey::FromString("home");
  const absl::Time now = absl::FromUnixSeconds(1'800'000'000);
  const std::string token = MakeDataPathToken(key, "node-a", now);
  EXPECT_TRUE(CheckDataPathToken(key, token, now).ok());
  EXPECT_TRUE(CheckDataPathToken(key, token, now + absl::Minutes(4)).ok());
  EXPECT_TRUE(CheckDataPathToken(key, token, now - absl::Minutes(4)).ok());
}

TEST(DataPathToken, RefusesAnotherKey) {
  const absl::Time now = absl::Now();
  const std::string token = MakeDataPathToken(*ClusterKey::FromString("home"), "node-a", now);
  const absl::Status status = CheckDataPathToken(*ClusterKey::FromString("work"), token, now);
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(status.message(), HasSubstr("key"));
  EXPECT_FALSE(CheckDataPathToken(ClusterKey::Default(), token, now).ok());
}

TEST(DataPathToken, RefusesOldAndFutureTokens) {
  const ClusterKey key = *ClusterKey::FromString("home");
  const absl::Time now = absl::FromUnixSeconds(1'800'000'000);
  const std::string token = MakeDataPathToken(key, "node-a", now);
  const absl::Status old = CheckDataPathToken(key, token, now + absl::Minutes(6));
  EXPECT_EQ(old.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(old.message(), HasSubstr("clock"));
  EXPECT_FALSE(CheckDataPathToken(key, token, now - absl::Minutes(6)).ok());
}

TEST(DataPathToken, RefusesTamperedAndMalformedTokens) {
  const ClusterKey key = *ClusterKey::FromString("home");
  const absl::Time now = absl::FromUnixSeconds(1'800'000'000);
  std::string token = MakeDataPathToken(key, "node-a", now);
  // Another node id or time under the same proof.
  std::string other_id = token;
  other_id.replace(0, 6, "node-b");
  EXPECT_FALSE(CheckDataPathToken(key, other_id, now).ok());
  std::string other_time = MakeDataPathToken(key, "node-a", now + absl::Seconds(1));
  other_time = other_time.substr(0, other_time.rfind('.')) + token.substr(token.rfind('.'));
  EXPECT_FALSE(CheckDataPathToken(key, other_time, now).ok());
  for (const std::string bad :
       {std::string(""), std::string("node-a"), std::string("node-a.1800000000"),
        std::string(".1800000000.00"), std::string("node-a.soon.") + std::string(64, '0'),
        std::string("node-a.1800000000.") + std::string(63, '0'),
        std::string("node-a.1800000000.") + std::string(64, 'g'), std::string("a.b.c.d"),
        std::string(4096, 'x')}) {
    SCOPED_TRACE(bad.substr(0, 40));
    EXPECT_EQ(CheckDataPathToken(key, bad, now).code(), absl::StatusCode::kPermissionDenied);
  }
}

// ---- Planning from membership
// ---------------------------------------------------------------------

constexpr uint64_t kMiB = 1 << 20;

partition::ModelProfile EightLayerModel() {
  partition::ModelProfile m;
  m.n_layers = 8;
  m.layer_bytes.assign(8, 100 * kMiB);
  m.embedding_bytes = 50 * kMiB;
  m.head_bytes = 50 * kMiB;
  m.kv_bytes_per_token_per_layer = 1024;
  m.context_length = 1024;
  m.scratch_bytes = 10 * kMiB;
  m.hidden_bytes_per_token = 4096;
  return m;
}

NodeCapabilities Caps(uint64_t memory_mib, double bandwidth = 20e9) {
  NodeCapabilities c;
  c.memory_bytes = memory_mib * kMiB;
  c.total_memory_bytes = c.memory_bytes * 2;
  c.memory_bandwidth_bytes_per_second = bandwidth;
  c.device_kind = "cpu-test";
  return c;
}

MembershipState Fleet(std::vector<std::tuple<std::string, uint64_t, PeerState>> peers) {
  MembershipState state;
  state.self.node_id = "self";
  for (const auto& [id, memory, peer_state] : peers) {
    PeerRecord& p = state.peers[id];
    p.instance.node_id = id;
    p.grpc_address = absl::StrCat("10.0.0.", state.peers.size(), ":52416");
    p.state = peer_state;
    p.capabilities = Caps(memory);
  }
  return state;
}

TEST(ClusterPlan, UsesOnlyUpPeersAndTheirAddresses) {
  const MembershipState state = Fleet(
      {{"a", 500, PeerState::kUp}, {"b", 500, PeerState::kUp}, {"gone", 100000, PeerState::kDown}});
  auto plan = PlanCluster(state, Caps(400), "10.0.0.9:52416", EightLayerModel(), {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->plan.stages.size(), plan->addresses.size());
  EXPECT_GE(plan->plan.stages.size(), 2u);  // no node holds ~915 MiB
  ASSERT_EQ(plan->devices.size(), 3u);      // self, a, b: not the down peer
  for (size_t i = 0; i < plan->plan.stages.size(); ++i) {
    const std::string& node = plan->plan.stages[i].node_id;
    EXPECT_NE(node, "gone");
    const std::string want = node == "self" ? "10.0.0.9:52416" : state.peers.at(node).grpc_address;
    EXPECT_EQ(plan->addresses[i], want);
  }
  EXPECT_TRUE(partition::ValidatePlan(plan->plan, EightLayerModel(), plan->devices).ok());
  EXPECT_TRUE(PlanNodesUp(plan->plan, state));
  EXPECT_NE(DescribeClusterPlan(*plan).find("layers 0-"), std::string::npos);
}

TEST(ClusterPlan, AModelThatFitsOnThisNodeStaysHere) {
  const MembershipState state = Fleet({});
  auto plan = PlanCluster(state, Caps(4000), "127.0.0.1:1", EightLayerModel(), {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->plan.stages.size(), 1u);
  EXPECT_EQ(plan->plan.stages[0].node_id, "self");
  EXPECT_EQ(plan->addresses[0], "127.0.0.1:1");
}

// Requests start on this node: a peer as fast as this node that could hold the model alone would
// only add a hop, so the model stays here.
TEST(ClusterPlan, AnEquallyFastPeerDoesNotTakeTheModelAway) {
  for (const char* peer : {"a", "z"}) {  // sorted before and after "self"
    const MembershipState state = Fleet({{peer, 4000, PeerState::kUp}});
    auto plan = PlanCluster(state, Caps(4000), "127.0.0.1:1", EightLayerModel(), {});
    ASSERT_TRUE(plan.ok()) << plan.status();
    ASSERT_EQ(plan->plan.stages.size(), 1u) << peer;
    EXPECT_EQ(plan->plan.stages[0].node_id, "self") << peer;
  }
}

TEST(ClusterPlan, SaysHowMuchIsMissingWhenNothingFits) {
  const MembershipState state = Fleet({{"a", 200, PeerState::kUp}});
  auto plan = PlanCluster(state, Caps(200), "127.0.0.1:1", EightLayerModel(), {});
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(plan.status().message(), HasSubstr("missing"));
  EXPECT_THAT(plan.status().message(), HasSubstr("--memory_limit"));
}

TEST(ClusterPlan, NoticesAStageWhoseNodeWentDown) {
  MembershipState state = Fleet({{"a", 600, PeerState::kUp}, {"b", 600, PeerState::kUp}});
  auto plan = PlanCluster(state, Caps(100), "127.0.0.1:1", EightLayerModel(), {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_TRUE(PlanNodesUp(plan->plan, state));
  for (const auto& stage : plan->plan.stages) {
    if (stage.node_id == "self") continue;
    MembershipState after = state;
    after.peers[stage.node_id].state = PeerState::kLeft;
    EXPECT_FALSE(PlanNodesUp(plan->plan, after)) << stage.node_id;
    after.peers.erase(stage.node_id);
    EXPECT_FALSE(PlanNodesUp(plan->plan, after)) << stage.node_id;
  }
}

TEST(ClusterPlan, ReplanAfterAJoinKeepsAPlanThatStillWorks) {
  const MembershipState before = Fleet({{"a", 600, PeerState::kUp}});
  auto first = PlanCluster(before, Caps(600), "127.0.0.1:1", EightLayerModel(), {});
  ASSERT_TRUE(first.ok()) << first.status();
  MembershipState after = before;
  PeerRecord& joined = after.peers["c"];
  joined.instance.node_id = "c";
  joined.grpc_address = "10.0.0.3:52416";
  joined.state = PeerState::kUp;
  joined.capabilities = Caps(600);
  ClusterPlanOptions options;
  options.previous = first->plan;
  auto second = PlanCluster(after, Caps(600), "127.0.0.1:1", EightLayerModel(), options);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(partition::MovedBytes(first->plan, second->plan, EightLayerModel()), 0u);
}

TEST(LocalAddressToward, FindsTheLoopbackRouteAndFallsBack) {
  EXPECT_EQ(LocalAddressToward("127.0.0.1", 52416, "fallback"), "127.0.0.1:52416");
  EXPECT_EQ(LocalAddressToward("", 52416, "fallback"), "fallback");
  EXPECT_EQ(LocalAddressToward("not-an-address", 52416, "fallback"), "fallback");
}

// ---- The API's pipeline backend
// -------------------------------------------------------------------

constexpr int kLayers = 4;

struct LoopbackStage {
  LoopbackStage(const std::string& model_path, PeerAuthenticator* auth,
                std::function<void(grpc::ClientContext&)> authorize)
      : handler(Options(model_path, std::move(authorize)), auth), service("test-node", &handler) {
    auto started = StartServer(&service, "127.0.0.1", 0);
    EXPECT_TRUE(started.ok()) << started.status();
    server = std::move(started->server);
    address = absl::StrCat("127.0.0.1:", started->port);
  }
  ~LoopbackStage() { Stop(); }
  void Stop() {
    if (server != nullptr) server->Shutdown(absl::ToChronoTime(absl::Now()));
    server.reset();
  }
  static ShardHandlerOptions Options(const std::string& model_path,
                                     std::function<void(grpc::ClientContext&)> authorize) {
    ShardHandlerOptions o;
    o.model_path = model_path;
    o.threads = 1;
    o.authorize_outgoing = std::move(authorize);
    return o;
  }
  ShardHandler handler;
  StageNodeService service;
  std::unique_ptr<grpc::Server> server;
  std::string address;
};

class PipelineBackendTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    runtime::synthetic::SyntheticModelOptions o;
    o.arch = "llama";
    o.n_layer = kLayers;
    o.vocab_size = 80;
    o.context_length = 128;
    dir_ = new std::string(absl::StrCat(::testing::TempDir(), "/backend_test_", getpid()));
    std::filesystem::create_directories(*dir_);
    path_ = new std::string(*dir_ + "/model.gguf");
    ASSERT_TRUE(runtime::synthetic::WriteSyntheticModel(o, *path_).ok());
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
    delete path_;
  }

  // Two stages with a shared key, and a backend over them.
  void SetUp() override {
    for (int i = 0; i < 2; ++i) {
      stages_.push_back(std::make_unique<LoopbackStage>(
          *path_, &auth_, DataPathAuthorizer(key_, absl::StrCat("stage-", i))));
    }
    auto pipeline = Pipeline::Connect(Options(StageAddresses(), 7));
    ASSERT_TRUE(pipeline.ok()) << pipeline.status();
    backend_ = PipelineBackend::Create(*std::move(pipeline), BackendOptions());
  }
  std::vector<std::string> StageAddresses() const {
    std::vector<std::string> addresses;
    for (const auto& s : stages_) addresses.push_back(s->address);
    return addresses;
  }
  // A pipeline over `stages` that proves the test key: 64 positions, 2 sequences, 4-token chunks.
  PipelineOptions Options(std::vector<std::string> stages, uint64_t epoch) const {
    PipelineOptions po;
    po.stages = std::move(stages);
    po.model = *ComputeModelIdentity(*path_);
    po.n_layer = kLayers;
    po.n_vocab = 80;
    po.plan_epoch = epoch;
    po.context = 64;
    po.max_sequences = 2;
    po.prefill_chunk = 4;
    po.authorize = DataPathAuthorizer(key_, "coordinator");
    return po;
  }
  static PipelineBackendOptions BackendOptions() {
    PipelineBackendOptions bo;
    bo.max_sequences = 2;
    bo.max_queue = 2;
    bo.context = 64;
    bo.vocab_size = 80;
    bo.is_end_of_generation = [](int32_t) { return false; };
    return bo;
  }
  // Replaces the backend with one built with `bo` over a fresh pipeline (epoch `epoch`) whose
  // 8-token prefill chunks leave room for drafts after the last token.
  void RestartForDrafts(uint64_t epoch, PipelineBackendOptions bo) {
    backend_.reset();
    PipelineOptions po = Options(StageAddresses(), epoch);
    po.prefill_chunk = 8;
    auto pipeline = Pipeline::Connect(po);
    ASSERT_TRUE(pipeline.ok()) << pipeline.status();
    backend_ = PipelineBackend::Create(*std::move(pipeline), std::move(bo));
  }
  void TearDown() override {
    backend_.reset();
    stages_.clear();
  }

  static std::vector<int32_t> SingleNode(const std::vector<int32_t>& prompt, int n) {
    auto file = runtime::GgufFile::Open(*path_);
    runtime::StageOptions so;
    so.layers = {0, kLayers};
    so.context = 64;
    so.max_batch_tokens = 4;
    auto stage = runtime::Stage::Create(**file, so);
    std::vector<int32_t> history = prompt;
    runtime::GenerateOptions go;
    go.max_tokens = n;
    go.sampling.temperature = 0;
    EXPECT_TRUE(runtime::Generate(**stage, 0, history, go, [](int32_t) { return true; }).ok());
    return std::vector<int32_t>(history.begin() + prompt.size(), history.end());
  }

  // Waits for the sequence to end; returns its tokens.
  static std::vector<int32_t> Drain(Sequence& sequence) {
    std::vector<TokenEvent> events;
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (sequence.Wait(&events, absl::Milliseconds(100)) != Sequence::State::kFinished &&
           absl::Now() < deadline) {
    }
    std::vector<int32_t> tokens;
    for (const TokenEvent& e : events) tokens.push_back(e.token);
    return tokens;
  }

  static EngineRequest Greedy(std::vector<int32_t> prompt, int n) {
    EngineRequest r;
    r.prompt = std::move(prompt);
    r.max_tokens = n;
    r.sampling.temperature = 0;
    return r;
  }

  const ClusterKey key_ = *ClusterKey::FromString("test-cluster");
  ClusterKeyAuthenticator auth_{key_};
  std::vector<std::unique_ptr<LoopbackStage>> stages_;
  std::unique_ptr<PipelineBackend> backend_;
  static std::string* dir_;
  static std::string* path_;
};

std::string* PipelineBackendTest::dir_ = nullptr;
std::string* PipelineBackendTest::path_ = nullptr;

TEST_F(PipelineBackendTest, ConcurrentRequestsEqualTheSingleNode) {
  const std::vector<std::vector<int32_t>> prompts = {
      {1, 5, 9, 13, 2}, {3, 3, 70, 12, 44, 6, 7}, {10}, {22, 23, 24, 25, 26, 27, 28, 29, 30}};
  std::vector<std::shared_ptr<Sequence>> sequences;
  for (const auto& prompt : prompts) {  // two run, two wait in the queue
    auto sequence = backend_->Submit(Greedy(prompt, 12));
    ASSERT_TRUE(sequence.ok()) << sequence.status();
    sequences.push_back(*sequence);
  }
  for (size_t i = 0; i < prompts.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(Drain(*sequences[i]), SingleNode(prompts[i], 12));
    EXPECT_EQ(sequences[i]->finish_reason(), FinishReason::kLength) << sequences[i]->error();
    EXPECT_EQ(sequences[i]->prompt_tokens(), static_cast<int32_t>(prompts[i].size()));
  }
  const EngineStats stats = backend_->stats();
  EXPECT_EQ(stats.generated_tokens, 48);
  EXPECT_EQ(stats.finished_sequences, 4);
  EXPECT_EQ(stats.running, 0);
  EXPECT_EQ(stats.queued, 0);
}

TEST_F(PipelineBackendTest, RefusesBadRequestsAndBoundsTheQueue) {
  EXPECT_EQ(backend_->Submit(Greedy({}, 4)).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend_->Submit(Greedy({80}, 4)).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend_->Submit(Greedy(std::vector<int32_t>(64, 1), 4)).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<std::shared_ptr<Sequence>> accepted;
  absl::Status refused;
  for (int i = 0; i < 10 && refused.ok(); ++i) {
    auto sequence = backend_->Submit(Greedy({1, 2, 3}, 40));
    if (sequence.ok()) {
      accepted.push_back(*sequence);
    } else {
      refused = sequence.status();
    }
  }
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_LE(accepted.size(), 4u);  // 2 slots + 2 queued
  EXPECT_GE(backend_->stats().rejected_sequences, 1);
  for (auto& sequence : accepted) sequence->Cancel();
  for (auto& sequence : accepted) Drain(*sequence);
}

TEST_F(PipelineBackendTest, CancelFreesTheSlot) {
  auto first = backend_->Submit(Greedy({1, 2, 3}, 50));
  auto second = backend_->Submit(Greedy({4, 5, 6}, 50));
  ASSERT_TRUE(first.ok() && second.ok());
  (*first)->Cancel();
  (*second)->Cancel();
  Drain(**first);
  Drain(**second);
  EXPECT_EQ((*first)->finish_reason(), FinishReason::kCancelled);
  EXPECT_EQ((*second)->finish_reason(), FinishReason::kCancelled);
  // Both slots are free again on every stage: two new sequences run to the end.
  auto third = backend_->Submit(Greedy({7, 8}, 6));
  auto fourth = backend_->Submit(Greedy({9}, 6));
  ASSERT_TRUE(third.ok() && fourth.ok());
  EXPECT_EQ(Drain(**third), SingleNode({7, 8}, 6));
  EXPECT_EQ(Drain(**fourth), SingleNode({9}, 6));
}

TEST_F(PipelineBackendTest, AStageThatGoesAwayEndsSequencesWithAnError) {
  auto running = backend_->Submit(Greedy({1, 2, 3}, 60));
  ASSERT_TRUE(running.ok());
  stages_[0]->Stop();
  Drain(**running);
  EXPECT_EQ((*running)->finish_reason(), FinishReason::kError);
  EXPECT_FALSE((*running)->error().ok());
  EXPECT_EQ(backend_->broken().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(backend_->Submit(Greedy({1}, 2)).status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(PipelineBackendTest, AStageThatCannotReachTheNextEndsSequencesWithAnError) {
  // The first stage holds no key for its outgoing calls: the second refuses its stream, and the
  // sequences in flight end with an error instead of waiting forever.
  LoopbackStage keyless(*path_, &auth_, nullptr);
  auto pipeline = Pipeline::Connect(Options({keyless.address, stages_[1]->address}, 8));
  ASSERT_TRUE(pipeline.ok()) << pipeline.status();
  auto backend = PipelineBackend::Create(*std::move(pipeline), BackendOptions());
  auto first = backend->Submit(Greedy({1, 2, 3}, 8));
  auto second = backend->Submit(Greedy({4, 5}, 8));
  ASSERT_TRUE(first.ok() && second.ok());
  for (auto* sequence : {&*first, &*second}) {
    EXPECT_TRUE(Drain(**sequence).empty());
    EXPECT_EQ((*sequence)->finish_reason(), FinishReason::kError);
    EXPECT_THAT(std::string((*sequence)->error().message()), HasSubstr("next stage"));
  }
}

TEST_F(PipelineBackendTest, PromptLookupThroughThePipelineKeepsGreedyOutput) {
  PipelineBackendOptions bo = BackendOptions();
  bo.make_drafter = [](const runtime::SamplingParams&) {
    return std::make_unique<runtime::NgramDrafter>(runtime::NgramOptions{});
  };
  bo.speculative.draft_max = 4;
  ASSERT_NO_FATAL_FAILURE(RestartForDrafts(9, bo));
  // Repetitive prompts, so prompt lookup finds drafts.
  const std::vector<std::vector<int32_t>> prompts = {{5, 6, 7, 8, 5, 6, 7, 8, 5, 6},
                                                     {11, 12, 11, 12, 11, 12, 11}};
  std::vector<std::shared_ptr<Sequence>> sequences;
  for (const auto& prompt : prompts) sequences.push_back(*backend_->Submit(Greedy(prompt, 20)));
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(Drain(*sequences[i]), SingleNode(prompts[i], 20)) << i;
  }
  const EngineStats stats = backend_->stats();
  EXPECT_GT(stats.speculative_passes, 0);
  EXPECT_GT(stats.speculative_drafted, 0);
  EXPECT_LE(stats.speculative_accepted, stats.speculative_drafted);
  EXPECT_EQ(stats.generated_tokens, 40);
}

// serve --draft_model: one shared draft model, a KV slot per sequence that drafts. The model
// drafts for itself here, so its drafts are the target's greedy choices.
std::shared_ptr<DraftModelPool> LoadDraftPool(const std::string& draft, const std::string& target,
                                              int32_t slots) {
  auto file = runtime::GgufFile::Open(target);
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return nullptr;
  auto tokenizer = runtime::Tokenizer::FromGguf(**file);
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  if (!tokenizer.ok()) return nullptr;
  DraftModelPoolOptions o;
  o.path = draft;
  o.slots = slots;
  o.context = 64;
  o.threads = 1;
  o.batch = 16;
  o.min_confidence = 0.0f;  // always draft, so every pass carries drafts
  auto pool = DraftModelPool::Load(o, **tokenizer);
  EXPECT_TRUE(pool.ok()) << pool.status();
  return pool.ok() ? *pool : nullptr;
}

TEST_F(PipelineBackendTest, DraftModelThroughThePipelineKeepsGreedyOutput) {
  // One draft slot for two sequences in flight: the second runs without drafts, and the slot is
  // free again for the third.
  std::shared_ptr<DraftModelPool> pool = LoadDraftPool(*path_, *path_, 1);
  ASSERT_NE(pool, nullptr);
  PipelineBackendOptions bo = BackendOptions();
  bo.make_drafter = [pool](const runtime::SamplingParams& sampling) {
    return pool->Acquire(sampling);
  };
  bo.speculative.draft_max = 4;
  bo.speculative.adaptive = false;  // 4 drafts every pass
  ASSERT_NO_FATAL_FAILURE(RestartForDrafts(11, bo));
  const std::vector<std::vector<int32_t>> prompts = {{1, 5, 9, 13, 2}, {3, 3, 70, 12, 44}};
  std::vector<std::shared_ptr<Sequence>> sequences;
  for (const auto& prompt : prompts) sequences.push_back(*backend_->Submit(Greedy(prompt, 20)));
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(Drain(*sequences[i]), SingleNode(prompts[i], 20)) << i;
    EXPECT_EQ(sequences[i]->finish_reason(), FinishReason::kLength) << sequences[i]->error();
  }
  const EngineStats two = backend_->stats();
  EXPECT_GT(two.speculative_passes, 0);
  EXPECT_GT(two.speculative_drafted, 0);
  EXPECT_GT(two.speculative_accepted, 0);
  EXPECT_LE(two.speculative_accepted, two.speculative_drafted);
  // Only the sequence with the slot counts passes, and it took several tokens per pass.
  EXPECT_LT(two.speculative_passes, 20);
  EXPECT_EQ(two.generated_tokens, 40);

  auto third = backend_->Submit(Greedy({22, 23, 24}, 12));
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(Drain(**third), SingleNode({22, 23, 24}, 12));
  EXPECT_GT(backend_->stats().speculative_drafted, two.speculative_drafted);
}

TEST_F(PipelineBackendTest, DraftModelFreesItsSlotsWhenSequencesEnd) {
  std::shared_ptr<DraftModelPool> pool = LoadDraftPool(*path_, *path_, 2);
  ASSERT_NE(pool, nullptr);
  runtime::SamplingParams greedy;
  greedy.temperature = 0;
  auto first = pool->Acquire(greedy);
  auto second = pool->Acquire(greedy);
  ASSERT_NE(first, nullptr);
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(pool->Acquire(greedy), nullptr);  // both slots drafting
  second.reset();
  auto again = pool->Acquire(greedy);
  ASSERT_NE(again, nullptr);
  // Each slot keeps its own cache: drafting on one does not disturb the other.
  runtime::DraftProposal a, b;
  ASSERT_TRUE(first->Draft(std::vector<int32_t>{1, 5, 9}, 3, a).ok());
  ASSERT_TRUE(again->Draft(std::vector<int32_t>{3, 3, 70, 12}, 3, b).ok());
  runtime::DraftProposal a2;
  ASSERT_TRUE(first->Draft(std::vector<int32_t>{1, 5, 9}, 3, a2).ok());
  EXPECT_EQ(a.tokens, a2.tokens);
  EXPECT_TRUE(a.deterministic());  // one-hot proposals: only ids travel
  // A context that fills the draft's cache gets no proposals instead of an error.
  runtime::DraftProposal full;
  ASSERT_TRUE(first->Draft(std::vector<int32_t>(64, 7), 3, full).ok());
  EXPECT_TRUE(full.tokens.empty());
  // The pool outlives its owner while a drafter holds it.
  pool.reset();
  ASSERT_TRUE(first->Draft(std::vector<int32_t>{1, 5, 9, 2}, 2, a).ok());
}

TEST_F(PipelineBackendTest, DraftModelWithAnotherVocabularyIsRefused) {
  runtime::synthetic::SyntheticModelOptions o;
  o.arch = "llama";
  o.n_layer = 1;
  o.vocab_size = 300;
  o.tokenizer = runtime::synthetic::SyntheticTokenizer::kGpt2;
  const std::string other = *dir_ + "/other_vocab.gguf";
  ASSERT_TRUE(runtime::synthetic::WriteSyntheticModel(o, other).ok());
  auto file = runtime::GgufFile::Open(*path_);
  ASSERT_TRUE(file.ok());
  auto tokenizer = runtime::Tokenizer::FromGguf(**file);
  ASSERT_TRUE(tokenizer.ok());
  DraftModelPoolOptions d;
  d.path = other;
  d.slots = 1;
  d.context = 64;
  d.threads = 1;
  const auto pool = DraftModelPool::Load(d, **tokenizer);
  ASSERT_FALSE(pool.ok());
  EXPECT_EQ(pool.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(pool.status().message()), HasSubstr("cannot draft for this model"));
  EXPECT_THAT(std::string(pool.status().message()), HasSubstr(other));
  d.path = *dir_ + "/missing.gguf";
  const auto missing = DraftModelPool::Load(d, **tokenizer);
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("draft model"));
}

TEST_F(PipelineBackendTest, StagesRefuseCallersWithoutTheKey) {
  PipelineOptions po = Options({stages_[0]->address}, 10);
  po.authorize = DataPathAuthorizer(*ClusterKey::FromString("another-cluster"), "stranger");
  auto pipeline = Pipeline::Connect(po);
  ASSERT_FALSE(pipeline.ok());
  EXPECT_EQ(pipeline.status().code(), absl::StatusCode::kUnauthenticated);
  po.authorize = nullptr;
  EXPECT_EQ(Pipeline::Connect(po).status().code(), absl::StatusCode::kUnauthenticated);
}

}  // namespace
}  // namespace exo::node
