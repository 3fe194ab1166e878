// ggml-compatible block layouts. Every struct is byte-for-byte the on-disk GGUF layout; the sizes
// are checked against kernels/types.cc at compile time (static_assert) and in the tests.
#ifndef EXO_KERNELS_INTERNAL_BLOCKS_H_
#define EXO_KERNELS_INTERNAL_BLOCKS_H_

#include <cstdint>

namespace exo::kernels::internal {

// Elements per block of the 32-wide ("legacy") formats and of the 256-wide K-quant super-blocks.
inline constexpr int kQk32 = 32;
inline constexpr int kQkK = 256;
// Bytes of packed 6-bit scales and mins in Q4_K / Q5_K.
inline constexpr int kKScaleSize = 12;

// fp16 values are stored as raw IEEE binary16 bits.
using Half = uint16_t;

// x = d * (q - 8), q in [0, 15]. qs[j] holds element j (low nibble) and j + 16 (high nibble).
struct BlockQ4_0 {
  Half d;
  uint8_t qs[kQk32 / 2];
};

// x = d * q + m, q in [0, 15]; same nibble layout as Q4_0.
struct BlockQ4_1 {
  Half d;
  Half m;
  uint8_t qs[kQk32 / 2];
};

// x = d * (q - 16), q in [0, 31]. Low 4 bits as Q4_0; bit 4 of element j is bit j of qh
// (little-endian uint32).
struct BlockQ5_0 {
  Half d;
  uint8_t qh[4];
  uint8_t qs[kQk32 / 2];
};

// x = d * q + m, q in [0, 31]; layout as Q5_0.
struct BlockQ5_1 {
  Half d;
  Half m;
  uint8_t qh[4];
  uint8_t qs[kQk32 / 2];
};

// x = d * q, q in [-127, 127].
struct BlockQ8_0 {
  Half d;
  int8_t qs[kQk32];
};

// Activation format for Q4_1 / Q5_1: as Q8_0 plus s = d * sum(qs).
struct BlockQ8_1 {
  Half d;
  Half s;
  int8_t qs[kQk32];
};

// 8 sub-blocks of 32: x = d * sc[j] * q - dmin * m[j], q in [0, 15], sc/m 6-bit packed in
// `scales`. qs[32 * c + l] holds element 64 * c + l (low nibble) and 64 * c + 32 + l (high).
struct BlockQ4_K {
  Half d;
  Half dmin;
  uint8_t scales[kKScaleSize];
  uint8_t qs[kQkK / 2];
};

// As Q4_K with a fifth bit: bit 4 of element 64 * c + l is bit 2c of qh[l], of element
// 64 * c + 32 + l bit 2c + 1 of qh[l].
struct BlockQ5_K {
  Half d;
  Half dmin;
  uint8_t scales[kKScaleSize];
  uint8_t qh[kQkK / 8];
  uint8_t qs[kQkK / 2];
};

// 16 sub-blocks of 16: x = d * scales[j] * (q - 32), q in [0, 63]; 4 low bits in ql, 2 high bits
// in qh (see DequantizeRowQ6_K for the exact interleaving).
struct BlockQ6_K {
  uint8_t ql[kQkK / 2];
  uint8_t qh[kQkK / 4];
  int8_t scales[kQkK / 16];
  Half d;
};

// Activation format for K-quants: x = d * q (d is a float), with the sums of each 16 quants.
struct BlockQ8_K {
  float d;
  int8_t qs[kQkK];
  int16_t bsums[kQkK / 16];
};

static_assert(sizeof(BlockQ4_0) == 18, "Q4_0 block layout");
static_assert(sizeof(BlockQ4_1) == 20, "Q4_1 block layout");
static_assert(sizeof(BlockQ5_0) == 22, "Q5_0 block layout");
static_assert(sizeof(BlockQ5_1) == 24, "Q5_1 block layout");
static_assert(sizeof(BlockQ8_0) == 34, "Q8_0 block layout");
static_assert(sizeof(BlockQ8_1) == 36, "Q8_1 block layout");
static_assert(sizeof(BlockQ4_K) == 144, "Q4_K block layout");
static_assert(sizeof(BlockQ5_K) == 176, "Q5_K block layout");
static_assert(sizeof(BlockQ6_K) == 210, "Q6_K block layout");
static_assert(sizeof(BlockQ8_K) == 292, "Q8_K block layout");
static_assert(alignof(BlockQ4_0) == 2 && alignof(BlockQ8_0) == 2 && alignof(BlockQ6_K) == 2,
              "fp16-scaled blocks are 2-byte aligned");

}  // namespace exo::kernels::internal

#endif  // EXO_KERNELS_INTERNAL_BLOCKS_H_
