// Fuzzes both tokenizers on arbitrary text (later: HTTP request bodies) with small vocabularies
// built in code: the first input byte picks the tokenizer and options, the rest is the text.
// Checks invariants, not just crashes: ids are in range and byte-level BPE round-trips exactly.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "runtime/tokenizer.h"

namespace {

using exo::runtime::Tokenizer;
using exo::runtime::TokenizerKind;
using exo::runtime::TokenizerVocab;
using exo::runtime::TokenType;

// GPT-2's byte-to-unicode mapping: printable bytes stand for themselves, others map past U+0100.
std::string ByteToken(int byte) {
  int code = byte;
  if (!((byte >= 33 && byte <= 126) || (byte >= 161 && byte <= 172) || byte >= 174)) {
    int shift = 0;
    for (int b = 0; b < byte; ++b) {
      if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174)) ++shift;
    }
    code = 256 + shift;
  }
  std::string out;
  if (code < 0x80) {
    out += static_cast<char>(code);
  } else {
    out += static_cast<char>(0xC0 | (code >> 6));
    out += static_cast<char>(0x80 | (code & 0x3F));
  }
  return out;
}

std::unique_ptr<Tokenizer> MakeBpe(const std::string& pre) {
  TokenizerVocab v;
  v.kind = TokenizerKind::kBytePairBpe;
  v.pre = pre;
  for (int b = 0; b < 256; ++b) v.tokens.push_back(ByteToken(b));
  const char* merges[] = {"t h", "th e", "i n", "Ġ t", "Ġt he", "e r", "a n"};
  for (const char* m : merges) {
    std::string merge = m;
    v.merges.push_back(merge);
    v.tokens.push_back(merge.substr(0, merge.find(' ')) + merge.substr(merge.find(' ') + 1));
  }
  v.tokens.push_back("<|bos|>");
  v.tokens.push_back("<|eot|>");
  v.types.assign(v.tokens.size(), TokenType::kNormal);
  v.types[v.tokens.size() - 2] = TokenType::kControl;
  v.types[v.tokens.size() - 1] = TokenType::kControl;
  v.bos_id = static_cast<int32_t>(v.tokens.size()) - 2;
  v.eot_id = static_cast<int32_t>(v.tokens.size()) - 1;
  auto tokenizer = Tokenizer::FromVocab(std::move(v));
  if (!tokenizer.ok()) std::abort();
  return std::move(*tokenizer);
}

std::unique_ptr<Tokenizer> MakeSentencePiece() {
  TokenizerVocab v;
  v.kind = TokenizerKind::kSentencePiece;
  v.tokens = {"<unk>", "<s>", "</s>", "<start_of_turn>"};
  v.types = {TokenType::kUnknown, TokenType::kControl, TokenType::kControl, TokenType::kControl};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    v.tokens.push_back(name);
    v.types.push_back(TokenType::kByte);
  }
  for (const char* piece : {"\xE2\x96\x81", "a", "b", "ab",
                            "\xE2\x96\x81"
                            "ab",
                            "the", "\n"}) {
    v.tokens.push_back(piece);
    v.types.push_back(TokenType::kNormal);
  }
  v.scores.assign(v.tokens.size(), 0.0f);
  for (size_t i = 0; i < v.scores.size(); ++i) v.scores[i] = -static_cast<float>(i);
  v.unknown_id = 0;
  v.bos_id = 1;
  v.eos_id = 2;
  v.add_space_prefix = true;
  auto tokenizer = Tokenizer::FromVocab(std::move(v));
  if (!tokenizer.ok()) std::abort();
  return std::move(*tokenizer);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::unique_ptr<Tokenizer> bpe_gpt2 = MakeBpe("gpt2");
  static const std::unique_ptr<Tokenizer> bpe_llama3 = MakeBpe("llama3");
  static const std::unique_ptr<Tokenizer> bpe_qwen2 = MakeBpe("qwen2");
  static const std::unique_ptr<Tokenizer> spm = MakeSentencePiece();
  if (size == 0) return 0;
  const Tokenizer* tokenizers[] = {bpe_gpt2.get(), bpe_llama3.get(), bpe_qwen2.get(), spm.get()};
  const Tokenizer& tokenizer = *tokenizers[data[0] % 4];
  const bool parse_special = (data[0] & 4) != 0;
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);

  const std::vector<int32_t> ids = tokenizer.Encode(text, /*add_bos=*/false, parse_special);
  for (int32_t id : ids) {
    if (id < 0 || id >= tokenizer.vocab_size()) std::abort();
  }
  const std::string decoded = tokenizer.Decode(ids);
  // Byte-level BPE is lossless on any byte string when specials are not parsed.
  if (&tokenizer != spm.get() && !parse_special && decoded != text) std::abort();
  exo::runtime::StreamingDecoder stream(tokenizer);
  std::string streamed;
  for (int32_t id : ids) streamed += stream.Push(id);
  streamed += stream.Flush();
  return 0;
}
