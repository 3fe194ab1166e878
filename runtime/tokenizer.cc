#include "runtime/tokenizer.h"

#include <algorithm>
#include <cstdio>
#include <optional>
#include <queue>
#include <utility>
#include <variant>

#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "runtime/internal/tokenizer_regex.h"
#include "runtime/internal/tokenizer_special.h"
#include "runtime/internal/tokenizer_utf8.h"

namespace exo::runtime {
namespace {

using tokenizer_internal::Utf8LengthFromLeadByte;

// The packaged Abseil has its own string_view type, distinct from std::string_view.
absl::string_view Absl(std::string_view text) {
  return absl::string_view(text.data(), text.size());
}

constexpr std::string_view kSpaceMarker = "\xE2\x96\x81";  // U+2581 LOWER ONE EIGHTH BLOCK "▁"

// Texts of tokens that end a turn in common chat formats (llama.cpp's list).
constexpr std::string_view kEndOfGenerationTexts[] = {
    "<|eot_id|>",    "<|im_end|>", "<|end|>", "<|return|>", "<|call|>",        "<end_of_turn>",
    "<|endoftext|>", "<|eom_id|>", "<EOT>",   "_<EOT>",     "<|end_of_text|>",
};

// One symbol of the word being merged: a byte range of the text, linked to its live neighbours.
struct Symbol {
  int32_t prev;
  int32_t next;
  size_t start;
  size_t length;  // 0 once merged into its left neighbour
};

// Cuts `text` into characters (by lead byte, as llama.cpp does) and links them.
std::vector<Symbol> CharacterSymbols(std::string_view text) {
  std::vector<Symbol> symbols;
  size_t offset = 0;
  while (offset < text.size()) {
    const size_t length =
        std::min(text.size() - offset, Utf8LengthFromLeadByte(static_cast<uint8_t>(text[offset])));
    const auto index = static_cast<int32_t>(symbols.size());
    symbols.push_back(
        Symbol{index - 1, offset + length == text.size() ? -1 : index + 1, offset, length});
    offset += length;
  }
  return symbols;
}

// Merges `right` into `left` and unlinks it.
void MergeSymbols(std::vector<Symbol>& symbols, int32_t left, int32_t right) {
  Symbol& left_symbol = symbols[left];
  Symbol& right_symbol = symbols[right];
  left_symbol.length += right_symbol.length;
  right_symbol.length = 0;
  left_symbol.next = right_symbol.next;
  if (right_symbol.next >= 0) symbols[right_symbol.next].prev = left;
}

// Repeatedly merges the best queued adjacent pair (the queue's order decides "best": score for
// SentencePiece, rank for BPE), re-queueing the new neighbours through `try_add`. Pairs that went
// stale because one side was merged meanwhile are skipped.
template <typename Queue, typename TryAdd>
void MergeBestPairs(std::vector<Symbol>& symbols, Queue& queue, const TryAdd& try_add) {
  for (size_t i = 1; i < symbols.size(); ++i) {
    try_add(static_cast<int32_t>(i - 1), static_cast<int32_t>(i));
  }
  while (!queue.empty()) {
    const auto bigram = queue.top();
    queue.pop();
    const Symbol& left = symbols[bigram.left];
    const Symbol& right = symbols[bigram.right];
    if (left.length == 0 || right.length == 0 || left.length + right.length != bigram.length) {
      continue;
    }
    MergeSymbols(symbols, bigram.left, bigram.right);
    try_add(symbols[bigram.left].prev, bigram.left);
    try_add(bigram.left, symbols[bigram.left].next);
  }
}

// SentencePiece candidate merge: best score first, then leftmost.
struct ScoredBigram {
  int32_t left;
  int32_t right;
  float score;
  size_t length;
};
struct ScoredBigramOrder {
  bool operator()(const ScoredBigram& a, const ScoredBigram& b) const {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  }
};

// BPE candidate merge: lowest rank first, then leftmost.
struct RankedBigram {
  int32_t left;
  int32_t right;
  int32_t rank;
  size_t length;
};
struct RankedBigramOrder {
  bool operator()(const RankedBigram& a, const RankedBigram& b) const {
    return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
  }
};

// "<0xAB>" -> 0xAB, or -1.
int ParseByteTokenText(std::string_view text) {
  if (text.size() != 6 || text.substr(0, 3) != "<0x" || text[5] != '>') return -1;
  int value = 0;
  for (char c : text.substr(3, 2)) {
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else {
      return -1;
    }
    value = value * 16 + digit;
  }
  return value;
}

std::string ReplaceAll(std::string_view text, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (true) {
    const size_t found = text.find(from, pos);
    if (found == std::string_view::npos) break;
    out.append(text.substr(pos, found - pos));
    out.append(to);
    pos = found + from.size();
  }
  out.append(text.substr(pos));
  return out;
}

// Reads an optional token id; -1 when absent.
absl::StatusOr<int32_t> ReadOptionalId(const GgufFile& file, std::string_view key,
                                       int32_t fallback) {
  ASSIGN_OR_RETURN(const int64_t id, file.GetIntOr(key, fallback));
  if (id < -1 || id > INT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat(Absl(key), " = ", id, " is not a token id"));
  }
  return static_cast<int32_t>(id);
}

bool IsSpecialType(TokenType type) {
  return type == TokenType::kControl || type == TokenType::kUnknown || type == TokenType::kUnused ||
         type == TokenType::kUndefined;
}

}  // namespace

