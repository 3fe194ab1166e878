#include "runtime/gguf.h"

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/quants.h"
#include "kernels/types.h"

namespace exo::runtime {
namespace {

using kernels::TensorType;
using ::testing::HasSubstr;

// ---- helpers -----------------------------------------------------------------------------------

// Little-endian byte builder for hand-made (often broken) GGUF images.
class Bytes {
 public:
  Bytes& U8(uint8_t v) { return Raw(&v, 1); }
  Bytes& U16(uint16_t v) { return Le(v, 2); }
  Bytes& U32(uint32_t v) { return Le(v, 4); }
  Bytes& U64(uint64_t v) { return Le(v, 8); }
  Bytes& F32(float f) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    return U32(bits);
  }
  Bytes& Str(const std::string& s) {
    U64(s.size());
    return Raw(s.data(), s.size());
  }
  Bytes& Raw(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    data_.insert(data_.end(), b, b + n);
    return *this;
  }
  Bytes& Header(uint32_t version, uint64_t tensors, uint64_t kvs) {
    Raw("GGUF", 4);
    U32(version);
    U64(tensors);
    return U64(kvs);
  }
  Bytes& PadTo(size_t alignment) {
    while (data_.size() % alignment != 0) data_.push_back(0);
    return *this;
  }
  const std::vector<uint8_t>& data() const { return data_; }
  size_t size() const { return data_.size(); }

 private:
  Bytes& Le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) data_.push_back(static_cast<uint8_t>(v >> (8 * i)));
    return *this;
  }
  std::vector<uint8_t> data_;
};

// `bytes` must outlive the file (tensor data and long arrays point into it): pass a named
// vector, or use GgufFile::FromBytes, which keeps its own copy.
absl::StatusOr<std::unique_ptr<GgufFile>> Parse(const std::vector<uint8_t>& bytes) {
  return GgufFile::FromBuffer(bytes.data(), bytes.size());
}

// Expects InvalidArgument whose message contains every one of `parts`.
void ExpectInvalid(const std::vector<uint8_t>& bytes, std::initializer_list<std::string> parts) {
  auto file = Parse(bytes);
  ASSERT_FALSE(file.ok()) << "parsed a malformed file";
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument) << file.status();
  EXPECT_THAT(std::string(file.status().message()), HasSubstr("GGUF: "));
  for (const std::string& part : parts) {
    EXPECT_THAT(std::string(file.status().message()), HasSubstr(part));
  }
}

std::vector<uint8_t> F32Bytes(const std::vector<float>& values) {
  std::vector<uint8_t> bytes(values.size() * 4);
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

std::vector<float> Iota(size_t n, float start = 0.0f) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = start + static_cast<float>(i);
  return v;
}

GgufValue Make(GgufValueType type, uint64_t u) {
  GgufValue value;
  value.type = type;
  value.data = u;
  return value;
}
GgufValue MakeSigned(GgufValueType type, int64_t i) {
  GgufValue value;
  value.type = type;
  value.data = i;
  return value;
}
GgufValue MakeF64(double d) {
  GgufValue value;
  value.type = GgufValueType::kFloat64;
  value.data = d;
  return value;
}
GgufValue MakeArray(GgufValueType element_type, std::vector<GgufValue> elements) {
  GgufValue value;
  value.type = GgufValueType::kArray;
  value.data = GgufValue::Array{element_type, std::move(elements)};
  return value;
}

// Byte position just after the tensor info named `name` has its dims, i.e. where its type u32
// starts. Names in these tests are unique substrings of the image.
size_t TensorTypePos(const std::vector<uint8_t>& bytes, const std::string& name, int n_dims) {
  std::string image(bytes.begin(), bytes.end());
  size_t at = image.rfind(name);
  EXPECT_NE(at, std::string::npos);
  return at + name.size() + 4 + 8 * n_dims;
}

void PatchU64(std::vector<uint8_t>* bytes, size_t pos, uint64_t v) {
  for (int i = 0; i < 8; ++i) (*bytes)[pos + i] = static_cast<uint8_t>(v >> (8 * i));
}
void PatchU32(std::vector<uint8_t>* bytes, size_t pos, uint32_t v) {
  for (int i = 0; i < 4; ++i) (*bytes)[pos + i] = static_cast<uint8_t>(v >> (8 * i));
}

// A small file with metadata of every kind and two tensors.
GgufWriter SmallWriter() {
  GgufWriter writer;
  writer.SetValue("general.architecture", GgufValue::String("llama"));
  writer.SetValue("general.name", GgufValue::String("tiny"));
  writer.SetValue("llama.block_count", GgufValue::U32(2));
  writer.SetValue("llama.rope.freq_base", GgufValue::F32(10000.0f));
  writer.SetValue("flag", GgufValue::Bool(true));
  writer.SetValue("tokens", GgufValue::StringArray({"a", "bc", ""}));
  writer.SetValue("scores", GgufValue::F32Array({0.5f, -1.0f}));
  writer.SetValue("nested", MakeArray(GgufValueType::kArray,
                                      {GgufValue::I32Array({1, 2}), GgufValue::I32Array({})}));
  writer.AddTensor("w1", TensorType::kF32, {4, 2}, F32Bytes(Iota(8)));
  writer.AddTensor("w2", TensorType::kF32, {3}, F32Bytes(Iota(3, 100.0f)));
  return writer;
}

std::string TempPath(const std::string& name) {
  return ::testing::TempDir() + "/gguf_test_" + std::to_string(::getpid()) + "_" + name;
}

// ---- round trips -------------------------------------------------------------------------------

