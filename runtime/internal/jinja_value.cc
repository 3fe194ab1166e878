#include "runtime/internal/jinja_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace exo::runtime::jinja {

const Value* Object::Find(std::string_view key) const {
  for (const auto& [k, v] : entries) {
    if (k == key) return &v;
  }
  return nullptr;
}

void Object::Set(std::string key, Value value) {
  for (auto& [k, v] : entries) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  entries.emplace_back(std::move(key), std::move(value));
}

Value Value::Undefined(std::string message) {
  Value v;
  v.s_ = std::make_shared<const std::string>(std::move(message));
  return v;
}

Value Value::None() {
  Value v;
  v.kind_ = Kind::kNone;
  return v;
}

Value Value::Bool(bool b) {
  Value v;
  v.kind_ = Kind::kBool;
  v.b_ = b;
  return v;
}

Value Value::Int(int64_t i) {
  Value v;
  v.kind_ = Kind::kInt;
  v.i_ = i;
  return v;
}

Value Value::Float(double f) {
  Value v;
  v.kind_ = Kind::kFloat;
  v.f_ = f;
  return v;
}

Value Value::String(std::string s) {
  Value v;
  v.kind_ = Kind::kString;
  v.s_ = std::make_shared<const std::string>(std::move(s));
  return v;
}

absl::StatusOr<Value> Value::MakeArray(Array items, bool tuple) {
  int depth = 0;
  bool contains_namespace = false;
  uint64_t weight = 1;
  for (const Value& item : items) {
    weight = std::min<uint64_t>(weight + item.weight(), uint64_t{1} << 62);
    depth = std::max(depth, item.depth_);
    contains_namespace = contains_namespace || item.contains_namespace_;
  }
  if (depth + 1 > kMaxValueDepth) {
    return absl::InvalidArgumentError("value nested too deeply");
  }
  Value v;
  v.kind_ = Kind::kArray;
  v.weight_ = weight;
  v.b_ = tuple;
  v.depth_ = depth + 1;
  v.contains_namespace_ = contains_namespace;
  v.array_ = std::make_shared<const Array>(std::move(items));
  return v;
}

absl::StatusOr<Value> Value::MakeObject(Object object) {
  int depth = 0;
  bool contains_namespace = object.is_namespace;
  uint64_t weight = 1;
  for (const auto& entry : object.entries) {
    weight = std::min<uint64_t>(weight + entry.second.weight() + 1, uint64_t{1} << 62);
    depth = std::max(depth, entry.second.depth_);
    contains_namespace = contains_namespace || entry.second.contains_namespace_;
  }
  if (depth + 1 > kMaxValueDepth) {
    return absl::InvalidArgumentError("value nested too deeply");
  }
  Value v;
  v.kind_ = Kind::kObject;
  v.weight_ = weight;
  v.depth_ = depth + 1;
  v.contains_namespace_ = contains_namespace;
  v.object_ = std::make_shared<Object>(std::move(object));
  return v;
}

Value Value::MakeCallable(std::string name, std::function<absl::StatusOr<Value>(CallArgs&)> fn) {
  Value v;
  v.kind_ = Kind::kCallable;
  v.callable_ = std::make_shared<const Callable>(Callable{std::move(name), std::move(fn)});
  return v;
}

namespace {

absl::StatusOr<Value> FromJsonAtDepth(const nlohmann::json& json, int depth) {
  if (depth > kMaxValueDepth) return absl::InvalidArgumentError("messages nested too deeply");
  switch (json.type()) {
    case nlohmann::json::value_t::null:
      return Value::None();
    case nlohmann::json::value_t::boolean:
      return Value::Bool(json.get<bool>());
    case nlohmann::json::value_t::number_integer:
      return Value::Int(json.get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: {
      uint64_t u = json.get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) return Value::Float(static_cast<double>(u));
      return Value::Int(static_cast<int64_t>(u));
    }
    case nlohmann::json::value_t::number_float:
      return Value::Float(json.get<double>());
    case nlohmann::json::value_t::string:
      return Value::String(json.get<std::string>());
    case nlohmann::json::value_t::array: {
      Array items;
      items.reserve(json.size());
      for (const auto& element : json) {
        auto item = FromJsonAtDepth(element, depth + 1);
        if (!item.ok()) return item.status();
        items.push_back(*std::move(item));
      }
      return Value::MakeArray(std::move(items));
    }
    case nlohmann::json::value_t::object: {
      Object object;
      object.entries.reserve(json.size());
      for (auto it = json.begin(); it != json.end(); ++it) {
        auto item = FromJsonAtDepth(it.value(), depth + 1);
        if (!item.ok()) return item.status();
        object.entries.emplace_back(it.key(), *std::move(item));
      }
      return Value::MakeObject(std::move(object));
    }
    default:
      return absl::InvalidArgumentError("unsupported JSON value (binary or discarded)");
  }
}

}  // namespace

