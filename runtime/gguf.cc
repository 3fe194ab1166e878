// GGUF v2/v3 reader (over mmap or a caller's buffer) and v3 writer.
//
// Layout of a GGUF file (all integers little-endian):
//   magic "GGUF" | version u32 | tensor_count u64 | kv_count u64
//   kv_count x { key: string | value_type u32 | value }
//   tensor_count x { name: string | n_dims u32 | dims u64[n_dims] | type u32 | offset u64 }
//   padding to `general.alignment` (default 32) | tensor data section
// where a string is { length u64 | bytes } and an array value is
// { element_type u32 | count u64 | count x element }. A nested array element is itself
// { element_type u32 | count u64 | elements }.
//
// Everything read from the file is untrusted: each read is bounds-checked, each count is checked
// against the bytes that remain before anything is reserved, and sizes are computed with
// overflow checks.
#include "runtime/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numeric>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "common/status_macros.h"

namespace exo::runtime {
namespace {

constexpr uint8_t kMagic[4] = {'G', 'G', 'U', 'F'};
constexpr uint32_t kWriterVersion = 3;
constexpr uint64_t kDefaultAlignment = 32;
constexpr uint32_t kMaxDims = 4;
// Arrays of arrays are legal GGUF but rare; real files nest at most one level. The limit keeps a
// hostile file from driving the recursive parser (and DebugString) arbitrarily deep.
constexpr int kMaxArrayDepth = 8;
constexpr uint32_t kMaxValueType = static_cast<uint32_t>(GgufValueType::kFloat64);
// Smallest possible encodings, used to bound counts before reserving memory.
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;                  // empty key, type, 1-byte value
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;  // empty name, 1 dim, type, offset
constexpr const char* kAlignmentKey = "general.alignment";

// absl in this toolchain has its own string_view, distinct from std::string_view.
absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// A name or key from the file, quoted and escaped for an error message (may hold any bytes).
std::string Quote(std::string_view s) {
  constexpr size_t kMaxShown = 96;
  std::string shown = absl::CHexEscape(AV(s.substr(0, kMaxShown)));
  if (s.size() > kMaxShown) absl::StrAppend(&shown, "...(", s.size(), " bytes)");
  return absl::StrCat("'", shown, "'");
}

absl::Status Invalid(std::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat("GGUF: ", AV(message)));
}

uint64_t LoadLE(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Rounds `x` up to a multiple of `alignment`; false on overflow.
bool AlignUp(uint64_t x, uint64_t alignment, uint64_t* out) {
  if (alignment == 0) {
    *out = x;
    return true;
  }
  const uint64_t rem = x % alignment;
  if (rem == 0) {
    *out = x;
    return true;
  }
  return !__builtin_add_overflow(x, alignment - rem, out);
}

bool IsValidValueType(uint32_t raw) { return raw <= kMaxValueType; }

// Bytes the smallest element of `type` takes on disk.
uint64_t MinEncodedBytes(GgufValueType type) {
  switch (type) {
    case GgufValueType::kUint8:
    case GgufValueType::kInt8:
    case GgufValueType::kBool:
      return 1;
    case GgufValueType::kUint16:
    case GgufValueType::kInt16:
      return 2;
    case GgufValueType::kUint32:
    case GgufValueType::kInt32:
    case GgufValueType::kFloat32:
      return 4;
    case GgufValueType::kUint64:
    case GgufValueType::kInt64:
    case GgufValueType::kFloat64:
    case GgufValueType::kString:  // the u64 length
      return 8;
    case GgufValueType::kArray:  // element type + count
      return 12;
  }
  return 1;
}

bool IsUnsignedType(GgufValueType t) {
  return t == GgufValueType::kUint8 || t == GgufValueType::kUint16 || t == GgufValueType::kUint32 ||
         t == GgufValueType::kUint64;
}
bool IsSignedType(GgufValueType t) {
  return t == GgufValueType::kInt8 || t == GgufValueType::kInt16 || t == GgufValueType::kInt32 ||
         t == GgufValueType::kInt64;
}
bool IsFloatType(GgufValueType t) {
  return t == GgufValueType::kFloat32 || t == GgufValueType::kFloat64;
}

// A bounds-checked little-endian cursor over the file image. `owner` (may be empty) keeps the
// image alive; arrays left encoded share it.
class Cursor {
 public:
  Cursor(const uint8_t* base, uint64_t size,
         std::shared_ptr<const uint8_t> owner = std::shared_ptr<const uint8_t>())
      : base_(base), size_(size), owner_(std::move(owner)) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }
  // A pointer to image byte `pos` sharing ownership of the image (non-null even when the owner is
  // empty, as for FromBuffer images).
  std::shared_ptr<const uint8_t> SharedPointerAt(uint64_t pos) const {
    return std::shared_ptr<const uint8_t>(owner_, base_ + pos);
  }
  // Only for byte counts already checked against remaining().
  void Skip(uint64_t n) { pos_ += n; }

  // `what` names the field for the error message ("metadata value for key 'x'").
  absl::Status Truncated(std::string_view what, uint64_t needed) const {
    return Invalid(absl::StrCat("truncated ", AV(what), " at byte ", pos_, " (needs ", needed,
                                " bytes, ", remaining(), " left in file of size ", size_, ")"));
  }

  absl::Status ReadUint(int n, uint64_t* out, std::string_view what) {
    if (remaining() < static_cast<uint64_t>(n)) return Truncated(what, n);
    *out = LoadLE(base_ + pos_, n);
    pos_ += n;
    return absl::OkStatus();
  }
  absl::Status ReadU32(uint32_t* out, std::string_view what) {
    uint64_t v = 0;
    RETURN_IF_ERROR(ReadUint(4, &v, what));
    *out = static_cast<uint32_t>(v);
    return absl::OkStatus();
  }
  absl::Status ReadU64(uint64_t* out, std::string_view what) { return ReadUint(8, out, what); }

  absl::Status ReadString(std::string* out, std::string_view what) {
    std::string_view view;
    RETURN_IF_ERROR(ReadStringView(&view, what));
    out->assign(view);
    return absl::OkStatus();
  }

  // As ReadString, but `out` points into the image.
  absl::Status ReadStringView(std::string_view* out, std::string_view what) {
    const uint64_t start = pos_;
    if (remaining() < 8) return Truncated(absl::StrCat("string length of ", AV(what)), 8);
    const uint64_t length = LoadLE(base_ + pos_, 8);
    pos_ += 8;
    if (length > remaining()) {
      return Invalid(absl::StrCat("string length ", length, " of ", AV(what), " at byte ", start,
                                  " extends past end of file (", remaining(),
                                  " bytes left, file size ", size_, ")"));
    }
    *out = std::string_view(reinterpret_cast<const char*>(base_ + pos_), length);
    pos_ += length;
    return absl::OkStatus();
  }

 private:
  const uint8_t* base_;
  uint64_t size_;
  std::shared_ptr<const uint8_t> owner_;
  uint64_t pos_ = 0;
};

// Wraps an element's error with its position in the array.
absl::Status ElementError(const absl::Status& status, uint64_t index, uint64_t count) {
  return absl::InvalidArgumentError(
      absl::StrCat(status.message(), " (array element ", index, " of ", count, ")"));
}

// Reads one value of `type`; `depth` counts enclosing arrays.
absl::Status ReadValue(Cursor& cursor, GgufValueType type, int depth, std::string_view what,
                       GgufValue* out) {
  out->type = type;
  uint64_t raw = 0;
  switch (type) {
    case GgufValueType::kUint8:
      RETURN_IF_ERROR(cursor.ReadUint(1, &raw, what));
      out->data = raw;
      return absl::OkStatus();
    case GgufValueType::kUint16:
      RETURN_IF_ERROR(cursor.ReadUint(2, &raw, what));
      out->data = raw;
      return absl::OkStatus();
    case GgufValueType::kUint32:
      RETURN_IF_ERROR(cursor.ReadUint(4, &raw, what));
      out->data = raw;
      return absl::OkStatus();
    case GgufValueType::kUint64:
      RETURN_IF_ERROR(cursor.ReadUint(8, &raw, what));
      out->data = raw;
      return absl::OkStatus();
    case GgufValueType::kInt8:
      RETURN_IF_ERROR(cursor.ReadUint(1, &raw, what));
      out->data = static_cast<int64_t>(static_cast<int8_t>(raw));
      return absl::OkStatus();
    case GgufValueType::kInt16:
      RETURN_IF_ERROR(cursor.ReadUint(2, &raw, what));
      out->data = static_cast<int64_t>(static_cast<int16_t>(raw));
      return absl::OkStatus();
    case GgufValueType::kInt32:
      RETURN_IF_ERROR(cursor.ReadUint(4, &raw, what));
      out->data = static_cast<int64_t>(static_cast<int32_t>(raw));
      return absl::OkStatus();
    case GgufValueType::kInt64:
      RETURN_IF_ERROR(cursor.ReadUint(8, &raw, what));
      out->data = static_cast<int64_t>(raw);
      return absl::OkStatus();
    case GgufValueType::kFloat32: {
      RETURN_IF_ERROR(cursor.ReadUint(4, &raw, what));
      const uint32_t bits = static_cast<uint32_t>(raw);
      float f;
      std::memcpy(&f, &bits, sizeof(f));
      out->data = static_cast<double>(f);
      return absl::OkStatus();
    }
    case GgufValueType::kFloat64: {
      RETURN_IF_ERROR(cursor.ReadUint(8, &raw, what));
      double d;
      std::memcpy(&d, &raw, sizeof(d));
      out->data = d;
      return absl::OkStatus();
    }
    case GgufValueType::kBool:
      RETURN_IF_ERROR(cursor.ReadUint(1, &raw, what));
      out->data = raw != 0;
      return absl::OkStatus();
    case GgufValueType::kString: {
      std::string s;
      RETURN_IF_ERROR(cursor.ReadString(&s, what));
      out->data = std::move(s);
      return absl::OkStatus();
    }
    case GgufValueType::kArray: {
      const uint64_t start = cursor.pos();
      if (depth >= kMaxArrayDepth) {
        return Invalid(absl::StrCat("arrays nested more than ", kMaxArrayDepth, " levels deep in ",
                                    AV(what), " at byte ", start));
      }
      uint32_t raw_element_type = 0;
      RETURN_IF_ERROR(cursor.ReadU32(&raw_element_type, absl::StrCat("array type of ", AV(what))));
      if (!IsValidValueType(raw_element_type)) {
        return Invalid(absl::StrCat("unknown array element type ", raw_element_type, " in ",
                                    AV(what), " at byte ", start));
      }
      const auto element_type = static_cast<GgufValueType>(raw_element_type);
      uint64_t count = 0;
      RETURN_IF_ERROR(cursor.ReadU64(&count, absl::StrCat("array length of ", AV(what))));
      const uint64_t min_bytes = MinEncodedBytes(element_type);
      if (count > cursor.remaining() / min_bytes) {
        return Invalid(absl::StrCat("array of ", count, " ", GgufValueTypeName(element_type),
                                    " elements in ", AV(what), " at byte ", start,
                                    " cannot fit in the ", cursor.remaining(),
                                    " bytes left (each needs at least ", min_bytes, ")"));
      }
      GgufValue::Array array;
      array.element_type = element_type;
      if (count > GgufFile::kMaxDecodedArrayElements && element_type != GgufValueType::kArray) {
        // Long array: validate every element as the decoded path would (same errors), but keep
        // only where the encoded elements lie.
        const uint64_t first = cursor.pos();
        if (element_type == GgufValueType::kString) {
          std::string_view text;
          for (uint64_t i = 0; i < count; ++i) {
            absl::Status status = cursor.ReadStringView(&text, what);
            if (!status.ok()) return ElementError(status, i, count);
          }
        } else {
          // Fixed-size elements: the count check above already proved that all of them fit.
          cursor.Skip(count * min_bytes);
        }
        array.encoded = cursor.SharedPointerAt(first);
        array.encoded_bytes = cursor.pos() - first;
        array.encoded_count = count;
        out->data = std::move(array);
        return absl::OkStatus();
      }
      array.elements.resize(count);
      for (uint64_t i = 0; i < count; ++i) {
        absl::Status status = ReadValue(cursor, element_type, depth + 1, what, &array.elements[i]);
        if (!status.ok()) return ElementError(status, i, count);
      }
      out->data = std::move(array);
      return absl::OkStatus();
    }
  }
  return Invalid(
      absl::StrCat("unknown value type ", static_cast<uint32_t>(type), " in ", AV(what)));
}

// Appends `value`'s payload (no leading type tag) to `out`, encoded as `type`.
void AppendLE(std::vector<uint8_t>* out, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) out->push_back(static_cast<uint8_t>(v >> (8 * i)));
}