TEST(GgufWriter, RoundTripsEveryScalarValueType) {
  GgufWriter writer;
  writer.SetValue("u8", Make(GgufValueType::kUint8, 250));
  writer.SetValue("i8", MakeSigned(GgufValueType::kInt8, -100));
  writer.SetValue("u16", Make(GgufValueType::kUint16, 65000));
  writer.SetValue("i16", MakeSigned(GgufValueType::kInt16, -32000));
  writer.SetValue("u32", GgufValue::U32(4000000000u));
  writer.SetValue("i32", GgufValue::I32(-2000000000));
  writer.SetValue("f32", GgufValue::F32(1.5f));
  writer.SetValue("bool_t", GgufValue::Bool(true));
  writer.SetValue("bool_f", GgufValue::Bool(false));
  writer.SetValue("str", GgufValue::String(std::string("h\xc3\xa9llo\0x", 8)));
  writer.SetValue("empty_str", GgufValue::String(""));
  writer.SetValue("u64", GgufValue::U64(0xFFFFFFFFFFFFFFFFull));
  writer.SetValue("i64", MakeSigned(GgufValueType::kInt64, std::numeric_limits<int64_t>::min()));
  writer.SetValue("f64", MakeF64(-2.25e300));
  auto file = GgufFile::FromBytes(writer.Serialize());
  ASSERT_TRUE(file.ok()) << file.status();
  const GgufFile& f = **file;
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  ASSERT_EQ(f.metadata().size(), 14u);
  EXPECT_EQ(f.metadata()[0].first, "u8");  // file order kept
  EXPECT_EQ(f.metadata()[13].first, "f64");

  EXPECT_EQ(f.Find("u8")->type, GgufValueType::kUint8);
  EXPECT_EQ(*f.GetInt("u8"), 250);
  EXPECT_EQ(f.Find("i8")->type, GgufValueType::kInt8);
  EXPECT_EQ(*f.GetInt("i8"), -100);
  EXPECT_EQ(f.Find("u16")->type, GgufValueType::kUint16);
  EXPECT_EQ(*f.GetInt("u16"), 65000);
  EXPECT_EQ(f.Find("i16")->type, GgufValueType::kInt16);
  EXPECT_EQ(*f.GetInt("i16"), -32000);
  EXPECT_EQ(f.Find("u32")->type, GgufValueType::kUint32);
  EXPECT_EQ(*f.GetInt("u32"), 4000000000LL);
  EXPECT_EQ(f.Find("i32")->type, GgufValueType::kInt32);
  EXPECT_EQ(*f.GetInt("i32"), -2000000000LL);
  EXPECT_EQ(f.Find("f32")->type, GgufValueType::kFloat32);
  EXPECT_EQ(*f.GetFloat("f32"), 1.5);
  EXPECT_EQ(f.Find("bool_t")->type, GgufValueType::kBool);
  EXPECT_TRUE(*f.GetBool("bool_t"));
  EXPECT_FALSE(*f.GetBool("bool_f"));
  EXPECT_EQ(f.Find("str")->type, GgufValueType::kString);
  EXPECT_EQ(*f.GetString("str"), std::string("h\xc3\xa9llo\0x", 8));
  EXPECT_EQ(*f.GetString("empty_str"), "");
  EXPECT_EQ(f.Find("u64")->type, GgufValueType::kUint64);
  EXPECT_EQ(std::get<uint64_t>(f.Find("u64")->data), 0xFFFFFFFFFFFFFFFFull);
  EXPECT_EQ(f.Find("i64")->type, GgufValueType::kInt64);
  EXPECT_EQ(*f.GetInt("i64"), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(f.Find("f64")->type, GgufValueType::kFloat64);
  EXPECT_EQ(*f.GetFloat("f64"), -2.25e300);
  EXPECT_TRUE(f.tensors().empty());
}

TEST(GgufWriter, RoundTripsArraysOfEveryElementType) {
  GgufWriter writer;
  writer.SetValue("a_u8", MakeArray(GgufValueType::kUint8, {Make(GgufValueType::kUint8, 1),
                                                            Make(GgufValueType::kUint8, 255)}));
  writer.SetValue("a_i16",
                  MakeArray(GgufValueType::kInt16, {MakeSigned(GgufValueType::kInt16, -5)}));
  writer.SetValue("a_u64", MakeArray(GgufValueType::kUint64, {GgufValue::U64(1ull << 40)}));
  writer.SetValue("a_f64", MakeArray(GgufValueType::kFloat64, {MakeF64(0.125), MakeF64(-3)}));
  writer.SetValue("a_bool",
                  MakeArray(GgufValueType::kBool, {GgufValue::Bool(true), GgufValue::Bool(false)}));
  writer.SetValue("a_str", GgufValue::StringArray({"x", "", "yz"}));
  writer.SetValue("a_f32", GgufValue::F32Array({1.0f, -0.5f}));
  writer.SetValue("a_i32", GgufValue::I32Array({7, -8, 9}));
  writer.SetValue("a_empty", GgufValue::I32Array({}));
  auto file = GgufFile::FromBytes(writer.Serialize());
  ASSERT_TRUE(file.ok()) << file.status();
  const GgufFile& f = **file;
  EXPECT_EQ(*f.GetIntArray("a_u8"), (std::vector<int64_t>{1, 255}));
  EXPECT_EQ(*f.GetIntArray("a_i16"), (std::vector<int64_t>{-5}));
  EXPECT_EQ(*f.GetIntArray("a_u64"), (std::vector<int64_t>{1LL << 40}));
  EXPECT_EQ(*f.GetFloatArray("a_f64"), (std::vector<float>{0.125f, -3.0f}));
  const auto& bools = std::get<GgufValue::Array>(f.Find("a_bool")->data);
  EXPECT_EQ(bools.element_type, GgufValueType::kBool);
  ASSERT_EQ(bools.size(), 2u);
  EXPECT_TRUE(std::get<bool>(bools.Element(0).data));
  EXPECT_FALSE(std::get<bool>(bools.Element(1).data));
  EXPECT_EQ(*f.GetStringArray("a_str"), (std::vector<std::string>{"x", "", "yz"}));
  EXPECT_EQ(*f.GetFloatArray("a_f32"), (std::vector<float>{1.0f, -0.5f}));
  EXPECT_EQ(*f.GetIntArray("a_i32"), (std::vector<int64_t>{7, -8, 9}));
  EXPECT_TRUE(f.GetIntArray("a_empty")->empty());
  EXPECT_EQ(std::get<GgufValue::Array>(f.Find("a_empty")->data).element_type,
            GgufValueType::kInt32);
}

TEST(GgufWriter, RoundTripsNestedArrays) {
  GgufWriter writer;
  GgufValue inner_strings = GgufValue::StringArray({"p", "q"});
  GgufValue level2 =
      MakeArray(GgufValueType::kArray, {GgufValue::I32Array({1, 2, 3}), GgufValue::I32Array({})});
  writer.SetValue("nested", MakeArray(GgufValueType::kArray, {level2, level2}));
  writer.SetValue("strings2", MakeArray(GgufValueType::kArray, {inner_strings}));
  auto file = GgufFile::FromBytes(writer.Serialize());
  ASSERT_TRUE(file.ok()) << file.status();
  const GgufValue* nested = (*file)->Find("nested");
  ASSERT_NE(nested, nullptr);
  const auto& outer = std::get<GgufValue::Array>(nested->data);
  EXPECT_EQ(outer.element_type, GgufValueType::kArray);
  ASSERT_EQ(outer.size(), 2u);
  const GgufValue mid_value = outer.Element(1);
  const auto& mid = std::get<GgufValue::Array>(mid_value.data);
  ASSERT_EQ(mid.size(), 2u);
  const GgufValue leaf_value = mid.Element(0);
  const auto& leaf = std::get<GgufValue::Array>(leaf_value.data);
  EXPECT_EQ(leaf.element_type, GgufValueType::kInt32);
  ASSERT_EQ(leaf.size(), 3u);
  EXPECT_EQ(std::get<int64_t>(leaf.Element(2).data), 3);
  EXPECT_EQ(nested->DebugString(), "[[[1, 2, 3], []], [[1, 2, 3], []]]");
  EXPECT_EQ((*file)->Find("strings2")->DebugString(), "[[\"p\", \"q\"]]");
  // An array of arrays is not an int array.
  EXPECT_EQ((*file)->GetIntArray("nested").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GgufWriter, RoundTripsTensorsAtEveryAlignment) {
  for (uint64_t alignment : {1u, 8u, 32u, 64u, 4096u}) {
    SCOPED_TRACE(alignment);
    GgufWriter writer(alignment);
    writer.SetValue("general.architecture", GgufValue::String("test"));
    // Sizes chosen so that alignment padding is needed between tensors.
    writer.AddTensor("a", TensorType::kF32, {3}, F32Bytes(Iota(3, 1.0f)));
    writer.AddTensor("b", TensorType::kF32, {5, 2}, F32Bytes(Iota(10, 50.0f)));
    std::vector<uint8_t> q8(2 * 34);
    for (size_t i = 0; i < q8.size(); ++i) q8[i] = static_cast<uint8_t>(i * 7);
    writer.AddTensor("c", TensorType::kQ8_0, {64}, q8);
    writer.AddTensor("d", TensorType::kF16, {1, 1, 1, 2}, {0x00, 0x3c, 0x00, 0xc0});
    std::vector<uint8_t> bytes = writer.Serialize();
    auto file = Parse(bytes);
    ASSERT_TRUE(file.ok()) << file.status();
    const GgufFile& f = **file;
    EXPECT_EQ(f.alignment(), alignment);
    EXPECT_EQ(f.data_offset() % alignment, 0u);
    EXPECT_EQ(f.file_size(), bytes.size());
    if (alignment != 32) EXPECT_EQ(*f.GetInt("general.alignment"), static_cast<int64_t>(alignment));
    ASSERT_EQ(f.tensors().size(), 4u);
    for (const GgufTensorInfo& t : f.tensors()) {
      EXPECT_EQ(t.offset % alignment, 0u) << t.name;
      EXPECT_EQ(t.data, bytes.data() + f.data_offset() + t.offset) << t.name;
    }
    const GgufTensorInfo* a = f.FindTensor("a");
    ASSERT_NE(a, nullptr);
    EXPECT_EQ(a->type, TensorType::kF32);
    EXPECT_EQ(a->dims, (std::vector<int64_t>{3}));
    EXPECT_EQ(a->nbytes, 12u);
    EXPECT_EQ(a->num_elements(), 3);
    float a_values[3];
    std::memcpy(a_values, a->data, sizeof(a_values));
    EXPECT_EQ(a_values[2], 3.0f);
    const GgufTensorInfo* b = f.FindTensor("b");
    ASSERT_NE(b, nullptr);
    EXPECT_EQ(b->dims, (std::vector<int64_t>{5, 2}));
    EXPECT_EQ(b->nbytes, 40u);
    EXPECT_EQ(b->num_elements(), 10);
    float b_last;
    std::memcpy(&b_last, b->data + 36, 4);
    EXPECT_EQ(b_last, 59.0f);
    const GgufTensorInfo* c = f.FindTensor("c");
    ASSERT_NE(c, nullptr);
    EXPECT_EQ(c->type, TensorType::kQ8_0);
    EXPECT_EQ(c->nbytes, 68u);
    EXPECT_EQ(std::memcmp(c->data, q8.data(), q8.size()), 0);
    const GgufTensorInfo* d = f.FindTensor("d");
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(d->dims.size(), 4u);
    EXPECT_EQ(d->nbytes, 4u);
    EXPECT_EQ(d->data[3], 0xc0);
    EXPECT_EQ(f.FindTensor("missing"), nullptr);
  }
}

TEST(GgufWriter, AddTensorF32StoresF32Exactly) {
  GgufWriter writer;
  const std::vector<float> values = {1.0f, -2.5f, 3.25f, 1e-30f, 7.0f, -0.0f};
  writer.AddTensorF32("t", TensorType::kF32, {3, 2}, values);
  std::vector<uint8_t> bytes = writer.Serialize();
  auto file = Parse(bytes);
  ASSERT_TRUE(file.ok()) << file.status();
  const GgufTensorInfo* t = (*file)->FindTensor("t");
  ASSERT_NE(t, nullptr);
  ASSERT_EQ(t->nbytes, 24u);
  std::vector<float> read(6);
  std::memcpy(read.data(), t->data, 24);
  EXPECT_EQ(read, values);
}

TEST(GgufWriter, AddTensorF32QuantisesEachRow) {
  // Two rows of very different scale: quantising them as one run would wreck the small row.
  constexpr int64_t kRow = 256;
  std::vector<float> values(2 * kRow);
  for (int64_t i = 0; i < kRow; ++i) {
    values[i] = 100.0f * std::sin(0.1f * static_cast<float>(i));
    values[kRow + i] = 0.01f * std::cos(0.37f * static_cast<float>(i));
  }
  struct Case {
    TensorType type;
    double tolerance;  // relative to the row's largest magnitude
  };
  for (const Case& c :
       {Case{TensorType::kF16, 1e-3}, Case{TensorType::kBF16, 1e-2}, Case{TensorType::kQ8_0, 1e-2},
        Case{TensorType::kQ4_0, 0.13},  // clamps +max to 7/8
        Case{TensorType::kQ4_K, 0.1}, Case{TensorType::kQ6_K, 0.03}}) {
    SCOPED_TRACE(kernels::TypeName(c.type));
    GgufWriter writer;
    writer.AddTensorF32("w", c.type, {kRow, 2}, values);
    std::vector<uint8_t> bytes = writer.Serialize();
    auto file = Parse(bytes);
    ASSERT_TRUE(file.ok()) << file.status();
    const GgufTensorInfo* w = (*file)->FindTensor("w");
    ASSERT_NE(w, nullptr);
    EXPECT_EQ(w->type, c.type);
    const int64_t row_bytes = kernels::RowBytes(c.type, kRow);
    ASSERT_EQ(w->nbytes, static_cast<uint64_t>(2 * row_bytes));
    for (int64_t r = 0; r < 2; ++r) {
      std::vector<float> row(kRow);
      kernels::DequantizeRow(c.type, w->data + r * row_bytes, row.data(), kRow);
      double max_abs = 0.0;
      double max_err = 0.0;
      for (int64_t i = 0; i < kRow; ++i) {
        max_abs = std::max(max_abs, std::fabs(static_cast<double>(values[r * kRow + i])));
        max_err = std::max(max_err, std::fabs(static_cast<double>(row[i] - values[r * kRow + i])));
      }
      EXPECT_LE(max_err, c.tolerance * max_abs) << "row " << r;
    }
  }
}

TEST(GgufWriter, SetValueReplacesAnExistingKey) {
  GgufWriter writer;
  writer.SetValue("k", GgufValue::U32(1));
  writer.SetValue("other", GgufValue::U32(2));
  writer.SetValue("k", GgufValue::String("now a string"));
  auto file = GgufFile::FromBytes(writer.Serialize());
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ((*file)->metadata().size(), 2u);
  EXPECT_EQ((*file)->metadata()[0].first, "k");
  EXPECT_EQ(*(*file)->GetString("k"), "now a string");
}

TEST(GgufWriter, WritesFilesThatOpenMaps) {
  const std::string path = TempPath("small.gguf");
  ASSERT_TRUE(SmallWriter().WriteFile(path).ok());
  auto file = GgufFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(*(*file)->GetString("general.name"), "tiny");
  const GgufTensorInfo* w2 = (*file)->FindTensor("w2");
  ASSERT_NE(w2, nullptr);
  float last;
  std::memcpy(&last, w2->data + 8, 4);
  EXPECT_EQ(last, 102.0f);
  EXPECT_EQ(SmallWriter().Serialize().size(), (*file)->file_size());
  std::remove(path.c_str());
}

TEST(GgufWriter, WriteFileReportsUnwritablePath) {
  absl::Status status = SmallWriter().WriteFile("/nonexistent-dir-for-gguf-test/x.gguf");
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(std::string(status.message()), HasSubstr("/nonexistent-dir-for-gguf-test/x.gguf"));
}

// ---- reader: versions, getters, debug strings ---------------------------------------------------

TEST(GgufReader, ReadsVersion2) {
  Bytes b;
  b.Header(2, 1, 2);
  b.Str("general.architecture").U32(8).Str("llama");
  b.Str("n").U32(5).U32(static_cast<uint32_t>(-7));
  b.Str("t").U32(1).U64(4).U32(0).U64(0);
  b.PadTo(32);
  b.F32(1).F32(2).F32(3).F32(4);
  auto file = Parse(b.data());
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->version(), 2u);
  EXPECT_EQ(*(*file)->GetString("general.architecture"), "llama");
  EXPECT_EQ(*(*file)->GetInt("n"), -7);
  ASSERT_EQ((*file)->tensors().size(), 1u);
  EXPECT_EQ((*file)->data_offset(), 128u);
  float v;
  std::memcpy(&v, (*file)->tensors()[0].data + 12, 4);
  EXPECT_EQ(v, 4.0f);
}

TEST(GgufReader, TypedGettersReportMissingAndMismatchedKeys) {
  GgufWriter writer;
  writer.SetValue("s", GgufValue::String("x"));
  writer.SetValue("i", GgufValue::I32(-3));
  writer.SetValue("big", GgufValue::U64(1ull << 63));
  writer.SetValue("f", GgufValue::F32(0.25f));
  writer.SetValue("b", GgufValue::Bool(false));
  writer.SetValue("mixed", GgufValue::StringArray({"a"}));
  auto file = GgufFile::FromBytes(writer.Serialize());
  ASSERT_TRUE(file.ok()) << file.status();
  const GgufFile& f = **file;

  auto missing = f.GetString("nope");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("'nope'"));
  auto wrong = f.GetString("i");
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(wrong.status().message()), HasSubstr("'i' is int32, expected a string"));
  EXPECT_EQ(f.GetInt("s").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f.GetInt("f").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f.GetInt("b").status().code(), absl::StatusCode::kInvalidArgument);
  auto too_big = f.GetInt("big");
  EXPECT_EQ(too_big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(too_big.status().message()), HasSubstr("does not fit"));
  EXPECT_EQ(*f.GetFloat("f"), 0.25);
  EXPECT_EQ(*f.GetFloat("i"), -3.0);  // integers widen to double
  EXPECT_EQ(f.GetFloat("s").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f.GetBool("i").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f.GetStringArray("s").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f.GetIntArray("mixed").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f.GetFloatArray("nope").status().code(), absl::StatusCode::kNotFound);

  EXPECT_EQ(*f.GetIntOr("nope", 42), 42);
  EXPECT_EQ(*f.GetIntOr("i", 42), -3);
  EXPECT_EQ(f.GetIntOr("s", 42).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*f.GetFloatOr("nope", 1.5), 1.5);
  EXPECT_EQ(*f.GetFloatOr("f", 1.5), 0.25);
  EXPECT_EQ(f.GetFloatOr("s", 1.5).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(*f.GetBoolOr("nope", true));
  EXPECT_FALSE(*f.GetBoolOr("b", true));
  EXPECT_EQ(f.GetBoolOr("s", true).status().code(), absl::StatusCode::kInvalidArgument);
}

