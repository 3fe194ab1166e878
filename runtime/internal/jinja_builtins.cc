#include "runtime/internal/jinja_builtins.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <initializer_list>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "runtime/internal/jinja_interpreter.h"

namespace exo::runtime::jinja {
namespace {

absl::Status TypeError(std::string message) {
  return absl::InvalidArgumentError(std::move(message));
}

// Binds call arguments to named parameters; unpassed ones stay undefined. Extra positional
// arguments go to `rest` when given, else they are an error.
absl::StatusOr<std::vector<Value>> Bind(std::string_view function, const CallArgs& args,
                                        std::initializer_list<std::string_view> names,
                                        std::vector<Value>* rest = nullptr) {
  std::vector<Value> bound(names.size());
  std::vector<std::string_view> name_list(names);
  for (size_t i = 0; i < args.positional.size(); ++i) {
    if (i < name_list.size()) {
      bound[i] = args.positional[i];
    } else if (rest != nullptr) {
      rest->push_back(args.positional[i]);
    } else {
      return TypeError(absl::StrCat(std::string(function), "() takes at most ", name_list.size(),
                                    " arguments (", args.positional.size(), " given)"));
    }
  }
  for (const auto& [key, value] : args.keyword) {
    auto it = std::find(name_list.begin(), name_list.end(), key);
    if (it == name_list.end()) {
      return TypeError(
          absl::StrCat(std::string(function), "() got an unexpected keyword argument '", key, "'"));
    }
    bound[it - name_list.begin()] = value;
  }
  return bound;
}

bool IsSet(const Value& v) { return !v.is_undefined(); }

absl::StatusOr<int64_t> IntArg(const Value& v, int64_t fallback, std::string_view what) {
  if (!IsSet(v) || v.is_none()) return fallback;
  if (v.kind() != Value::Kind::kInt && v.kind() != Value::Kind::kBool) {
    return TypeError(absl::StrCat(std::string(what), " must be an integer"));
  }
  return v.int_value();
}

absl::StatusOr<std::string> StringArg(const Value& v, std::string_view what) {
  if (!v.is_string()) return TypeError(absl::StrCat(std::string(what), " must be a string"));
  return v.string_value();
}

char AsciiUpper(char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 32) : c; }
char AsciiLower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }
bool IsAsciiAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

std::string Upper(std::string s) {
  for (char& c : s) c = AsciiUpper(c);
  return s;
}
std::string Lower(std::string s) {
  for (char& c : s) c = AsciiLower(c);
  return s;
}
std::string Capitalize(const std::string& s) {
  std::string out = Lower(s);
  if (!out.empty()) out[0] = AsciiUpper(out[0]);
  return out;
}
// Python str.title(): a letter after a letter is lowered, any other letter is raised.
std::string PyTitle(const std::string& s) {
  std::string out = s;
  bool previous_cased = false;
  for (char& c : out) {
    if (IsAsciiAlpha(c)) {
      c = previous_cased ? AsciiLower(c) : AsciiUpper(c);
      previous_cased = true;
    } else {
      previous_cased = static_cast<unsigned char>(c) >= 0x80 && previous_cased;
    }
  }
  return out;
}
// jinja2's title filter: words start after whitespace or one of - ( { [ <.
std::string JinjaTitle(const std::string& s) {
  std::string out;
  bool word_start = true;
  for (char c : s) {
    bool separator = c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' ||
                     c == '-' || c == '(' || c == '{' || c == '[' || c == '<';
    if (separator) {
      out.push_back(c);
      word_start = true;
    } else {
      out.push_back(word_start ? AsciiUpper(c) : AsciiLower(c));
      word_start = false;
    }
  }
  return out;
}

// Python str.split(sep, maxsplit).
std::vector<std::string> PySplit(const std::string& s, const std::string* sep, int64_t maxsplit) {
  std::vector<std::string> parts;
  if (sep == nullptr) {
    size_t pos = 0;
    auto skip_space = [&]() {
      while (pos < s.size()) {
        size_t next = pos;
        if (!IsPySpace(DecodeCodePoint(s, next))) break;
        pos = next;
      }
    };
    skip_space();
    while (pos < s.size()) {
      if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) {
        std::string tail = PyStrip(s.substr(pos), nullptr, false, true);
        parts.push_back(tail);
        return parts;
      }
      size_t start = pos;
      while (pos < s.size()) {
        size_t next = pos;
        if (IsPySpace(DecodeCodePoint(s, next))) break;
        pos = next;
      }
      parts.push_back(s.substr(start, pos - start));
      skip_space();
    }
    return parts;
  }
  size_t start = 0;
  while (true) {
    if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) break;
    size_t found = s.find(*sep, start);
    if (found == std::string::npos) break;
    parts.push_back(s.substr(start, found - start));
    start = found + sep->size();
  }
  parts.push_back(s.substr(start));
  return parts;
}

std::string PyReplace(const std::string& s, const std::string& old_text,
                      const std::string& new_text, int64_t count) {
  std::string out;
  int64_t done = 0;
  if (old_text.empty()) {
    std::vector<size_t> offsets = CodePointOffsets(s);
    for (size_t i = 0; i + 1 < offsets.size(); ++i) {
      if (count < 0 || done < count) {
        out += new_text;
        ++done;
      }
      out.append(s, offsets[i], offsets[i + 1] - offsets[i]);
    }
    if (count < 0 || done < count) out += new_text;
    return out;
  }
  size_t start = 0;
  while (count < 0 || done < count) {
    size_t found = s.find(old_text, start);
    if (found == std::string::npos) break;
    out.append(s, start, found - start);
    out += new_text;
    start = found + old_text.size();
    ++done;
  }
  out.append(s, start, std::string::npos);
  return out;
}

absl::StatusOr<Value> StringList(const std::vector<std::string>& parts) {
  Array items;
  items.reserve(parts.size());
  for (const std::string& part : parts) items.push_back(Value::String(part));
  return Value::MakeArray(std::move(items));
}

absl::StatusOr<bool> MatchesPrefixOrSuffix(const std::string& s, const Value& pattern,
                                           bool prefix) {
  auto check = [&](const std::string& p) { return prefix ? s.starts_with(p) : s.ends_with(p); };
  if (pattern.is_string()) return check(pattern.string_value());
  if (pattern.is_array()) {
    for (const Value& item : pattern.array()) {
      if (!item.is_string()) return TypeError("startswith/endswith takes strings");
      if (check(item.string_value())) return true;
    }
    return false;
  }
  return TypeError(absl::StrCat(prefix ? "startswith" : "endswith",
                                " first arg must be str or a tuple of str, not ",
                                PyTypeName(pattern)));
}

