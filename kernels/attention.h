// Attention of a few query heads against the keys and values they share (one key/value head of
// grouped-query attention), with an online softmax.
#ifndef EXO_KERNELS_ATTENTION_H_
#define EXO_KERNELS_ATTENTION_H_

#include <cstdint>

namespace exo::kernels {

// Rows per key block: keys are cached transposed in blocks of this many rows.
constexpr int32_t kKeyBlockRows = 16;

// The cached keys and values one call sees, read in place as f16 (the KV cache's own layout; no
// conversion pass).
struct AttentionKeys {
  // Keys in blocks of kKeyBlockRows rows: element i of row r is
  // keys[(r / 16) * 16 * head_dim + i * 16 + r % 16], so the scores of 16 consecutive rows are
  // one load per element, and one block is a contiguous run of memory.
  const uint16_t* keys;
  // Value row r is values[r * ld_values .. + head_dim_v).
  const uint16_t* values;
  int64_t ld_values;
  // Position i (0 .. n_keys-1, in order) is row (first_row + i) % rows: `rows` (a multiple of
  // kKeyBlockRows) is the cache's ring size, so the positions may wrap around its end once.
  int32_t first_row;
  int32_t rows;
  int32_t n_keys;
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
