#include "node/wire.h"

#include <utility>

#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace exo::node {

static_assert(static_cast<int>(WireDType::kF32) == v1::DTYPE_F32);
static_assert(static_cast<int>(WireDType::kF16) == v1::DTYPE_F16);
static_assert(static_cast<int>(WireDType::kBf16) == v1::DTYPE_BF16);

runtime::SamplingParams SamplingFromProto(const v1::SamplingParams& p) {
  runtime::SamplingParams s;
  s.temperature = p.temperature();
  s.top_k = p.top_k();
  // proto3 reads unset fields as 0; for these two 0 is not a valid value, so it means "off".
  s.top_p = p.top_p() == 0 ? 1.0f : p.top_p();
  s.min_p = p.min_p();
  s.repetition_penalty = p.repetition_penalty() == 0 ? 1.0f : p.repetition_penalty();
  s.presence_penalty = p.presence_penalty();
  s.frequency_penalty = p.frequency_penalty();
  s.penalty_last_n = p.penalty_last_n();
  s.seed = p.seed();
  return s;
}

void SamplingToProto(const runtime::SamplingParams& s, int32_t top_logprobs,
                     v1::SamplingParams* p) {
  p->set_temperature(s.temperature);
  p->set_top_k(s.top_k);
  p->set_top_p(s.top_p);
  p->set_min_p(s.min_p);
  p->set_repetition_penalty(s.repetition_penalty);
  p->set_presence_penalty(s.presence_penalty);
  p->set_frequency_penalty(s.frequency_penalty);
  p->set_penalty_last_n(s.penalty_last_n);
  p->set_seed(s.seed);
  p->set_top_logprobs(top_logprobs);
}

StageFrame FrameFromProto(v1::ForwardFrame&& p) {
  StageFrame f;
  f.sequence_id = p.sequence_id();
  f.plan_epoch = p.plan_epoch();
  f.first_position = p.first_position();
  f.token_count = p.token_count();
  f.dtype = p.dtype() == v1::DTYPE_UNSPECIFIED ? v1::DTYPE_F32 : static_cast<int32_t>(p.dtype());
  f.shape.assign(p.shape().begin(), p.shape().end());
  f.hidden = std::move(*p.mutable_hidden());
  f.tokens.assign(p.tokens().begin(), p.tokens().end());
  f.kv_keep_length = p.kv_keep_length();
  f.end_of_sequence = p.end_of_sequence();
  f.no_sample = p.no_sample();
  f.draft_tokens.assign(p.draft_tokens().begin(), p.draft_tokens().end());
  f.sampling.params = SamplingFromProto(p.sampling());
  f.sampling.top_logprobs = p.sampling().top_logprobs();
  return f;
}

void FrameToProto(StageFrame&& f, v1::ForwardFrame* p) {
  p->Clear();
  p->set_sequence_id(f.sequence_id);
  p->set_plan_epoch(f.plan_epoch);
  p->set_first_position(f.first_position);
  p->set_token_count(f.token_count);
  p->set_dtype(static_cast<v1::DType>(f.dtype));
  for (int64_t d : f.shape) p->add_shape(d);
  *p->mutable_hidden() = std::move(f.hidden);
  for (int32_t t : f.tokens) p->add_tokens(t);
  for (int32_t t : f.draft_tokens) p->add_draft_tokens(t);
  p->set_kv_keep_length(f.kv_keep_length);
  p->set_end_of_sequence(f.end_of_sequence);
  p->set_no_sample(f.no_sample);
  SamplingToProto(f.sampling.params, f.sampling.top_logprobs, p->mutable_sampling());
}

void StatusToResult(const absl::Status& status, v1::ForwardResult* out) {
  out->set_error_code(static_cast<int32_t>(status.code()));
  out->set_error_message(std::string(status.message()));
}

void OutputToResult(const StageOutput& output, uint64_t plan_epoch, v1::ForwardResult* out) {
  out->Clear();
  out->set_sequence_id(output.sequence_id);
  out->set_plan_epoch(plan_epoch);
  if (!output.status.ok()) {
    StatusToResult(output.status, out);
    return;
  }
  out->set_accepted_draft_count(output.accepted_draft_count);
  for (const SampledToken& t : output.tokens) {
    v1::SampledToken* st = out->add_tokens();
    st->set_token(t.token);
    st->set_logprob(t.logprob);
    for (const auto& alt : t.top_logprobs) {
      v1::TokenLogprob* lp = st->add_top_logprobs();
      lp->set_token(alt.id);
      lp->set_logprob(alt.logprob);
    }
  }
}

absl::Status ResultStatus(const v1::ForwardResult& result) {
  if (result.error_code() == 0) return absl::OkStatus();
  const int code = result.error_code();
  const absl::StatusCode c =
      (code > 0 && code <= 16) ? static_cast<absl::StatusCode>(code) : absl::StatusCode::kUnknown;
  return absl::Status(c, result.error_message());
}

std::shared_ptr<grpc::Channel> MakePeerChannel(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_ENABLE_HTTP_PROXY, 0);
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

}  // namespace exo::node
