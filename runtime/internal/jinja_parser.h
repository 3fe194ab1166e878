// Parser for the Jinja subset: tokens -> syntax tree, with jinja2's grammar and precedence
// (filters bind tighter than arithmetic: `'a' + x | trim` is `'a' + (x | trim)`).
//
// Supported tags: if/elif/else, for (tuple targets, `if` filter, else), set (expression, tuple
// unpacking, namespace attribute, block form), macro, break, continue, generation, and comments.
// Unknown filters and tests are rejected here, as jinja2 rejects them when compiling.
// Templates are untrusted: nesting deeper than kMaxSyntaxDepth is a syntax error, never a
// stack overflow.
#ifndef EXO_RUNTIME_INTERNAL_JINJA_PARSER_H_
#define EXO_RUNTIME_INTERNAL_JINJA_PARSER_H_

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "runtime/internal/jinja_ast.h"

namespace exo::runtime::jinja {

struct ParsedTemplate {
  std::string source;  // normalised; error offsets point into it
  Body body;
};

// Errors: InvalidArgument "chat template syntax error at line L, column C: ...".
absl::StatusOr<std::shared_ptr<const ParsedTemplate>> ParseTemplate(std::string_view source);

}  // namespace exo::runtime::jinja

#endif  // EXO_RUNTIME_INTERNAL_JINJA_PARSER_H_
