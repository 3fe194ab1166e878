// Decode (one token) kernels that take several consecutive weight rows at once. A single-row dot
// is one chain of dependent fused multiply-adds per row (its accumulation order is fixed by the
// bit-identity promise, see docs/kernels.md); interleaving the chains of kGemvRows rows hides
// their latency without changing any row's arithmetic, and lets the kernel prefetch the weight
// stream ahead of the loads.
#ifndef EXO_KERNELS_INTERNAL_GEMV_H_
#define EXO_KERNELS_INTERNAL_GEMV_H_

#include <cstdint>

#include "kernels/types.h"

namespace exo::kernels::internal {

inline constexpr int kGemvRows = 4;

// out[r] for the kGemvRows rows at weights + r * row_bytes (n elements each) against one
// activation row in VecDotType(type). Bit-identical to GetVecDot(type)(row r, activations, n).
using GemvRowsFn = void (*)(const void* weights, int64_t row_bytes, const void* activations,
                            int64_t n, float* out);

// The multi-row kernel for `type` on this CPU, or nullptr (callers use the single-row dot).
GemvRowsFn GetGemvRows(TensorType type);

}  // namespace exo::kernels::internal

#endif  // EXO_KERNELS_INTERNAL_GEMV_H_
