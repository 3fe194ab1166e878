#include "runtime/internal/tokenizer_utf8.h"

#include <array>

namespace exo::runtime::tokenizer_internal {
namespace {

// byte -> character and character -> byte tables for the byte-level mapping. The characters all
// lie below U+0144, so the reverse table is a small array.
constexpr uint32_t kByteLevelLimit = 0x144;

struct ByteLevelTables {
  std::array<uint32_t, 256> byte_to_codepoint{};
  std::array<int16_t, kByteLevelLimit> codepoint_to_byte{};

  ByteLevelTables() {
    codepoint_to_byte.fill(-1);
    uint32_t next_extra = 256;
    for (uint32_t byte = 0; byte < 256; ++byte) {
      const bool printable = (byte >= 0x21 && byte <= 0x7E) || (byte >= 0xA1 && byte <= 0xAC) ||
                             (byte >= 0xAE && byte <= 0xFF);
      const uint32_t codepoint = printable ? byte : next_extra++;
      byte_to_codepoint[byte] = codepoint;
      codepoint_to_byte[codepoint] = static_cast<int16_t>(byte);
    }
  }
};

const ByteLevelTables& Tables() {
  static const ByteLevelTables* tables = new ByteLevelTables();
  return *tables;
}

bool IsContinuation(uint8_t byte) { return (byte & 0xC0) == 0x80; }

}  // namespace

size_t Utf8LengthFromLeadByte(uint8_t lead) {
  static constexpr uint8_t kLengths[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLengths[lead >> 4];
}

Utf8Prefix CheckUtf8At(std::string_view text, size_t pos, size_t* length) {
  const auto byte_at = [&](size_t i) { return static_cast<uint8_t>(text[i]); };
  const uint8_t lead = byte_at(pos);
  *length = 1;
  if (lead < 0x80) return Utf8Prefix::kComplete;
  size_t needed;
  uint8_t second_min = 0x80, second_max = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    needed = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    needed = 3;
    if (lead == 0xE0) second_min = 0xA0;  // no overlong forms
    if (lead == 0xED) second_max = 0x9F;  // no surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    needed = 4;
    if (lead == 0xF0) second_min = 0x90;  // no overlong forms
    if (lead == 0xF4) second_max = 0x8F;  // nothing above U+10FFFF
  } else {
    return Utf8Prefix::kInvalid;
  }
  for (size_t i = 1; i < needed; ++i) {
    if (pos + i >= text.size()) return Utf8Prefix::kIncomplete;
    const uint8_t byte = byte_at(pos + i);
    const bool ok = i == 1 ? (byte >= second_min && byte <= second_max) : IsContinuation(byte);
    if (!ok) return Utf8Prefix::kInvalid;
  }
  *length = needed;
  return Utf8Prefix::kComplete;
}

void AppendUtf8(uint32_t codepoint, std::string& out) {
  if (codepoint < 0x80) {
    out.push_back(static_cast<char>(codepoint));
  } else if (codepoint < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (codepoint >> 6)));
    out.push_back(static_cast<char>(0x80 | (codepoint & 0x3F)));
  } else if (codepoint < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (codepoint >> 12)));
    out.push_back(static_cast<char>(0x80 | ((codepoint >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (codepoint & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (codepoint >> 18)));
    out.push_back(static_cast<char>(0x80 | ((codepoint >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((codepoint >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (codepoint & 0x3F)));
  }
}

void AppendByteLevelCharacter(uint8_t byte, std::string& out) {
  AppendUtf8(Tables().byte_to_codepoint[byte], out);
}

std::string DecodeByteLevel(std::string_view text) {
  const ByteLevelTables& tables = Tables();
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    size_t length = 1;
    if (CheckUtf8At(text, pos, &length) == Utf8Prefix::kComplete) {
      uint32_t codepoint = static_cast<uint8_t>(text[pos]);
      if (length > 1) {
        codepoint &= 0x7Fu >> length;
        for (size_t i = 1; i < length; ++i) {
          codepoint = (codepoint << 6) | (static_cast<uint8_t>(text[pos + i]) & 0x3F);
        }
      }
      if (codepoint < kByteLevelLimit && tables.codepoint_to_byte[codepoint] >= 0) {
        out.push_back(static_cast<char>(tables.codepoint_to_byte[codepoint]));
        pos += length;
        continue;
      }
    } else {
      length = 1;
    }
    out.append(text.substr(pos, length));
    pos += length;
  }
  return out;
}

}  // namespace exo::runtime::tokenizer_internal