void AppendString(std::vector<uint8_t>* out, std::string_view s) {
  AppendLE(out, s.size(), 8);
  out->insert(out->end(), s.begin(), s.end());
}

// The numeric payload of a value, whichever alternative holds it.
uint64_t AsRawInteger(const GgufValue& value) {
  if (const auto* u = std::get_if<uint64_t>(&value.data)) return *u;
  if (const auto* i = std::get_if<int64_t>(&value.data)) return static_cast<uint64_t>(*i);
  if (const auto* d = std::get_if<double>(&value.data)) {
    // Only for values built with a float alternative but an integer type; saturate, never UB.
    if (!(*d > -9.2e18 && *d < 9.2e18)) return 0;
    return static_cast<uint64_t>(static_cast<int64_t>(*d));
  }
  if (const auto* b = std::get_if<bool>(&value.data)) return *b ? 1 : 0;
  return 0;
}

double AsDouble(const GgufValue& value) {
  if (const auto* d = std::get_if<double>(&value.data)) return *d;
  if (const auto* u = std::get_if<uint64_t>(&value.data)) return static_cast<double>(*u);
  if (const auto* i = std::get_if<int64_t>(&value.data)) return static_cast<double>(*i);
  if (const auto* b = std::get_if<bool>(&value.data)) return *b ? 1.0 : 0.0;
  return 0.0;
}

