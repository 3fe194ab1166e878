// Tensor element types, numbered exactly as GGUF / ggml number them.
#ifndef EXO_KERNELS_TYPES_H_
#define EXO_KERNELS_TYPES_H_

#include <cstdint>

namespace exo::kernels {

// Values are the on-disk GGUF type ids; never renumber.
enum class TensorType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ2_XXS = 16,
  kIQ2_XS = 17,
  kIQ3_XXS = 18,
  kIQ1_S = 19,
  kIQ4_NL = 20,
  kIQ3_S = 21,
  kIQ2_S = 22,
  kIQ4_XS = 23,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kIQ1_M = 29,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
  kMXFP4 = 39,
};

struct TypeInfo {
  const char* name;     // "Q4_K", as llama.cpp prints it
  int64_t block_size;   // elements per block (1 for plain types)
  int64_t block_bytes;  // bytes per block
  bool supported;       // true when this project can dequantize and multiply it
};

// Returns the layout of a GGUF type id, or nullptr when the id is unknown. Unknown ids are
// untrusted input: callers turn nullptr into a clear error.
const TypeInfo* FindTypeInfo(uint32_t raw_type);

// Layout of a known type (aborts on an id that FindTypeInfo would reject).
const TypeInfo& GetTypeInfo(TensorType type);

inline const char* TypeName(TensorType type) { return GetTypeInfo(type).name; }

// Bytes taken by a row of `n` elements. Requires n % block_size == 0.
int64_t RowBytes(TensorType type, int64_t n);

}  // namespace exo::kernels

#endif  // EXO_KERNELS_TYPES_H_
