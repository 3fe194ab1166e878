// UTF-8 helpers and the byte-level BPE byte <-> character mapping used by the tokenizers.
#ifndef EXO_RUNTIME_INTERNAL_TOKENIZER_UTF8_H_
#define EXO_RUNTIME_INTERNAL_TOKENIZER_UTF8_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace exo::runtime::tokenizer_internal {

// Length of the UTF-8 sequence that `lead` starts, judged from its high bits only (as llama.cpp
// does when it cuts text into characters): 1 for ASCII and for stray continuation bytes, 2, 3 or
// 4 otherwise. Never 0.
size_t Utf8LengthFromLeadByte(uint8_t lead);

enum class Utf8Prefix {
  kComplete,    // a whole, valid character of `*length` bytes starts here
  kIncomplete,  // valid so far, but the text ends before the character does
  kInvalid,     // the byte here can never start a valid character (`*length` is 1)
};
// Strictly checks the character at `text[pos]` (no overlongs, surrogates or values > U+10FFFF).
Utf8Prefix CheckUtf8At(std::string_view text, size_t pos, size_t* length);

// Appends the UTF-8 encoding of `codepoint` (must be <= U+10FFFF).
void AppendUtf8(uint32_t codepoint, std::string& out);

// The replacement character U+FFFD in UTF-8.
inline constexpr std::string_view kReplacementCharacter = "\xEF\xBF\xBD";

// GPT-2 byte-level mapping: every byte gets a printable character (bytes that are printable
// Latin-1 map to themselves, the rest to U+0100 onwards, in byte order).
// Appends the UTF-8 of the character standing for `byte`.
void AppendByteLevelCharacter(uint8_t byte, std::string& out);
// Maps byte-level text back to bytes. Characters outside the mapping are copied unchanged.
std::string DecodeByteLevel(std::string_view text);

}  // namespace exo::runtime::tokenizer_internal

#endif  // EXO_RUNTIME_INTERNAL_TOKENIZER_UTF8_H_
