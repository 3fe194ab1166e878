// The data path over real gRPC on loopback, in one process: stages served by ShardHandler behind
// a minimal NodeService, driven by the coordinator's Pipeline, on a tiny synthetic model.
#include "node/pipeline.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "node/shard_handler.h"
#include "node/stage_server.h"
#include "node/tensor_fetch.h"
#include "node/wire.h"
#include "runtime/generator.h"
#include "runtime/gguf.h"
#include "runtime/model_config.h"
#include "runtime/speculative.h"
#include "speculative_testlib.h"
#include "synthetic_model_testlib.h"

namespace exo::node {
namespace {

using ::testing::HasSubstr;

constexpr int kLayers = 6;
constexpr uint64_t kEpoch = 3;

// One stage process, in-process: a ShardHandler behind a NodeService on a loopback port.
struct TestStage {
  TestStage(ShardHandlerOptions options, PeerAuthenticator* auth)
      : handler(std::move(options), auth), service("test-node", &handler) {
    auto started = StartServer(&service, "127.0.0.1", 0);
    EXPECT_TRUE(started.ok()) << started.status();
    server = std::move(started->server);
    address = absl::StrCat("127.0.0.1:", started->port);
  }
  ~TestStage() { server->Shutdown(); }
  ShardHandler handler;
  StageNodeService service;
  std::unique_ptr<grpc::Server> server;
  std::string address;
};

class PipelineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    runtime::synthetic::SyntheticModelOptions o;
    o.arch = "gemma3";
    o.n_layer = kLayers;
    o.vocab_size = 96;
    o.context_length = 128;
    dir_ = new std::string(absl::StrCat(::testing::TempDir(), "/pipeline_test_", getpid()));
    std::filesystem::create_directories(*dir_);
    path_ = new std::string(*dir_ + "/model.gguf");
    ASSERT_TRUE(runtime::synthetic::WriteSyntheticModel(o, *path_).ok());
    identity_ = new ModelIdentity(*ComputeModelIdentity(*path_));
    // A smaller model with the same vocabulary, as a draft model on the coordinator.
    o.n_layer = 2;
    o.seed = 43;
    draft_path_ = new std::string(*dir_ + "/draft.gguf");
    ASSERT_TRUE(runtime::synthetic::WriteSyntheticModel(o, *draft_path_).ok());
    // For the distribution tests: a llama pair, flatter than the gemma3 one at temperature 1.5.
    runtime::synthetic::SyntheticModelOptions l;
    l.arch = "llama";
    l.n_layer = 3;
    l.seed = 42;
    llama_path_ = new std::string(*dir_ + "/llama.gguf");
    ASSERT_TRUE(runtime::synthetic::WriteSyntheticModel(l, *llama_path_).ok());
    llama_identity_ = new ModelIdentity(*ComputeModelIdentity(*llama_path_));
    l.n_layer = 1;
    l.seed = 43;
    llama_draft_path_ = new std::string(*dir_ + "/llama_draft.gguf");
    ASSERT_TRUE(runtime::synthetic::WriteSyntheticModel(l, *llama_draft_path_).ok());
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
    delete path_;
    delete identity_;
    delete draft_path_;
    delete llama_path_;
    delete llama_identity_;
    delete llama_draft_path_;
  }

  std::unique_ptr<TestStage> MakeStage(PeerAuthenticator* auth = nullptr,
                                       std::string fetch_from = "") {
    ShardHandlerOptions o;
    if (fetch_from.empty()) o.model_path = *path_;
    o.fetch_from = fetch_from;
    o.models_dir = absl::StrCat(*dir_, "/models-", stage_count_++);
    o.threads = 1;
    return std::make_unique<TestStage>(std::move(o), auth ? auth : &allow_all_);
  }

  std::unique_ptr<TestStage> MakeStageOf(const std::string& model_path) {
    ShardHandlerOptions o;
    o.model_path = model_path;
    o.models_dir = absl::StrCat(*dir_, "/models-", stage_count_++);
    o.threads = 1;
    return std::make_unique<TestStage>(std::move(o), &allow_all_);
  }

  PipelineOptions Options(const std::vector<std::unique_ptr<TestStage>>& stages) {
    PipelineOptions o;
    for (const auto& s : stages) o.stages.push_back(s->address);
    o.model = *identity_;
    o.n_layer = kLayers;
    o.plan_epoch = kEpoch;
    o.context = 64;
    o.max_sequences = 4;
    o.prefill_chunk = 4;  // several chunks per prompt
    return o;
  }

  // Tokens from the runtime's single-node generator (greedy unless `sampling` is given).
  static std::vector<int32_t> SingleNode(const std::vector<int32_t>& prompt, int n,
                                         const runtime::SamplingParams* sampling = nullptr) {
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
    if (sampling != nullptr) go.sampling = *sampling;
    EXPECT_TRUE(runtime::Generate(**stage, 0, history, go, [](int32_t) { return true; }).ok());
    return std::vector<int32_t>(history.begin() + prompt.size(), history.end());
  }

