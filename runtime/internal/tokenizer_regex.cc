#include "runtime/internal/tokenizer_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/internal/tokenizer_utf8.h"

namespace exo::runtime::tokenizer_internal {
namespace {

// GPT-2's pattern (without its final "|\s+": whitespace it leaves unmatched becomes a piece
// anyway).
constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))";
// Llama 3: case-insensitive contractions, letters with one leading non-letter, digits in threes.
constexpr char kLlama3Pattern[] =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3})"
    R"(| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// Qwen 2: as Llama 3 but digits one by one.
constexpr char kQwen2Pattern[] =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N})"
    R"(| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// Mistral's tekken, as written in its tokenizer.json (PCRE2 has the letter sub-categories).
constexpr char kTekkenPattern[] =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+)"
    R"(|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*)"
    R"(|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

}  // namespace

absl::StatusOr<PreTokenizerSpec> PreTokenizerSpecFor(std::string_view pre) {
  const auto is_any = [&](std::initializer_list<std::string_view> names) {
    for (std::string_view name : names) {
      if (pre == name) return true;
    }
    return false;
  };
  if (is_any({"gpt-2", "gpt2", "phi-2", "mpt", "olmo", "jais"})) {
    return PreTokenizerSpec{{kGpt2Pattern}, false};
  }
  if (is_any({"default", ""})) {
    // llama.cpp's fallback for BPE vocabularies without a known pre-tokenizer.
    return PreTokenizerSpec{
        {R"([\p{P}\$\+<=>\^~\|]+)", kGpt2Pattern, R"(\p{N}+)", "[0-9][0-9][0-9]"}, false};
  }
  if (is_any({"llama3", "llama-v3", "llama-bpe", "falcon3"})) {
    return PreTokenizerSpec{{kLlama3Pattern}, true};
  }
  if (is_any({"dbrx", "smaug-bpe"})) return PreTokenizerSpec{{kLlama3Pattern}, false};
  if (is_any({"qwen2", "qwen2.5", "qwen-2.5", "deepseek-r1-qwen", "stablelm2"})) {
    return PreTokenizerSpec{{kQwen2Pattern}, false};
  }
  if (is_any({"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"})) {
    return PreTokenizerSpec{{R"(\p{N})", kGpt2Pattern}, false};
  }
  if (pre == "tekken") return PreTokenizerSpec{{kTekkenPattern}, true};
  return absl::InvalidArgumentError(absl::StrCat(
      "unsupported tokenizer.ggml.pre '", absl::string_view(pre.data(), pre.size()),
      "' for a gpt2 (byte-level BPE) vocabulary; supported: gpt-2, default, llama3/llama-bpe, "
      "dbrx, smaug-bpe, qwen2, stablelm2, smollm/starcoder/refact/command-r, tekken"));
}

struct RegexSplitter::Compiled {
  pcre2_code* code = nullptr;
};

absl::StatusOr<std::unique_ptr<RegexSplitter>> RegexSplitter::Create(
    const std::vector<std::string>& patterns) {
  std::unique_ptr<RegexSplitter> splitter(new RegexSplitter());
  for (const std::string& pattern : patterns) {
    int error_code = 0;
    PCRE2_SIZE error_offset = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                     PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error_code,
                                     &error_offset, nullptr);
    if (code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error_code, message, sizeof(message));
      return absl::InternalError(absl::StrCat("pre-tokenizer regex '", pattern,
                                              "' does not compile at offset ", error_offset, ": ",
                                              reinterpret_cast<const char*>(message)));
    }
    // JIT is an optimisation only: without it pcre2_match interprets the pattern.
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
    splitter->compiled_.push_back(Compiled{code});
  }
  return splitter;
}

RegexSplitter::~RegexSplitter() {
  for (Compiled& compiled : compiled_) pcre2_code_free(compiled.code);
}

std::vector<std::string_view> RegexSplitter::Split(std::string_view text) const {
  std::vector<std::string_view> pieces;
  if (text.empty()) return pieces;
  pieces.push_back(text);
  pcre2_match_data* match_data = pcre2_match_data_create(1, nullptr);
  std::vector<std::string_view> next;
  for (const Compiled& compiled : compiled_) {
    next.clear();
    for (std::string_view piece : pieces) {
      const auto* subject = reinterpret_cast<PCRE2_SPTR>(piece.data());
      size_t offset = 0;   // where the next search starts
      size_t emitted = 0;  // end of what has been cut off already
      while (offset < piece.size()) {
        int rc = pcre2_match(compiled.code, subject, piece.size(), offset, 0, match_data, nullptr);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
          // The JIT's small default stack ran out (very long runs); the interpreter uses the heap.
          rc = pcre2_match(compiled.code, subject, piece.size(), offset, PCRE2_NO_JIT, match_data,
                           nullptr);
        }
        if (rc < 0) break;  // no further match (or a matching error: keep the rest whole)
        const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match_data);
        const size_t start = ovector[0];
        const size_t end = ovector[1];
        if (end <= start) {  // an empty match cuts nothing; step over one character
          if (start >= piece.size()) break;
          offset = start + Utf8LengthFromLeadByte(static_cast<uint8_t>(piece[start]));
          continue;
        }
        if (start > emitted) next.push_back(piece.substr(emitted, start - emitted));
        next.push_back(piece.substr(start, end - start));
        emitted = end;
        offset = end;
      }
      if (emitted < piece.size()) next.push_back(piece.substr(emitted));
    }
    pieces.swap(next);
  }
  pcre2_match_data_free(match_data);
  return pieces;
}

}  // namespace exo::runtime::tokenizer_internal
