// Filters, tests and global functions of the Jinja subset (jinja2's names and semantics, with
// Hugging Face's `tojson`: json.dumps(ensure_ascii=False, sort_keys=False)).
#ifndef EXO_RUNTIME_INTERNAL_JINJA_BUILTINS_H_
#define EXO_RUNTIME_INTERNAL_JINJA_BUILTINS_H_

#include <string_view>

#include "absl/status/statusor.h"
#include "runtime/internal/jinja_value.h"

namespace exo::runtime::jinja {

class Interpreter;

bool IsKnownFilter(std::string_view name);
bool IsKnownTest(std::string_view name);

// `operand | name(args)`.
absl::StatusOr<Value> ApplyFilter(Interpreter& interpreter, std::string_view name,
                                  const Value& operand, CallArgs& args);
// `operand is name(args)`.
absl::StatusOr<bool> ApplyTest(Interpreter& interpreter, std::string_view name,
                               const Value& operand, CallArgs& args);
// Attribute access `object.name`: dict keys, dict and str methods, namespace attributes.
// Returns an undefined value (with jinja2's message) when missing; errors only when `object`
// itself is undefined.
absl::StatusOr<Value> GetAttribute(Interpreter& interpreter, const Value& object,
                                   std::string_view name);
// Item access `object[key]`.
absl::StatusOr<Value> GetItem(Interpreter& interpreter, const Value& object, const Value& key);
// Python iteration: list items, dict keys, string characters; undefined is empty.
absl::StatusOr<Array> Iterate(const Value& value);
// Python len().
absl::StatusOr<int64_t> Length(const Value& value);
// Python `needle in haystack`.
absl::StatusOr<bool> Contains(const Value& haystack, const Value& needle);

}  // namespace exo::runtime::jinja

#endif  // EXO_RUNTIME_INTERNAL_JINJA_BUILTINS_H_
