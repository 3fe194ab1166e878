// Conversions between the exo.v1 wire messages and the plain structs of node/stage_host.h.
// Conversion never fails: everything a frame may get wrong is checked by StageHost, which sees the
// values as they came (an unknown dtype stays unknown), so every refusal has one clear message.
#ifndef EXO_NODE_WIRE_H_
#define EXO_NODE_WIRE_H_

#include "absl/status/status.h"
#include "exo/v1/node.pb.h"
#include "grpcpp/channel.h"
#include "grpcpp/support/status.h"
#include "node/stage_host.h"
#include "runtime/sampler.h"

namespace exo::node {

// Moves the frame's bytes out of `frame` (no copy of the hidden state). DTYPE_UNSPECIFIED (an
// unset field) reads as F32, the protocol's default.
StageFrame FrameFromProto(v1::ForwardFrame&& frame);
// Moves the frame's bytes into the message.
void FrameToProto(StageFrame&& frame, v1::ForwardFrame* out);

// Unset (zero) top_p and repetition_penalty read as 1 (off), so an empty SamplingParams is
// greedy sampling without penalties.
runtime::SamplingParams SamplingFromProto(const v1::SamplingParams& p);
void SamplingToProto(const runtime::SamplingParams& p, int32_t top_logprobs,
                     v1::SamplingParams* out);

// A stage's output for one frame as a ForwardResult (tokens, or the error).
void OutputToResult(const StageOutput& output, uint64_t plan_epoch, v1::ForwardResult* out);
// The status a result carries (OK when error_code is 0).
absl::Status ResultStatus(const v1::ForwardResult& result);
void StatusToResult(const absl::Status& status, v1::ForwardResult* out);

// Largest gRPC message a stage sends or accepts: a prompt chunk of 256 rows of an 8192-wide model
// in f32 is 8 MiB, beyond gRPC's 4 MiB default.
inline constexpr int kMaxMessageBytes = 64 << 20;

// A channel to a peer's NodeService (plain HTTP/2; proxies from the environment are ignored,
// since peers are on the LAN).
std::shared_ptr<grpc::Channel> MakePeerChannel(const std::string& address);

// absl and gRPC status codes are numbered alike.
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace exo::node

#endif  // EXO_NODE_WIRE_H_
