#include "kernels/quants.h"

#include <array>
#include <cstdio>
#include <cstdlib>

#include "kernels/internal/fp16.h"
#include "kernels/internal/quants_impl.h"

namespace exo::kernels {
namespace {

constexpr size_t kMaxTypeId = 64;

// Dot-product kernels per GGUF type id, SIMD where this CPU has it. Built once.
const std::array<internal::VecDotFn, kMaxTypeId>& VecDotTable() {
  static const std::array<internal::VecDotFn, kMaxTypeId> table = [] {
    std::array<internal::VecDotFn, kMaxTypeId> t{};
    const bool avx2 = internal::CpuHasAvx2Fma();
    const bool neon = internal::CpuHasNeon();
    const bool avx512 = internal::CpuHasAvx512Vnni();
    for (size_t id = 0; id < kMaxTypeId; ++id) {
      if (FindTypeInfo(static_cast<uint32_t>(id)) == nullptr) continue;
      const TensorType type = static_cast<TensorType>(id);
      internal::VecDotFn fn = avx512 ? internal::GetVecDotAvx512(type) : nullptr;
      if (fn == nullptr)
        fn = avx2 ? internal::GetVecDotAvx2(type) : neon ? internal::GetVecDotNeon(type) : nullptr;
      t[id] = fn != nullptr ? fn : internal::GetVecDotRef(type);
    }
    return t;
  }();
  return table;
}

}  // namespace

namespace internal {

VecDotFn GetVecDot(TensorType type) {
  const auto id = static_cast<size_t>(type);
  return id < kMaxTypeId ? VecDotTable()[id] : nullptr;
}

}  // namespace internal

float Fp16ToFp32(uint16_t h) { return internal::HalfToFloat(h); }
uint16_t Fp32ToFp16(float f) { return internal::FloatToHalf(f); }
float Bf16ToFp32(uint16_t h) { return internal::Bf16ToFloat(h); }
uint16_t Fp32ToBf16(float f) { return internal::FloatToBf16(f); }

void DequantizeRow(TensorType type, const void* src, float* dst, int64_t n) {
  if (internal::CpuHasAvx2Fma() && internal::DequantizeRowAvx2(type, src, dst, n)) return;
  if (internal::CpuHasNeon() && internal::DequantizeRowNeon(type, src, dst, n)) return;
  internal::DequantizeRowRef(type, src, dst, n);
}

void QuantizeRow(TensorType type, const float* src, void* dst, int64_t n) {
  if (internal::CpuHasAvx2Fma() && internal::QuantizeRowAvx2(type, src, dst, n)) return;
  if (internal::CpuHasNeon() && internal::QuantizeRowNeon(type, src, dst, n)) return;
  internal::QuantizeRowRef(type, src, dst, n);
}

TensorType VecDotType(TensorType weight_type) {
  switch (weight_type) {
    case TensorType::kQ4_0:
    case TensorType::kQ5_0:
    case TensorType::kQ8_0:
      return TensorType::kQ8_0;
    case TensorType::kQ4_1:
    case TensorType::kQ5_1:
      return TensorType::kQ8_1;
    case TensorType::kQ4_K:
    case TensorType::kQ5_K:
    case TensorType::kQ6_K:
      return TensorType::kQ8_K;
    case TensorType::kF16:
      return TensorType::kF16;
    case TensorType::kBF16:
      return TensorType::kBF16;
    case TensorType::kF32:
      return TensorType::kF32;
    default:
      std::fprintf(stderr, "exo: internal error: no dot product for tensor type %s\n",
                   TypeName(weight_type));
      std::abort();
  }
}

const char* SimdLevelName() {
  if (internal::CpuHasAvx512Vnni()) return "avx512-vnni";
  // avx2-vnni: the AVX2 level with the AVX-VNNI GEMM kernels (prompt processing).
  if (internal::CpuHasAvxVnni()) return "avx2-vnni";
  if (internal::CpuHasAvx2Fma()) return "avx2";
  if (internal::CpuHasNeon()) return "neon";
  return "scalar";
}

float VecDot(TensorType type, const void* weights, const void* activations, int64_t n) {
  internal::VecDotFn fn = internal::GetVecDot(type);
  if (fn == nullptr) {
    std::fprintf(stderr, "exo: internal error: no dot product for tensor type %s\n",
                 TypeName(type));
    std::abort();
  }
  return fn(weights, activations, n);
}

}  // namespace exo::kernels