// ---- Long arrays (kept encoded) ----------------------------------------------------------------

constexpr size_t kLong = GgufFile::kMaxDecodedArrayElements + 1;

std::vector<std::string> LongStrings(size_t n) {
  std::vector<std::string> v(n);
  for (size_t i = 0; i < n; ++i) {
    // Empty, short (SSO) and long texts, and bytes that are not text.
    v[i] = i % 7 == 0 ? std::string() : std::string(i % 23, static_cast<char>('a' + i % 26));
    if (i % 11 == 0) v[i] += std::string("\0\xff", 2);
  }
  return v;
}

// A writer with long arrays of strings and of fixed-size scalars, a short one at the threshold,
// and a nested array holding a long array.
GgufWriter LongArrayWriter() {
  GgufWriter writer;
  writer.SetValue("strings", GgufValue::StringArray(LongStrings(3000)));
  std::vector<float> floats(2000);
  for (size_t i = 0; i < floats.size(); ++i) floats[i] = -0.25f * static_cast<float>(i);
  writer.SetValue("floats", GgufValue::F32Array(floats));
  std::vector<int32_t> ints(kLong);
  for (size_t i = 0; i < ints.size(); ++i) ints[i] = static_cast<int32_t>(i * 7919) - 4000000;
  writer.SetValue("ints", GgufValue::I32Array(ints));
  std::vector<GgufValue> bools;
  for (size_t i = 0; i < kLong; ++i) bools.push_back(GgufValue::Bool(i % 3 == 1));
  writer.SetValue("bools", MakeArray(GgufValueType::kBool, bools));
  std::vector<GgufValue> u16s;
  for (size_t i = 0; i < 1500; ++i) u16s.push_back(Make(GgufValueType::kUint16, 65535 - i));
  writer.SetValue("u16s", MakeArray(GgufValueType::kUint16, u16s));
  writer.SetValue("at_threshold",
                  GgufValue::I32Array(std::vector<int32_t>(GgufFile::kMaxDecodedArrayElements, 5)));
  writer.SetValue("nested", MakeArray(GgufValueType::kArray,
                                      {GgufValue::I32Array({1}), GgufValue::I32Array(ints)}));
  writer.SetValue("after", GgufValue::U32(77));  // parsing resumes after the encoded bytes
  return writer;
}