// The index's hash and equality refer back to this tokenizer's texts (it never moves: tokenizers
// live behind unique_ptr and cannot be copied).
Tokenizer::Tokenizer() : token_index_(0, TokenTextHash{this}, TokenTextEq{this}) {}
Tokenizer::~Tokenizer() = default;

size_t Tokenizer::TokenTextHash::operator()(int32_t id) const {
  return (*this)(tokenizer->Text(id));
}
size_t Tokenizer::TokenTextHash::operator()(std::string_view text) const {
  return absl::Hash<absl::string_view>()(Absl(text));
}
bool Tokenizer::TokenTextEq::operator()(int32_t a, int32_t b) const {
  return a == b || tokenizer->Text(a) == tokenizer->Text(b);
}
bool Tokenizer::TokenTextEq::operator()(std::string_view text, int32_t id) const {
  return tokenizer->Text(id) == text;
}
bool Tokenizer::TokenTextEq::operator()(int32_t id, std::string_view text) const {
  return tokenizer->Text(id) == text;
}

namespace {

// Packs `count` texts, visited in order by for_each(fn) (fn takes a std::string_view; for_each
// returns false when the source is not all strings, giving nullopt), into one buffer with
// offsets: two passes, so that neither a std::string per token nor a growing buffer's slack is
// ever held. `what` names the source for the size error.
template <typename Texts, typename ForEach>
absl::StatusOr<std::optional<Texts>> PackTexts(size_t count, const ForEach& for_each,
                                               std::string_view what) {
  uint64_t total = 0;
  if (!for_each([&](std::string_view text) { total += text.size(); })) return std::nullopt;
  if (total > UINT32_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat(Absl(what), " holds ", total, " bytes of text (at most 2^32 - 1 supported)"));
  }
  Texts texts;
  texts.bytes.reserve(total);
  texts.offsets.reserve(count + 1);
  texts.offsets.push_back(0);
  for_each([&](std::string_view text) {
    texts.bytes.append(text);
    texts.offsets.push_back(static_cast<uint32_t>(texts.bytes.size()));
  });
  return texts;
}

}  // namespace

