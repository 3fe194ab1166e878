// Decode (one token) kernels that take several consecutive weight rows at once. A single-row dot
// is one chain of dependent fused multiply-adds per row (its accumulation order is fixed by the
// bit-identity promise, see docs/kernels.md); interleaving the chains of kGemvRows rows hides
// their latency without changing any row's arithmetic, lets the kernel prefetch the weight
// stream ahead of the loads, and on AVX-512 lets one 512-bit register serve two rows.
#ifndef EXO_KERNELS_INTERNAL_GEMV_H_
#define EXO_KERNELS_INTERNAL_GEMV_H_

#include <cstdint>

#include "kernels/types.h"

namespace exo::kernels::internal {

inline constexpr int kGemvRows = 4;

// out[r] for the kGemvRows rows at weights + r * row_bytes (n elements each) against one
// activation row in VecDotType(type). Bit-identical to GetVecDot(type)(row r, activations, n).
// `prepared` is what PrepareGemv wrote for this activation row (unused where GemvPreparedBytes
// is 0).
using GemvRowsFn = void (*)(const void* weights, int64_t row_bytes, const void* activations,
                            const void* prepared, int64_t n, float* out);

// The multi-row kernel for `type` on this CPU, or nullptr (callers use the single-row dot).
GemvRowsFn GetGemvRows(TensorType type);

// Bytes of activation-side data that GetGemvRows(type)'s kernel wants prepared once per
// activation row of n elements (it is shared by every weight row), 0 if none. The buffer must be
// 64-byte aligned.
int64_t GemvPreparedBytes(TensorType type, int64_t n);

// Fills `prepared` (GemvPreparedBytes(type, n) bytes) from the quantised activation row.
void PrepareGemv(TensorType type, const void* activations, int64_t n, void* prepared);

}  // namespace exo::kernels::internal

#endif  // EXO_KERNELS_INTERNAL_GEMV_H_