void AppendPayload(std::vector<uint8_t>* out, GgufValueType type, const GgufValue& value) {
  switch (type) {
    case GgufValueType::kUint8:
    case GgufValueType::kInt8:
    case GgufValueType::kBool:
      AppendLE(out, AsRawInteger(value), 1);
      return;
    case GgufValueType::kUint16:
    case GgufValueType::kInt16:
      AppendLE(out, AsRawInteger(value), 2);
      return;
    case GgufValueType::kUint32:
    case GgufValueType::kInt32:
      AppendLE(out, AsRawInteger(value), 4);
      return;
    case GgufValueType::kUint64:
    case GgufValueType::kInt64:
      AppendLE(out, AsRawInteger(value), 8);
      return;
    case GgufValueType::kFloat32: {
      const float f = static_cast<float>(AsDouble(value));
      uint32_t bits;
      std::memcpy(&bits, &f, sizeof(bits));
      AppendLE(out, bits, 4);
      return;
    }
    case GgufValueType::kFloat64: {
      const double d = AsDouble(value);
      uint64_t bits;
      std::memcpy(&bits, &d, sizeof(bits));
      AppendLE(out, bits, 8);
      return;
    }
    case GgufValueType::kString: {
      const auto* s = std::get_if<std::string>(&value.data);
      AppendString(out, s != nullptr ? std::string_view(*s) : std::string_view());
      return;
    }
    case GgufValueType::kArray: {
      const auto* array = std::get_if<GgufValue::Array>(&value.data);
      if (array == nullptr) {
        AppendLE(out, static_cast<uint32_t>(GgufValueType::kUint8), 4);
        AppendLE(out, 0, 8);
        return;
      }
      AppendLE(out, static_cast<uint32_t>(array->element_type), 4);
      AppendLE(out, array->size(), 8);
      if (array->is_encoded()) {
        // Already in this very encoding (validated when read): copy the bytes as they are.
        out->insert(out->end(), array->encoded.get(), array->encoded.get() + array->encoded_bytes);
        return;
      }
      for (const GgufValue& element : array->elements) {
        AppendPayload(out, array->element_type, element);
      }
      return;
    }
  }
}

void PadTo(std::vector<uint8_t>* out, uint64_t alignment) {
  uint64_t target = 0;
  AlignUp(out->size(), alignment, &target);
  out->resize(target, 0);
}

std::string TypeMismatch(std::string_view key, const GgufValue& value, std::string_view wanted) {
  return absl::StrCat("GGUF: metadata key ", Quote(key), " is ", GgufValueTypeName(value.type),
                      ", expected ", AV(wanted));
}

// Integer view of a scalar value of any integer width; error text names `key`.
absl::StatusOr<int64_t> ToInt(const GgufValue& value, std::string_view key) {
  if (IsUnsignedType(value.type)) {
    if (const auto* u = std::get_if<uint64_t>(&value.data)) {
      if (*u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return absl::InvalidArgumentError(absl::StrCat("GGUF: metadata key ", Quote(key), " value ",
                                                       *u, " does not fit in int64"));
      }
      return static_cast<int64_t>(*u);
    }
  } else if (IsSignedType(value.type)) {
    if (const auto* i = std::get_if<int64_t>(&value.data)) return *i;
  }
  return absl::InvalidArgumentError(TypeMismatch(key, value, "an integer"));
}