absl::StatusOr<Tokenizer::TokenTexts> Tokenizer::ReadTokenTexts(const GgufFile& file,
                                                                std::string_view key) {
  // Straight from the file's (usually still encoded) array into one buffer.
  const GgufValue* value = file.Find(key);
  const auto* array = value != nullptr && value->type == GgufValueType::kArray
                          ? std::get_if<GgufValue::Array>(&value->data)
                          : nullptr;
  std::optional<TokenTexts> texts;
  if (array != nullptr) {
    ASSIGN_OR_RETURN(
        texts, PackTexts<TokenTexts>(
                   array->size(),
                   [&](const auto& fn) {
                     return array->ForEachString([&](size_t, std::string_view text) { fn(text); });
                   },
                   key));
  }
  if (!texts) {
    // Not an array of strings: the getter says why, in its usual words.
    RETURN_IF_ERROR(file.GetStringArray(key).status());
    return absl::InvalidArgumentError(absl::StrCat(Absl(key), " is not an array of strings"));
  }
  return *std::move(texts);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromGguf(const GgufFile& file) {
  TokenizerVocab vocab;
  auto model = file.GetString("tokenizer.ggml.model");
  if (!model.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the file has no usable tokenizer.ggml.model: ", model.status().message()));
  }
  const bool is_sentence_piece = *model == "llama";
  if (!is_sentence_piece && *model != "gpt2") {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported tokenizer.ggml.model '", *model,
                     "' (supported: 'llama' for SentencePiece, 'gpt2' for byte-level BPE)"));
  }
  vocab.kind = is_sentence_piece ? TokenizerKind::kSentencePiece : TokenizerKind::kBytePairBpe;
  if (file.Find("tokenizer.ggml.pre") != nullptr) {
    ASSIGN_OR_RETURN(vocab.pre, file.GetString("tokenizer.ggml.pre"));
  }

  const auto read_array = [&](std::string_view key, auto getter) -> absl::Status {
    if (file.Find(key) == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("the ", *model, " tokenizer needs ", Absl(key), ", which the file lacks"));
    }
    return getter();
  };
  TokenTexts texts;
  RETURN_IF_ERROR(read_array("tokenizer.ggml.tokens", [&]() -> absl::Status {
    ASSIGN_OR_RETURN(texts, ReadTokenTexts(file, "tokenizer.ggml.tokens"));
    return absl::OkStatus();
  }));
  RETURN_IF_ERROR(read_array("tokenizer.ggml.token_type", [&]() -> absl::Status {
    ASSIGN_OR_RETURN(std::vector<int64_t> types, file.GetIntArray("tokenizer.ggml.token_type"));
    vocab.types.reserve(types.size());
    for (size_t i = 0; i < types.size(); ++i) {
      if (types[i] < 0 || types[i] > 6) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tokenizer.ggml.token_type[", i, "] = ", types[i], " is not a token type (0..6)"));
      }
      vocab.types.push_back(static_cast<TokenType>(types[i]));
    }
    return absl::OkStatus();
  }));
  if (is_sentence_piece) {
    RETURN_IF_ERROR(read_array("tokenizer.ggml.scores", [&]() -> absl::Status {
      ASSIGN_OR_RETURN(vocab.scores, file.GetFloatArray("tokenizer.ggml.scores"));
      return absl::OkStatus();
    }));
  } else {
    RETURN_IF_ERROR(read_array("tokenizer.ggml.merges", [&]() -> absl::Status {
      ASSIGN_OR_RETURN(vocab.merges, file.GetStringArray("tokenizer.ggml.merges"));
      return absl::OkStatus();
    }));
    if (file.Find("tokenizer.ggml.scores") != nullptr) {
      ASSIGN_OR_RETURN(vocab.scores, file.GetFloatArray("tokenizer.ggml.scores"));
    }
  }
  if (vocab.types.size() != texts.size() ||
      (!vocab.scores.empty() && vocab.scores.size() != texts.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer arrays differ in length: ", texts.size(), " tokens, ",
                     vocab.types.size(), " token types, ", vocab.scores.size(), " scores"));
  }

  // Defaults follow llama.cpp: SentencePiece vocabularies are assumed to be Llama's.
  const auto n_tokens = static_cast<int64_t>(texts.size());
  const auto default_id = [&](int32_t id) { return is_sentence_piece && id < n_tokens ? id : -1; };
  ASSIGN_OR_RETURN(vocab.bos_id,
                   ReadOptionalId(file, "tokenizer.ggml.bos_token_id", default_id(1)));
  ASSIGN_OR_RETURN(vocab.eos_id,
                   ReadOptionalId(file, "tokenizer.ggml.eos_token_id", default_id(2)));
  ASSIGN_OR_RETURN(vocab.unknown_id,
                   ReadOptionalId(file, "tokenizer.ggml.unknown_token_id", default_id(0)));
  ASSIGN_OR_RETURN(vocab.padding_id, ReadOptionalId(file, "tokenizer.ggml.padding_token_id", -1));
  ASSIGN_OR_RETURN(vocab.eot_id, ReadOptionalId(file, "tokenizer.ggml.eot_token_id", -1));
  ASSIGN_OR_RETURN(vocab.eom_id, ReadOptionalId(file, "tokenizer.ggml.eom_token_id", -1));
  ASSIGN_OR_RETURN(vocab.add_bos,
                   file.GetBoolOr("tokenizer.ggml.add_bos_token", is_sentence_piece));
  ASSIGN_OR_RETURN(vocab.add_eos, file.GetBoolOr("tokenizer.ggml.add_eos_token", false));
  ASSIGN_OR_RETURN(vocab.add_space_prefix,
                   file.GetBoolOr("tokenizer.ggml.add_space_prefix", is_sentence_piece));
  std::unique_ptr<Tokenizer> tokenizer(new Tokenizer());
  RETURN_IF_ERROR(tokenizer->Init(std::move(vocab), std::move(texts)));
  return tokenizer;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromVocab(TokenizerVocab vocab) {
  ASSIGN_OR_RETURN(std::optional<TokenTexts> texts,
                   PackTexts<TokenTexts>(
                       vocab.tokens.size(),
                       [&](const auto& fn) {
                         for (const std::string& token : vocab.tokens) fn(token);
                         return true;
                       },
                       "the tokenizer vocabulary"));
  vocab.tokens = std::vector<std::string>();
  std::unique_ptr<Tokenizer> tokenizer(new Tokenizer());
  RETURN_IF_ERROR(tokenizer->Init(std::move(vocab), *std::move(texts)));
  return tokenizer;
}