// Bound methods of str.
std::optional<Value> StringMethod(Interpreter& interpreter, const Value& self,
                                  std::string_view name) {
  const std::string method(name);
  auto make = [&](std::function<absl::StatusOr<Value>(const std::string&, CallArgs&)> body) {
    Value captured = self;
    return Value::MakeCallable(
        method, [captured, body](CallArgs& args) { return body(captured.string_value(), args); });
  };
  Interpreter* interp = &interpreter;
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    bool left = name != "rstrip";
    bool right = name != "lstrip";
    return make(
        [method, left, right](const std::string& s, CallArgs& args) -> absl::StatusOr<Value> {
          ASSIGN_OR_RETURN(std::vector<Value> a, Bind(method, args, {"chars"}));
          if (a[0].is_string()) return Value::String(PyStrip(s, &a[0].string_value(), left, right));
          return Value::String(PyStrip(s, nullptr, left, right));
        });
  }
  if (name == "split" || name == "rsplit") {
    return make([method](const std::string& s, CallArgs& args) -> absl::StatusOr<Value> {
      ASSIGN_OR_RETURN(std::vector<Value> a, Bind(method, args, {"sep", "maxsplit"}));
      ASSIGN_OR_RETURN(int64_t maxsplit, IntArg(a[1], -1, "maxsplit"));
      if (a[0].is_string()) {
        if (a[0].string_value().empty()) return TypeError("empty separator");
        if (method == "rsplit" && maxsplit >= 0) {
          // Split from the right: reverse logic by splitting fully and re-joining the head.
          std::vector<std::string> all = PySplit(s, &a[0].string_value(), -1);
          if (static_cast<int64_t>(all.size()) - 1 > maxsplit) {
            size_t head_count = all.size() - static_cast<size_t>(maxsplit);
            std::string head = all[0];
            for (size_t i = 1; i < head_count; ++i) head += a[0].string_value() + all[i];
            std::vector<std::string> parts = {head};
            parts.insert(parts.end(), all.begin() + head_count, all.end());
            return StringList(parts);
          }
          return StringList(all);
        }
        return StringList(PySplit(s, &a[0].string_value(), maxsplit));
      }
      return StringList(PySplit(s, nullptr, method == "rsplit" ? -1 : maxsplit));
    });
  }
  if (name == "startswith" || name == "endswith") {
    bool prefix = name == "startswith";
    return make([method, prefix](const std::string& s, CallArgs& args) -> absl::StatusOr<Value> {
      ASSIGN_OR_RETURN(std::vector<Value> a, Bind(method, args, {"prefix"}));
      ASSIGN_OR_RETURN(bool matches, MatchesPrefixOrSuffix(s, a[0], prefix));
      return Value::Bool(matches);
    });
  }
  if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
    return make([method](const std::string& s, CallArgs& args) -> absl::StatusOr<Value> {
      RETURN_IF_ERROR(Bind(method, args, {}).status());
      if (method == "upper") return Value::String(Upper(s));
      if (method == "lower") return Value::String(Lower(s));
      if (method == "title") return Value::String(PyTitle(s));
      return Value::String(Capitalize(s));
    });
  }
  if (name == "replace") {
    return make([method, interp](const std::string& s, CallArgs& args) -> absl::StatusOr<Value> {
      ASSIGN_OR_RETURN(std::vector<Value> a, Bind(method, args, {"old", "new", "count"}));
      ASSIGN_OR_RETURN(std::string old_text, StringArg(a[0], "replace() old"));
      ASSIGN_OR_RETURN(std::string new_text, StringArg(a[1], "replace() new"));
      ASSIGN_OR_RETURN(int64_t count, IntArg(a[2], -1, "replace() count"));
      if (!new_text.empty() &&
          (s.size() / std::max<size_t>(1, old_text.size()) + 1) * new_text.size() >
              interp->limits().max_value_size) {
        RETURN_IF_ERROR(interp->CheckValueSize(s.size() + new_text.size() * (s.size() + 1)));
      }
      std::string out = PyReplace(s, old_text, new_text, count);
      RETURN_IF_ERROR(interp->CheckValueSize(out.size()));
      RETURN_IF_ERROR(interp->ChargeBytes(out.size()));
      return Value::String(std::move(out));
    });
  }
  if (name == "find" || name == "count") {
    return make([method](const std::string& s, CallArgs& args) -> absl::StatusOr<Value> {
      ASSIGN_OR_RETURN(std::vector<Value> a, Bind(method, args, {"sub"}));
      ASSIGN_OR_RETURN(std::string sub, StringArg(a[0], method + "() argument"));
      if (method == "find") {
        size_t found = s.find(sub);
        if (found == std::string::npos) return Value::Int(-1);
        return Value::Int(
            static_cast<int64_t>(CodePointCount(std::string_view(s).substr(0, found))));
      }
      if (sub.empty()) return Value::Int(static_cast<int64_t>(CodePointCount(s)) + 1);
      int64_t count = 0;
      for (size_t pos = s.find(sub); pos != std::string::npos;
           pos = s.find(sub, pos + sub.size())) {
        ++count;
      }
      return Value::Int(count);
    });
  }
  if (name == "join") {
    return make([method, interp](const std::string& s, CallArgs& args) -> absl::StatusOr<Value> {
      ASSIGN_OR_RETURN(std::vector<Value> a, Bind(method, args, {"iterable"}));
      ASSIGN_OR_RETURN(Array items, Iterate(a[0]));
      std::string out;
      for (size_t i = 0; i < items.size(); ++i) {
        if (!items[i].is_string()) {
          return TypeError(absl::StrCat("sequence item ", i, ": expected str instance, ",
                                        PyTypeName(items[i]), " found"));
        }
        if (i > 0) out += s;
        out += items[i].string_value();
        RETURN_IF_ERROR(interp->CheckValueSize(out.size()));
      }
      RETURN_IF_ERROR(interp->ChargeBytes(out.size()));
      return Value::String(std::move(out));
    });
  }
  if (name == "splitlines") {
    return make([method](const std::string& s, CallArgs& args) -> absl::StatusOr<Value> {
      RETURN_IF_ERROR(Bind(method, args, {}).status());
      std::vector<std::string> lines;
      size_t start = 0;
      for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\n' || s[i] == '\r') {
          lines.push_back(s.substr(start, i - start));
          if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
          start = i + 1;
        }
      }
      if (start < s.size()) lines.push_back(s.substr(start));
      return StringList(lines);
    });
  }
  if (name == "isdigit" || name == "isalpha" || name == "isspace" || name == "isupper" ||
      name == "islower") {
    return make([method](const std::string& s, CallArgs& args) -> absl::StatusOr<Value> {
      RETURN_IF_ERROR(Bind(method, args, {}).status());
      if (method == "isspace") {
        if (s.empty()) return Value::Bool(false);
        size_t pos = 0;
        while (pos < s.size()) {
          if (!IsPySpace(DecodeCodePoint(s, pos))) return Value::Bool(false);
        }
        return Value::Bool(true);
      }
      if (method == "isupper" || method == "islower") {
        bool any_cased = false;
        for (char c : s) {
          if (!IsAsciiAlpha(c)) continue;
          any_cased = true;
          if (method == "isupper" ? (c >= 'a' && c <= 'z') : (c >= 'A' && c <= 'Z')) {
            return Value::Bool(false);
          }
        }
        return Value::Bool(any_cased);
      }
      if (s.empty()) return Value::Bool(false);
      for (char c : s) {
        bool ok = method == "isdigit" ? (c >= '0' && c <= '9') : IsAsciiAlpha(c);
        if (!ok) return Value::Bool(false);
      }
      return Value::Bool(true);
    });
  }
  return std::nullopt;
}