// Floating view: float32/float64, and integers (converted) since some converters store
// float hyperparameters that happen to be whole numbers as integers.
absl::StatusOr<double> ToFloat(const GgufValue& value, std::string_view key) {
  if (IsFloatType(value.type)) {
    if (const auto* d = std::get_if<double>(&value.data)) return *d;
  } else if (IsUnsignedType(value.type)) {
    if (const auto* u = std::get_if<uint64_t>(&value.data)) return static_cast<double>(*u);
  } else if (IsSignedType(value.type)) {
    if (const auto* i = std::get_if<int64_t>(&value.data)) return static_cast<double>(*i);
  }
  return absl::InvalidArgumentError(TypeMismatch(key, value, "a float"));
}

absl::StatusOr<const GgufValue::Array*> ToArray(const GgufValue& value, std::string_view key) {
  const auto* array = std::get_if<GgufValue::Array>(&value.data);
  if (value.type != GgufValueType::kArray || array == nullptr) {
    return absl::InvalidArgumentError(TypeMismatch(key, value, "an array"));
  }
  return array;
}

std::string ElementKey(std::string_view key, size_t index) {
  return absl::StrCat(AV(key), "[", index, "]");
}

}  // namespace

const char* GgufValueTypeName(GgufValueType type) {
  switch (type) {
    case GgufValueType::kUint8:
      return "uint8";
    case GgufValueType::kInt8:
      return "int8";
    case GgufValueType::kUint16:
      return "uint16";
    case GgufValueType::kInt16:
      return "int16";
    case GgufValueType::kUint32:
      return "uint32";
    case GgufValueType::kInt32:
      return "int32";
    case GgufValueType::kFloat32:
      return "float32";
    case GgufValueType::kBool:
      return "bool";
    case GgufValueType::kString:
      return "string";
    case GgufValueType::kArray:
      return "array";
    case GgufValueType::kUint64:
      return "uint64";
    case GgufValueType::kInt64:
      return "int64";
    case GgufValueType::kFloat64:
      return "float64";
  }
  return "unknown";
}

// ---- GgufValue -------------------------------------------------------------------------------

GgufValue GgufValue::U32(uint32_t v) {
  GgufValue value;
  value.type = GgufValueType::kUint32;
  value.data = static_cast<uint64_t>(v);
  return value;
}

GgufValue GgufValue::I32(int32_t v) {
  GgufValue value;
  value.type = GgufValueType::kInt32;
  value.data = static_cast<int64_t>(v);
  return value;
}

GgufValue GgufValue::U64(uint64_t v) {
  GgufValue value;
  value.type = GgufValueType::kUint64;
  value.data = v;
  return value;
}

GgufValue GgufValue::F32(float v) {
  GgufValue value;
  value.type = GgufValueType::kFloat32;
  value.data = static_cast<double>(v);
  return value;
}

GgufValue GgufValue::Bool(bool v) {
  GgufValue value;
  value.type = GgufValueType::kBool;
  value.data = v;
  return value;
}

GgufValue GgufValue::String(std::string v) {
  GgufValue value;
  value.type = GgufValueType::kString;
  value.data = std::move(v);
  return value;
}

GgufValue GgufValue::StringArray(const std::vector<std::string>& v) {
  Array array;
  array.element_type = GgufValueType::kString;
  array.elements.reserve(v.size());
  for (const std::string& s : v) array.elements.push_back(String(s));
  GgufValue value;
  value.type = GgufValueType::kArray;
  value.data = std::move(array);
  return value;
}

GgufValue GgufValue::F32Array(const std::vector<float>& v) {
  Array array;
  array.element_type = GgufValueType::kFloat32;
  array.elements.reserve(v.size());
  for (float f : v) array.elements.push_back(F32(f));
  GgufValue value;
  value.type = GgufValueType::kArray;
  value.data = std::move(array);
  return value;
}

GgufValue GgufValue::I32Array(const std::vector<int32_t>& v) {
  Array array;
  array.element_type = GgufValueType::kInt32;
  array.elements.reserve(v.size());
  for (int32_t i : v) array.elements.push_back(I32(i));
  GgufValue value;
  value.type = GgufValueType::kArray;
  value.data = std::move(array);
  return value;
}

void GgufValue::Array::ForEach(absl::FunctionRef<bool(size_t, const GgufValue&)> fn) const {
  if (!is_encoded()) {
    for (size_t i = 0; i < elements.size(); ++i) {
      if (!fn(i, elements[i])) return;
    }
    return;
  }
  Cursor cursor(encoded.get(), encoded_bytes);
  GgufValue element;
  for (uint64_t i = 0; i < encoded_count; ++i) {
    // Validated when the file was parsed; a failure here would mean the image changed under us.
    if (!ReadValue(cursor, element_type, 1, "array element", &element).ok()) return;
    if (!fn(i, element)) return;
  }
}

bool GgufValue::Array::ForEachString(absl::FunctionRef<void(size_t, std::string_view)> fn) const {
  if (!is_encoded()) {
    // Arrays built in code are judged by their elements, as the getters always did.
    for (const GgufValue& element : elements) {
      if (element.type != GgufValueType::kString ||
          !std::holds_alternative<std::string>(element.data)) {
        return false;
      }
    }
    for (size_t i = 0; i < elements.size(); ++i) fn(i, std::get<std::string>(elements[i].data));
    return true;
  }
  if (element_type != GgufValueType::kString) return false;
  Cursor cursor(encoded.get(), encoded_bytes);
  std::string_view text;
  for (uint64_t i = 0; i < encoded_count; ++i) {
    if (!cursor.ReadStringView(&text, "array element").ok()) return false;  // see ForEach
    fn(i, text);
  }
  return true;
}