  static SequenceRequest Greedy(std::vector<int32_t> prompt, int n) {
    SequenceRequest r;
    r.prompt = std::move(prompt);
    r.max_tokens = n;
    r.sampling.temperature = 0;
    return r;
  }

  // Token frequencies of 6000 seeded 3-token sequences sampled over a 2-stage pipeline with
  // speculation, against the target's exact distribution (docs/speculative.md).
  void ExpectSampledTokensFollowTheTarget(bool draft_model);

  AllowAllPeers allow_all_;
  int stage_count_ = 0;
  static std::string* dir_;
  static std::string* path_;
  static ModelIdentity* identity_;
  static std::string* draft_path_;
  static std::string* llama_path_;
  static ModelIdentity* llama_identity_;
  static std::string* llama_draft_path_;
};

std::string* PipelineTest::dir_ = nullptr;
std::string* PipelineTest::path_ = nullptr;
ModelIdentity* PipelineTest::identity_ = nullptr;
std::string* PipelineTest::draft_path_ = nullptr;
std::string* PipelineTest::llama_path_ = nullptr;
ModelIdentity* PipelineTest::llama_identity_ = nullptr;
std::string* PipelineTest::llama_draft_path_ = nullptr;

const std::vector<int32_t> kPrompt = {1, 17, 42, 5, 9, 33, 60, 2, 11, 4};

TEST_F(PipelineTest, TwoAndThreeStagesMatchTheSingleNode) {
  const std::vector<int32_t> expected = SingleNode(kPrompt, 16);
  ASSERT_EQ(expected.size(), 16u);
  for (int n : {1, 2, 3}) {
    SCOPED_TRACE(absl::StrCat(n, " stages"));
    std::vector<std::unique_ptr<TestStage>> stages;
    for (int i = 0; i < n; ++i) stages.push_back(MakeStage());
    auto pipeline = Pipeline::Connect(Options(stages));
    ASSERT_TRUE(pipeline.ok()) << pipeline.status();
    SequenceStats stats;
    auto tokens = (*pipeline)->Generate(Greedy(kPrompt, 16), &stats);
    ASSERT_TRUE(tokens.ok()) << tokens.status();
    EXPECT_EQ(*tokens, expected);
    EXPECT_EQ(stats.generated_tokens, 16);
  }
  // Uneven ranges given explicitly.
  std::vector<std::unique_ptr<TestStage>> stages;
  for (int i = 0; i < 3; ++i) stages.push_back(MakeStage());
  PipelineOptions o = Options(stages);
  o.layers = {{0, 1}, {1, 5}, {5, 6}};
  auto pipeline = Pipeline::Connect(o);
  ASSERT_TRUE(pipeline.ok()) << pipeline.status();
  auto tokens = (*pipeline)->Generate(Greedy(kPrompt, 16));
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_EQ(*tokens, expected);
}

TEST_F(PipelineTest, SeededSamplingMatchesTheSingleNode) {
  runtime::SamplingParams sampling;
  sampling.temperature = 30.0f;  // the synthetic model is very sure of itself
  sampling.top_k = 0;
  sampling.top_p = 1.0f;
  sampling.min_p = 0.0f;
  sampling.repetition_penalty = 1.3f;
  sampling.seed = 77;
  const std::vector<int32_t> expected = SingleNode(kPrompt, 24, &sampling);
  std::vector<std::unique_ptr<TestStage>> stages;
  for (int i = 0; i < 3; ++i) stages.push_back(MakeStage());
  auto pipeline = Pipeline::Connect(Options(stages));  // prompt in 3 chunks of 4
  ASSERT_TRUE(pipeline.ok()) << pipeline.status();
  SequenceRequest r = Greedy(kPrompt, 24);
  r.sampling = sampling;
  auto tokens = (*pipeline)->Generate(std::move(r));
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_EQ(*tokens, expected);
  sampling.seed = 78;  // and the seed matters
  EXPECT_NE(SingleNode(kPrompt, 24, &sampling), expected);
}

TEST_F(PipelineTest, ConcurrentSequencesMatchRunningAlone) {
  const std::vector<std::vector<int32_t>> prompts = {
      {1, 5, 9}, {2, 7, 11, 13, 17, 19}, {3}, {4, 8, 15, 16, 23, 42, 7, 7, 1}};
  std::vector<std::vector<int32_t>> alone;
  for (const auto& p : prompts) alone.push_back(SingleNode(p, 12));
  std::vector<std::unique_ptr<TestStage>> stages;
  for (int i = 0; i < 2; ++i) stages.push_back(MakeStage());
  auto pipeline = Pipeline::Connect(Options(stages));
  ASSERT_TRUE(pipeline.ok()) << pipeline.status();
  std::vector<std::vector<int32_t>> got(prompts.size());
  std::vector<std::unique_ptr<absl::Notification>> done;
  std::vector<absl::Status> status(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    done.push_back(std::make_unique<absl::Notification>());
    SequenceRequest r = Greedy(prompts[i], 12);
    r.on_token = [&got, i](const SampledToken& t) {
      got[i].push_back(t.token);
      return true;
    };
    r.on_done = [&status, &done, i](const absl::Status& s, const SequenceStats&) {
      status[i] = s;
      done[i]->Notify();
    };
    ASSERT_TRUE((*pipeline)->Start(std::move(r)).ok());
  }
  // A fifth sequence finds every slot busy.
  EXPECT_EQ((*pipeline)->Start(Greedy({1}, 1)).status().code(),
            absl::StatusCode::kResourceExhausted);
  for (size_t i = 0; i < prompts.size(); ++i) {
    done[i]->WaitForNotification();
    EXPECT_TRUE(status[i].ok()) << status[i];
  }
  EXPECT_EQ(got, alone);
  // Slots were freed: the pipeline runs another round.
  auto again = (*pipeline)->Generate(Greedy(prompts[0], 12));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, alone[0]);
}