const GgufValue::Array& ArrayOf(const GgufFile& file, std::string_view key) {
  return std::get<GgufValue::Array>(file.Find(key)->data);
}

TEST(GgufReader, KeepsLongArraysEncodedAndReadsThemLikeShortOnes) {
  const GgufWriter writer = LongArrayWriter();
  const std::vector<uint8_t> bytes = writer.Serialize();
  auto file = Parse(bytes);
  ASSERT_TRUE(file.ok()) << file.status();
  const GgufFile& f = **file;
  EXPECT_EQ(*f.GetInt("after"), 77);

  for (const char* key : {"strings", "floats", "ints", "bools", "u16s"}) {
    SCOPED_TRACE(key);
    EXPECT_TRUE(ArrayOf(f, key).is_encoded());
    EXPECT_TRUE(ArrayOf(f, key).elements.empty());
  }
  EXPECT_FALSE(ArrayOf(f, "at_threshold").is_encoded());
  EXPECT_EQ(ArrayOf(f, "at_threshold").size(), GgufFile::kMaxDecodedArrayElements);

  const std::vector<std::string> strings = LongStrings(3000);
  EXPECT_EQ(*f.GetStringArray("strings"), strings);
  auto views = f.GetStringViewArray("strings");
  ASSERT_TRUE(views.ok()) << views.status();
  EXPECT_EQ(std::vector<std::string>(views->begin(), views->end()), strings);
  for (std::string_view view : *views) {  // into the image, not copies
    if (view.empty()) continue;
    EXPECT_GE(reinterpret_cast<const uint8_t*>(view.data()), bytes.data());
    EXPECT_LE(reinterpret_cast<const uint8_t*>(view.data() + view.size()),
              bytes.data() + bytes.size());
  }
  const GgufValue::Array& string_array = ArrayOf(f, "strings");
  EXPECT_EQ(string_array.size(), 3000u);
  EXPECT_EQ(std::get<std::string>(string_array.Element(0).data), strings[0]);
  EXPECT_EQ(std::get<std::string>(string_array.Element(2999).data), strings[2999]);
  EXPECT_EQ(std::get<std::string>(string_array.Element(1234).data), strings[1234]);
  EXPECT_EQ(string_array.Element(1234).type, GgufValueType::kString);

  auto floats = f.GetFloatArray("floats");
  ASSERT_TRUE(floats.ok()) << floats.status();
  ASSERT_EQ(floats->size(), 2000u);
  EXPECT_EQ((*floats)[1999], -0.25f * 1999);
  EXPECT_EQ(std::get<double>(ArrayOf(f, "floats").Element(3).data), -0.75);
  auto ints = f.GetIntArray("ints");
  ASSERT_TRUE(ints.ok()) << ints.status();
  ASSERT_EQ(ints->size(), kLong);
  EXPECT_EQ((*ints)[0], -4000000);
  EXPECT_EQ((*ints)[kLong - 1], static_cast<int64_t>((kLong - 1) * 7919) - 4000000);
  EXPECT_EQ(ArrayOf(f, "ints").Element(kLong - 1).type, GgufValueType::kInt32);
  auto u16s = f.GetIntArray("u16s");
  ASSERT_TRUE(u16s.ok()) << u16s.status();
  EXPECT_EQ((*u16s)[1499], 65535 - 1499);
  EXPECT_TRUE(std::get<bool>(ArrayOf(f, "bools").Element(1).data));
  EXPECT_FALSE(std::get<bool>(ArrayOf(f, "bools").Element(kLong - 2).data));  // 1023 % 3 == 0

  // Nested: the inner long array is encoded too.
  const GgufValue inner = ArrayOf(f, "nested").Element(1);
  EXPECT_TRUE(std::get<GgufValue::Array>(inner.data).is_encoded());
  EXPECT_EQ(std::get<int64_t>(std::get<GgufValue::Array>(inner.data).Element(2).data),
            2 * 7919 - 4000000);

  // ForEach visits in order and stops when asked.
  size_t visited = 0;
  string_array.ForEach([&](size_t i, const GgufValue& element) {
    EXPECT_EQ(i, visited);
    EXPECT_EQ(std::get<std::string>(element.data), strings[i]);
    return ++visited < 10;
  });
  EXPECT_EQ(visited, 10u);

  // DebugString: as for the same array decoded.
  EXPECT_EQ(f.Find("strings")->DebugString(3), GgufValue::StringArray(strings).DebugString(3));
  EXPECT_EQ(f.Find("ints")->DebugString(),
            GgufValue::I32Array(std::vector<int32_t>(ints->begin(), ints->end())).DebugString());
  EXPECT_EQ(f.Find("bools")->DebugString(2), "[false, true, ... (1025 bool elements)]");
  EXPECT_EQ(f.Find("floats")->DebugString(0), "[... (2000 float32 elements)]");
}