GgufValue GgufValue::Array::Element(size_t index) const {
  if (!is_encoded()) return elements[index];
  GgufValue element;
  if (element_type == GgufValueType::kString) {
    ForEach([&](size_t i, const GgufValue& value) {
      if (i < index) return true;
      element = value;
      return false;
    });
    return element;
  }
  const uint64_t width = MinEncodedBytes(element_type);  // fixed-size: the exact width
  Cursor cursor(encoded.get() + index * width, width);
  (void)ReadValue(cursor, element_type, 1, "array element", &element);
  return element;
}

std::string GgufValue::DebugString(size_t max_elements) const {
  if (const auto* u = std::get_if<uint64_t>(&data)) return absl::StrCat(*u);
  if (const auto* i = std::get_if<int64_t>(&data)) return absl::StrCat(*i);
  if (const auto* d = std::get_if<double>(&data)) return absl::StrFormat("%g", *d);
  if (const auto* b = std::get_if<bool>(&data)) return *b ? "true" : "false";
  if (const auto* s = std::get_if<std::string>(&data)) {
    return absl::StrCat("\"", absl::CHexEscape(*s), "\"");
  }
  const auto& array = std::get<Array>(data);
  std::string out = "[";
  const size_t shown = std::min(max_elements, array.size());
  if (shown > 0) {
    // Decodes only the elements shown (an encoded vocabulary has 100k+).
    array.ForEach([&](size_t i, const GgufValue& element) {
      if (i > 0) out += ", ";
      out += element.DebugString(max_elements);
      return i + 1 < shown;
    });
  }
  if (shown < array.size()) {
    absl::StrAppend(&out, shown > 0 ? ", " : "", "... (", array.size(), " ",
                    GgufValueTypeName(array.element_type), " elements)");
  }
  out += "]";
  return out;
}

int64_t GgufTensorInfo::num_elements() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

