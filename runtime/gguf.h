// GGUF (versions 2 and 3) reader over mmap, and a writer for tests and tools.
//
// The reader treats the file as untrusted input: every count, length, offset, dimension and type
// is validated before use, so a truncated, corrupted or hostile file yields an InvalidArgument
// status naming the problem, never a crash or an allocation larger than the file.
#ifndef EXO_RUNTIME_GGUF_H_
#define EXO_RUNTIME_GGUF_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/types.h"

namespace exo::runtime {

// GGUF metadata value types, numbered as on disk.
enum class GgufValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};
const char* GgufValueTypeName(GgufValueType type);

// One metadata value. Arrays hold elements of one type; nested arrays are allowed by the format
// and supported.
struct GgufValue {
  // An array has one of two forms. Arrays built in code, and short arrays read from a file, hold
  // decoded `elements`. Long arrays of strings or fixed-size scalars read from a file (more than
  // GgufFile::kMaxDecodedArrayElements) stay encoded as in the file: a GgufValue per element costs
  // ~50 bytes plus a heap string, which for a 262k-token vocabulary is tens of MiB kept for the
  // life of the file. Read elements through size() / ForEach / Element, which serve both forms.
  struct Array {
    GgufValueType element_type = GgufValueType::kUint8;
    std::vector<GgufValue> elements;  // the decoded form; empty in the encoded form
    // The encoded form: `encoded_count` elements, already validated, in the `encoded_bytes` bytes
    // at `encoded`. The pointer shares ownership of the file's mapping (copies of the value stay
    // valid after the GgufFile is gone; for FromBuffer the caller's buffer must outlive them).
    std::shared_ptr<const uint8_t> encoded;
    uint64_t encoded_bytes = 0;
    uint64_t encoded_count = 0;

    bool is_encoded() const { return encoded != nullptr; }
    size_t size() const { return is_encoded() ? encoded_count : elements.size(); }
    // Calls `fn(index, element)` for each element in order while it returns true. Encoded elements
    // are decoded one at a time into a temporary that is only valid during the call.
    void ForEach(absl::FunctionRef<bool(size_t, const GgufValue&)> fn) const;
    // For arrays of strings: calls `fn(index, text)` for each element, without copying (the view
    // points into the file image or into `elements`). False, without calling `fn`, when the
    // elements are not all strings.
    bool ForEachString(absl::FunctionRef<void(size_t, std::string_view)> fn) const;
    // Element `index` (< size()), decoded. Constant time except for encoded strings, which are
    // walked from the start: use ForEach to visit many.
    GgufValue Element(size_t index) const;
  };
  GgufValueType type = GgufValueType::kUint8;
  std::variant<uint64_t, int64_t, double, bool, std::string, Array> data;

  static GgufValue U32(uint32_t v);
  static GgufValue I32(int32_t v);
  static GgufValue U64(uint64_t v);
  static GgufValue F32(float v);
  static GgufValue Bool(bool v);
  static GgufValue String(std::string v);
  static GgufValue StringArray(const std::vector<std::string>& v);
  static GgufValue F32Array(const std::vector<float>& v);
  static GgufValue I32Array(const std::vector<int32_t>& v);

  // Human-readable rendering; long arrays are elided after `max_elements`.
  std::string DebugString(size_t max_elements = 8) const;
};

struct GgufTensorInfo {
  std::string name;
  kernels::TensorType type = kernels::TensorType::kF32;
  std::vector<int64_t> dims;      // ggml order: dims[0] is the contiguous (row) dimension
  uint64_t offset = 0;            // relative to the start of the tensor data section
  uint64_t nbytes = 0;            // validated to lie inside the file
  const uint8_t* data = nullptr;  // into the mapping (null for files opened without data)

  int64_t num_elements() const;
};

class GgufFile {
 public:
  // Arrays read from a file with more elements than this (of strings or fixed-size scalars) are
  // kept in their encoded form (see GgufValue::Array).
  static constexpr uint64_t kMaxDecodedArrayElements = 1024;

  // Maps `path` read-only and parses header, metadata and tensor table. Errors: NotFound for a
  // missing file, InvalidArgument for anything malformed (the message says what and where).
  static absl::StatusOr<std::unique_ptr<GgufFile>> Open(const std::string& path);
  // Parses an in-memory image (the fuzz target and tests use this). `bytes` must outlive the file.
  static absl::StatusOr<std::unique_ptr<GgufFile>> FromBuffer(const uint8_t* bytes, size_t size);
  // Parses an in-memory image that the file (and values copied out of it) then own.
  static absl::StatusOr<std::unique_ptr<GgufFile>> FromBytes(std::vector<uint8_t> bytes);

  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t file_size() const { return size_; }
  uint64_t data_offset() const { return data_offset_; }

  // Metadata in file order.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return metadata_; }
  const GgufValue* Find(std::string_view key) const;

  // Typed getters. NotFound when absent; InvalidArgument when present with an incompatible type
  // (integers of any width convert when the value fits; float32/float64 both read as double).
  absl::StatusOr<std::string> GetString(std::string_view key) const;
  absl::StatusOr<int64_t> GetInt(std::string_view key) const;
  absl::StatusOr<double> GetFloat(std::string_view key) const;
  absl::StatusOr<bool> GetBool(std::string_view key) const;
  absl::StatusOr<std::vector<std::string>> GetStringArray(std::string_view key) const;
  // The same without copying the strings: the views point into the file image (or the value's own
  // strings) and are valid as long as the file.
  absl::StatusOr<std::vector<std::string_view>> GetStringViewArray(std::string_view key) const;
  absl::StatusOr<std::vector<float>> GetFloatArray(std::string_view key) const;
  absl::StatusOr<std::vector<int64_t>> GetIntArray(std::string_view key) const;
  // Helpers for optional keys: the default when absent, an error only when present but wrong.
  absl::StatusOr<int64_t> GetIntOr(std::string_view key, int64_t fallback) const;
  absl::StatusOr<double> GetFloatOr(std::string_view key, double fallback) const;
  absl::StatusOr<bool> GetBoolOr(std::string_view key, bool fallback) const;

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* FindTensor(std::string_view name) const;

 private:
  GgufFile() = default;
  absl::Status Parse();

  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  // Owns the mmap when there is one (empty for FromBuffer); encoded arrays share it, so that
  // values copied out of the file keep their bytes.
  std::shared_ptr<const uint8_t> image_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::map<std::string, size_t, std::less<>> metadata_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

// Builds a GGUF v3 file in memory or on disk. Used by tests to write tiny synthetic models.
class GgufWriter {
 public:
  explicit GgufWriter(uint64_t alignment = 32) : alignment_(alignment) {}
  void SetValue(std::string key, GgufValue value);
  // Adds a tensor from raw bytes already in `type`'s layout (dims in ggml order).
  void AddTensor(std::string name, kernels::TensorType type, std::vector<int64_t> dims,
                 std::vector<uint8_t> bytes);
  // Adds a tensor from f32 values, quantising rows to `type` with the reference quantiser.
  void AddTensorF32(std::string name, kernels::TensorType type, std::vector<int64_t> dims,
                    const std::vector<float>& values);
  std::vector<uint8_t> Serialize() const;
  absl::Status WriteFile(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    kernels::TensorType type;
    std::vector<int64_t> dims;
    std::vector<uint8_t> bytes;
  };
  uint64_t alignment_;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::vector<Tensor> tensors_;
};

}  // namespace exo::runtime

#endif  // EXO_RUNTIME_GGUF_H_