TEST_F(PipelineTest, RunsToMaxTokensWithoutATokenCallback) {
  std::vector<std::unique_ptr<TestStage>> stages;
  for (int i = 0; i < 2; ++i) stages.push_back(MakeStage());
  auto pipeline = Pipeline::Connect(Options(stages));
  ASSERT_TRUE(pipeline.ok()) << pipeline.status();
  absl::Notification done;
  SequenceStats stats;
  absl::Status status;
  SequenceRequest r = Greedy(kPrompt, 9);
  r.on_done = [&](const absl::Status& s, const SequenceStats& st) {
    status = s;
    stats = st;
    done.Notify();
  };
  ASSERT_TRUE((*pipeline)->Start(std::move(r)).ok());
  done.WaitForNotification();
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(stats.generated_tokens, 9);
  EXPECT_EQ(stats.prompt_tokens, static_cast<int>(kPrompt.size()));
}

// Sends frames on a raw Forward stream to a loaded last stage.
class RawStream {
 public:
  RawStream(const std::string& address, const std::string& token = "")
      : stub_(v1::NodeService::NewStub(MakePeerChannel(address))) {
    if (!token.empty()) context_.AddMetadata(kSessionTokenMetadataKey, token);
    stream_ = stub_->Forward(&context_);
  }
  v1::ForwardResult RoundTrip(const v1::ForwardFrame& frame) {
    v1::ForwardResult result;
    EXPECT_TRUE(stream_->Write(frame));
    EXPECT_TRUE(stream_->Read(&result));
    return result;
  }
  void Send(const v1::ForwardFrame& frame) { EXPECT_TRUE(stream_->Write(frame)); }
  grpc::Status Close() {
    stream_->WritesDone();
    v1::ForwardResult ignored;
    while (stream_->Read(&ignored)) {
    }
    return stream_->Finish();
  }

 private:
  std::unique_ptr<v1::NodeService::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::ForwardFrame, v1::ForwardResult>> stream_;
};

v1::ForwardFrame HiddenFrame(uint64_t id, int32_t pos, int32_t n) {
  v1::ForwardFrame f;
  f.set_sequence_id(id);
  f.set_plan_epoch(kEpoch);
  f.set_first_position(pos);
  f.set_token_count(n);
  f.set_dtype(v1::DTYPE_F32);
  f.add_shape(n);
  f.add_shape(64);
  std::vector<float> values(size_t(n) * 64);
  for (size_t i = 0; i < values.size(); ++i) values[i] = 0.01f * float(i % 17);
  f.set_hidden(values.data(), values.size() * 4);
  for (int i = 0; i < n; ++i) f.add_tokens(1 + i);
  return f;
}

absl::Status LoadLast(const std::string& address, const ModelIdentity& identity,
                      const std::string& token = "") {
  auto stub = v1::NodeService::NewStub(MakePeerChannel(address));
  grpc::ClientContext ctx;
  if (!token.empty()) ctx.AddMetadata(kSessionTokenMetadataKey, token);
  v1::LoadShardRequest r;
  r.set_plan_epoch(kEpoch);
  IdentityToProto(identity, r.mutable_model());
  r.set_layer_begin(3);
  r.set_layer_end(kLayers);
  r.set_has_head(true);
  r.set_context_length(64);
  r.set_max_sequences(2);
  v1::LoadShardResponse response;
  return FromGrpcStatus(stub->LoadShard(&ctx, r, &response));
}

