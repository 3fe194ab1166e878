// libFuzzer target for the GGUF reader: parses the input as a whole file image and touches
// everything the parse produced, so that a sanitizer sees any bad pointer or length.
#include <cstddef>
#include <cstdint>
#include <string>
#include <variant>

#include "runtime/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = exo::runtime::GgufFile::FromBuffer(data, size);
  if (!file.ok()) {
    // Errors must carry a message; touch it so that a dangling message would be noticed.
    volatile size_t length = file.status().message().size();
    (void)length;
    return 0;
  }
  const exo::runtime::GgufFile& gguf = **file;
  size_t checksum = gguf.version() + gguf.alignment() + gguf.data_offset();
  for (const auto& [key, value] : gguf.metadata()) {
    checksum += key.size() + value.DebugString(4).size();
    if (gguf.Find(key) != &value) __builtin_trap();
    // Exercise the typed getters; each either succeeds or returns a status.
    checksum += gguf.GetString(key).ok() + gguf.GetInt(key).ok() + gguf.GetFloat(key).ok() +
                gguf.GetBool(key).ok() + gguf.GetStringArray(key).ok() +
                gguf.GetStringViewArray(key).ok() + gguf.GetFloatArray(key).ok() +
                gguf.GetIntArray(key).ok();
    // Random access into arrays (encoded ones decode from the image).
    if (const auto* array = std::get_if<exo::runtime::GgufValue::Array>(&value.data)) {
      if (array->size() > 0) {
        checksum += array->Element(0).DebugString(2).size();
        checksum += array->Element(array->size() - 1).DebugString(2).size();
      }
    }
  }
  for (const auto& tensor : gguf.tensors()) {
    if (gguf.FindTensor(tensor.name) != &tensor) __builtin_trap();
    if (tensor.nbytes == 0 || tensor.data == nullptr || tensor.num_elements() <= 0)
      __builtin_trap();
    if (tensor.data < data || tensor.data + tensor.nbytes > data + size) __builtin_trap();
    checksum += tensor.data[0] + tensor.data[tensor.nbytes - 1];
  }
  volatile size_t sink = checksum;
  (void)sink;
  return 0;
}