absl::Status Tokenizer::Init(TokenizerVocab vocab, TokenTexts texts) {
  const size_t n_tokens = texts.size();
  if (n_tokens == 0) return absl::InvalidArgumentError("the tokenizer vocabulary is empty");
  if (n_tokens > static_cast<size_t>(INT32_MAX)) {
    return absl::InvalidArgumentError("the tokenizer vocabulary has more than 2^31 tokens");
  }
  if (vocab.types.empty()) vocab.types.assign(n_tokens, TokenType::kNormal);
  if (vocab.scores.empty()) vocab.scores.assign(n_tokens, 0.0f);
  if (vocab.types.size() != n_tokens || vocab.scores.size() != n_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer arrays differ in length: ", n_tokens, " tokens, ",
                     vocab.types.size(), " token types, ", vocab.scores.size(), " scores"));
  }
  const std::pair<const char*, int32_t> ids[] = {
      {"bos_token_id", vocab.bos_id},         {"eos_token_id", vocab.eos_id},
      {"unknown_token_id", vocab.unknown_id}, {"padding_token_id", vocab.padding_id},
      {"eot_token_id", vocab.eot_id},         {"eom_token_id", vocab.eom_id},
  };
  for (const auto& [name, id] : ids) {
    if (id < -1 || id >= static_cast<int64_t>(n_tokens)) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.ggml.", name, " = ", id,
                                                     " is outside the vocabulary of ", n_tokens,
                                                     " tokens"));
    }
  }

  kind_ = vocab.kind;
  texts_ = std::move(texts);
  scores_ = std::move(vocab.scores);
  types_ = std::move(vocab.types);
  bos_id_ = vocab.bos_id;
  eos_id_ = vocab.eos_id;
  unknown_id_ = vocab.unknown_id;
  padding_id_ = vocab.padding_id;
  add_bos_ = vocab.add_bos;
  add_eos_ = vocab.add_eos;
  add_space_prefix_ = vocab.add_space_prefix;

  byte_value_.assign(n_tokens, -1);
  for (size_t id = 0; id < n_tokens; ++id) {
    const std::string_view text = Text(static_cast<int32_t>(id));
    if (types_[id] == TokenType::kByte) {
      const int value = ParseByteTokenText(text);
      if (value < 0) {
        return absl::InvalidArgumentError(absl::StrCat("token ", id,
                                                       " is a byte token but its text '",
                                                       Absl(text), "' is not of the form <0xAB>"));
      }
      byte_value_[id] = static_cast<int16_t>(value);
    }
    if (text.empty()) continue;  // can never be matched
    if (types_[id] == TokenType::kControl || types_[id] == TokenType::kUserDefined ||
        types_[id] == TokenType::kUnknown) {
      special_tokens_.push_back(static_cast<int32_t>(id));
    }
  }
  // Last id first, so that for a repeated text the last one is indexed (insert keeps the first).
  token_index_.reserve(n_tokens);
  for (size_t id = n_tokens; id-- > 0;) {
    if (!Text(static_cast<int32_t>(id)).empty()) token_index_.insert(static_cast<int32_t>(id));
  }
  // Longest first, so "<|im_end|>" wins over a shorter token that it contains.
  std::stable_sort(special_tokens_.begin(), special_tokens_.end(),
                   [&](int32_t a, int32_t b) { return Text(a).size() > Text(b).size(); });
  std::vector<tokenizer_internal::SpecialTokenMatcher::Pattern> patterns;
  patterns.reserve(special_tokens_.size());
  for (int32_t id : special_tokens_) {
    patterns.push_back({Text(id), types_[id] == TokenType::kUserDefined});  // views into texts_
  }
  special_matcher_ = std::make_unique<tokenizer_internal::SpecialTokenMatcher>(std::move(patterns));

  for (int value = 0; value < 256; ++value) {
    byte_token_[value] = -1;
    if (kind_ != TokenizerKind::kSentencePiece) continue;
    if (auto id = FindToken(absl::StrFormat("<0x%02X>", value))) {
      byte_token_[value] = *id;
    } else if (auto single = FindToken(std::string(1, static_cast<char>(value)))) {
      byte_token_[value] = *single;
    }
  }

  for (int32_t id : {eos_id_, vocab.eot_id, vocab.eom_id}) {
    if (id >= 0) end_of_generation_.push_back(id);
  }
  for (std::string_view text : kEndOfGenerationTexts) {
    if (auto id = FindToken(text)) end_of_generation_.push_back(*id);
  }
  std::sort(end_of_generation_.begin(), end_of_generation_.end());
  end_of_generation_.erase(std::unique(end_of_generation_.begin(), end_of_generation_.end()),
                           end_of_generation_.end());

  if (kind_ == TokenizerKind::kBytePairBpe) {
    ASSIGN_OR_RETURN(tokenizer_internal::PreTokenizerSpec spec,
                     tokenizer_internal::PreTokenizerSpecFor(vocab.pre));
    ignore_merges_ = spec.ignore_merges;
    ASSIGN_OR_RETURN(splitter_, tokenizer_internal::RegexSplitter::Create(spec.patterns));
    bpe_ranks_.reserve(vocab.merges.size());
    for (size_t rank = 0; rank < vocab.merges.size(); ++rank) {
      const std::string& merge = vocab.merges[rank];
      const size_t space = merge.size() > 1 ? merge.find(' ', 1) : std::string::npos;
      if (space == std::string::npos || rank > static_cast<size_t>(INT32_MAX)) {
        return absl::InvalidArgumentError(absl::StrCat("tokenizer.ggml.merges[", rank, "] = '",
                                                       merge, "' is not of the form 'left right'"));
      }
      std::string key = merge;
      key[space] = '\xff';  // never part of UTF-8 text, so the key is unambiguous
      bpe_ranks_.emplace(std::move(key), static_cast<int32_t>(rank));  // first occurrence wins
    }
  }
  return absl::OkStatus();
}