// Bound methods of dict.
std::optional<Value> DictMethod(const Value& self, std::string_view name) {
  Value captured = self;
  if (name == "items" || name == "keys" || name == "values") {
    std::string method(name);
    return Value::MakeCallable(method, [captured, method](CallArgs& args) -> absl::StatusOr<Value> {
      RETURN_IF_ERROR(Bind(method, args, {}).status());
      Array items;
      for (const auto& [key, value] : captured.object().entries) {
        if (method == "keys") {
          items.push_back(Value::String(key));
        } else if (method == "values") {
          items.push_back(value);
        } else {
          ASSIGN_OR_RETURN(Value pair, Value::MakeArray({Value::String(key), value}, true));
          items.push_back(std::move(pair));
        }
      }
      return Value::MakeArray(std::move(items));
    });
  }
  if (name == "get") {
    return Value::MakeCallable("get", [captured](CallArgs& args) -> absl::StatusOr<Value> {
      ASSIGN_OR_RETURN(std::vector<Value> a, Bind("get", args, {"key", "default"}));
      if (a[0].is_string()) {
        const Value* found = captured.object().Find(a[0].string_value());
        if (found != nullptr) return *found;
      }
      return IsSet(a[1]) ? a[1] : Value::None();
    });
  }
  return std::nullopt;
}

// Follows a dotted attribute path ("function.name", "0") as jinja2's attribute filters do.
absl::StatusOr<Value> GetAttributePath(Interpreter& interpreter, const Value& item,
                                       const std::string& path) {
  Value current = item;
  size_t start = 0;
  while (true) {
    size_t dot = path.find('.', start);
    std::string part =
        path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    Value key = Value::String(part);
    if (!part.empty() &&
        std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
        part.size() < 18) {
      key = Value::Int(std::strtoll(part.c_str(), nullptr, 10));
    }
    ASSIGN_OR_RETURN(current, GetItem(interpreter, current, key));
    if (dot == std::string::npos) return current;
    start = dot + 1;
  }
}

absl::StatusOr<Value> ArrayValue(Interpreter& interpreter, Array items) {
  RETURN_IF_ERROR(interpreter.CheckValueSize(items.size()));
  return Value::MakeArray(std::move(items));
}

// select / reject / selectattr / rejectattr.
absl::StatusOr<Value> SelectOrReject(Interpreter& interpreter, const Value& operand, CallArgs& args,
                                     bool select, bool by_attribute) {
  ASSIGN_OR_RETURN(Array items, Iterate(operand));
  size_t next = 0;
  std::string attribute;
  if (by_attribute) {
    if (args.positional.empty() || !args.positional[0].is_string()) {
      return TypeError("selectattr/rejectattr need an attribute name");
    }
    attribute = args.positional[0].string_value();
    next = 1;
  }
  std::optional<std::string> test_name;
  if (args.positional.size() > next) {
    if (!args.positional[next].is_string()) return TypeError("the test name must be a string");
    test_name = args.positional[next].string_value();
    if (!IsKnownTest(*test_name))
      return TypeError(absl::StrCat("no test named '", *test_name, "'"));
    ++next;
  }
  CallArgs test_args;
  test_args.positional.assign(args.positional.begin() + static_cast<long>(next),
                              args.positional.end());
  test_args.keyword = args.keyword;
  Array kept;
  for (const Value& item : items) {
    Value subject = item;
    if (by_attribute) {
      ASSIGN_OR_RETURN(subject, GetAttributePath(interpreter, item, attribute));
    }
    bool passes = false;
    if (test_name) {
      CallArgs call = test_args;
      ASSIGN_OR_RETURN(passes, ApplyTest(interpreter, *test_name, subject, call));
    } else {
      passes = subject.Truthy();
    }
    if (passes == select) kept.push_back(item);
  }
  return ArrayValue(interpreter, std::move(kept));
}

// Sort key helper honouring case_sensitive=False for strings.
Value SortKey(const Value& v, bool case_sensitive) {
  if (!case_sensitive && v.is_string()) return Value::String(Lower(v.string_value()));
  return v;
}

absl::Status StableSort(std::vector<std::pair<Value, Value>>& keyed, bool reverse) {
  absl::Status status;
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) {
    if (!status.ok()) return false;
    absl::StatusOr<bool> less = reverse ? PyLess(y.first, x.first) : PyLess(x.first, y.first);
    if (!less.ok()) {
      status = less.status();
      return false;
    }
    return *less;
  });
  return status;
}

std::string HtmlEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

