// Batches that hold rows of several sequences, as Stage::ForwardBatch and the layer blocks see
// them.
#ifndef EXO_RUNTIME_BATCH_H_
#define EXO_RUNTIME_BATCH_H_

#include <cstdint>

namespace exo::runtime {

// Which rows of a stage with the head get logits: the last row of a sequence's part of the batch
// (generation) or every row (speculative verification).
enum class LogitsMode { kLast, kAll };

// One sequence's part of a multi-sequence batch (continuous batching, pipelined sequences).
struct BatchSegment {
  int32_t slot = 0;
  int32_t first_position = 0;  // position of the segment's first token
  int32_t n_tokens = 0;
  LogitsMode logits = LogitsMode::kLast;  // rows of output for a stage with the head
};

// Where a segment's rows sit in the batch: rows [row_begin, row_begin + n) of every batch matrix
// are positions [first_position, first_position + n) of the sequence in KV slot `slot`.
struct SequenceRows {
  int32_t slot = 0;
  int32_t first_position = 0;
  int32_t row_begin = 0;
  int32_t n = 0;
};

}  // namespace exo::runtime

#endif  // EXO_RUNTIME_BATCH_H_