std::vector<Tokenizer::Fragment> Tokenizer::SplitSpecialTokens(std::string_view text,
                                                               bool parse_special) const {
  std::vector<Fragment> fragments;
  size_t raw_start = 0;
  for (const auto& match : special_matcher_->Find(text, parse_special)) {
    if (match.offset > raw_start) {
      fragments.push_back(Fragment{-1, text.substr(raw_start, match.offset - raw_start)});
    }
    fragments.push_back(Fragment{special_tokens_[match.pattern], {}});
    raw_start = match.offset + match.length;
  }
  if (raw_start < text.size()) fragments.push_back(Fragment{-1, text.substr(raw_start)});
  return fragments;
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool add_bos,
                                       bool parse_special) const {
  std::vector<int32_t> output;
  if (add_bos && bos_id_ >= 0) output.push_back(bos_id_);
  const std::vector<Fragment> fragments = SplitSpecialTokens(text, parse_special);
  bool previous_was_special = true;  // text at the start gets the space prefix
  for (const Fragment& fragment : fragments) {
    if (fragment.token >= 0) {
      output.push_back(fragment.token);
      previous_was_special = true;
      continue;
    }
    if (kind_ == TokenizerKind::kSentencePiece) {
      std::string escaped =
          add_space_prefix_ && previous_was_special ? std::string(kSpaceMarker) : std::string();
      escaped += ReplaceAll(fragment.text, " ", kSpaceMarker);
      EncodeSentencePiece(escaped, output);
    } else {
      EncodeBytePairs(fragment.text, output);
    }
    previous_was_special = false;
  }
  return output;
}