absl::StatusOr<Value> Value::FromJson(const nlohmann::json& json) {
  return FromJsonAtDepth(json, 0);
}

bool Value::Truthy() const {
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone:
      return false;
    case Kind::kBool:
      return b_;
    case Kind::kInt:
      return i_ != 0;
    case Kind::kFloat:
      return f_ != 0;
    case Kind::kString:
      return !s_->empty();
    case Kind::kArray:
      return !array_->empty();
    case Kind::kObject:
      return object_->is_namespace || !object_->entries.empty();
    case Kind::kCallable:
      return true;
  }
  return false;
}

const std::string& Value::UndefinedMessage() const {
  static const std::string* const kGeneric = new std::string("value is undefined");
  return s_ ? *s_ : *kGeneric;
}

// ---- UTF-8 ----

char32_t DecodeCodePoint(std::string_view s, size_t& pos) {
  unsigned char c = static_cast<unsigned char>(s[pos]);
  int extra = 0;
  char32_t cp = c;
  if (c >= 0xC2 && c <= 0xDF) {
    extra = 1;
    cp = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    extra = 2;
    cp = c & 0x0F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    extra = 3;
    cp = c & 0x07;
  }
  if (extra > 0 && pos + extra < s.size() + 1 && s.size() - pos > static_cast<size_t>(extra)) {
    bool valid = true;
    for (int k = 1; k <= extra; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[pos + k]);
      if ((cc & 0xC0) != 0x80) {
        valid = false;
        break;
      }
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (valid) {
      pos += extra + 1;
      return cp;
    }
  }
  ++pos;
  return c;
}

std::vector<size_t> CodePointOffsets(std::string_view s) {
  std::vector<size_t> offsets;
  offsets.reserve(s.size() + 1);
  size_t pos = 0;
  while (pos < s.size()) {
    offsets.push_back(pos);
    DecodeCodePoint(s, pos);
  }
  offsets.push_back(s.size());
  return offsets;
}

size_t CodePointCount(std::string_view s) {
  size_t count = 0;
  size_t pos = 0;
  while (pos < s.size()) {
    DecodeCodePoint(s, pos);
    ++count;
  }
  return count;
}