TEST(GgufReader, FromBytesOwnsTheImage) {
  GgufValue copy;
  {
    std::vector<uint8_t> bytes = LongArrayWriter().Serialize();
    auto file = GgufFile::FromBytes(std::move(bytes));
    ASSERT_TRUE(file.ok()) << file.status();
    copy = *(*file)->Find("strings");
  }
  // The file and the vector it was made from are gone; the copied encoded array still reads.
  const auto& array = std::get<GgufValue::Array>(copy.data);
  ASSERT_TRUE(array.is_encoded());
  std::vector<std::string> got;
  EXPECT_TRUE(array.ForEachString([&](size_t, std::string_view text) { got.emplace_back(text); }));
  EXPECT_EQ(got, LongStrings(3000));
}

TEST(GgufReader, LongArraysReportTypeMismatchesPerElement) {
  auto file = GgufFile::FromBytes(LongArrayWriter().Serialize());
  ASSERT_TRUE(file.ok()) << file.status();
  auto as_ints = (*file)->GetIntArray("strings");
  EXPECT_EQ(as_ints.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(as_ints.status().message()),
              HasSubstr("'strings[0]' is string, expected an integer"));
  auto as_strings = (*file)->GetStringArray("ints");
  EXPECT_EQ(as_strings.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(as_strings.status().message()),
              HasSubstr("'ints[0]' is int32, expected a string"));
  EXPECT_EQ((*file)->GetStringViewArray("floats").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*file)->GetStringViewArray("after").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(GgufWriter, CopiesEncodedArraysExactly) {
  const std::vector<uint8_t> original = LongArrayWriter().Serialize();
  auto file = Parse(original);
  ASSERT_TRUE(file.ok()) << file.status();
  GgufWriter copy;
  for (const auto& [key, value] : (*file)->metadata()) copy.SetValue(key, value);
  EXPECT_EQ(copy.Serialize(), original);
}

TEST(GgufReader, EncodedValuesCopiedOutOutliveAnOpenedFile) {
  const std::string path = TempPath("long_arrays.gguf");
  ASSERT_TRUE(LongArrayWriter().WriteFile(path).ok());
  GgufValue strings;
  {
    auto file = GgufFile::Open(path);
    ASSERT_TRUE(file.ok()) << file.status();
    strings = *(*file)->Find("strings");
  }  // the file (and its reference to the mapping) is gone; the copy keeps the mapping
  std::remove(path.c_str());
  const auto& array = std::get<GgufValue::Array>(strings.data);
  ASSERT_TRUE(array.is_encoded());
  std::vector<std::string> seen;
  EXPECT_TRUE(array.ForEachString([&](size_t, std::string_view s) { seen.emplace_back(s); }));
  EXPECT_EQ(seen, LongStrings(3000));
}

TEST(GgufReader, LongArraysGiveTheSameErrorsAsShortOnes) {
  // A string element whose length runs past the end, in a short and in a long array.
  for (uint64_t count : {uint64_t{3}, uint64_t{2000}}) {
    SCOPED_TRACE(count);
    Bytes b;
    b.Header(3, 0, 1).Str("arr").U32(9).U32(8).U64(count);
    for (uint64_t i = 0; i + 1 < count; ++i) b.Str("ab");
    b.U64(1000).Raw("xyz", 3);
    ExpectInvalid(b.data(),
                  {"string length 1000 of metadata value for key 'arr'", "extends past end of file",
                   absl::StrCat("(array element ", count - 1, " of ", count, ")")});
    // Cut inside the last length field.
    std::vector<uint8_t> cut = b.data();
    cut.resize(cut.size() - 3 - 4);
    ExpectInvalid(cut, {"truncated string length of metadata value for key 'arr'",
                        absl::StrCat("(array element ", count - 1, " of ", count, ")")});
  }
  // Fixed-size elements that do not all fit.
  Bytes u32s;
  u32s.Header(3, 0, 1).Str("arr").U32(9).U32(4).U64(2000);
  for (int i = 0; i < 1999; ++i) u32s.U32(i);
  ExpectInvalid(u32s.data(),
                {"array of 2000 uint32 elements in metadata value for key 'arr'", "cannot fit"});
}

TEST(GgufReader, RejectsEveryTruncationOfAFileWithLongArrays) {
  GgufWriter writer;
  writer.SetValue("strings", GgufValue::StringArray(std::vector<std::string>(kLong, "t")));
  writer.SetValue("ints", GgufValue::I32Array(std::vector<int32_t>(kLong, 9)));
  writer.SetValue("end", GgufValue::U32(1));
  const std::vector<uint8_t> full = writer.Serialize();
  ASSERT_TRUE(Parse(full).ok());
  // Only the alignment padding after the last value may be cut.
  const std::string image(full.begin(), full.end());
  const size_t metadata_end = image.rfind("end") + 3 + 4 + 4;
  for (size_t length = 0; length < metadata_end; length += 1 + length % 5) {
    std::vector<uint8_t> prefix(full.begin(), full.begin() + length);
    auto file = Parse(prefix);
    ASSERT_FALSE(file.ok()) << "accepted a file truncated to " << length << " bytes";
    EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument) << length;
  }
}