// Python's "%" string formatting for the `format` filter: %s %r %d %i %f %%.
absl::StatusOr<std::string> PercentFormat(const std::string& format, const Array& values) {
  std::string out;
  size_t next = 0;
  for (size_t i = 0; i < format.size(); ++i) {
    if (format[i] != '%') {
      out.push_back(format[i]);
      continue;
    }
    if (i + 1 >= format.size()) return TypeError("incomplete format");
    char spec = format[++i];
    if (spec == '%') {
      out.push_back('%');
      continue;
    }
    if (next >= values.size()) return TypeError("not enough arguments for format string");
    const Value& v = values[next++];
    switch (spec) {
      case 's':
        out += ToPyStr(v);
        break;
      case 'r':
        out += ToPyRepr(v);
        break;
      case 'd':
      case 'i':
        if (!v.is_number()) return TypeError("%d format: a real number is required");
        absl::StrAppend(&out, v.kind() == Value::Kind::kFloat
                                  ? static_cast<int64_t>(std::trunc(v.float_value()))
                                  : v.int_value());
        break;
      case 'f':
        if (!v.is_number()) return TypeError("%f format: a real number is required");
        out += absl::StrFormat("%f", v.float_value());
        break;
      default:
        return TypeError(absl::StrCat("unsupported format character '", std::string(1, spec), "'"));
    }
  }
  if (next < values.size())
    return TypeError("not all arguments converted during string formatting");
  return out;
}

bool IsInteger(const Value& v) { return v.kind() == Value::Kind::kInt; }

constexpr std::string_view kFilters[] = {
    "abs",      "attr",   "capitalize", "center",     "count",      "d",        "default",
    "dictsort", "e",      "escape",     "first",      "float",      "format",   "indent",
    "int",      "items",  "join",       "last",       "length",     "list",     "lower",
    "map",      "max",    "min",        "reject",     "rejectattr", "replace",  "reverse",
    "round",    "safe",   "select",     "selectattr", "sort",       "string",   "sum",
    "title",    "tojson", "trim",       "unique",     "upper",      "wordcount"};

constexpr std::string_view kTests[] = {
    "defined", "undefined", "none",   "boolean",     "false",    "true",        "integer",
    "float",   "number",    "string", "mapping",     "iterable", "sequence",    "callable",
    "sameas",  "escaped",   "in",     "odd",         "even",     "divisibleby", "eq",
    "equalto", "==",        "ne",     "!=",          "lt",       "lessthan",    "<",
    "le",      "<=",        "gt",     "greaterthan", ">",        "ge",          ">=",
    "lower",   "upper",     "filter", "test"};

}  // namespace

bool IsKnownFilter(std::string_view name) {
  return std::find(std::begin(kFilters), std::end(kFilters), name) != std::end(kFilters);
}

bool IsKnownTest(std::string_view name) {
  return std::find(std::begin(kTests), std::end(kTests), name) != std::end(kTests);
}

absl::StatusOr<Array> Iterate(const Value& value) {
  switch (value.kind()) {
    case Value::Kind::kUndefined:
      return Array();
    case Value::Kind::kArray:
      return value.array();
    case Value::Kind::kObject: {
      Array keys;
      keys.reserve(value.object().entries.size());
      for (const auto& entry : value.object().entries) keys.push_back(Value::String(entry.first));
      return keys;
    }
    case Value::Kind::kString: {
      Array chars;
      const std::string& s = value.string_value();
      std::vector<size_t> offsets = CodePointOffsets(s);
      chars.reserve(offsets.size() - 1);
      for (size_t i = 0; i + 1 < offsets.size(); ++i) {
        chars.push_back(Value::String(s.substr(offsets[i], offsets[i + 1] - offsets[i])));
      }
      return chars;
    }
    default:
      return TypeError(absl::StrCat("'", PyTypeName(value), "' object is not iterable"));
  }
}

absl::StatusOr<int64_t> Length(const Value& value) {
  switch (value.kind()) {
    case Value::Kind::kUndefined:
      return 0;
    case Value::Kind::kString:
      return static_cast<int64_t>(CodePointCount(value.string_value()));
    case Value::Kind::kArray:
      return static_cast<int64_t>(value.array().size());
    case Value::Kind::kObject:
      return static_cast<int64_t>(value.object().entries.size());
    default:
      return TypeError(absl::StrCat("object of type '", PyTypeName(value), "' has no len()"));
  }
}

absl::StatusOr<bool> Contains(const Value& haystack, const Value& needle) {
  switch (haystack.kind()) {
    case Value::Kind::kUndefined:
      return false;
    case Value::Kind::kString:
      if (!needle.is_string()) {
        return TypeError(absl::StrCat("'in <string>' requires string as left operand, not ",
                                      PyTypeName(needle)));
      }
      return haystack.string_value().find(needle.string_value()) != std::string::npos;
    case Value::Kind::kArray:
      for (const Value& item : haystack.array()) {
        if (PyEquals(item, needle)) return true;
      }
      return false;
    case Value::Kind::kObject:
      return needle.is_string() && haystack.object().Find(needle.string_value()) != nullptr;
    default:
      return TypeError(
          absl::StrCat("argument of type '", PyTypeName(haystack), "' is not iterable"));
  }
}

absl::StatusOr<Value> GetAttribute(Interpreter& interpreter, const Value& object,
                                   std::string_view name) {
  if (object.is_undefined()) return TypeError(object.UndefinedMessage());
  auto missing = [&]() {
    return Value::Undefined(absl::StrCat("'", PyTypeDescription(object), "' has no attribute '",
                                         std::string(name), "'"));
  };
  if (object.is_string()) {
    std::optional<Value> method = StringMethod(interpreter, object, name);
    if (method) return *method;
    return missing();
  }
  if (object.is_object()) {
    if (!object.object().is_namespace) {
      std::optional<Value> method = DictMethod(object, name);
      if (method) return *method;
    }
    const Value* found = object.object().Find(name);
    if (found != nullptr) return *found;
    return missing();
  }
  return missing();
}