// ---- GgufFile --------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return absl::NotFoundError(absl::StrCat("GGUF: no such file: ", path));
    return absl::ErrnoToStatus(err, absl::StrCat("GGUF: cannot open ", path));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::ErrnoToStatus(err, absl::StrCat("GGUF: cannot stat ", path));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat("GGUF: ", path, " is not a regular file"));
  }
  if (st.st_size < static_cast<off_t>(sizeof(kMagic))) {
    ::close(fd);
    return absl::InvalidArgumentError(
        absl::StrCat("GGUF: not a GGUF file (only ", st.st_size, " bytes): ", path));
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  void* mapping = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int mmap_errno = errno;
  ::close(fd);
  if (mapping == MAP_FAILED) {
    return absl::ErrnoToStatus(mmap_errno, absl::StrCat("GGUF: cannot mmap ", path));
  }
  std::unique_ptr<GgufFile> file(new GgufFile());
  file->base_ = static_cast<const uint8_t*>(mapping);
  file->image_ = std::shared_ptr<const uint8_t>(
      file->base_, [size](const uint8_t* p) { ::munmap(const_cast<uint8_t*>(p), size); });
  file->size_ = size;
  absl::Status status = file->Parse();
  if (!status.ok()) {
    return absl::Status(status.code(), absl::StrCat(status.message(), " (file ", path, ")"));
  }
  return file;
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::FromBuffer(const uint8_t* bytes, size_t size) {
  std::unique_ptr<GgufFile> file(new GgufFile());
  file->base_ = bytes;
  file->size_ = bytes == nullptr ? 0 : size;
  RETURN_IF_ERROR(file->Parse());
  return file;
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::FromBytes(std::vector<uint8_t> bytes) {
  auto owned = std::make_shared<const std::vector<uint8_t>>(std::move(bytes));
  std::unique_ptr<GgufFile> file(new GgufFile());
  file->base_ = owned->empty() ? nullptr : owned->data();
  file->size_ = owned->size();
  file->image_ = std::shared_ptr<const uint8_t>(owned, file->base_);
  RETURN_IF_ERROR(file->Parse());
  return file;
}

// The mapping goes when image_'s last owner does (values copied out of the file may share it).
GgufFile::~GgufFile() = default;

absl::Status GgufFile::Parse() {
  Cursor cursor(base_, size_, image_);

  // Header.
  if (size_ < sizeof(kMagic)) {
    return Invalid(absl::StrCat("not a GGUF file (only ", size_, " bytes)"));
  }
  if (std::memcmp(base_, kMagic, sizeof(kMagic)) != 0) {
    std::string shown(reinterpret_cast<const char*>(base_), sizeof(kMagic));
    return Invalid(
        absl::StrFormat("not a GGUF file (magic \"%s\" = %02x %02x %02x %02x, expected "
                        "\"GGUF\")",
                        absl::CHexEscape(shown), base_[0], base_[1], base_[2], base_[3]));
  }
  uint64_t skipped = 0;
  RETURN_IF_ERROR(cursor.ReadUint(4, &skipped, "magic"));
  RETURN_IF_ERROR(cursor.ReadU32(&version_, "header (version)"));
  if (version_ == 1) {
    return Invalid(
        "version 1 files are not supported (only versions 2 and 3); convert the model again "
        "with a current llama.cpp");
  }
  if (version_ != 2 && version_ != 3) {
    const uint32_t swapped = __builtin_bswap32(version_);
    if (swapped >= 1 && swapped <= 3) {
      return Invalid(absl::StrFormat(
          "big-endian file (version field reads 0x%08x, i.e. version %u stored big-endian); only "
          "little-endian GGUF files are supported",
          version_, swapped));
    }
    return Invalid(absl::StrCat("unsupported version ", version_, " (supported: 2 and 3)"));
  }
  uint64_t tensor_count = 0;
  uint64_t kv_count = 0;
  RETURN_IF_ERROR(cursor.ReadU64(&tensor_count, "header (tensor count)"));
  RETURN_IF_ERROR(cursor.ReadU64(&kv_count, "header (metadata count)"));
  if (kv_count > cursor.remaining() / kMinKvBytes) {
    return Invalid(absl::StrCat("header claims ", kv_count, " metadata entries but only ",
                                cursor.remaining(), " bytes follow (each needs at least ",
                                kMinKvBytes, ")"));
  }
  if (tensor_count > (cursor.remaining() - kv_count * kMinKvBytes) / kMinTensorInfoBytes) {
    return Invalid(absl::StrCat("header claims ", tensor_count, " tensors and ", kv_count,
                                " metadata entries but only ", cursor.remaining(),
                                " bytes follow (each tensor needs at least ", kMinTensorInfoBytes,
                                ")"));
  }

  // Metadata.
  metadata_.reserve(kv_count);
  for (uint64_t i = 0; i < kv_count; ++i) {
    const uint64_t entry_start = cursor.pos();
    std::string key;
    RETURN_IF_ERROR(cursor.ReadString(&key, absl::StrCat("key of metadata entry ", i)));
    const std::string quoted = Quote(key);
    if (metadata_index_.count(key) != 0) {
      return Invalid(absl::StrCat("duplicate metadata key ", quoted, " at byte ", entry_start));
    }
    const uint64_t type_pos = cursor.pos();
    uint32_t raw_type = 0;
    RETURN_IF_ERROR(cursor.ReadU32(&raw_type, absl::StrCat("value type for key ", quoted)));
    if (!IsValidValueType(raw_type)) {
      return Invalid(absl::StrCat("unknown value type ", raw_type, " for key ", quoted, " at byte ",
                                  type_pos));
    }
    GgufValue value;
    RETURN_IF_ERROR(ReadValue(cursor, static_cast<GgufValueType>(raw_type), 0,
                              absl::StrCat("metadata value for key ", quoted), &value));
    if (key == kAlignmentKey) {
      if (value.type != GgufValueType::kUint32) {
        return Invalid(
            absl::StrCat(kAlignmentKey, " must be a uint32, got ", GgufValueTypeName(value.type)));
      }
      const uint64_t alignment = std::get<uint64_t>(value.data);
      if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
        return Invalid(
            absl::StrCat(kAlignmentKey, " = ", alignment, " is not a nonzero power of two"));
      }
      alignment_ = alignment;
    }
    metadata_index_.emplace(key, metadata_.size());
    metadata_.emplace_back(std::move(key), std::move(value));
  }

  // Tensor infos.
  tensors_.reserve(tensor_count);
  for (uint64_t i = 0; i < tensor_count; ++i) {
    const uint64_t info_start = cursor.pos();
    GgufTensorInfo info;
    RETURN_IF_ERROR(cursor.ReadString(&info.name, absl::StrCat("name of tensor ", i)));
    const std::string quoted = Quote(info.name);
    if (auto it = tensor_index_.find(info.name); it != tensor_index_.end()) {
      return Invalid(absl::StrCat("duplicate tensor name ", quoted, " (tensors ", it->second,
                                  " and ", i, ", byte ", info_start, ")"));
    }
    const std::string what = absl::StrCat("info of tensor ", quoted);
    uint32_t n_dims = 0;
    RETURN_IF_ERROR(cursor.ReadU32(&n_dims, what));
    if (n_dims == 0 || n_dims > kMaxDims) {
      return Invalid(absl::StrCat("tensor ", quoted, " has n_dims = ", n_dims, " (must be 1 to ",
                                  kMaxDims, ")"));
    }
    int64_t num_elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t dim = 0;
      RETURN_IF_ERROR(cursor.ReadU64(&dim, what));
      if (dim == 0) {
        return Invalid(absl::StrCat("tensor ", quoted, " dimension ", d, " is 0"));
      }
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          __builtin_mul_overflow(num_elements, static_cast<int64_t>(dim), &num_elements)) {
        return Invalid(absl::StrCat("tensor ", quoted, " dimension ", d, " = ", dim,
                                    " makes the element count overflow int64"));
      }
      info.dims.push_back(static_cast<int64_t>(dim));
    }
    uint32_t raw_type = 0;
    RETURN_IF_ERROR(cursor.ReadU32(&raw_type, what));
    const kernels::TypeInfo* type_info = kernels::FindTypeInfo(raw_type);
    if (type_info == nullptr) {
      return Invalid(absl::StrCat("tensor ", quoted, " has unknown type id ", raw_type));
    }
    info.type = static_cast<kernels::TensorType>(raw_type);
    if (info.dims[0] % type_info->block_size != 0) {
      return Invalid(absl::StrCat("tensor ", quoted, " of type ", type_info->name,
                                  " has row length ", info.dims[0],
                                  ", not a multiple of the block size ", type_info->block_size));
    }
    uint64_t nbytes = 0;
    bool overflow =
        __builtin_mul_overflow(static_cast<uint64_t>(info.dims[0] / type_info->block_size),
                               static_cast<uint64_t>(type_info->block_bytes), &nbytes);
    for (size_t d = 1; d < info.dims.size() && !overflow; ++d) {
      overflow = __builtin_mul_overflow(nbytes, static_cast<uint64_t>(info.dims[d]), &nbytes);
    }
    if (overflow) {
      return Invalid(absl::StrCat("tensor ", quoted, " byte size overflows"));
    }
    info.nbytes = nbytes;
    RETURN_IF_ERROR(cursor.ReadU64(&info.offset, what));
    if (info.offset % alignment_ != 0) {
      return Invalid(absl::StrCat("tensor ", quoted, " offset ", info.offset,
                                  " is not a multiple of the alignment ", alignment_));
    }
    tensor_index_.emplace(info.name, tensors_.size());
    tensors_.push_back(std::move(info));
  }

  // Data section and tensor extents.
  if (!AlignUp(cursor.pos(), alignment_, &data_offset_)) {
    return Invalid("data section offset overflows");
  }
  if (!tensors_.empty() && data_offset_ > size_) {
    return Invalid(absl::StrCat("data section at byte ", data_offset_,
                                " starts past end of file (size ", size_, ")"));
  }
  for (GgufTensorInfo& info : tensors_) {
    uint64_t start = 0;
    uint64_t end = 0;
    if (__builtin_add_overflow(data_offset_, info.offset, &start) ||
        __builtin_add_overflow(start, info.nbytes, &end) || end > size_) {
      const std::string where = start >= data_offset_
                                    ? absl::StrCat(start)
                                    : absl::StrCat(data_offset_, " + ", info.offset);
      return Invalid(absl::StrCat("tensor ", Quote(info.name), " data [offset ", where, ", ",
                                  info.nbytes, " bytes) extends past end of file (size ", size_,
                                  ")"));
    }
    info.data = base_ + start;
  }
  // Tensors must not share bytes: overlapping extents only come from corrupt or crafted files.
  std::vector<size_t> order(tensors_.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return tensors_[a].offset < tensors_[b].offset; });
  for (size_t k = 1; k < order.size(); ++k) {
    const GgufTensorInfo& prev = tensors_[order[k - 1]];
    const GgufTensorInfo& cur = tensors_[order[k]];
    if (prev.offset + prev.nbytes > cur.offset) {
      return Invalid(absl::StrCat("tensors ", Quote(prev.name), " [offset ", prev.offset, ", ",
                                  prev.nbytes, " bytes) and ", Quote(cur.name), " [offset ",
                                  cur.offset, ", ", cur.nbytes, " bytes) overlap"));
    }
  }
  return absl::OkStatus();
}