TEST(GgufValue, DebugStringRendersAndElides) {
  EXPECT_EQ(GgufValue::U32(7).DebugString(), "7");
  EXPECT_EQ(GgufValue::I32(-7).DebugString(), "-7");
  EXPECT_EQ(GgufValue::F32(0.5f).DebugString(), "0.5");
  EXPECT_EQ(GgufValue::Bool(true).DebugString(), "true");
  EXPECT_EQ(GgufValue::String("a\"b\n").DebugString(), "\"a\\\"b\\n\"");
  EXPECT_EQ(GgufValue::I32Array({1, 2, 3}).DebugString(), "[1, 2, 3]");
  EXPECT_EQ(GgufValue::I32Array({1, 2, 3, 4, 5}).DebugString(2), "[1, 2, ... (5 int32 elements)]");
  EXPECT_EQ(GgufValue::StringArray({"x", "y"}).DebugString(0), "[... (2 string elements)]");
  EXPECT_EQ(GgufValue::I32Array({}).DebugString(), "[]");
}

TEST(GgufValue, TypeNamesMatchTheSpec) {
  EXPECT_STREQ(GgufValueTypeName(GgufValueType::kUint8), "uint8");
  EXPECT_STREQ(GgufValueTypeName(GgufValueType::kFloat32), "float32");
  EXPECT_STREQ(GgufValueTypeName(GgufValueType::kArray), "array");
  EXPECT_STREQ(GgufValueTypeName(GgufValueType::kFloat64), "float64");
  EXPECT_STREQ(GgufValueTypeName(static_cast<GgufValueType>(99)), "unknown");
}

// ---- reader: hostile inputs ---------------------------------------------------------------------

TEST(GgufReader, RejectsEveryTruncationOfAValidFile) {
  const std::vector<uint8_t> full = SmallWriter().Serialize();
  auto parsed = Parse(full);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  // The last tensor's data ends before the trailing alignment padding; cutting only padding
  // leaves a valid file, cutting anything more must not.
  uint64_t data_end = 0;
  for (const GgufTensorInfo& t : (*parsed)->tensors()) {
    data_end = std::max(data_end, (*parsed)->data_offset() + t.offset + t.nbytes);
  }
  ASSERT_GT(data_end, 0u);
  for (size_t length = 0; length <= full.size(); ++length) {
    // An exactly-sized heap copy so that a sanitizer build catches any read past the end.
    std::vector<uint8_t> prefix(full.begin(), full.begin() + length);
    auto file = Parse(prefix);
    if (length < data_end) {
      ASSERT_FALSE(file.ok()) << "accepted a file truncated to " << length << " bytes";
      EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument) << length;
    } else {
      ASSERT_TRUE(file.ok()) << length << ": " << file.status();
    }
  }
}

TEST(GgufReader, TruncationMessagesSayWhatAndWhere) {
  Bytes b;
  b.Header(3, 0, 1).Str("general.name").U32(8).U64(10).Raw("abc", 3);
  ExpectInvalid(b.data(),
                {"string length 10", "'general.name'", "at byte 48", "extends past end of file"});
  Bytes c;
  c.Header(3, 0, 1).Str("general.name").U32(4).U16(1);
  ExpectInvalid(c.data(), {"truncated metadata value for key 'general.name' at byte 48"});
}

TEST(GgufReader, RejectsBadMagic) {
  std::vector<uint8_t> bytes = SmallWriter().Serialize();
  bytes[0] = 'g';
  ExpectInvalid(bytes, {"not a GGUF file", "magic"});
  ExpectInvalid({}, {"not a GGUF file"});
  ExpectInvalid({'G', 'G'}, {"not a GGUF file"});
  EXPECT_FALSE(GgufFile::FromBuffer(nullptr, 0).ok());
}

TEST(GgufReader, RejectsVersion1AndUnknownVersions) {
  Bytes v1;
  v1.Header(1, 0, 0);
  ExpectInvalid(v1.data(), {"version 1", "not supported"});
  Bytes v4;
  v4.Header(4, 0, 0);
  ExpectInvalid(v4.data(), {"unsupported version 4"});
  Bytes v0;
  v0.Header(0, 0, 0);
  ExpectInvalid(v0.data(), {"unsupported version 0"});
}

TEST(GgufReader, RejectsBigEndianFiles) {
  Bytes b;
  b.Raw("GGUF", 4).U32(0x03000000).U64(0).U64(0);
  ExpectInvalid(b.data(), {"big-endian"});
}

TEST(GgufReader, RejectsHugeCountsBeforeAllocating) {
  Bytes kvs;
  kvs.Header(3, 0, 1ull << 62).Str("k").U32(4).U32(1);
  ExpectInvalid(kvs.data(), {"metadata entries"});
  Bytes tensors;
  tensors.Header(3, 0xFFFFFFFFFFFFFFFFull, 0);
  ExpectInvalid(tensors.data(), {"tensors"});
  Bytes both;
  both.Header(3, 1, 3).Str("k").U32(0).U8(1);
  ExpectInvalid(both.data(), {"3 metadata entries"});
}

TEST(GgufReader, RejectsStringLengthPastEnd) {
  Bytes key;
  key.Header(3, 0, 1).U64(1ull << 63).Raw("abc", 3).Raw(std::string(20, 'x').data(), 20);
  ExpectInvalid(key.data(), {"key of metadata entry 0", "extends past end of file"});
  Bytes name;
  name.Header(3, 1, 0).U64(1000).Raw(std::string(40, 'x').data(), 40);
  ExpectInvalid(name.data(), {"string length 1000 of name of tensor 0 at byte 24"});
}

TEST(GgufReader, RejectsArrayLargerThanTheFile) {
  Bytes b;
  b.Header(3, 0, 1).Str("arr").U32(9).U32(0).U64(1ull << 62);
  for (int i = 0; i < 1000; ++i) b.U8(0);
  ExpectInvalid(b.data(), {"array of 4611686018427387904 uint8 elements", "'arr'"});
  Bytes nested;  // nested arrays are 12 bytes each at least
  nested.Header(3, 0, 1).Str("arr").U32(9).U32(9).U64(100);
  for (int i = 0; i < 1000; ++i) nested.U8(0);
  ExpectInvalid(nested.data(), {"array of 100 array elements"});
}

