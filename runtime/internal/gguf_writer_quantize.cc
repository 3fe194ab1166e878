// GgufWriter::AddTensorF32, kept apart from gguf.cc so that readers of GGUF files do not pull the
// reference quantisers into their link.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "kernels/quants.h"
#include "kernels/types.h"
#include "runtime/gguf.h"

namespace exo::runtime {

void GgufWriter::AddTensorF32(std::string name, kernels::TensorType type, std::vector<int64_t> dims,
                              const std::vector<float>& values) {
  int64_t count = 1;
  for (int64_t d : dims) count *= d;
  const kernels::TypeInfo& info = kernels::GetTypeInfo(type);
  const int64_t row_length = dims.empty() ? 1 : dims[0];
  if (dims.empty() || count != static_cast<int64_t>(values.size()) ||
      row_length % info.block_size != 0) {
    // A bug in the calling test or tool, never untrusted input.
    std::fprintf(stderr,
                 "exo: GgufWriter::AddTensorF32('%s'): %zu values do not fill dims of %lld "
                 "elements with rows a multiple of %s's block size %lld\n",
                 name.c_str(), values.size(), static_cast<long long>(count), info.name,
                 static_cast<long long>(info.block_size));
    std::abort();
  }
  const int64_t rows = count / row_length;
  const int64_t row_bytes = kernels::RowBytes(type, row_length);
  std::vector<uint8_t> bytes(static_cast<size_t>(rows * row_bytes));
  if (type == kernels::TensorType::kF32) {
    std::memcpy(bytes.data(), values.data(), bytes.size());
  } else {
    for (int64_t r = 0; r < rows; ++r) {
      kernels::QuantizeRow(type, values.data() + r * row_length, bytes.data() + r * row_bytes,
                           row_length);
    }
  }
  AddTensor(std::move(name), type, std::move(dims), std::move(bytes));
}

}  // namespace exo::runtime