TEST_F(PipelineTest, BadFramesGetClearStatusesAndTheStageKeepsServing) {
  auto stage = MakeStage();
  {
    RawStream early(stage->address);
    v1::ForwardResult r = early.RoundTrip(HiddenFrame(1, 0, 2));
    EXPECT_EQ(r.error_code(), int(absl::StatusCode::kFailedPrecondition));
    EXPECT_THAT(r.error_message(), HasSubstr("send LoadShard first"));
    EXPECT_TRUE(early.Close().ok());
  }
  ASSERT_TRUE(LoadLast(stage->address, *identity_).ok());
  ModelIdentity other = *identity_;
  other.sha256[0] ^= 1;
  EXPECT_THAT(std::string(LoadLast(stage->address, other).message()),
              HasSubstr("give this node the same file"));
  ASSERT_TRUE(LoadLast(stage->address, *identity_).ok());

  RawStream stream(stage->address);
  struct Case {
    const char* name;
    std::function<void(v1::ForwardFrame&)> corrupt;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"epoch", [](v1::ForwardFrame& f) { f.set_plan_epoch(kEpoch + 1); }, "plan epoch 4"},
      {"shape", [](v1::ForwardFrame& f) { f.set_shape(1, 63); }, "shape must be [2, 64]"},
      {"dtype", [](v1::ForwardFrame& f) { f.set_dtype(v1::DTYPE_Q8_0); },
       "unsupported hidden dtype 4"},
      {"bytes", [](v1::ForwardFrame& f) { f.mutable_hidden()->append("xyz"); }, "got 515"},
      {"positions", [](v1::ForwardFrame& f) { f.set_first_position(5); }, "start it at position 0"},
      {"draft count", [](v1::ForwardFrame& f) { f.add_draft_tokens(5); },
       "carries exactly one token id before them"},
      {"draft id",
       [](v1::ForwardFrame& f) {
         f.clear_tokens();
         f.add_tokens(1);
         f.add_draft_tokens(500);
       },
       "draft token id 500 is outside the vocabulary"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    v1::ForwardFrame f = HiddenFrame(1, 0, 2);
    c.corrupt(f);
    v1::ForwardResult r = stream.RoundTrip(f);
    EXPECT_EQ(r.sequence_id(), 1u);
    EXPECT_NE(r.error_code(), 0);
    EXPECT_THAT(r.error_message(), HasSubstr(c.message));
    EXPECT_EQ(r.tokens_size(), 0);
  }
  // Same stream, good frames: the stage still serves.
  v1::ForwardResult r = stream.RoundTrip(HiddenFrame(1, 0, 2));
  EXPECT_EQ(r.error_code(), 0) << r.error_message();
  EXPECT_EQ(r.tokens_size(), 1);
  r = stream.RoundTrip(HiddenFrame(1, 2, 1));
  EXPECT_EQ(r.error_code(), 0) << r.error_message();
  EXPECT_TRUE(stream.Close().ok());
}

// Random mutations of a valid frame's bytes, parsed as ForwardFrame wherever they still parse, go
// through wire conversion and the stage: each gets exactly one result (ok or an error) and the
// stage serves a good frame afterwards. (tests/fuzz/stage_host_fuzz.cc goes deeper on StageHost.)
TEST_F(PipelineTest, RandomlyMutatedWireFramesNeverBreakTheStage) {
  auto stage = MakeStage();
  ASSERT_TRUE(LoadLast(stage->address, *identity_).ok());
  RawStream stream(stage->address);
  const std::string valid = HiddenFrame(1, 0, 2).SerializeAsString();
  std::mt19937 rng(1234);
  int parsed = 0, accepted = 0;
  for (int i = 0; i < 1000; ++i) {
    std::string bytes = valid;
    const int flips = 1 + static_cast<int>(rng() % 8);
    for (int f = 0; f < flips; ++f) {
      switch (rng() % 3) {
        case 0:
          bytes[rng() % bytes.size()] = static_cast<char>(rng());
          break;
        case 1:
          bytes.resize(rng() % (bytes.size() + 1));
          break;
        default:
          bytes.insert(rng() % (bytes.size() + 1), 1, static_cast<char>(rng()));
      }
      if (bytes.empty()) bytes = valid;
    }
    v1::ForwardFrame frame;
    if (!frame.ParseFromString(bytes)) continue;
    ++parsed;
    frame.set_sequence_id(1000 + i);  // a fresh sequence each time (slots are freed below)
    v1::ForwardResult r = stream.RoundTrip(frame);
    EXPECT_EQ(r.sequence_id(), 1000u + i);
    if (r.error_code() == 0) {
      ++accepted;
      // Free the slot: a cancel gets no reply and runs before the next frame.
      v1::ForwardFrame cancel;
      cancel.set_sequence_id(1000 + i);
      cancel.set_plan_epoch(kEpoch);
      cancel.set_end_of_sequence(true);
      stream.Send(cancel);
    } else {
      EXPECT_FALSE(r.error_message().empty());
    }
  }
  EXPECT_GT(parsed, 100);
  EXPECT_GT(accepted, 0);
  v1::ForwardResult r = stream.RoundTrip(HiddenFrame(2, 0, 2));
  EXPECT_EQ(r.error_code(), 0) << r.error_message();
  EXPECT_TRUE(stream.Close().ok());
}