void Tokenizer::EmitSentencePieceBytes(std::string_view bytes, std::vector<int32_t>& output) const {
  for (char c : bytes) {
    const int32_t id = byte_token_[static_cast<uint8_t>(c)];
    if (id >= 0) {
      output.push_back(id);
    } else if (unknown_id_ >= 0) {
      output.push_back(unknown_id_);
    }
  }
}

void Tokenizer::EncodeSentencePiece(std::string_view text, std::vector<int32_t>& output) const {
  // llama.cpp's SPM: start from characters and keep merging the adjacent pair whose
  // concatenation is the vocabulary token with the best score.
  std::vector<Symbol> symbols = CharacterSymbols(text);
  std::priority_queue<ScoredBigram, std::vector<ScoredBigram>, ScoredBigramOrder> queue;
  const auto try_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const size_t length = symbols[left].length + symbols[right].length;
    const auto id = FindToken(text.substr(symbols[left].start, length));
    if (!id) return;
    queue.push(ScoredBigram{left, right, scores_[*id], length});
  };
  MergeBestPairs(symbols, queue, try_add);
  for (int32_t i = symbols.empty() ? -1 : 0; i != -1; i = symbols[i].next) {
    const std::string_view piece = text.substr(symbols[i].start, symbols[i].length);
    if (const auto id = FindToken(piece)) {
      output.push_back(*id);
    } else {
      EmitSentencePieceBytes(piece, output);  // byte fallback
    }
  }
}

int32_t Tokenizer::FindBpeRank(std::string_view left, std::string_view right,
                               std::string& scratch) const {
  scratch.assign(left);
  scratch.push_back('\xff');
  scratch.append(right);
  const auto it = bpe_ranks_.find(scratch);
  return it == bpe_ranks_.end() ? -1 : it->second;
}