TEST(GgufReader, LimitsArrayNesting) {
  auto build = [](int levels) {
    Bytes b;
    b.Header(3, 0, 1).Str("deep").U32(9);
    for (int i = 0; i < levels - 1; ++i) b.U32(9).U64(1);  // array of one array ...
    b.U32(4).U64(1).U32(77);                               // ... of one uint32
    return b;
  };
  auto ok = Parse(build(8).data());
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ((*ok)->Find("deep")->DebugString(), "[[[[[[[[77]]]]]]]]");
  ExpectInvalid(build(9).data(), {"nested more than 8 levels", "'deep'"});
  ExpectInvalid(build(100000).data(), {"nested more than 8 levels"});
}

TEST(GgufReader, RejectsUnknownValueTypes) {
  Bytes kv;
  kv.Header(3, 0, 1).Str("k").U32(13).U32(0);
  ExpectInvalid(kv.data(), {"unknown value type 13", "'k'"});
  Bytes element;
  element.Header(3, 0, 1).Str("k").U32(9).U32(0xFFFFFFFF).U64(0);
  ExpectInvalid(element.data(), {"unknown array element type 4294967295"});
}

TEST(GgufReader, RejectsDuplicateKeysAndTensorNames) {
  Bytes keys;
  keys.Header(3, 0, 2).Str("dup").U32(0).U8(1).Str("dup").U32(0).U8(2);
  ExpectInvalid(keys.data(), {"duplicate metadata key 'dup'"});

  GgufWriter writer;
  writer.AddTensor("t", TensorType::kF32, {8}, F32Bytes(Iota(8)));
  writer.AddTensor("t", TensorType::kF32, {8}, F32Bytes(Iota(8)));
  ExpectInvalid(writer.Serialize(), {"duplicate tensor name 't'"});
}

TEST(GgufReader, RejectsUnknownTensorType) {
  for (uint32_t raw : {4u, 5u, 31u, 1000u}) {
    SCOPED_TRACE(raw);
    GgufWriter writer;
    writer.AddTensor("weird", static_cast<TensorType>(raw), {32}, std::vector<uint8_t>(128));
    ExpectInvalid(writer.Serialize(),
                  {"tensor 'weird' has unknown type id " + std::to_string(raw)});
  }
}

TEST(GgufReader, RejectsBadDimensionCounts) {
  GgufWriter none;
  none.AddTensor("t", TensorType::kF32, {}, std::vector<uint8_t>(4));
  ExpectInvalid(none.Serialize(), {"tensor 't' has n_dims = 0"});
  GgufWriter five;
  five.AddTensor("t", TensorType::kF32, {1, 1, 1, 1, 1}, std::vector<uint8_t>(4));
  ExpectInvalid(five.Serialize(), {"tensor 't' has n_dims = 5"});
}

TEST(GgufReader, RejectsZeroAndOverflowingDims) {
  GgufWriter zero;
  zero.AddTensor("t", TensorType::kF32, {4, 0}, {});
  ExpectInvalid(zero.Serialize(), {"tensor 't' dimension 1 is 0"});
  GgufWriter product;
  product.AddTensor("t", TensorType::kF32, {1LL << 32, 1LL << 32}, {});
  ExpectInvalid(product.Serialize(), {"tensor 't' dimension 1", "overflow"});
  GgufWriter negative;  // 2^64 - 1 as u64 on disk
  negative.AddTensor("t", TensorType::kF32, {-1}, {});
  ExpectInvalid(negative.Serialize(), {"tensor 't' dimension 0", "overflow"});
  GgufWriter bytes;  // elements fit in int64, bytes (x4) do not fit in uint64
  bytes.AddTensor("t", TensorType::kF32, {1LL << 31, 1LL << 31}, {});
  ExpectInvalid(bytes.Serialize(), {"tensor 't' byte size overflows"});
}

TEST(GgufReader, RejectsRowsThatAreNotWholeBlocks) {
  GgufWriter writer;
  writer.AddTensor("q", TensorType::kQ4_K, {128, 2}, std::vector<uint8_t>(144));
  ExpectInvalid(writer.Serialize(),
                {"tensor 'q' of type Q4_K has row length 128", "block size 256"});
}

TEST(GgufReader, RejectsMisalignedTensorOffset) {
  GgufWriter writer;
  writer.AddTensor("first", TensorType::kF32, {8}, F32Bytes(Iota(8)));
  writer.AddTensor("second", TensorType::kF32, {8}, F32Bytes(Iota(8)));
  std::vector<uint8_t> bytes = writer.Serialize();
  PatchU64(&bytes, TensorTypePos(bytes, "second", 1) + 4, 33);
  ExpectInvalid(bytes, {"tensor 'second' offset 33 is not a multiple of the alignment 32"});
}

TEST(GgufReader, RejectsTensorPastEndOfFile) {
  GgufWriter writer;
  writer.AddTensor("blk.0.attn_q.weight", TensorType::kF32, {16}, F32Bytes(Iota(8)));
  std::vector<uint8_t> bytes = writer.Serialize();
  ASSERT_EQ(bytes.size(), 128u);
  ExpectInvalid(bytes, {"tensor 'blk.0.attn_q.weight' data [offset 96, 64 bytes) extends past "
                        "end of file (size 128)"});
  // An offset near 2^64 must not wrap around.
  GgufWriter huge;
  huge.AddTensor("t", TensorType::kF32, {8}, F32Bytes(Iota(8)));
  std::vector<uint8_t> wrapped = huge.Serialize();
  PatchU64(&wrapped, TensorTypePos(wrapped, "t", 1) + 4, 0xFFFFFFFFFFFFFFE0ull);
  ExpectInvalid(wrapped, {"extends past end of file"});
}

TEST(GgufReader, RejectsOverlappingTensors) {
  GgufWriter writer;
  writer.AddTensor("first", TensorType::kF32, {16}, F32Bytes(Iota(16)));
  writer.AddTensor("second", TensorType::kF32, {8}, F32Bytes(Iota(8)));
  std::vector<uint8_t> bytes = writer.Serialize();
  PatchU64(&bytes, TensorTypePos(bytes, "second", 1) + 4, 32);
  ExpectInvalid(bytes, {"tensors 'first' [offset 0, 64 bytes) and 'second' [offset 32, 32 bytes) "
                        "overlap"});
  // Same data for two names (a "duplicate" under another name) is an overlap as well.
  PatchU64(&bytes, TensorTypePos(bytes, "second", 1) + 4, 0);
  ExpectInvalid(bytes, {"overlap"});
}

TEST(GgufReader, RejectsBadAlignmentValues) {
  for (uint32_t alignment : {0u, 3u, 48u, 0x80000001u}) {
    SCOPED_TRACE(alignment);
    GgufWriter writer;
    writer.SetValue("general.alignment", GgufValue::U32(alignment));
    ExpectInvalid(writer.Serialize(),
                  {"general.alignment = " + std::to_string(alignment), "power of two"});
  }
  GgufWriter wrong_type;
  wrong_type.SetValue("general.alignment", GgufValue::U64(64));
  ExpectInvalid(wrong_type.Serialize(), {"general.alignment must be a uint32, got uint64"});
}