TEST_F(PipelineTest, UnauthenticatedPeersAreRefused) {
  SessionTokenAuthenticator auth("s3cret");
  auto stage = MakeStage(&auth);
  absl::Status load = LoadLast(stage->address, *identity_);
  EXPECT_EQ(load.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(std::string(load.message()), HasSubstr("did not prove this cluster's key"));
  {
    RawStream stream(stage->address, "wrong");
    const grpc::Status status = stream.Close();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_THAT(status.error_message(), HasSubstr("Forward refused"));
  }
  {
    auto stub = v1::NodeService::NewStub(MakePeerChannel(stage->address));
    grpc::ClientContext ctx;
    v1::FetchTensorsRequest request;
    auto reader = stub->FetchTensors(&ctx, request);
    v1::TensorChunk chunk;
    EXPECT_FALSE(reader->Read(&chunk));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  // With the token, the same stage serves.
  ASSERT_TRUE(LoadLast(stage->address, *identity_, "s3cret").ok());
  RawStream stream(stage->address, "s3cret");
  v1::ForwardResult r = stream.RoundTrip(HiddenFrame(1, 0, 2));
  EXPECT_EQ(r.error_code(), 0) << r.error_message();
  EXPECT_TRUE(stream.Close().ok());
}

TEST_F(PipelineTest, ANodeWithoutTheFileFetchesOnlyItsTensors) {
  const std::vector<int32_t> expected = SingleNode(kPrompt, 16);
  std::vector<std::unique_ptr<TestStage>> stages;
  stages.push_back(MakeStage());
  const std::string peer = stages[0]->address;
  stages.push_back(MakeStage(nullptr, peer));  // no model file
  const std::string models_dir = absl::StrCat(*dir_, "/models-", stage_count_ - 1);
  auto pipeline = Pipeline::Connect(Options(stages));
  ASSERT_TRUE(pipeline.ok()) << pipeline.status();
  auto tokens = (*pipeline)->Generate(Greedy(kPrompt, 16));
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_EQ(*tokens, expected);

  // The sparse copy holds exactly the last stage's tensors; others read as zeros.
  const std::string stem =
      absl::StrCat(models_dir, "/model.", HexString(identity_->sha256).substr(0, 12));
  auto copy = runtime::GgufFile::Open(stem + ".partial.gguf");
  ASSERT_TRUE(copy.ok()) << copy.status();
  auto original = runtime::GgufFile::Open(*path_);
  const std::vector<std::string> wanted = ShardTensorNames(**original, {3, kLayers}, false, true);
  EXPECT_TRUE(std::find(wanted.begin(), wanted.end(), "blk.3.attn_q.weight") != wanted.end());
  EXPECT_TRUE(std::find(wanted.begin(), wanted.end(), "token_embd.weight") != wanted.end());
  EXPECT_TRUE(std::find(wanted.begin(), wanted.end(), "blk.2.attn_q.weight") == wanted.end());
  std::ifstream manifest(stem + ".manifest.json");
  std::stringstream text;
  text << manifest.rdbuf();
  for (const auto& t : (*original)->tensors()) {
    const bool in_shard = std::find(wanted.begin(), wanted.end(), t.name) != wanted.end();
    const auto* c = (*copy)->FindTensor(t.name);
    ASSERT_NE(c, nullptr);
    const bool same = std::memcmp(c->data, t.data, t.nbytes) == 0;
    const bool zero = std::all_of(c->data, c->data + c->nbytes, [](uint8_t b) { return b == 0; });
    EXPECT_EQ(text.str().find("\"" + t.name + "\"") != std::string::npos, in_shard) << t.name;
    if (in_shard) {
      EXPECT_TRUE(same) << t.name;
    } else {
      EXPECT_TRUE(zero) << t.name;
    }
  }
  struct stat st;
  ASSERT_EQ(stat((stem + ".partial.gguf").c_str(), &st), 0);
  EXPECT_LT(uint64_t(st.st_blocks) * 512, identity_->file_size);  // sparse on disk

  // A second fetch finds everything cached.
  auto stub = v1::NodeService::NewStub(MakePeerChannel(peer));
  FetchOptions fo;
  fo.model = *identity_;
  fo.layers = {3, kLayers};
  fo.has_head = true;
  fo.models_dir = models_dir;
  auto again = FetchShardTensors(*stub, fo);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->fetched_bytes, 0u);
}

TEST_F(PipelineTest, FetchTensorsRefusesUnknownTensorsAndOtherFiles) {
  auto stage = MakeStage();
  auto stub = v1::NodeService::NewStub(MakePeerChannel(stage->address));
  {
    grpc::ClientContext ctx;
    v1::FetchTensorsRequest request;
    request.add_tensor_names("blk.99.nothing");
    auto reader = stub->FetchTensors(&ctx, request);
    v1::TensorChunk chunk;
    EXPECT_FALSE(reader->Read(&chunk));
    const grpc::Status s = reader->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_THAT(s.error_message(), HasSubstr("no tensor 'blk.99.nothing'"));
  }
  {
    grpc::ClientContext ctx;
    v1::FetchTensorsRequest request;
    request.mutable_model()->set_file_size(12345);
    auto reader = stub->FetchTensors(&ctx, request);
    v1::TensorChunk chunk;
    EXPECT_FALSE(reader->Read(&chunk));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  }
}

// ---- Speculative decoding over the pipeline ------------------------------------------------

// A whole model in one Stage on the coordinator, for a draft model.
struct LocalModel {
  std::unique_ptr<runtime::GgufFile> file;
  std::unique_ptr<runtime::Stage> stage;
};

LocalModel LoadLocal(const std::string& path, int32_t slots = 1) {
  LocalModel m;
  auto file = runtime::GgufFile::Open(path);
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return m;
  m.file = std::move(*file);
  auto config = runtime::ReadModelConfig(*m.file);
  runtime::StageOptions so;
  so.layers = {0, config->n_layer};
  so.context = 64;
  so.max_batch_tokens = 16;
  so.num_slots = slots;
  auto stage = runtime::Stage::Create(*m.file, so);
  EXPECT_TRUE(stage.ok()) << stage.status();
  if (stage.ok()) m.stage = std::move(*stage);
  return m;
}

// A prompt with repeats, so prompt lookup finds matches.
const std::vector<int32_t> kRepeatPrompt = {1,  17, 42, 5,  9,  33, 60, 17,
                                            42, 5,  9,  33, 60, 17, 42, 5};

TEST_F(PipelineTest, SpeculativeGreedyMatchesTheSingleNodeOverOneTwoAndThreeStages) {
  LocalModel draft = LoadLocal(*draft_path_);
  LocalModel self = LoadLocal(*path_);
  ASSERT_TRUE(draft.stage && self.stage);
  runtime::NgramDrafter ngram(runtime::NgramOptions{});
  // Penalties read the last stage's history, which must drop rejected drafts: the frequency
  // penalty counts every occurrence.
  for (float penalty : {0.0f, 0.5f}) {
    runtime::SamplingParams greedy;
    greedy.temperature = 0;
    greedy.repetition_penalty = 1.0f + penalty;
    greedy.frequency_penalty = penalty;
    const std::vector<int32_t> expected = SingleNode(kRepeatPrompt, 40, &greedy);
    ASSERT_EQ(expected.size(), 40u);
    for (int n : {1, 2, 3}) {
      std::vector<std::unique_ptr<TestStage>> stages;
      for (int i = 0; i < n; ++i) stages.push_back(MakeStage());
      PipelineOptions o = Options(stages);
      o.prefill_chunk = 16;  // frames of up to 16 rows: up to 15 drafts
      o.n_vocab = 96;
      auto pipeline = Pipeline::Connect(o);
      ASSERT_TRUE(pipeline.ok()) << pipeline.status();
      for (const char* kind : {"ngram", "draft", "self"}) {
        for (auto [draft_max, adaptive] : {std::pair{3, false}, {8, false}, {8, true}}) {
          SCOPED_TRACE(absl::StrCat(n, " stages, ", kind, ", draft_max ", draft_max,
                                    adaptive ? " adaptive" : " fixed", ", penalty ", penalty));
          std::unique_ptr<runtime::DraftModelDrafter> model_drafter;
          SequenceRequest r = Greedy(kRepeatPrompt, 40);
          r.sampling = greedy;
          r.drafter = &ngram;
          if (std::string(kind) != "ngram") {
            runtime::DraftModelOptions d;
            d.min_confidence = 0.0f;  // random weights are never confident
            auto created = runtime::DraftModelDrafter::Create(
                std::string(kind) == "draft" ? *draft.stage : *self.stage, 0, greedy, d);
            ASSERT_TRUE(created.ok()) << created.status();
            model_drafter = std::move(*created);
            r.drafter = model_drafter.get();
          }
          r.speculative.draft_max = draft_max;
          r.speculative.adaptive = adaptive;
          SequenceStats stats;
          auto tokens = (*pipeline)->Generate(std::move(r), &stats);
          ASSERT_TRUE(tokens.ok()) << tokens.status();
          EXPECT_EQ(*tokens, expected);
          const runtime::SpeculativeStats& spec = stats.speculative;
          EXPECT_EQ(stats.generated_tokens, 40);
          EXPECT_EQ(spec.emitted_tokens, 40);
          EXPECT_EQ(spec.emitted_tokens, spec.accepted_tokens + spec.passes);
          EXPECT_LE(spec.accepted_tokens, spec.drafted_tokens);
          if (std::string(kind) == "self" && !adaptive) {
            // The target drafting for itself: every draft is accepted.
            EXPECT_EQ(spec.accepted_tokens, spec.drafted_tokens);
            EXPECT_GT(spec.TokensPerPass(), draft_max == 3 ? 3.5 : 6.0);
          }
          if (std::string(kind) == "ngram") {
            EXPECT_GT(spec.accepted_tokens, 0);
          }
        }
      }
    }
  }
}

TEST_F(PipelineTest, SpeculativeStopsAtMaxTokensAndStopTokensMidPass) {
  const std::vector<int32_t> plain = SingleNode(kRepeatPrompt, 30);
  LocalModel self = LoadLocal(*path_);
  ASSERT_TRUE(self.stage);
  std::vector<std::unique_ptr<TestStage>> stages;
  for (int i = 0; i < 2; ++i) stages.push_back(MakeStage());
  PipelineOptions o = Options(stages);
  o.prefill_chunk = 16;
  auto pipeline = Pipeline::Connect(o);
  ASSERT_TRUE(pipeline.ok()) << pipeline.status();
  auto request = [&](int max_tokens, std::function<bool(int32_t)> stop,
                     std::unique_ptr<runtime::DraftModelDrafter>& drafter) {
    runtime::DraftModelOptions d;
    d.min_confidence = 0.0f;
    drafter = std::move(*runtime::DraftModelDrafter::Create(*self.stage, 0, {0.0f}, d));
    SequenceRequest r = Greedy(kRepeatPrompt, max_tokens);
    r.is_stop_token = std::move(stop);
    r.drafter = drafter.get();
    r.speculative.draft_max = 8;
    r.speculative.adaptive = false;
    return r;
  };
  std::unique_ptr<runtime::DraftModelDrafter> drafter;
  SequenceStats stats;
  auto seven = (*pipeline)->Generate(request(7, nullptr, drafter), &stats);
  ASSERT_TRUE(seven.ok()) << seven.status();
  EXPECT_EQ(*seven, std::vector<int32_t>(plain.begin(), plain.begin() + 7));
  EXPECT_EQ(stats.speculative.emitted_tokens, 7);
  // Stop at the first occurrence of plain[10]'s token, inside a pass of 9 tokens.
  const int32_t stop = plain[10];
  const size_t first = std::find(plain.begin(), plain.end(), stop) - plain.begin();
  auto stopped = (*pipeline)->Generate(request(
                                           30, [stop](int32_t id) { return id == stop; }, drafter),
                                       &stats);
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  EXPECT_EQ(*stopped, std::vector<int32_t>(plain.begin(), plain.begin() + first));
  EXPECT_TRUE(stats.stopped_by_token);
  // A one-token prompt: the first frame of the sequence already carries drafts.
  auto short_prompt = request(10, nullptr, drafter);
  short_prompt.prompt = {3};
  auto from_one = (*pipeline)->Generate(std::move(short_prompt), &stats);
  ASSERT_TRUE(from_one.ok()) << from_one.status();
  EXPECT_EQ(*from_one, SingleNode({3}, 10));
  EXPECT_GT(stats.speculative.accepted_tokens, 0);
  // The stages freed the slots: a plain sequence runs afterwards.
  auto again = (*pipeline)->Generate(Greedy(kRepeatPrompt, 30));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, plain);
}

