// Attention of a few query heads against the keys and values they share (one key/value head of
// grouped-query attention), with an online softmax.
#ifndef EXO_KERNELS_ATTENTION_H_
#define EXO_KERNELS_ATTENTION_H_

#include <cstdint>

namespace exo::kernels {

// The cached keys and values one call sees, in f32.
struct AttentionKeys {
  // Element i of key p is keys_t[i * ld_keys + p]: keys are stored transposed, so that the scores
  // of consecutive positions are consecutive SIMD lanes.
  const float* keys_t;
  int64_t ld_keys;
  // Value p is values[p * ld_values .. + head_dim_v).
  const float* values;
  int64_t ld_values;
  int32_t n_keys;  // positions 0 .. n_keys-1, in order
};

// For each of `heads` query heads (q: heads rows of head_dim, one after the other) writes
// softmax(scale * q·K) · V to out (heads rows of head_dim_v).
//
// The arithmetic is fixed, whatever the SIMD level: each score is the in-order sum
// s = (((q0*k0) + q1*k1) + ...) with every product and sum rounded to f32 (no fma), times
// `scale`; positions then enter an online softmax in order (a new maximum rescales the running
// sum and output by exp(old max - new max)); each output element accumulates acc += w * v in
// position order and is finally multiplied by 1/sum. SIMD lanes run over positions (scores) and
// over output elements (values), never across one sum, so every variant gives the same bits as
// the scalar reference. This is what lets prefill and decode, or a split model and the whole
// one, agree bit for bit.
void AttendHeads(const float* q, int32_t heads, int32_t head_dim, const AttentionKeys& keys,
                 int32_t head_dim_v, float scale, float* out);

namespace internal {
// Each level on its own, for tests: the scalar reference, and the AVX2 / AVX-512 variants, which
// return false (and do nothing) where this CPU, or EXO_SIMD, rules them out.
void AttendHeadsRef(const float* q, int32_t heads, int32_t head_dim, const AttentionKeys& keys,
                    int32_t head_dim_v, float scale, float* out);
bool AttendHeadsAvx2(const float* q, int32_t heads, int32_t head_dim, const AttentionKeys& keys,
                     int32_t head_dim_v, float scale, float* out);
bool AttendHeadsAvx512(const float* q, int32_t heads, int32_t head_dim, const AttentionKeys& keys,
                       int32_t head_dim_v, float scale, float* out);
}  // namespace internal

}  // namespace exo::kernels

#endif  // EXO_KERNELS_ATTENTION_H_