const GgufValue* GgufFile::Find(std::string_view key) const {
  auto it = metadata_index_.find(key);
  return it == metadata_index_.end() ? nullptr : &metadata_[it->second].second;
}

const GgufTensorInfo* GgufFile::FindTensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

namespace {
absl::StatusOr<const GgufValue*> Require(const GgufFile& file, std::string_view key) {
  const GgufValue* value = file.Find(key);
  if (value == nullptr) {
    return absl::NotFoundError(absl::StrCat("GGUF: metadata key ", Quote(key), " not found"));
  }
  return value;
}
}  // namespace

absl::StatusOr<std::string> GgufFile::GetString(std::string_view key) const {
  ASSIGN_OR_RETURN(const GgufValue* value, Require(*this, key));
  const auto* s = std::get_if<std::string>(&value->data);
  if (value->type != GgufValueType::kString || s == nullptr) {
    return absl::InvalidArgumentError(TypeMismatch(key, *value, "a string"));
  }
  return *s;
}

absl::StatusOr<int64_t> GgufFile::GetInt(std::string_view key) const {
  ASSIGN_OR_RETURN(const GgufValue* value, Require(*this, key));
  return ToInt(*value, key);
}

absl::StatusOr<double> GgufFile::GetFloat(std::string_view key) const {
  ASSIGN_OR_RETURN(const GgufValue* value, Require(*this, key));
  return ToFloat(*value, key);
}

absl::StatusOr<bool> GgufFile::GetBool(std::string_view key) const {
  ASSIGN_OR_RETURN(const GgufValue* value, Require(*this, key));
  const auto* b = std::get_if<bool>(&value->data);
  if (value->type != GgufValueType::kBool || b == nullptr) {
    return absl::InvalidArgumentError(TypeMismatch(key, *value, "a bool"));
  }
  return *b;
}