void AppendUtf8(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool IsPySpace(char32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 ||
         cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
         cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

std::string PyStrip(std::string_view s, const std::string* chars, bool left, bool right) {
  std::vector<char32_t> strip_set;
  if (chars != nullptr) {
    size_t pos = 0;
    while (pos < chars->size()) strip_set.push_back(DecodeCodePoint(*chars, pos));
  }
  auto strippable = [&](char32_t cp) {
    if (chars == nullptr) return IsPySpace(cp);
    return std::find(strip_set.begin(), strip_set.end(), cp) != strip_set.end();
  };
  std::vector<size_t> offsets = CodePointOffsets(s);
  size_t n = offsets.size() - 1;
  size_t begin = 0;
  size_t end = n;
  auto cp_at = [&](size_t index) {
    size_t pos = offsets[index];
    return DecodeCodePoint(s, pos);
  };
  if (left) {
    while (begin < end && strippable(cp_at(begin))) ++begin;
  }
  if (right) {
    while (end > begin && strippable(cp_at(end - 1))) --end;
  }
  return std::string(s.substr(offsets[begin], offsets[end] - offsets[begin]));
}

// ---- Printing ----

std::string FormatPyFloat(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  if (value == 0) return std::signbit(value) ? "-0.0" : "0.0";
  char buffer[64];
  auto result =
      std::to_chars(buffer, buffer + sizeof(buffer), value, std::chars_format::scientific);
  std::string sci(buffer, result.ptr);
  // sci looks like "-1.2345e+05": split into sign, digits and exponent.
  bool negative = sci[0] == '-';
  size_t start = negative ? 1 : 0;
  size_t e_pos = sci.find('e');
  std::string mantissa = sci.substr(start, e_pos - start);
  int exponent = std::stoi(sci.substr(e_pos + 1));
  std::string digits;
  for (char c : mantissa) {
    if (c != '.') digits.push_back(c);
  }
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  std::string out = negative ? "-" : "";
  int decpt = exponent + 1;  // value = 0.DIGITS * 10^decpt
  if (decpt <= -4 || decpt > 16) {
    out += digits.substr(0, 1);
    if (digits.size() > 1) absl::StrAppend(&out, ".", digits.substr(1));
    absl::StrAppend(&out, "e", exponent < 0 ? "-" : "+",
                    absl::StrFormat("%02d", exponent < 0 ? -exponent : exponent));
    return out;
  }
  if (decpt <= 0) {
    absl::StrAppend(&out, "0.", std::string(-decpt, '0'), digits);
  } else if (static_cast<size_t>(decpt) >= digits.size()) {
    absl::StrAppend(&out, digits, std::string(decpt - digits.size(), '0'), ".0");
  } else {
    absl::StrAppend(&out, digits.substr(0, decpt), ".", digits.substr(decpt));
  }
  return out;
}

namespace {

std::string PyStringRepr(const std::string& s) {
  bool has_single = s.find('\'') != std::string::npos;
  bool has_double = s.find('"') != std::string::npos;
  char quote = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, quote);
  for (unsigned char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == quote) {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7F) {
      out += absl::StrFormat("\\x%02x", c);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  out.push_back(quote);
  return out;
}

}  // namespace

std::string ToPyRepr(const Value& value) {
  switch (value.kind()) {
    case Value::Kind::kUndefined:
      return "Undefined";
    case Value::Kind::kString:
      return PyStringRepr(value.string_value());
    case Value::Kind::kArray: {
      std::string out = value.is_tuple() ? "(" : "[";
      bool first = true;
      for (const Value& item : value.array()) {
        if (!first) out += ", ";
        first = false;
        out += ToPyRepr(item);
      }
      if (value.is_tuple()) return out + (value.array().size() == 1 ? ",)" : ")");
      return out + "]";
    }
    case Value::Kind::kObject: {
      std::string out = value.object().is_namespace ? "<Namespace {" : "{";
      bool first = true;
      for (const auto& [key, item] : value.object().entries) {
        if (!first) out += ", ";
        first = false;
        absl::StrAppend(&out, PyStringRepr(key), ": ", ToPyRepr(item));
      }
      return out + (value.object().is_namespace ? "}>" : "}");
    }
    default:
      return ToPyStr(value);
  }
}

std::string ToPyStr(const Value& value) {
  switch (value.kind()) {
    case Value::Kind::kUndefined:
      return "";
    case Value::Kind::kNone:
      return "None";
    case Value::Kind::kBool:
      return value.bool_value() ? "True" : "False";
    case Value::Kind::kInt:
      return absl::StrCat(value.int_value());
    case Value::Kind::kFloat:
      return FormatPyFloat(value.float_value());
    case Value::Kind::kString:
      return value.string_value();
    case Value::Kind::kArray:
    case Value::Kind::kObject:
      return ToPyRepr(value);
    case Value::Kind::kCallable:
      return absl::StrCat("<function ", value.callable().name, ">");
  }
  return "";
}

namespace {

void AppendJsonString(const std::string& s, bool ensure_ascii, std::string& out) {
  out.push_back('"');
  size_t pos = 0;
  while (pos < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[pos]);
    if (c < 0x80) {
      ++pos;
      switch (c) {
        case '"':
          out += "\\\"";
          break;
        case '\\':
          out += "\\\\";
          break;
        case '\n':
          out += "\\n";
          break;
        case '\r':
          out += "\\r";
          break;
        case '\t':
          out += "\\t";
          break;
        case '\b':
          out += "\\b";
          break;
        case '\f':
          out += "\\f";
          break;
        default:
          if (c < 0x20) {
            out += absl::StrFormat("\\u%04x", c);
          } else {
            out.push_back(static_cast<char>(c));
          }
      }
      continue;
    }
    size_t start = pos;
    char32_t cp = DecodeCodePoint(s, pos);
    if (!ensure_ascii) {
      out.append(s, start, pos - start);
    } else if (cp >= 0x10000) {
      char32_t v = cp - 0x10000;
      out += absl::StrFormat("\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
    } else {
      out += absl::StrFormat("\\u%04x", static_cast<uint32_t>(cp));
    }
  }
  out.push_back('"');
}

absl::Status AppendJson(const Value& value, const JsonOptions& options, int level,
                        std::string& out) {
  const bool pretty = options.indent >= 0;
  std::string item_sep = options.has_separators ? options.item_separator : (pretty ? "," : ", ");
  std::string key_sep = options.has_separators ? options.key_separator : ": ";
  auto newline = [&](int lvl) {
    out.push_back('\n');
    out.append(static_cast<size_t>(options.indent) * lvl, ' ');
  };
  switch (value.kind()) {
    case Value::Kind::kNone:
      out += "null";
      return absl::OkStatus();
    case Value::Kind::kBool:
      out += value.bool_value() ? "true" : "false";
      return absl::OkStatus();
    case Value::Kind::kInt:
      absl::StrAppend(&out, value.int_value());
      return absl::OkStatus();
    case Value::Kind::kFloat: {
      double f = value.float_value();
      if (std::isnan(f)) {
        out += "NaN";
      } else if (std::isinf(f)) {
        out += f > 0 ? "Infinity" : "-Infinity";
      } else {
        out += FormatPyFloat(f);
      }
      return absl::OkStatus();
    }
    case Value::Kind::kString:
      AppendJsonString(value.string_value(), options.ensure_ascii, out);
      return absl::OkStatus();
    case Value::Kind::kArray: {
      if (value.array().empty()) {
        out += "[]";
        return absl::OkStatus();
      }
      out.push_back('[');
      bool first = true;
      for (const Value& item : value.array()) {
        if (!first) out += item_sep;
        first = false;
        if (pretty) newline(level + 1);
        absl::Status status = AppendJson(item, options, level + 1, out);
        if (!status.ok()) return status;
      }
      if (pretty) newline(level);
      out.push_back(']');
      return absl::OkStatus();
    }
    case Value::Kind::kObject: {
      if (value.object().entries.empty()) {
        out += "{}";
        return absl::OkStatus();
      }
      std::vector<const std::pair<std::string, Value>*> entries;
      for (const auto& entry : value.object().entries) entries.push_back(&entry);
      if (options.sort_keys) {
        std::stable_sort(entries.begin(), entries.end(),
                         [](const auto* a, const auto* b) { return a->first < b->first; });
      }
      out.push_back('{');
      bool first = true;
      for (const auto* entry : entries) {
        if (!first) out += item_sep;
        first = false;
        if (pretty) newline(level + 1);
        AppendJsonString(entry->first, options.ensure_ascii, out);
        out += key_sep;
        absl::Status status = AppendJson(entry->second, options, level + 1, out);
        if (!status.ok()) return status;
      }
      if (pretty) newline(level);
      out.push_back('}');
      return absl::OkStatus();
    }
    case Value::Kind::kUndefined:
      return absl::InvalidArgumentError("Object of type Undefined is not JSON serializable");
    case Value::Kind::kCallable:
      return absl::InvalidArgumentError("Object of type function is not JSON serializable");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> ToPyJson(const Value& value, const JsonOptions& options) {
  std::string out;
  absl::Status status = AppendJson(value, options, 0, out);
  if (!status.ok()) return status;
  return out;
}

// ---- Comparison ----

bool PyEquals(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.kind() == Value::Kind::kFloat || b.kind() == Value::Kind::kFloat) {
      return a.float_value() == b.float_value();
    }
    return a.int_value() == b.int_value();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone:
      return true;  // jinja2's Undefined == Undefined is True
    case Value::Kind::kString:
      return a.string_value() == b.string_value();
    case Value::Kind::kArray: {
      if (a.is_tuple() != b.is_tuple()) return false;
      if (a.array().size() != b.array().size()) return false;
      for (size_t i = 0; i < a.array().size(); ++i) {
        if (!PyEquals(a.array()[i], b.array()[i])) return false;
      }
      return true;
    }
    case Value::Kind::kObject: {
      if (a.object().is_namespace || b.object().is_namespace) return &a.object() == &b.object();
      if (a.object().entries.size() != b.object().entries.size()) return false;
      for (const auto& [key, item] : a.object().entries) {
        const Value* other = b.object().Find(key);
        if (other == nullptr || !PyEquals(item, *other)) return false;
      }
      return true;
    }
    case Value::Kind::kCallable:
      return &a.callable() == &b.callable();
    default:
      return false;
  }
}

std::string PyTypeName(const Value& value) {
  switch (value.kind()) {
    case Value::Kind::kUndefined:
      return "Undefined";
    case Value::Kind::kNone:
      return "NoneType";
    case Value::Kind::kBool:
      return "bool";
    case Value::Kind::kInt:
      return "int";
    case Value::Kind::kFloat:
      return "float";
    case Value::Kind::kString:
      return "str";
    case Value::Kind::kArray:
      return value.is_tuple() ? "tuple" : "list";
    case Value::Kind::kObject:
      return value.object().is_namespace ? "Namespace" : "dict";
    case Value::Kind::kCallable:
      return "function";
  }
  return "object";
}

std::string PyTypeDescription(const Value& value) {
  if (value.is_none()) return "None";
  return absl::StrCat(PyTypeName(value), " object");
}

absl::StatusOr<bool> PyLess(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.kind() == Value::Kind::kFloat || b.kind() == Value::Kind::kFloat) {
      return a.float_value() < b.float_value();
    }
    return a.int_value() < b.int_value();
  }
  if (a.is_string() && b.is_string()) return a.string_value() < b.string_value();
  if (a.is_array() && b.is_array() && a.is_tuple() == b.is_tuple()) {
    const Array& x = a.array();
    const Array& y = b.array();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (PyEquals(x[i], y[i])) continue;
      return PyLess(x[i], y[i]);
    }
    return x.size() < y.size();
  }
  return absl::InvalidArgumentError(absl::StrCat("'<' not supported between instances of '",
                                                 PyTypeName(a), "' and '", PyTypeName(b), "'"));
}

}  // namespace exo::runtime::jinja