TEST_F(PipelineTest, SpeculativeRefusesSampledProposals) {
  LocalModel draft = LoadLocal(*draft_path_);
  ASSERT_TRUE(draft.stage);
  std::vector<std::unique_ptr<TestStage>> stages;
  for (int i = 0; i < 2; ++i) stages.push_back(MakeStage());
  PipelineOptions o = Options(stages);
  o.prefill_chunk = 16;
  auto pipeline = Pipeline::Connect(o);
  ASSERT_TRUE(pipeline.ok()) << pipeline.status();
  runtime::SamplingParams sampling;
  sampling.temperature = 1.0f;
  sampling.seed = 5;
  runtime::DraftModelOptions d;
  d.min_confidence = 0.0f;  // proposals with q: only token ids travel, so this cannot verify
  auto drafter = runtime::DraftModelDrafter::Create(*draft.stage, 0, sampling, d);
  ASSERT_TRUE(drafter.ok()) << drafter.status();
  SequenceRequest r = Greedy(kRepeatPrompt, 10);
  r.sampling = sampling;
  r.drafter = drafter->get();
  r.speculative.draft_min = 2;
  auto refused = (*pipeline)->Generate(std::move(r));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("one-hot"));
  auto again = (*pipeline)->Generate(Greedy(kRepeatPrompt, 5));
  EXPECT_TRUE(again.ok()) << again.status();
}

