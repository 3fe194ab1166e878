// Tokenizers read from GGUF metadata: SentencePiece-style ("llama" vocabularies, llama.cpp's SPM
// algorithm) and byte-level BPE ("gpt2" vocabularies, pre-tokenised with the regex named by
// tokenizer.ggml.pre). Both reproduce llama.cpp's token ids exactly.
//
// A tokenizer is immutable after construction and safe to use from several threads at once.
#ifndef EXO_RUNTIME_TOKENIZER_H_
#define EXO_RUNTIME_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "runtime/gguf.h"

namespace exo::runtime {

namespace tokenizer_internal {
class RegexSplitter;
class SpecialTokenMatcher;
}  // namespace tokenizer_internal

// Token types, numbered as in tokenizer.ggml.token_type.
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

enum class TokenizerKind {
  kSentencePiece,  // tokenizer.ggml.model == "llama"
  kBytePairBpe,    // tokenizer.ggml.model == "gpt2" (byte-level BPE)
};

// Everything a tokenizer is built from, as plain data. FromGguf fills it from metadata; tests build
// small vocabularies directly. Ids of -1 mean "none".
struct TokenizerVocab {
  TokenizerKind kind = TokenizerKind::kSentencePiece;
  std::string pre = "default";  // tokenizer.ggml.pre (only byte-level BPE uses it)
  std::vector<std::string> tokens;
  std::vector<float> scores;        // SentencePiece merge priorities; may be empty for BPE
  std::vector<TokenType> types;     // empty means every token is kNormal
  std::vector<std::string> merges;  // BPE only, "left right" in rank order
  int32_t bos_id = -1;
  int32_t eos_id = -1;
  int32_t unknown_id = -1;
  int32_t padding_id = -1;
  int32_t eot_id = -1;
  int32_t eom_id = -1;
  bool add_bos = false;
  bool add_eos = false;
  bool add_space_prefix = false;  // SentencePiece: prepend " " to text that starts a fragment
};

class Tokenizer {
 public:
  // Reads tokenizer.ggml.* from `file`. InvalidArgument for an unknown tokenizer.ggml.model or
  // (for BPE) tokenizer.ggml.pre, missing or mistyped arrays, arrays of different lengths, and
  // special-token ids outside the vocabulary.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromGguf(const GgufFile& file);
  // Builds a tokenizer from plain data, with the same validation as FromGguf.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromVocab(TokenizerVocab vocab);

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Tokenizes `text` (raw bytes; invalid UTF-8 is tolerated and kept byte for byte where the
  // vocabulary allows). `add_bos` prepends the BOS token when the vocabulary has one (callers
  // usually pass add_bos()). With `parse_special`, texts of control tokens (e.g.
  // "<start_of_turn>") in `text` become those single tokens; user-defined tokens are always
  // recognised, as in llama.cpp. EOS is never appended here.
  std::vector<int32_t> Encode(std::string_view text, bool add_bos, bool parse_special) const;

  // The bytes token `id` stands for: byte tokens give that byte, SentencePiece "▁" gives a space,
  // byte-level BPE characters give their bytes. Control, unknown and unused tokens give "" unless
  // `render_special`, which gives their text. Out-of-range ids give "".
  std::string TokenToPiece(int32_t id) const { return TokenToPiece(id, false); }
  std::string TokenToPiece(int32_t id, bool render_special) const;

  // Concatenates the pieces of `ids` (special tokens not rendered). For SentencePiece vocabularies
  // with add_space_prefix, the space that Encode prepended is removed from the first non-empty
  // piece, so Decode(Encode(x)) == x for text without special tokens. Unlike llama.cpp, BPE output
  // gets no clean_up_tokenization_spaces, so it stays lossless.
  std::string Decode(absl::Span<const int32_t> ids) const;

  int32_t vocab_size() const { return static_cast<int32_t>(texts_.size()); }
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  int32_t unknown_id() const { return unknown_id_; }
  int32_t padding_id() const { return padding_id_; }
  bool add_bos() const { return add_bos_ && bos_id_ >= 0; }
  bool add_eos() const { return add_eos_ && eos_id_ >= 0; }
  bool add_space_prefix() const { return add_space_prefix_; }
  TokenizerKind kind() const { return kind_; }

  // True for eos, eot, eom and for the end-of-turn tokens models use in chat (<end_of_turn>,
  // <|im_end|>, <|eot_id|>, <|end|>, <|endoftext|>, ...) when the vocabulary has them.
  bool IsEndOfGeneration(int32_t id) const;

  // The id whose text is exactly `text` (the last one, if the vocabulary repeats a text).
  std::optional<int32_t> FindToken(std::string_view text) const;
  // The token's text as stored in the vocabulary ("" for out-of-range ids). Valid as long as the
  // tokenizer.
  std::string_view TokenText(int32_t id) const;
  TokenType GetTokenType(int32_t id) const;

 private:
  // All token texts in one buffer: token i is bytes[offsets[i], offsets[i + 1]). A vocabulary of
  // 262k tokens as separate std::strings costs several times its ~2 MiB of text.
  struct TokenTexts {
    std::string bytes;
    std::vector<uint32_t> offsets;  // size() + 1 entries, offsets[0] == 0
    size_t size() const { return offsets.empty() ? 0 : offsets.size() - 1; }
  };
  // Hash and equality over token ids that compare the ids' texts, and accept a text as the other
  // operand: the id index then finds a text without storing it a second time.
  struct TokenTextHash {
    using is_transparent = void;
    const Tokenizer* tokenizer;
    size_t operator()(int32_t id) const;
    size_t operator()(std::string_view text) const;
  };
  struct TokenTextEq {
    using is_transparent = void;
    const Tokenizer* tokenizer;
    bool operator()(int32_t a, int32_t b) const;
    bool operator()(std::string_view text, int32_t id) const;
    bool operator()(int32_t id, std::string_view text) const;
  };

  Tokenizer();
  static absl::StatusOr<TokenTexts> ReadTokenTexts(const GgufFile& file, std::string_view key);
  // `vocab.tokens` is ignored: the texts come as `texts`.
  absl::Status Init(TokenizerVocab vocab, TokenTexts texts);
  std::string_view Text(int32_t id) const {
    return std::string_view(texts_.bytes)
        .substr(texts_.offsets[id], texts_.offsets[id + 1] - texts_.offsets[id]);
  }

  // One piece of the input after special tokens are split out: either raw text or a token.
  struct Fragment {
    int32_t token = -1;     // >= 0: a special token
    std::string_view text;  // raw text when token < 0
  };
  std::vector<Fragment> SplitSpecialTokens(std::string_view text, bool parse_special) const;
  void EncodeSentencePiece(std::string_view text, std::vector<int32_t>& output) const;
  void EncodeBytePairs(std::string_view text, std::vector<int32_t>& output) const;
  void EmitSentencePieceBytes(std::string_view bytes, std::vector<int32_t>& output) const;
  int32_t FindBpeRank(std::string_view left, std::string_view right, std::string& scratch) const;

  TokenizerKind kind_ = TokenizerKind::kSentencePiece;
  TokenTexts texts_;
  std::vector<float> scores_;
  std::vector<TokenType> types_;
  std::vector<int16_t> byte_value_;  // per token: the byte a kByte token stands for, else -1
  // Ids of the non-empty texts; for a repeated text only the last id.
  absl::flat_hash_set<int32_t, TokenTextHash, TokenTextEq> token_index_;
  absl::flat_hash_map<std::string, int32_t> bpe_ranks_;  // left + '\xff' + right -> rank
  int32_t byte_token_[256];                              // SentencePiece byte fallback, -1 if none
  // Control, user-defined and unknown tokens, longest text first, and a matcher over their texts
  // (pattern i of the matcher is token special_tokens_[i]).
  std::vector<int32_t> special_tokens_;
  std::unique_ptr<tokenizer_internal::SpecialTokenMatcher> special_matcher_;
  std::vector<int32_t> end_of_generation_;
  std::unique_ptr<tokenizer_internal::RegexSplitter> splitter_;  // BPE pre-tokenizer
  bool ignore_merges_ = false;  // BPE: a pre-token that is a whole token skips merging (llama3)
  int32_t bos_id_ = -1;
  int32_t eos_id_ = -1;
  int32_t unknown_id_ = -1;
  int32_t padding_id_ = -1;
  bool add_bos_ = false;
  bool add_eos_ = false;
  bool add_space_prefix_ = false;
};

// Turns a stream of token ids into text without ever emitting part of a UTF-8 character: bytes of
// a character split across several byte tokens are held back until the character is complete.
// Bytes that can never form a valid character come out as U+FFFD, so the output is always valid
// UTF-8. No leading space is stripped (the tokens continue a prompt). The tokenizer must outlive
// the decoder.
class StreamingDecoder {
 public:
  explicit StreamingDecoder(const Tokenizer& tokenizer) : tokenizer_(&tokenizer) {}
  // Adds one token; returns the text that is now complete (possibly "").
  std::string Push(int32_t id);
  // Returns whatever is still held back (an incomplete character comes out as U+FFFD) and resets.
  std::string Flush();

 private:
  const Tokenizer* tokenizer_;
  std::string pending_;
};

}  // namespace exo::runtime

#endif  // EXO_RUNTIME_TOKENIZER_H_
