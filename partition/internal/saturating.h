// Saturating arithmetic for byte counts: a hostile or broken profile must not wrap around into
// a small number that "fits".
#ifndef EXO_PARTITION_INTERNAL_SATURATING_H_
#define EXO_PARTITION_INTERNAL_SATURATING_H_

#include <cstdint>
#include <limits>

namespace exo::partition::internal {

inline uint64_t SaturatingAdd(uint64_t a, uint64_t b) {
  const uint64_t sum = a + b;
  return sum < a ? std::numeric_limits<uint64_t>::max() : sum;
}

inline uint64_t SaturatingMultiply(uint64_t a, uint64_t b) {
  if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) {
    return std::numeric_limits<uint64_t>::max();
  }
  return a * b;
}

}  // namespace exo::partition::internal

#endif  // EXO_PARTITION_INTERNAL_SATURATING_H_