void PipelineTest::ExpectSampledTokensFollowTheTarget(bool draft_model) {
  LocalModel target = LoadLocal(*llama_path_);
  constexpr int kInFlight = 4;
  LocalModel draft = LoadLocal(*llama_draft_path_, kInFlight);
  ASSERT_TRUE(target.stage && draft.stage);
  runtime::SamplingParams params;
  params.temperature = 1.5f;  // flatten the random model: dozens of cells get >= 5 counts
  params.top_k = 0;
  params.top_p = 1.0f;
  params.min_p = 0.0f;
  const std::vector<int32_t> prompt = {1, 17, 42, 5, 9, 17, 42, 5};
  const runtime::spectest::ExactDistribution exact =
      runtime::spectest::TargetDistribution(*target.stage, prompt, params);

  std::vector<std::unique_ptr<TestStage>> stages;
  for (int i = 0; i < 2; ++i) stages.push_back(MakeStageOf(*llama_path_));
  PipelineOptions o = Options(stages);
  o.model = *llama_identity_;
  o.n_layer = 3;
  o.prefill_chunk = 16;
  o.max_sequences = kInFlight;
  auto pipeline = Pipeline::Connect(o);
  ASSERT_TRUE(pipeline.ok()) << pipeline.status();

  // Prompt lookup is stateless; a draft model keeps one cache slot per sequence in flight (the
  // pipeline calls drafters under its lock, so they share the Stage safely).
  runtime::NgramOptions ngram_options;
  ngram_options.ngram_min = 1;
  runtime::NgramDrafter ngram(ngram_options);
  std::vector<std::unique_ptr<runtime::DraftModelDrafter>> drafters;
  runtime::DraftModelOptions d;
  d.min_confidence = 0.0f;
  d.one_hot_proposals = true;
  for (int slot = 0; slot < kInFlight; ++slot) {
    auto created = runtime::DraftModelDrafter::Create(*draft.stage, slot, params, d);
    ASSERT_TRUE(created.ok()) << created.status();
    drafters.push_back(std::move(*created));
  }

  const int kRuns = 6000;
  absl::Mutex mu;
  std::vector<int> free_slots;
  for (int slot = 0; slot < kInFlight; ++slot) free_slots.push_back(slot);
  std::vector<std::vector<int32_t>> outputs(kRuns);
  int done = 0;
  int64_t drafted = 0, accepted = 0;
  std::vector<absl::Status> failures;
  for (int run = 0; run < kRuns; ++run) {
    int slot;
    {
      absl::MutexLock lock(&mu);
      mu.Await(absl::Condition(
          +[](std::vector<int>* slots) { return !slots->empty(); }, &free_slots));
      slot = free_slots.back();
      free_slots.pop_back();
    }
    SequenceRequest r;
    r.prompt = prompt;
    r.max_tokens = 3;
    r.sampling = params;
    r.sampling.seed = 1000 + run;
    r.drafter = draft_model ? static_cast<runtime::Drafter*>(drafters[slot].get()) : &ngram;
    r.speculative.draft_max = 3;
    r.speculative.adaptive = false;
    r.on_token = [&outputs, &mu, run](const SampledToken& t) {
      absl::MutexLock lock(&mu);
      outputs[run].push_back(t.token);
      return true;
    };
    r.on_done = [&, slot](const absl::Status& status, const SequenceStats& stats) {
      absl::MutexLock lock(&mu);
      if (!status.ok()) failures.push_back(status);
      drafted += stats.speculative.drafted_tokens;
      accepted += stats.speculative.accepted_tokens;
      free_slots.push_back(slot);
      ++done;
    };
    absl::StatusOr<uint64_t> started = (*pipeline)->Start(std::move(r));
    ASSERT_TRUE(started.ok()) << started.status();
  }
  absl::MutexLock lock(&mu);
  mu.Await(absl::Condition(
      +[](int* n) { return *n == 6000; }, &done));
  ASSERT_TRUE(failures.empty()) << failures[0];
  std::vector<int64_t> first(exact.first.size(), 0), second(exact.second.size(), 0);
  for (const std::vector<int32_t>& out : outputs) {
    ASSERT_EQ(out.size(), 3u);
    ++first[out[0]];
    ++second[out[1]];
  }
  // The rule was exercised both ways.
  EXPECT_GT(drafted, kRuns);
  EXPECT_GT(accepted, 0);
  EXPECT_LT(accepted, drafted);
  using runtime::spectest::ChiSquareCritical;
  const runtime::spectest::ChiSquare chi_first =
      runtime::spectest::ChiSquareTest(first, exact.first);
  const runtime::spectest::ChiSquare chi_second =
      runtime::spectest::ChiSquareTest(second, exact.second);
  EXPECT_GE(chi_first.df, 20);
  EXPECT_GE(chi_second.df, 20);
  EXPECT_FALSE(chi_first.Rejects())
      << "first token: chi2 " << chi_first.statistic << " df " << chi_first.df << " critical "
      << ChiSquareCritical(chi_first.df);
  EXPECT_FALSE(chi_second.Rejects())
      << "second token: chi2 " << chi_second.statistic << " df " << chi_second.df << " critical "
      << ChiSquareCritical(chi_second.df);
}

