// Finds special-token texts in input text with llama.cpp's semantics: tokens are taken one after
// another in priority order (longest text first), and each token is cut, leftmost occurrences
// first, out of whatever text earlier tokens left uncut.
#ifndef EXO_RUNTIME_INTERNAL_TOKENIZER_SPECIAL_H_
#define EXO_RUNTIME_INTERNAL_TOKENIZER_SPECIAL_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace exo::runtime::tokenizer_internal {

class SpecialTokenMatcher {
 public:
  struct Pattern {
    std::string_view text;  // not empty; must outlive the matcher (the tokenizer owns the texts)
    bool always;            // matched even without parse_special (user-defined tokens)
  };
  struct Match {
    size_t offset;
    size_t length;
    int32_t pattern;  // index into the patterns, i.e. the priority rank
  };

  SpecialTokenMatcher() = default;
  // `patterns` in priority order.
  explicit SpecialTokenMatcher(std::vector<Pattern> patterns);

  // The cut-out matches in text order. One pass over the text with a trie, then the priority
  // rules applied to the candidate occurrences.
  std::vector<Match> Find(std::string_view text, bool parse_special) const;
  // The same result computed the direct way (one search per pattern); the reference for tests.
  std::vector<Match> FindReference(std::string_view text, bool parse_special) const;

 private:
  bool Enabled(int32_t pattern, bool parse_special) const {
    return parse_special || patterns_[pattern].always;
  }

  std::vector<Pattern> patterns_;
  // Trie over the pattern texts: (node << 8 | byte) -> child node; node 0 is the root.
  absl::flat_hash_map<uint64_t, int32_t> children_;
  // Per node: the best-ranked pattern ending there, and the best-ranked one with `always`.
  std::vector<int32_t> ends_any_;
  std::vector<int32_t> ends_always_;
};

}  // namespace exo::runtime::tokenizer_internal

#endif  // EXO_RUNTIME_INTERNAL_TOKENIZER_SPECIAL_H_
