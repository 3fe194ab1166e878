// `exo-node stage` (serve a pipeline stage over gRPC) and `exo-node generate --pipeline`
// (generate through a static list of stages). main.cc parses flags into these structs.
#ifndef EXO_NODE_PIPELINE_CLI_H_
#define EXO_NODE_PIPELINE_CLI_H_

#include <cstdint>
#include <ostream>
#include <string>

#include "node/cli.h"
#include "runtime/sampler.h"

namespace exo::node {

struct StageCommand {
  std::string model_path;  // empty: the default model, unless fetch_from is set
  std::string fetch_from;  // host:port of a peer to fetch this stage's tensors from
  std::string host = "127.0.0.1";
  int32_t port = 0;  // 0: a free port (printed)
  int32_t threads = 0;
};

struct PipelineGenerateCommand {
  ModelOptions model;              // the coordinator's copy: tokenizer and model identity
  std::string pipeline;            // host:port,host:port,...
  std::string layers;              // "0:6,6:12,..."; empty: split evenly
  std::string wire_dtype = "f32";  // or "bf16", "f16"
  std::string prompt;
  int32_t max_tokens = 128;
  runtime::SamplingParams sampling;
  std::string json_out;
  // Drafting happens here, on the coordinator; the last stage verifies. A draft model always
  // proposes its argmax (draft_one_hot is forced on: only token ids travel).
  SpeculativeCommand speculative;
};

// Serves until the process is killed. Prints "listening on HOST:PORT" once ready.
int RunStage(const StageCommand& command, std::ostream& out, std::ostream& err);
int RunPipelineGenerate(const PipelineGenerateCommand& command, std::ostream& out,
                        std::ostream& err);

}  // namespace exo::node

#endif  // EXO_NODE_PIPELINE_CLI_H_
