// Values of the Jinja subset used by chat templates, with Python semantics.
//
// Chat templates are Python code in disguise: a correct renderer must print `None`, `True`,
// `2.0`, `['a', 1]` exactly as CPython does, compare 1 == 1.0, index strings by code point, and
// treat undefined names like jinja2's default `Undefined` (falsy, renders empty, but any
// attribute or item access on it is an error). This file holds the value type and those rules.
//
// Containers are immutable once built and shared by pointer (copies are cheap), except
// `namespace()` objects, whose attributes a template may assign. Every container records its
// nesting depth so that printing, comparing and destroying a value never recurses deeper than
// kMaxValueDepth.
#ifndef EXO_RUNTIME_INTERNAL_JINJA_VALUE_H_
#define EXO_RUNTIME_INTERNAL_JINJA_VALUE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace exo::runtime::jinja {

inline constexpr int kMaxValueDepth = 128;

class Value;
using Array = std::vector<Value>;

// A dict with string keys in insertion order (Python dicts keep insertion order).
struct Object {
  std::vector<std::pair<std::string, Value>> entries;
  bool is_namespace = false;  // created by namespace(); attributes may be assigned

  const Value* Find(std::string_view key) const;
  void Set(std::string key, Value value);
};

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};

// Functions, macros and bound methods (`'x'.strip`).
struct Callable {
  std::string name;
  std::function<absl::StatusOr<Value>(CallArgs&)> fn;
};

class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kArray, kObject, kCallable };

  Value() = default;  // undefined, with the generic message
  static Value Undefined(std::string message);
  static Value None();
  static Value Bool(bool b);
  static Value Int(int64_t i);
  static Value Float(double f);
  static Value String(std::string s);
  // Fails when the nesting would exceed kMaxValueDepth.
  // `tuple` marks a Python tuple: it prints as (a, b) and never equals a list.
  static absl::StatusOr<Value> MakeArray(Array items, bool tuple = false);
  static absl::StatusOr<Value> MakeObject(Object object);
  static Value MakeCallable(std::string name, std::function<absl::StatusOr<Value>(CallArgs&)> fn);
  // Converts JSON input (messages, tools); fails on nesting deeper than kMaxValueDepth.
  static absl::StatusOr<Value> FromJson(const nlohmann::json& json);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_array() const { return kind_ == Kind::kArray; }
  bool is_tuple() const { return kind_ == Kind::kArray && b_; }
  bool is_object() const { return kind_ == Kind::kObject; }
  bool is_callable() const { return kind_ == Kind::kCallable; }
  bool is_number() const {
    return kind_ == Kind::kInt || kind_ == Kind::kFloat || kind_ == Kind::kBool;
  }

  bool bool_value() const { return kind_ == Kind::kBool && b_; }
  int64_t int_value() const { return kind_ == Kind::kBool ? (b_ ? 1 : 0) : i_; }
  double float_value() const {
    return kind_ == Kind::kFloat ? f_ : static_cast<double>(int_value());
  }
  const std::string& string_value() const { return *s_; }  // kString, or kUndefined's message
  const Array& array() const { return *array_; }
  const Object& object() const { return *object_; }
  Object& mutable_object() const { return *object_; }  // namespaces only
  const Callable& callable() const { return *callable_; }
  int depth() const { return depth_; }
  // Roughly the work of one walk over the value: 1 per node, plus string bytes / 8.
  uint64_t weight() const { return kind_ == Kind::kString ? 1 + s_->size() / 8 : weight_; }
  // True for namespaces and containers holding one; a namespace may not hold another, which
  // keeps values acyclic.
  bool contains_namespace() const { return contains_namespace_; }

  // Python truthiness.
  bool Truthy() const;
  // The message jinja2 gives when an undefined value is used: "'x' is undefined".
  const std::string& UndefinedMessage() const;

 private:
  Kind kind_ = Kind::kUndefined;
  bool b_ = false;
  int64_t i_ = 0;
  double f_ = 0;
  int depth_ = 0;
  uint64_t weight_ = 1;
  bool contains_namespace_ = false;
  std::shared_ptr<const std::string> s_;
  std::shared_ptr<const Array> array_;
  std::shared_ptr<Object> object_;
  std::shared_ptr<const Callable> callable_;
};

// Python str(): what `{{ value }}` prints. Undefined prints as "".
std::string ToPyStr(const Value& value);
// Python repr(): how values print inside lists and dicts.
std::string ToPyRepr(const Value& value);
// Python repr() of a float: "2.0", "1e+16", "0.30000000000000004", "inf".
std::string FormatPyFloat(double value);
// json.dumps(value, ensure_ascii, indent, separators, sort_keys) as the Hugging Face tojson
// filter calls it. indent < 0 means None. Undefined and callables are not serializable.
struct JsonOptions {
  bool ensure_ascii = false;
  int indent = -1;
  std::string item_separator;  // empty: Python's default for the indent
  std::string key_separator;
  bool has_separators = false;
  bool sort_keys = false;
};
absl::StatusOr<std::string> ToPyJson(const Value& value, const JsonOptions& options);

// Python == between any two values (1 == 1.0 == True, deep for containers).
bool PyEquals(const Value& a, const Value& b);
// Python <; InvalidArgument for incomparable types ("'<' not supported between ...").
absl::StatusOr<bool> PyLess(const Value& a, const Value& b);
// The type name jinja2 puts in messages: "dict object", "str object", "None".
std::string PyTypeDescription(const Value& value);
// Python type name for TypeError messages: "str", "int", "NoneType", "list", "dict".
std::string PyTypeName(const Value& value);

// ---- UTF-8 helpers: Python strings index by code point. Invalid bytes count as one each. ----
// Byte offsets of every code point start, plus s.size() at the end.
std::vector<size_t> CodePointOffsets(std::string_view s);
size_t CodePointCount(std::string_view s);
// Decodes one code point at `pos` (advancing it); invalid bytes decode as themselves.
char32_t DecodeCodePoint(std::string_view s, size_t& pos);
void AppendUtf8(char32_t cp, std::string& out);
// Python str.isspace() for one code point.
bool IsPySpace(char32_t cp);
// Python str.strip/lstrip/rstrip with chars (nullptr: whitespace).
std::string PyStrip(std::string_view s, const std::string* chars, bool left, bool right);

}  // namespace exo::runtime::jinja

#endif  // EXO_RUNTIME_INTERNAL_JINJA_VALUE_H_
