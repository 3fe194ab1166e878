// The single-node subcommands of exo-node: generate, chat, inspect. main.cc parses flags into
// these option structs; each command returns a process exit code and prints errors as one line.
#ifndef EXO_NODE_CLI_H_
#define EXO_NODE_CLI_H_

#include <cstdint>
#include <istream>
#include <ostream>
#include <string>

#include "runtime/sampler.h"

namespace exo::node {

struct ModelOptions {
  std::string model_path;  // empty: the default model in the models directory
  int32_t context = 4096;  // KV positions; capped at the model's trained context
  int32_t threads = 0;     // 0: physical cores
  int32_t batch = 256;     // prompt tokens per forward pass
};

// Speculative decoding for `generate` (docs/speculative.md).
enum class SpeculativeMode {
  kOff,
  kDraftModel,  // a smaller model with the same vocabulary drafts
  kNgram,       // prompt lookup: drafts copied from earlier in the context
};

struct SpeculativeCommand {
  SpeculativeMode mode = SpeculativeMode::kOff;
  std::string draft_model_path;       // for kDraftModel
  int32_t draft_max = 8;              // tokens drafted per pass at most (at most 15)
  int32_t draft_min = 1;              // the adaptive length goes no lower; == draft_max: fixed
  float draft_min_confidence = 0.5f;  // draft model stops when its top probability is lower
  bool draft_one_hot = false;         // draft model proposes its argmax even when sampling
  int32_t ngram_max = 4;
  int32_t ngram_min = 2;
};

struct GenerateCommand {
  ModelOptions model;
  std::string prompt;
  int32_t max_tokens = 128;
  runtime::SamplingParams sampling;
  bool chat_template = false;  // wrap the prompt as one user turn of the model's chat template
  std::string json_out;        // write {"prompt_tokens", "tokens", "text"} here
  std::string logits_out;      // write the first step's logits (f32 little-endian) here
  SpeculativeCommand speculative;
  // Through the running node (node/cluster_generate.h): unless `local`, generate sends the
  // prompt to the HTTP API of the node whose state directory is `state_dir` (empty: the
  // default) when that node runs, serves its API and serves the requested model.
  bool local = false;
  std::string state_dir;
  std::string api_key;            // the node's --api_key, if it has one
  int32_t ready_timeout_s = 600;  // how long to wait while the node loads or re-plans
};

struct ChatCommand {
  ModelOptions model;
  std::string system_prompt;
  int32_t max_tokens = 512;
  runtime::SamplingParams sampling;
};

struct BenchCommand {
  ModelOptions model;
  int32_t prompt_tokens = 512;    // pp: prompt processing test size
  int32_t generate_tokens = 128;  // tg: decode test size
  // Tokens already in the context when each test starts (llama-bench's -d): both tests then
  // attend to `depth` earlier positions, as a long chat does. Filled untimed before each test.
  int32_t depth = 0;
  int32_t repetitions = 3;
  bool json = false;
};

// Generates through the running node when there is a suitable one (see GenerateCommand::local),
// else in-process.
int RunGenerate(const GenerateCommand& command, std::ostream& out, std::ostream& err);
int RunChat(const ChatCommand& command, std::istream& in, std::ostream& out, std::ostream& err);
int RunBench(const BenchCommand& command, std::ostream& out, std::ostream& err);
int RunInspect(const std::string& path, bool all_values, std::ostream& out, std::ostream& err);

}  // namespace exo::node

#endif  // EXO_NODE_CLI_H_
