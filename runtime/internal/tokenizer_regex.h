// Pre-tokenisation for byte-level BPE: splits text with the regular expressions llama.cpp uses
// for each tokenizer.ggml.pre value, evaluated with PCRE2 in UTF + UCP mode.
#ifndef EXO_RUNTIME_INTERNAL_TOKENIZER_REGEX_H_
#define EXO_RUNTIME_INTERNAL_TOKENIZER_REGEX_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace exo::runtime::tokenizer_internal {

struct PreTokenizerSpec {
  std::vector<std::string> patterns;  // applied one after another
  bool ignore_merges = false;         // a pre-token that is already a token is not merged
};

// The spec for a tokenizer.ggml.pre name. InvalidArgument naming the supported ones otherwise.
absl::StatusOr<PreTokenizerSpec> PreTokenizerSpecFor(std::string_view pre);

// Splits text the way llama.cpp's unicode_regex_split does: each pattern in turn cuts every piece
// from the previous step at its match boundaries (each piece is matched on its own, so lookahead
// stops at the piece's end); unmatched stretches stay as pieces of their own. Invalid UTF-8 is
// never matched, so it ends up in pieces of its own. Thread-safe.
class RegexSplitter {
 public:
  static absl::StatusOr<std::unique_ptr<RegexSplitter>> Create(
      const std::vector<std::string>& patterns);
  ~RegexSplitter();
  RegexSplitter(const RegexSplitter&) = delete;
  RegexSplitter& operator=(const RegexSplitter&) = delete;

  // Pieces point into `text`; together they cover it exactly, in order.
  std::vector<std::string_view> Split(std::string_view text) const;

 private:
  struct Compiled;
  RegexSplitter() = default;
  std::vector<Compiled> compiled_;
};

}  // namespace exo::runtime::tokenizer_internal

#endif  // EXO_RUNTIME_INTERNAL_TOKENIZER_REGEX_H_
