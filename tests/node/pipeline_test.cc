// The data path over real gRPC on loopback, in one process: stages served by ShardHandler behind
// a minimal NodeService, driven by the coordinator's Pipeline, on a tiny synthetic model.
#include "node/pipeline.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "node/shard_handler.h"
#include "node/stage_server.h"
#include "node/tensor_fetch.h"
#include "node/wire.h"
#include "runtime/generator.h"
#include "runtime/gguf.h"
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
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
    delete path_;
    delete identity_;
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

  AllowAllPeers allow_all_;
  int stage_count_ = 0;
  static std::string* dir_;
  static std::string* path_;
  static ModelIdentity* identity_;
};

std::string* PipelineTest::dir_ = nullptr;
std::string* PipelineTest::path_ = nullptr;
ModelIdentity* PipelineTest::identity_ = nullptr;

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