TEST_F(PipelineTest, SpeculativeSamplingWithPromptLookupFollowsTheTargetDistribution) {
  ExpectSampledTokensFollowTheTarget(/*draft_model=*/false);
}

TEST_F(PipelineTest, SpeculativeSamplingWithADraftModelFollowsTheTargetDistribution) {
  ExpectSampledTokensFollowTheTarget(/*draft_model=*/true);
}

TEST(PipelineLayers, SplitsAndParsesRanges) {
  auto even = SplitLayersEvenly(18, 4);
  ASSERT_TRUE(even.ok());
  std::vector<std::pair<int, int>> got;
  for (auto r : *even) got.emplace_back(r.begin, r.end);
  EXPECT_EQ(got, (std::vector<std::pair<int, int>>{{0, 5}, {5, 10}, {10, 14}, {14, 18}}));
  EXPECT_FALSE(SplitLayersEvenly(2, 3).ok());
  EXPECT_TRUE(ParseLayerRanges("0:6,6:18", 18).ok());
  EXPECT_THAT(std::string(ParseLayerRanges("0:6,7:18", 18).status().message()),
              HasSubstr("should start at 6"));
  EXPECT_THAT(std::string(ParseLayerRanges("0:6", 18).status().message()),
              HasSubstr("end at 6 but the model has 18"));
  EXPECT_FALSE(ParseLayerRanges("0-6", 18).ok());
}

}  // namespace
}  // namespace exo::node