void Tokenizer::EncodeBytePairs(std::string_view text, std::vector<int32_t>& output) const {
  std::string word;
  std::string scratch;
  for (std::string_view piece : splitter_->Split(text)) {
    // Byte-level: every byte becomes one printable character.
    word.clear();
    for (char c : piece)
      tokenizer_internal::AppendByteLevelCharacter(static_cast<uint8_t>(c), word);
    if (ignore_merges_) {
      if (auto id = FindToken(word)) {
        output.push_back(*id);
        continue;
      }
    }
    std::vector<Symbol> symbols = CharacterSymbols(word);
    std::priority_queue<RankedBigram, std::vector<RankedBigram>, RankedBigramOrder> queue;
    const auto try_add = [&](int32_t left, int32_t right) {
      if (left < 0 || right < 0) return;
      const Symbol& l = symbols[left];
      const Symbol& r = symbols[right];
      const int32_t rank = FindBpeRank(std::string_view(word).substr(l.start, l.length),
                                       std::string_view(word).substr(r.start, r.length), scratch);
      if (rank < 0) return;
      queue.push(RankedBigram{left, right, rank, l.length + r.length});
    };
    MergeBestPairs(symbols, queue, try_add);
    for (int32_t i = symbols.empty() ? -1 : 0; i != -1; i = symbols[i].next) {
      const std::string_view symbol =
          std::string_view(word).substr(symbols[i].start, symbols[i].length);
      if (auto id = FindToken(symbol)) {
        output.push_back(*id);
        continue;
      }
      // Not in the vocabulary (only possible with incomplete merges): as llama.cpp, fall back
      // to single-character tokens where they exist.
      for (char c : symbol) {
        if (auto id = FindToken(std::string_view(&c, 1))) output.push_back(*id);
      }
    }
  }
}

std::string Tokenizer::TokenToPiece(int32_t id, bool render_special) const {
  if (id < 0 || id >= vocab_size()) return "";
  const std::string_view text = Text(id);
  const TokenType type = types_[id];
  if (IsSpecialType(type)) return render_special ? std::string(text) : std::string();
  if (type == TokenType::kUserDefined) return std::string(text);
  if (type == TokenType::kByte) return std::string(1, static_cast<char>(byte_value_[id]));
  if (kind_ == TokenizerKind::kSentencePiece) return ReplaceAll(text, kSpaceMarker, " ");
  return tokenizer_internal::DecodeByteLevel(text);
}

std::string Tokenizer::Decode(absl::Span<const int32_t> ids) const {
  std::string out;
  bool strip_space = add_space_prefix_ && kind_ == TokenizerKind::kSentencePiece;
  for (int32_t id : ids) {
    std::string piece = TokenToPiece(id);
    if (piece.empty()) continue;
    if (strip_space && piece[0] == ' ') piece.erase(0, 1);
    strip_space = false;
    out += piece;
  }
  return out;
}

bool Tokenizer::IsEndOfGeneration(int32_t id) const {
  return std::binary_search(end_of_generation_.begin(), end_of_generation_.end(), id);
}

std::optional<int32_t> Tokenizer::FindToken(std::string_view text) const {
  const auto it = token_index_.find(text);
  if (it == token_index_.end()) return std::nullopt;
  return *it;
}

std::string_view Tokenizer::TokenText(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return std::string_view();
  return Text(id);
}

TokenType Tokenizer::GetTokenType(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return TokenType::kUndefined;
  return types_[id];
}

std::string StreamingDecoder::Push(int32_t id) {
  pending_ += tokenizer_->TokenToPiece(id);
  std::string out;
  size_t pos = 0;
  while (pos < pending_.size()) {
    size_t length = 1;
    const auto prefix = tokenizer_internal::CheckUtf8At(pending_, pos, &length);
    if (prefix == tokenizer_internal::Utf8Prefix::kIncomplete) break;  // wait for more bytes
    if (prefix == tokenizer_internal::Utf8Prefix::kInvalid) {
      out += tokenizer_internal::kReplacementCharacter;
    } else {
      out.append(pending_, pos, length);
    }
    pos += length;
  }
  pending_.erase(0, pos);
  return out;
}

std::string StreamingDecoder::Flush() {
  std::string out;
  if (!pending_.empty()) out = std::string(tokenizer_internal::kReplacementCharacter);
  pending_.clear();
  return out;
}

}  // namespace exo::runtime