absl::StatusOr<Value> GetItem(Interpreter& interpreter, const Value& object, const Value& key) {
  if (object.is_undefined()) return TypeError(object.UndefinedMessage());
  if (key.is_string()) {
    if (object.is_object()) {
      const Value* found = object.object().Find(key.string_value());
      if (found != nullptr) return *found;
    }
    return GetAttribute(interpreter, object, key.string_value());
  }
  auto no_element = [&]() {
    return Value::Undefined(
        absl::StrCat(PyTypeDescription(object), " has no element ", ToPyRepr(key)));
  };
  if ((object.is_array() || object.is_string()) &&
      (key.kind() == Value::Kind::kInt || key.kind() == Value::Kind::kBool)) {
    int64_t index = key.int_value();
    if (object.is_array()) {
      int64_t size = static_cast<int64_t>(object.array().size());
      if (index < 0) index += size;
      if (index < 0 || index >= size) return no_element();
      return object.array()[static_cast<size_t>(index)];
    }
    const std::string& s = object.string_value();
    std::vector<size_t> offsets = CodePointOffsets(s);
    int64_t size = static_cast<int64_t>(offsets.size()) - 1;
    if (index < 0) index += size;
    if (index < 0 || index >= size) return no_element();
    return Value::String(s.substr(offsets[index], offsets[index + 1] - offsets[index]));
  }
  return no_element();
}

absl::StatusOr<bool> ApplyTest(Interpreter& interpreter, std::string_view name,
                               const Value& operand, CallArgs& args) {
  auto arg = [&](size_t i) -> Value {
    if (i < args.positional.size()) return args.positional[i];
    if (!args.keyword.empty() && i == 0) return args.keyword[0].second;
    return Value();
  };
  using Kind = Value::Kind;
  if (name == "defined") return !operand.is_undefined();
  if (name == "undefined") return operand.is_undefined();
  if (name == "none") return operand.is_none();
  if (name == "boolean") return operand.kind() == Kind::kBool;
  if (name == "false") return operand.kind() == Kind::kBool && !operand.bool_value();
  if (name == "true") return operand.kind() == Kind::kBool && operand.bool_value();
  if (name == "integer") return operand.kind() == Kind::kInt;
  if (name == "float") return operand.kind() == Kind::kFloat;
  if (name == "number") return operand.is_number();
  if (name == "string") return operand.is_string();
  if (name == "mapping") return operand.is_object() && !operand.object().is_namespace;
  if (name == "iterable") {
    return operand.is_undefined() || operand.is_string() || operand.is_array() ||
           (operand.is_object() && !operand.object().is_namespace);
  }
  if (name == "sequence") {
    return operand.is_undefined() || operand.is_string() || operand.is_array() ||
           (operand.is_object() && !operand.object().is_namespace);
  }
  if (name == "callable") return operand.is_callable();
  if (name == "escaped") return false;
  if (name == "sameas") {
    Value other = arg(0);
    if (operand.kind() != other.kind()) return false;
    if (operand.is_none() || operand.kind() == Kind::kBool) return PyEquals(operand, other);
    if (operand.is_array()) return &operand.array() == &other.array();
    if (operand.is_object()) return &operand.object() == &other.object();
    return PyEquals(operand, other);
  }
  if (name == "in") return Contains(arg(0), operand);
  if (name == "odd" || name == "even" || name == "divisibleby") {
    if (operand.is_undefined()) return TypeError(operand.UndefinedMessage());
    if (!operand.is_number()) {
      return TypeError(
          absl::StrCat("unsupported operand type(s) for %: '", PyTypeName(operand), "' and 'int'"));
    }
    if (name == "divisibleby") {
      Value divisor = arg(0);
      if (!divisor.is_number()) return TypeError("divisibleby needs a number");
      if (divisor.float_value() == 0) return TypeError("integer division or modulo by zero");
      if (operand.kind() == Kind::kFloat || divisor.kind() == Kind::kFloat) {
        return std::fmod(operand.float_value(), divisor.float_value()) == 0;
      }
      if (divisor.int_value() == -1) return true;
      return operand.int_value() % divisor.int_value() == 0;
    }
    if (operand.kind() == Kind::kFloat) {
      double mod = std::fmod(operand.float_value(), 2.0);
      return name == "odd" ? std::fabs(mod) == 1.0 : mod == 0;
    }
    bool odd = operand.int_value() % 2 != 0;
    return name == "odd" ? odd : !odd;
  }
  if (name == "eq" || name == "equalto" || name == "==") return PyEquals(operand, arg(0));
  if (name == "ne" || name == "!=") return !PyEquals(operand, arg(0));
  if (name == "lt" || name == "lessthan" || name == "<" || name == "gt" || name == "greaterthan" ||
      name == ">" || name == "le" || name == "<=" || name == "ge" || name == ">=") {
    Value other = arg(0);
    if (operand.is_undefined()) return TypeError(operand.UndefinedMessage());
    if (other.is_undefined()) return TypeError(other.UndefinedMessage());
    bool greater_side =
        name == "gt" || name == "greaterthan" || name == ">" || name == "ge" || name == ">=";
    ASSIGN_OR_RETURN(bool strict, greater_side ? PyLess(other, operand) : PyLess(operand, other));
    bool inclusive = name == "le" || name == "<=" || name == "ge" || name == ">=";
    return strict || (inclusive && PyEquals(operand, other));
  }
  if (name == "lower" || name == "upper") {
    if (!operand.is_string()) return false;
    bool any_cased = false;
    for (char c : operand.string_value()) {
      if (!IsAsciiAlpha(c)) continue;
      any_cased = true;
      if (name == "lower" ? (c >= 'A' && c <= 'Z') : (c >= 'a' && c <= 'z')) return false;
    }
    return any_cased;
  }
  if (name == "filter") return operand.is_string() && IsKnownFilter(operand.string_value());
  if (name == "test") return operand.is_string() && IsKnownTest(operand.string_value());
  (void)interpreter;
  return TypeError(absl::StrCat("no test named '", std::string(name), "'"));
}