namespace {

// The error for a string array that holds a non-string element: names the first such element.
absl::Status NotAllStrings(const GgufValue::Array& array, std::string_view key) {
  absl::Status status = absl::InvalidArgumentError(
      absl::StrCat("GGUF: metadata key ", Quote(key), " is not an array of strings"));
  array.ForEach([&](size_t i, const GgufValue& element) {
    if (element.type == GgufValueType::kString &&
        std::holds_alternative<std::string>(element.data)) {
      return true;
    }
    status = absl::InvalidArgumentError(TypeMismatch(ElementKey(key, i), element, "a string"));
    return false;
  });
  return status;
}

// Converts each element with `convert(element, index)` (a StatusOr), stopping at the first error.
template <typename T, typename Convert>
absl::StatusOr<std::vector<T>> ConvertElements(const GgufValue::Array& array,
                                               const Convert& convert) {
  std::vector<T> out;
  out.reserve(array.size());
  absl::Status status;
  array.ForEach([&](size_t i, const GgufValue& element) {
    absl::StatusOr<T> converted = convert(element, i);
    if (!converted.ok()) {
      status = converted.status();
      return false;
    }
    out.push_back(*std::move(converted));
    return true;
  });
  RETURN_IF_ERROR(status);
  return out;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> GgufFile::GetStringArray(std::string_view key) const {
  ASSIGN_OR_RETURN(const GgufValue* value, Require(*this, key));
  ASSIGN_OR_RETURN(const GgufValue::Array* array, ToArray(*value, key));
  std::vector<std::string> out;
  out.reserve(array->size());
  if (!array->ForEachString([&](size_t, std::string_view text) { out.emplace_back(text); })) {
    return NotAllStrings(*array, key);
  }
  return out;
}

absl::StatusOr<std::vector<std::string_view>> GgufFile::GetStringViewArray(
    std::string_view key) const {
  ASSIGN_OR_RETURN(const GgufValue* value, Require(*this, key));
  ASSIGN_OR_RETURN(const GgufValue::Array* array, ToArray(*value, key));
  std::vector<std::string_view> out;
  out.reserve(array->size());
  if (!array->ForEachString([&](size_t, std::string_view text) { out.push_back(text); })) {
    return NotAllStrings(*array, key);
  }
  return out;
}

absl::StatusOr<std::vector<float>> GgufFile::GetFloatArray(std::string_view key) const {
  ASSIGN_OR_RETURN(const GgufValue* value, Require(*this, key));
  ASSIGN_OR_RETURN(const GgufValue::Array* array, ToArray(*value, key));
  return ConvertElements<float>(*array,
                                [&](const GgufValue& element, size_t i) -> absl::StatusOr<float> {
                                  if (IsFloatType(element.type)) {
                                    if (const auto* d = std::get_if<double>(&element.data))
                                      return static_cast<float>(*d);
                                  }
                                  ASSIGN_OR_RETURN(double d, ToFloat(element, ElementKey(key, i)));
                                  return static_cast<float>(d);
                                });
}

absl::StatusOr<std::vector<int64_t>> GgufFile::GetIntArray(std::string_view key) const {
  ASSIGN_OR_RETURN(const GgufValue* value, Require(*this, key));
  ASSIGN_OR_RETURN(const GgufValue::Array* array, ToArray(*value, key));
  return ConvertElements<int64_t>(
      *array, [&](const GgufValue& element, size_t i) -> absl::StatusOr<int64_t> {
        if (IsSignedType(element.type)) {
          if (const auto* v = std::get_if<int64_t>(&element.data)) return *v;
        }
        return ToInt(element, ElementKey(key, i));
      });
}

absl::StatusOr<int64_t> GgufFile::GetIntOr(std::string_view key, int64_t fallback) const {
  const GgufValue* value = Find(key);
  if (value == nullptr) return fallback;
  return ToInt(*value, key);
}

absl::StatusOr<double> GgufFile::GetFloatOr(std::string_view key, double fallback) const {
  const GgufValue* value = Find(key);
  if (value == nullptr) return fallback;
  return ToFloat(*value, key);
}

absl::StatusOr<bool> GgufFile::GetBoolOr(std::string_view key, bool fallback) const {
  if (Find(key) == nullptr) return fallback;
  return GetBool(key);
}

// ---- GgufWriter ------------------------------------------------------------------------------
// AddTensorF32 lives in runtime/internal/gguf_writer_quantize.cc so that programs which only read
// GGUF files do not link the quantisers.

void GgufWriter::SetValue(std::string key, GgufValue value) {
  for (auto& [existing_key, existing_value] : metadata_) {
    if (existing_key == key) {
      existing_value = std::move(value);
      return;
    }
  }
  metadata_.emplace_back(std::move(key), std::move(value));
}

void GgufWriter::AddTensor(std::string name, kernels::TensorType type, std::vector<int64_t> dims,
                           std::vector<uint8_t> bytes) {
  // Written exactly as given: tests use this to build deliberately inconsistent files too.
  tensors_.push_back(Tensor{std::move(name), type, std::move(dims), std::move(bytes)});
}

std::vector<uint8_t> GgufWriter::Serialize() const {
  // A non-default alignment must be recorded for readers, unless the caller set the key
  // explicitly (tests do, to write files with a wrong value).
  bool has_alignment_key = false;
  for (const auto& entry : metadata_) has_alignment_key |= entry.first == kAlignmentKey;
  const bool add_alignment_key = !has_alignment_key && alignment_ != kDefaultAlignment;

  std::vector<uint8_t> out(kMagic, kMagic + sizeof(kMagic));
  AppendLE(&out, kWriterVersion, 4);
  AppendLE(&out, tensors_.size(), 8);
  AppendLE(&out, metadata_.size() + (add_alignment_key ? 1 : 0), 8);
  if (add_alignment_key) {
    AppendString(&out, kAlignmentKey);
    AppendLE(&out, static_cast<uint32_t>(GgufValueType::kUint32), 4);
    AppendLE(&out, alignment_, 4);
  }
  for (const auto& [key, value] : metadata_) {
    AppendString(&out, key);
    AppendLE(&out, static_cast<uint32_t>(value.type), 4);
    AppendPayload(&out, value.type, value);
  }
  uint64_t offset = 0;
  for (const Tensor& tensor : tensors_) {
    AppendString(&out, tensor.name);
    AppendLE(&out, tensor.dims.size(), 4);
    for (int64_t d : tensor.dims) AppendLE(&out, static_cast<uint64_t>(d), 8);
    AppendLE(&out, static_cast<uint32_t>(tensor.type), 4);
    AppendLE(&out, offset, 8);
    AlignUp(offset + tensor.bytes.size(), alignment_, &offset);
  }
  PadTo(&out, alignment_);
  for (const Tensor& tensor : tensors_) {
    out.insert(out.end(), tensor.bytes.begin(), tensor.bytes.end());
    PadTo(&out, alignment_);
  }
  return out;
}

absl::Status GgufWriter::WriteFile(const std::string& path) const {
  const std::vector<uint8_t> bytes = Serialize();
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) {
    return absl::ErrnoToStatus(errno, absl::StrCat("GGUF: cannot create ", path));
  }
  const size_t written = std::fwrite(bytes.data(), 1, bytes.size(), f);
  int write_errno = errno;
  const bool closed = std::fclose(f) == 0;
  if (!closed) write_errno = errno;
  if (!closed || written != bytes.size()) {
    return absl::ErrnoToStatus(write_errno, absl::StrCat("GGUF: cannot write ", path));
  }
  return absl::OkStatus();
}

}  // namespace exo::runtime
