// Tokenizer for the Jinja subset, following jinja2's lexer with the Hugging Face settings
// (trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False):
//   - line endings are normalised to "\n" and one trailing newline is dropped;
//   - "{%-", "{{-", "{#-" strip all whitespace before the tag; "-%}", "-}}", "-#}" all after it;
//   - "%}" and "#}" eat one directly following newline (trim_blocks), "+%}" does not;
//   - "{%" and "{#" preceded on their line only by spaces/tabs remove those (lstrip_blocks),
//     "{%+" does not; "{{" never does.
// Inside tags the expression is split into names, literals and operators; a tag's closing
// delimiter only counts outside brackets, so "{{ {'a': {'b': 1}} }}" works.
#ifndef EXO_RUNTIME_INTERNAL_JINJA_LEXER_H_
#define EXO_RUNTIME_INTERNAL_JINJA_LEXER_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace exo::runtime::jinja {

enum class TokenKind {
  kData,           // literal template text (text)
  kVariableBegin,  // {{
  kVariableEnd,    // }}
  kBlockBegin,     // {%
  kBlockEnd,       // %}
  kName,           // identifier (text)
  kString,         // string literal, escapes decoded (text)
  kInteger,        // int_value
  kFloat,          // float_value
  kOperator,       // text: one of + - * / // % ** ~ == != < <= > >= = ( ) [ ] { } . : | , ;
  kEnd,            // end of template
};

struct Token {
  TokenKind kind = TokenKind::kEnd;
  std::string text;
  int64_t int_value = 0;
  double float_value = 0;
  size_t offset = 0;  // into the normalised source
};

// Normalises line endings and drops one trailing newline, as jinja2 does before lexing.
std::string NormalizeTemplateSource(std::string_view source);

// Tokenizes a normalised source. Errors are InvalidArgument with line and column.
absl::StatusOr<std::vector<Token>> Tokenize(std::string_view normalized_source);

// 1-based line and column of a byte offset (columns count code points).
void LineAndColumn(std::string_view source, size_t offset, int& line, int& column);

}  // namespace exo::runtime::jinja

#endif  // EXO_RUNTIME_INTERNAL_JINJA_LEXER_H_