absl::StatusOr<Value> ApplyFilter(Interpreter& interpreter, std::string_view name,
                                  const Value& operand, CallArgs& args) {
  using Kind = Value::Kind;
  const std::string fn(name);
  auto string_result = [&](std::string text) -> absl::StatusOr<Value> {
    RETURN_IF_ERROR(interpreter.CheckValueSize(text.size()));
    RETURN_IF_ERROR(interpreter.ChargeBytes(text.size()));
    return Value::String(std::move(text));
  };
  if (name == "length" || name == "count") {
    RETURN_IF_ERROR(Bind(fn, args, {}).status());
    ASSIGN_OR_RETURN(int64_t length, Length(operand));
    return Value::Int(length);
  }
  if (name == "trim") {
    ASSIGN_OR_RETURN(std::vector<Value> a, Bind(fn, args, {"chars"}));
    std::string text = ToPyStr(operand);
    if (a[0].is_string()) return Value::String(PyStrip(text, &a[0].string_value(), true, true));
    return Value::String(PyStrip(text, nullptr, true, true));
  }
  if (name == "upper" || name == "lower" || name == "capitalize" || name == "title") {
    RETURN_IF_ERROR(Bind(fn, args, {}).status());
    std::string text = ToPyStr(operand);
    if (name == "upper") return Value::String(Upper(text));
    if (name == "lower") return Value::String(Lower(text));
    if (name == "capitalize") return Value::String(Capitalize(text));
    return Value::String(JinjaTitle(text));
  }
  if (name == "default" || name == "d") {
    ASSIGN_OR_RETURN(std::vector<Value> a, Bind(fn, args, {"default_value", "boolean"}));
    bool use_default = operand.is_undefined() || (a[1].Truthy() && !operand.Truthy());
    if (!use_default) return operand;
    return IsSet(a[0]) ? a[0] : Value::String("");
  }
  if (name == "string") {
    RETURN_IF_ERROR(Bind(fn, args, {}).status());
    return string_result(ToPyStr(operand));
  }
  if (name == "safe") {
    RETURN_IF_ERROR(Bind(fn, args, {}).status());
    return operand;
  }
  if (name == "escape" || name == "e") {
    RETURN_IF_ERROR(Bind(fn, args, {}).status());
    return string_result(HtmlEscape(ToPyStr(operand)));
  }
  if (name == "tojson") {
    ASSIGN_OR_RETURN(std::vector<Value> a,
                     Bind(fn, args, {"ensure_ascii", "indent", "separators", "sort_keys"}));
    JsonOptions options;
    options.ensure_ascii = a[0].Truthy();
    if (IsSet(a[1]) && !a[1].is_none()) {
      if (IsInteger(a[1])) {
        options.indent = static_cast<int>(std::clamp<int64_t>(a[1].int_value(), 0, 64));
      } else if (a[1].is_string()) {
        return TypeError("tojson: string indents are not supported");
      } else {
        return TypeError("tojson: indent must be an integer");
      }
    }
    if (IsSet(a[2]) && !a[2].is_none()) {
      if (!a[2].is_array() || a[2].array().size() != 2 || !a[2].array()[0].is_string() ||
          !a[2].array()[1].is_string()) {
        return TypeError("tojson: separators must be a pair of strings");
      }
      options.has_separators = true;
      options.item_separator = a[2].array()[0].string_value();
      options.key_separator = a[2].array()[1].string_value();
    }
    options.sort_keys = a[3].Truthy();
    absl::StatusOr<std::string> json = ToPyJson(operand, options);
    if (!json.ok()) return TypeError(std::string(json.status().message()));
    return string_result(*std::move(json));
  }
  if (name == "join") {
    ASSIGN_OR_RETURN(std::vector<Value> a, Bind(fn, args, {"d", "attribute"}));
    ASSIGN_OR_RETURN(Array items, Iterate(operand));
    std::string separator = IsSet(a[0]) ? ToPyStr(a[0]) : "";
    std::string out;
    for (size_t i = 0; i < items.size(); ++i) {
      Value item = items[i];
      if (IsSet(a[1])) {
        ASSIGN_OR_RETURN(item, GetAttributePath(interpreter, item, ToPyStr(a[1])));
      }
      if (i > 0) out += separator;
      out += ToPyStr(item);
      RETURN_IF_ERROR(interpreter.CheckValueSize(out.size()));
    }
    return string_result(std::move(out));
  }
  if (name == "first" || name == "last") {
    RETURN_IF_ERROR(Bind(fn, args, {}).status());
    ASSIGN_OR_RETURN(Array items, Iterate(operand));
    if (items.empty()) {
      return Value::Undefined(absl::StrCat("No ", fn, " item, sequence was empty."));
    }
    return name == "first" ? items.front() : items.back();
  }
  if (name == "items") {
    RETURN_IF_ERROR(Bind(fn, args, {}).status());
    if (operand.is_undefined()) return Value::MakeArray({});
    if (!operand.is_object()) return TypeError("Can only get item pairs from a mapping.");
    Array pairs;
    for (const auto& [key, value] : operand.object().entries) {
      ASSIGN_OR_RETURN(Value pair, Value::MakeArray({Value::String(key), value}, true));
      pairs.push_back(std::move(pair));
    }
    return Value::MakeArray(std::move(pairs));
  }
  if (name == "list") {
    RETURN_IF_ERROR(Bind(fn, args, {}).status());
    ASSIGN_OR_RETURN(Array items, Iterate(operand));
    return ArrayValue(interpreter, std::move(items));
  }
  if (name == "reverse") {
    RETURN_IF_ERROR(Bind(fn, args, {}).status());
    ASSIGN_OR_RETURN(Array items, Iterate(operand));
    std::reverse(items.begin(), items.end());
    if (operand.is_string()) {
      std::string out;
      for (const Value& item : items) out += item.string_value();
      return Value::String(std::move(out));
    }
    return ArrayValue(interpreter, std::move(items));
  }
  if (name == "replace") {
    ASSIGN_OR_RETURN(std::vector<Value> a, Bind(fn, args, {"old", "new", "count"}));
    std::string text = ToPyStr(operand);
    std::string old_text = ToPyStr(a[0]);
    std::string new_text = ToPyStr(a[1]);
    ASSIGN_OR_RETURN(int64_t count, IntArg(a[2], -1, "replace count"));
    size_t worst = text.size() + new_text.size() * (text.size() + 1);
    if (worst > interpreter.limits().max_value_size) {
      // Only fail when the real result is too large.
      size_t occurrences = 0;
      if (old_text.empty()) {
        occurrences = CodePointCount(text) + 1;
      } else {
        for (size_t p = text.find(old_text); p != std::string::npos;
             p = text.find(old_text, p + old_text.size())) {
          ++occurrences;
        }
      }
      RETURN_IF_ERROR(interpreter.CheckValueSize(text.size() + occurrences * new_text.size()));
    }
    return string_result(PyReplace(text, old_text, new_text, count));
  }
  if (name == "int") {
    ASSIGN_OR_RETURN(std::vector<Value> a, Bind(fn, args, {"default", "base"}));
    Value fallback = IsSet(a[0]) ? a[0] : Value::Int(0);
    ASSIGN_OR_RETURN(int64_t base, IntArg(a[1], 10, "base"));
    if (base < 2 || base > 36) return TypeError("int() base must be >= 2 and <= 36");
    switch (operand.kind()) {
      case Kind::kInt:
      case Kind::kBool:
        return Value::Int(operand.int_value());
      case Kind::kFloat: {
        double f = operand.float_value();
        if (!std::isfinite(f) || std::fabs(f) >= 9.2e18) return fallback;
        return Value::Int(static_cast<int64_t>(std::trunc(f)));
      }
      case Kind::kString: {
        std::string text = PyStrip(operand.string_value(), nullptr, true, true);
        std::string digits;
        for (char c : text) {
          if (c != '_') digits.push_back(c);
        }
        if (!digits.empty()) {
          errno = 0;
          char* end = nullptr;
          long long parsed = std::strtoll(digits.c_str(), &end, static_cast<int>(base));
          if (errno == 0 && end == digits.c_str() + digits.size()) return Value::Int(parsed);
          if (base == 10) {
            end = nullptr;
            double f = std::strtod(digits.c_str(), &end);
            if (end == digits.c_str() + digits.size() && std::isfinite(f) &&
                std::fabs(f) < 9.2e18) {
              return Value::Int(static_cast<int64_t>(std::trunc(f)));
            }
          }
        }
        return fallback;
      }
      default:
        return fallback;
    }
  }
  if (name == "float") {
    ASSIGN_OR_RETURN(std::vector<Value> a, Bind(fn, args, {"default"}));
    Value fallback = IsSet(a[0]) ? a[0] : Value::Float(0.0);
    if (operand.is_number()) return Value::Float(operand.float_value());
    if (operand.is_string()) {
      std::string text = PyStrip(operand.string_value(), nullptr, true, true);
      char* end = nullptr;
      double f = std::strtod(text.c_str(), &end);
      if (!text.empty() && end == text.c_str() + text.size()) return Value::Float(f);
    }
    return fallback;
  }
  if (name == "abs") {
    RETURN_IF_ERROR(Bind(fn, args, {}).status());
    if (operand.kind() == Kind::kFloat) return Value::Float(std::fabs(operand.float_value()));
    if (operand.is_number()) {
      if (operand.int_value() == INT64_MIN) return TypeError("integer overflow");
      return Value::Int(std::abs(operand.int_value()));
    }
    if (operand.is_undefined()) return TypeError(operand.UndefinedMessage());
    return TypeError(absl::StrCat("bad operand type for abs(): '", PyTypeName(operand), "'"));
  }
  if (name == "round") {
    ASSIGN_OR_RETURN(std::vector<Value> a, Bind(fn, args, {"precision", "method"}));
    ASSIGN_OR_RETURN(int64_t precision, IntArg(a[0], 0, "precision"));
    std::string method = IsSet(a[1]) ? ToPyStr(a[1]) : "common";
    if (operand.is_undefined()) return TypeError(operand.UndefinedMessage());
    if (!operand.is_number()) return TypeError("round() needs a number");
    precision = std::clamp<int64_t>(precision, -300, 300);
    double scale = std::pow(10.0, static_cast<double>(precision));
    double x = operand.float_value() * scale;
    double rounded = 0;
    if (method == "common") {
      rounded = std::nearbyint(x);
    } else if (method == "ceil") {
      rounded = std::ceil(x);
    } else if (method == "floor") {
      rounded = std::floor(x);
    } else {
      return TypeError("method must be common, ceil or floor");
    }
    return Value::Float(rounded / scale);
  }
  if (name == "select" || name == "reject") {
    return SelectOrReject(interpreter, operand, args, name == "select", false);
  }
  if (name == "selectattr" || name == "rejectattr") {
    return SelectOrReject(interpreter, operand, args, name == "selectattr", true);
  }
  if (name == "map") {
    ASSIGN_OR_RETURN(Array items, Iterate(operand));
    std::optional<std::string> attribute;
    Value default_value;
    CallArgs filter_args;
    std::string filter_name;
    for (const auto& [key, value] : args.keyword) {
      if (key == "attribute") {
        attribute = ToPyStr(value);
      } else if (key == "default") {
        default_value = value;
      } else {
        filter_args.keyword.emplace_back(key, value);
      }
    }
    if (!attribute) {
      if (args.positional.empty() || !args.positional[0].is_string()) {
        return TypeError("map() needs a filter name or attribute=");
      }
      filter_name = args.positional[0].string_value();
      if (!IsKnownFilter(filter_name)) {
        return TypeError(absl::StrCat("no filter named '", filter_name, "'"));
      }
      filter_args.positional.assign(args.positional.begin() + 1, args.positional.end());
    }
    Array mapped;
    mapped.reserve(items.size());
    for (const Value& item : items) {
      if (attribute) {
        ASSIGN_OR_RETURN(Value v, GetAttributePath(interpreter, item, *attribute));
        if (v.is_undefined() && IsSet(default_value)) v = default_value;
        mapped.push_back(std::move(v));
      } else {
        CallArgs call = filter_args;
        ASSIGN_OR_RETURN(Value v, ApplyFilter(interpreter, filter_name, item, call));
        mapped.push_back(std::move(v));
      }
    }
    return ArrayValue(interpreter, std::move(mapped));
  }
  if (name == "sort" || name == "unique" || name == "min" || name == "max") {
    ASSIGN_OR_RETURN(
        std::vector<Value> a,
        Bind(fn, args,
             name == "sort"
                 ? std::initializer_list<std::string_view>{"reverse", "case_sensitive", "attribute"}
                 : std::initializer_list<std::string_view>{"case_sensitive", "attribute"}));
    bool reverse = name == "sort" && a[0].Truthy();
    const Value& case_value = name == "sort" ? a[1] : a[0];
    const Value& attribute = name == "sort" ? a[2] : a[1];
    bool case_sensitive = case_value.Truthy();
    ASSIGN_OR_RETURN(Array items, Iterate(operand));
    std::vector<std::pair<Value, Value>> keyed;
    keyed.reserve(items.size());
    for (const Value& item : items) {
      Value key = item;
      if (IsSet(attribute)) {
        ASSIGN_OR_RETURN(key, GetAttributePath(interpreter, item, ToPyStr(attribute)));
      }
      keyed.emplace_back(SortKey(key, case_sensitive), item);
    }
    if (name == "unique") {
      Array kept;
      std::vector<Value> seen;
      for (const auto& [key, item] : keyed) {
        bool duplicate = false;
        for (const Value& s : seen) {
          if (PyEquals(s, key)) {
            duplicate = true;
            break;
          }
        }
        if (duplicate) continue;
        RETURN_IF_ERROR(interpreter.ChargeBytes(seen.size()));
        seen.push_back(key);
        kept.push_back(item);
      }
      return ArrayValue(interpreter, std::move(kept));
    }
    RETURN_IF_ERROR(StableSort(keyed, reverse));
    if (name == "sort") {
      Array sorted;
      sorted.reserve(keyed.size());
      for (auto& entry : keyed) sorted.push_back(std::move(entry.second));
      return ArrayValue(interpreter, std::move(sorted));
    }
    if (keyed.empty())
      return Value::Undefined(absl::StrCat("No aggregated item, sequence was empty."));
    return name == "min" ? keyed.front().second : keyed.back().second;
  }
  if (name == "sum") {
    ASSIGN_OR_RETURN(std::vector<Value> a, Bind(fn, args, {"attribute", "start"}));
    ASSIGN_OR_RETURN(Array items, Iterate(operand));
    bool is_float = a[1].kind() == Kind::kFloat;
    double float_total = a[1].is_number() ? a[1].float_value() : 0;
    int64_t int_total = a[1].is_number() && !is_float ? a[1].int_value() : 0;
    for (const Value& item : items) {
      Value v = item;
      if (IsSet(a[0])) {
        ASSIGN_OR_RETURN(v, GetAttributePath(interpreter, item, ToPyStr(a[0])));
      }
      if (!v.is_number()) {
        return TypeError(
            absl::StrCat("unsupported operand type(s) for +: 'int' and '", PyTypeName(v), "'"));
      }
      if (v.kind() == Kind::kFloat && !is_float) {
        is_float = true;
        float_total = static_cast<double>(int_total);
      }
      if (is_float) {
        float_total += v.float_value();
      } else if (__builtin_add_overflow(int_total, v.int_value(), &int_total)) {
        return TypeError("integer overflow");
      }
    }
    return is_float ? Value::Float(float_total) : Value::Int(int_total);
  }
  if (name == "dictsort") {
    ASSIGN_OR_RETURN(std::vector<Value> a, Bind(fn, args, {"case_sensitive", "by", "reverse"}));
    if (!operand.is_object()) return TypeError("dictsort needs a mapping");
    bool by_value = IsSet(a[1]) && ToPyStr(a[1]) == "value";
    std::vector<std::pair<Value, Value>> keyed;
    for (const auto& [key, value] : operand.object().entries) {
      ASSIGN_OR_RETURN(Value pair, Value::MakeArray({Value::String(key), value}, true));
      keyed.emplace_back(SortKey(by_value ? value : Value::String(key), a[0].Truthy()), pair);
    }
    RETURN_IF_ERROR(StableSort(keyed, a[2].Truthy()));
    Array sorted;
    for (auto& entry : keyed) sorted.push_back(std::move(entry.second));
    return Value::MakeArray(std::move(sorted));
  }
  if (name == "indent") {
    ASSIGN_OR_RETURN(std::vector<Value> a, Bind(fn, args, {"width", "first", "blank"}));
    std::string pad = a[0].is_string() ? a[0].string_value() : "";
    if (!a[0].is_string()) {
      ASSIGN_OR_RETURN(int64_t width, IntArg(a[0], 4, "width"));
      pad = std::string(static_cast<size_t>(std::clamp<int64_t>(width, 0, 256)), ' ');
    }
    std::string text = ToPyStr(operand);
    std::vector<std::string> lines = PySplit(text, nullptr, 0);
    // Split on "\n" keeping empty lines (Python splitlines on the text).
    lines.clear();
    size_t start = 0;
    while (true) {
      size_t nl = text.find('\n', start);
      lines.push_back(text.substr(start, nl == std::string::npos ? std::string::npos : nl - start));
      if (nl == std::string::npos) break;
      start = nl + 1;
    }
    bool trailing_newline = !text.empty() && text.back() == '\n';
    if (trailing_newline) lines.pop_back();
    std::string out;
    for (size_t i = 0; i < lines.size(); ++i) {
      if (i > 0) out += "\n";
      bool indent_line = (i > 0 || a[1].Truthy()) && (a[2].Truthy() || !lines[i].empty());
      if (indent_line) out += pad;
      out += lines[i];
      RETURN_IF_ERROR(interpreter.CheckValueSize(out.size()));
    }
    if (trailing_newline) out += "\n";
    return string_result(std::move(out));
  }
  if (name == "center") {
    ASSIGN_OR_RETURN(std::vector<Value> a, Bind(fn, args, {"width"}));
    ASSIGN_OR_RETURN(int64_t width, IntArg(a[0], 80, "width"));
    std::string text = ToPyStr(operand);
    int64_t length = static_cast<int64_t>(CodePointCount(text));
    width = std::min<int64_t>(width, static_cast<int64_t>(interpreter.limits().max_value_size));
    if (width <= length) return Value::String(text);
    int64_t total = width - length;
    int64_t left = total / 2 + (total & width & 1);
    return string_result(std::string(static_cast<size_t>(left), ' ') + text +
                         std::string(static_cast<size_t>(total - left), ' '));
  }
  if (name == "wordcount") {
    RETURN_IF_ERROR(Bind(fn, args, {}).status());
    int64_t words = 0;
    bool in_word = false;
    for (char c : ToPyStr(operand)) {
      bool word_char = IsAsciiAlpha(c) || (c >= '0' && c <= '9') || c == '_' ||
                       static_cast<unsigned char>(c) >= 0x80;
      if (word_char && !in_word) ++words;
      in_word = word_char;
    }
    return Value::Int(words);
  }
  if (name == "attr") {
    ASSIGN_OR_RETURN(std::vector<Value> a, Bind(fn, args, {"name"}));
    return GetAttribute(interpreter, operand, ToPyStr(a[0]));
  }
  if (name == "format") {
    if (!args.keyword.empty()) return TypeError("format: keyword arguments are not supported");
    ASSIGN_OR_RETURN(std::string text, PercentFormat(ToPyStr(operand), args.positional));
    return string_result(std::move(text));
  }
  return TypeError(absl::StrCat("no filter named '", std::string(name), "'"));
}

}  // namespace exo::runtime::jinja