TEST(GgufReader, HonoursAlignmentKeyForTheDataSection) {
  // Alignment 2^31: legal, and the data section lies far beyond this small file.
  GgufWriter writer(64);
  writer.SetValue("general.alignment", GgufValue::U32(0x80000000u));
  writer.AddTensor("t", TensorType::kF32, {1}, F32Bytes({1.0f}));
  ExpectInvalid(writer.Serialize(), {"past end of file"});
}

TEST(GgufReader, OpenReportsMissingEmptyAndForeignFiles) {
  auto missing = GgufFile::Open("/nonexistent/model.gguf");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("/nonexistent/model.gguf"));

  const std::string empty_path = TempPath("empty.gguf");
  { std::ofstream(empty_path, std::ios::binary); }
  auto empty = GgufFile::Open(empty_path);
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(empty.status().message()), HasSubstr("not a GGUF file"));
  std::remove(empty_path.c_str());

  const std::string text_path = TempPath("text.gguf");
  { std::ofstream(text_path, std::ios::binary) << "hello, this is not a model"; }
  auto text = GgufFile::Open(text_path);
  EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(text.status().message()), HasSubstr("not a GGUF file (magic"));
  EXPECT_THAT(std::string(text.status().message()), HasSubstr(text_path));
  std::remove(text_path.c_str());

  auto directory = GgufFile::Open(::testing::TempDir());
  EXPECT_EQ(directory.status().code(), absl::StatusCode::kInvalidArgument);
}

// ---- real files ---------------------------------------------------------------------------------

TEST(GgufReader, OpensTheGemma3Model) {
  const char* home = std::getenv("HOME");
  const std::string path =
      std::string(home != nullptr ? home : "") + "/.cache/exo-node/models/gemma-3-270m-q4_k_m.gguf";
  if (access(path.c_str(), R_OK) != 0) {
    GTEST_SKIP() << "model not installed at " << path << " (run the set-up script)";
  }
  auto file = GgufFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const GgufFile& f = **file;
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(*f.GetString("general.architecture"), "gemma3");
  EXPECT_EQ(f.tensors().size(), 236u);
  EXPECT_EQ(*f.GetInt("gemma3.block_count"), 18);
  const GgufTensorInfo* embd = f.FindTensor("token_embd.weight");
  ASSERT_NE(embd, nullptr);
  EXPECT_EQ(embd->type, TensorType::kQ8_0);
  EXPECT_EQ(embd->dims, (std::vector<int64_t>{640, 262144}));
  EXPECT_EQ(embd->nbytes, 640u / 32 * 34 * 262144);
  auto tokens = f.GetStringArray("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_EQ(tokens->size(), 262144u);
  // Every tensor lies inside the file.
  for (const GgufTensorInfo& t : f.tensors()) {
    EXPECT_LE(f.data_offset() + t.offset + t.nbytes, f.file_size()) << t.name;
  }
}

TEST(GgufReader, OpensTheSharedVocabFiles) {
  struct Case {
    const char* file;
    const char* model;
  };
  for (const Case& c :
       {Case{"ggml-vocab-llama-spm.gguf", "llama"}, Case{"ggml-vocab-gpt-2.gguf", "gpt2"}}) {
    SCOPED_TRACE(c.file);
    const std::string path = std::string(EXO_TESTDATA_DIR) + "/tokenizer/" + c.file;
    if (access(path.c_str(), R_OK) != 0) GTEST_SKIP() << "test data missing: " << path;
    auto file = GgufFile::Open(path);
    ASSERT_TRUE(file.ok()) << file.status();
    EXPECT_EQ((*file)->version(), 3u);
    EXPECT_EQ(*(*file)->GetString("tokenizer.ggml.model"), c.model);
    auto tokens = (*file)->GetStringArray("tokenizer.ggml.tokens");
    ASSERT_TRUE(tokens.ok()) << tokens.status();
    EXPECT_GT(tokens->size(), 30000u);
    EXPECT_TRUE((*file)->tensors().empty());
  }
}

TEST(GgufReader, OpensTheFuzzSeedCorpus) {
  // Seeds written by tests/fuzz/make_gguf_corpus.py, independently of GgufWriter.
  const std::string dir = std::string(EXO_SOURCE_DIR) + "/tests/fuzz/corpus/gguf/";
  struct Case {
    const char* file;
    uint32_t version;
    uint64_t alignment;
    size_t tensors;
  };
  for (const Case& c :
       {Case{"every_value_type.gguf", 3, 32, 2}, Case{"nested_arrays.gguf", 3, 32, 0},
        Case{"version2.gguf", 2, 32, 1}, Case{"alignment8.gguf", 3, 8, 3},
        Case{"quantized.gguf", 3, 32, 4}, Case{"long_arrays.gguf", 3, 32, 0}}) {
    SCOPED_TRACE(c.file);
    auto file = GgufFile::Open(dir + c.file);
    ASSERT_TRUE(file.ok()) << file.status();
    EXPECT_EQ((*file)->version(), c.version);
    EXPECT_EQ((*file)->alignment(), c.alignment);
    EXPECT_EQ((*file)->tensors().size(), c.tensors);
  }
  auto every = GgufFile::Open(dir + "every_value_type.gguf");
  ASSERT_TRUE(every.ok()) << every.status();
  EXPECT_EQ(*(*every)->GetInt("i16"), -300);
  EXPECT_EQ(*(*every)->GetFloat("f64"), 1e100);
  EXPECT_EQ(*(*every)->GetStringArray("tokens"),
            (std::vector<std::string>{"<s>", "</s>", "a", "b"}));
  auto long_arrays = GgufFile::Open(dir + "long_arrays.gguf");
  ASSERT_TRUE(long_arrays.ok()) << long_arrays.status();
  auto long_tokens = (*long_arrays)->GetStringArray("tokens");
  ASSERT_TRUE(long_tokens.ok()) << long_tokens.status();
  ASSERT_EQ(long_tokens->size(), 1100u);
  EXPECT_EQ((*long_tokens)[1099], "h");  // chr(ord("a") + 1099 % 26) * (1099 % 3)
  EXPECT_EQ((*(*long_arrays)->GetIntArray("types"))[1029], 1029 % 7);
  EXPECT_EQ((*long_arrays)->Find("nested")->DebugString(2), "[[0, 1, ... (1280 uint8 elements)]]");
  auto nested = GgufFile::Open(dir + "nested_arrays.gguf");
  ASSERT_TRUE(nested.ok()) << nested.status();
  EXPECT_EQ((*nested)->Find("nested")->DebugString(), "[[1, 2, 3], [\"x\"], [[9]], []]");
  auto quantized = GgufFile::Open(dir + "quantized.gguf");
  ASSERT_TRUE(quantized.ok()) << quantized.status();
  const GgufTensorInfo* embd = (*quantized)->FindTensor("token_embd.weight");
  ASSERT_NE(embd, nullptr);
  EXPECT_EQ(embd->type, TensorType::kQ8_0);
  EXPECT_EQ(embd->nbytes, 68u);
  EXPECT_EQ(embd->data[67], 67);
}

}  // namespace
}  // namespace exo::runtime
