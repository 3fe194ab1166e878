#include "runtime/tokenizer.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <variant>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/gguf.h"
#include "runtime/internal/tokenizer_special.h"

namespace exo::runtime {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::SizeIs;

const std::string kTokenizerData = std::string(EXO_TESTDATA_DIR) + "/tokenizer/";

std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// llama.cpp's tokenizer test vectors: X.inp holds inputs, each followed by a separator line;
// X.out holds one line of space-separated ids per input (encoded without BOS).
struct VocabTestCase {
  std::string input;
  std::vector<int32_t> expected;
};

std::vector<VocabTestCase> ReadVocabTestCases(const std::string& vocab_path) {
  const std::string inputs = ReadWholeFile(vocab_path + ".inp");
  const std::string outputs = ReadWholeFile(vocab_path + ".out");
  const std::string separator = "\n__ggml_vocab_test__\n";
  std::vector<VocabTestCase> cases;
  size_t pos = 0;
  while (true) {
    const size_t end = inputs.find(separator, pos);
    if (end == std::string::npos) break;
    cases.push_back(VocabTestCase{inputs.substr(pos, end - pos), {}});
    pos = end + separator.size();
  }
  std::istringstream lines(outputs);
  std::string line;
  size_t index = 0;
  while (std::getline(lines, line) && index < cases.size()) {
    std::istringstream ids(line);
    int32_t id;
    while (ids >> id) cases[index].expected.push_back(id);
    ++index;
  }
  EXPECT_EQ(index, cases.size()) << "fewer output lines than inputs in " << vocab_path;
  return cases;
}

// Holds the GGUF file alive as long as the tokenizer test needs it.
struct LoadedVocab {
  std::unique_ptr<GgufFile> file;
  std::unique_ptr<Tokenizer> tokenizer;
};

LoadedVocab LoadVocab(const std::string& path) {
  LoadedVocab loaded;
  auto file = GgufFile::Open(path);
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return loaded;
  loaded.file = std::move(*file);
  auto tokenizer = Tokenizer::FromGguf(*loaded.file);
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  if (tokenizer.ok()) loaded.tokenizer = std::move(*tokenizer);
  return loaded;
}

void ExpectMatchesReferenceVectors(const std::string& vocab_name) {
  const std::string path = kTokenizerData + vocab_name;
  const LoadedVocab vocab = LoadVocab(path);
  ASSERT_NE(vocab.tokenizer, nullptr);
  const std::vector<VocabTestCase> cases = ReadVocabTestCases(path);
  ASSERT_GT(cases.size(), 30u);
  for (const VocabTestCase& test_case : cases) {
    EXPECT_THAT(vocab.tokenizer->Encode(test_case.input, /*add_bos=*/false,
                                        /*parse_special=*/false),
                ElementsAreArray(test_case.expected))
        << "input: '" << test_case.input << "'";
  }
}

void ExpectRoundTrips(const std::string& vocab_name) {
  const std::string path = kTokenizerData + vocab_name;
  const LoadedVocab vocab = LoadVocab(path);
  ASSERT_NE(vocab.tokenizer, nullptr);
  for (const VocabTestCase& test_case : ReadVocabTestCases(path)) {
    for (bool add_bos : {false, true}) {
      const std::vector<int32_t> ids = vocab.tokenizer->Encode(test_case.input, add_bos, false);
      EXPECT_EQ(vocab.tokenizer->Decode(ids), test_case.input) << "add_bos " << add_bos;
    }
  }
}

TEST(TokenizerVocabFiles, LlamaSpmMatchesReferenceIds) {
  ExpectMatchesReferenceVectors("ggml-vocab-llama-spm.gguf");
}

TEST(TokenizerVocabFiles, Gpt2MatchesReferenceIds) {
  ExpectMatchesReferenceVectors("ggml-vocab-gpt-2.gguf");
}

TEST(TokenizerVocabFiles, LlamaSpmDecodeInvertsEncode) {
  ExpectRoundTrips("ggml-vocab-llama-spm.gguf");
}

TEST(TokenizerVocabFiles, Gpt2DecodeInvertsEncode) { ExpectRoundTrips("ggml-vocab-gpt-2.gguf"); }

TEST(TokenizerVocabFiles, Gpt2HandlesLongRuns) {
  const LoadedVocab vocab = LoadVocab(kTokenizerData + "ggml-vocab-gpt-2.gguf");
  ASSERT_NE(vocab.tokenizer, nullptr);
  // Long runs of one character class stress the regex engine (JIT stack) and the merge loop.
  const std::string text = std::string(200000, ' ') + "x" + std::string(200000, 'a') + "\n" +
                           std::string(100000, '7') + std::string(50000, '!');
  const std::vector<int32_t> ids = vocab.tokenizer->Encode(text, false, false);
  EXPECT_LT(ids.size(), text.size());  // merges happened
  EXPECT_EQ(vocab.tokenizer->Decode(ids), text);
}

TEST(TokenizerVocabFiles, LlamaSpmMetadata) {
  const LoadedVocab vocab = LoadVocab(kTokenizerData + "ggml-vocab-llama-spm.gguf");
  ASSERT_NE(vocab.tokenizer, nullptr);
  const Tokenizer& tokenizer = *vocab.tokenizer;
  EXPECT_EQ(tokenizer.vocab_size(), 32000);
  EXPECT_EQ(tokenizer.kind(), TokenizerKind::kSentencePiece);
  EXPECT_EQ(tokenizer.bos_id(), 1);
  EXPECT_EQ(tokenizer.eos_id(), 2);
  EXPECT_TRUE(tokenizer.add_bos());
  EXPECT_TRUE(tokenizer.add_space_prefix());
  EXPECT_TRUE(tokenizer.IsEndOfGeneration(2));
  EXPECT_FALSE(tokenizer.IsEndOfGeneration(1));
  EXPECT_THAT(tokenizer.Encode("Hello world", /*add_bos=*/true, false),
              ElementsAre(1, 15043, 3186));
  EXPECT_EQ(tokenizer.TokenText(15043), "\xE2\x96\x81Hello");
  EXPECT_EQ(tokenizer.TokenToPiece(15043), " Hello");
  EXPECT_EQ(tokenizer.TokenToPiece(13), "\n");  // <0x0A>
  EXPECT_EQ(tokenizer.TokenToPiece(1), "");
  EXPECT_EQ(tokenizer.TokenToPiece(1, /*render_special=*/true), "<s>");
  EXPECT_EQ(tokenizer.TokenToPiece(-1), "");
  EXPECT_EQ(tokenizer.TokenToPiece(32000), "");
  EXPECT_EQ(tokenizer.FindToken("<s>"), 1);
  EXPECT_EQ(tokenizer.FindToken("no such token"), std::nullopt);
}

TEST(TokenizerVocabFiles, LlamaSpmParsesSpecialTokensOnlyWhenAsked) {
  const LoadedVocab vocab = LoadVocab(kTokenizerData + "ggml-vocab-llama-spm.gguf");
  ASSERT_NE(vocab.tokenizer, nullptr);
  const Tokenizer& tokenizer = *vocab.tokenizer;
  // With parse_special, "</s>" is the control token and the text after it gets a space prefix
  // again, as in llama.cpp.
  EXPECT_THAT(tokenizer.Encode("Hello</s>world", false, /*parse_special=*/true),
              ElementsAre(15043, 2, 3186));
  const std::vector<int32_t> literal = tokenizer.Encode("Hello</s>world", false, false);
  EXPECT_GT(literal.size(), 3u);
  EXPECT_EQ(std::count(literal.begin(), literal.end(), 2), 0);
  EXPECT_EQ(tokenizer.Decode(literal), "Hello</s>world");
}

TEST(TokenizerVocabFiles, Gpt2SpecialTokensAndMetadata) {
  const LoadedVocab vocab = LoadVocab(kTokenizerData + "ggml-vocab-gpt-2.gguf");
  ASSERT_NE(vocab.tokenizer, nullptr);
  const Tokenizer& tokenizer = *vocab.tokenizer;
  EXPECT_EQ(tokenizer.vocab_size(), 50257);
  EXPECT_EQ(tokenizer.kind(), TokenizerKind::kBytePairBpe);
  EXPECT_EQ(tokenizer.eos_id(), 50256);
  EXPECT_FALSE(tokenizer.add_bos());
  EXPECT_TRUE(tokenizer.IsEndOfGeneration(50256));
  EXPECT_THAT(tokenizer.Encode("Hello world<|endoftext|>", false, /*parse_special=*/true),
              ElementsAre(15496, 995, 50256));
  const std::vector<int32_t> literal = tokenizer.Encode("Hello world<|endoftext|>", false, false);
  EXPECT_EQ(std::count(literal.begin(), literal.end(), 50256), 0);
  EXPECT_EQ(tokenizer.Decode(literal), "Hello world<|endoftext|>");
  EXPECT_EQ(tokenizer.TokenToPiece(995), " world");  // stored as "Ġworld"
  EXPECT_EQ(tokenizer.TokenToPiece(50256), "");
  EXPECT_EQ(tokenizer.TokenToPiece(50256, true), "<|endoftext|>");
}

TEST(StreamingDecoder, HoldsBackCharacterSplitAcrossByteTokens) {
  const LoadedVocab vocab = LoadVocab(kTokenizerData + "ggml-vocab-llama-spm.gguf");
  ASSERT_NE(vocab.tokenizer, nullptr);
  // "🦙" (F0 9F A6 99) has no token in this vocabulary: it is four byte tokens.
  const std::vector<int32_t> ids = vocab.tokenizer->Encode("is 🦙!", false, false);
  ASSERT_THAT(ids, ElementsAre(338, 29871, 243, 162, 169, 156, 29991));
  StreamingDecoder decoder(*vocab.tokenizer);
  EXPECT_EQ(decoder.Push(ids[0]), " is");
  EXPECT_EQ(decoder.Push(ids[1]), " ");
  EXPECT_EQ(decoder.Push(ids[2]), "");
  EXPECT_EQ(decoder.Push(ids[3]), "");
  EXPECT_EQ(decoder.Push(ids[4]), "");
  EXPECT_EQ(decoder.Push(ids[5]), "🦙");
  EXPECT_EQ(decoder.Push(ids[6]), "!");
  EXPECT_EQ(decoder.Flush(), "");
}

TEST(StreamingDecoder, ReplacesBytesThatCannotFormCharacters) {
  const LoadedVocab vocab = LoadVocab(kTokenizerData + "ggml-vocab-llama-spm.gguf");
  ASSERT_NE(vocab.tokenizer, nullptr);
  const int32_t byte_ff = *vocab.tokenizer->FindToken("<0xFF>");
  const int32_t byte_e2 = *vocab.tokenizer->FindToken("<0xE2>");
  const int32_t byte_41 = *vocab.tokenizer->FindToken("<0x41>");
  StreamingDecoder decoder(*vocab.tokenizer);
  EXPECT_EQ(decoder.Push(byte_ff), "\xEF\xBF\xBD");  // never valid in UTF-8
  EXPECT_EQ(decoder.Push(byte_e2), "");              // could start a 3-byte character
  EXPECT_EQ(decoder.Push(byte_41),
            "\xEF\xBF\xBD"
            "A");  // ...but "A" breaks it
  EXPECT_EQ(decoder.Push(byte_e2), "");
  EXPECT_EQ(decoder.Flush(), "\xEF\xBF\xBD");  // an unfinished character at the end
  EXPECT_EQ(decoder.Push(byte_41), "A");       // Flush reset the decoder
}

TEST(StreamingDecoder, ByteLevelBpeMultiByteCharacters) {
  const LoadedVocab vocab = LoadVocab(kTokenizerData + "ggml-vocab-gpt-2.gguf");
  ASSERT_NE(vocab.tokenizer, nullptr);
  const std::string text = "Hello 😁 世界 Führer!";
  const std::vector<int32_t> ids = vocab.tokenizer->Encode(text, false, false);
  StreamingDecoder decoder(*vocab.tokenizer);
  std::string streamed;
  bool held_back = false;
  for (int32_t id : ids) {
    const std::string piece = decoder.Push(id);
    if (piece.size() < vocab.tokenizer->TokenToPiece(id).size()) held_back = true;
    streamed += piece;
  }
  streamed += decoder.Flush();
  EXPECT_EQ(streamed, text);
  EXPECT_TRUE(held_back) << "no token of the emoji was split mid-character, test is vacuous";
}

// ---- Synthetic vocabularies (no files) ---------------------------------------------------------

// A tiny SentencePiece vocabulary: byte tokens for every byte, a few merges, specials.
TokenizerVocab TinySentencePieceVocab() {
  TokenizerVocab vocab;
  vocab.kind = TokenizerKind::kSentencePiece;
  const auto add = [&](std::string text, float score, TokenType type) {
    vocab.tokens.push_back(std::move(text));
    vocab.scores.push_back(score);
    vocab.types.push_back(type);
  };
  add("<unk>", 0, TokenType::kUnknown);          // 0
  add("<s>", 0, TokenType::kControl);            // 1
  add("</s>", 0, TokenType::kControl);           // 2
  add("<turn>", 0, TokenType::kControl);         // 3
  add("<end_of_turn>", 0, TokenType::kControl);  // 4
  add("<br>", 0, TokenType::kUserDefined);       // 5
  for (int byte = 0; byte < 256; ++byte) {       // 6 .. 261
    char text[8];
    std::snprintf(text, sizeof(text), "<0x%02X>", byte);
    add(text, 0, TokenType::kByte);
  }
  add("\xE2\x96\x81", -1, TokenType::kNormal);  // 262 "▁"
  add("a", -2, TokenType::kNormal);             // 263
  add("b", -2, TokenType::kNormal);             // 264
  add("ab", -3, TokenType::kNormal);            // 265
  add("\xE2\x96\x81"
      "ab",
      -4, TokenType::kNormal);        // 266 "▁ab"
  add("bb", -1, TokenType::kNormal);  // 267: better score than "ab"
  vocab.bos_id = 1;
  vocab.eos_id = 2;
  vocab.unknown_id = 0;
  vocab.add_bos = true;
  vocab.add_space_prefix = true;
  return vocab;
}

TEST(TokenizerSentencePiece, MergesByBestScoreFirst) {
  auto tokenizer = Tokenizer::FromVocab(TinySentencePieceVocab());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  // "▁abb": "bb" (-1) beats "ab" (-3), so the result is ▁ a bb, never ▁ab b.
  EXPECT_THAT((*tokenizer)->Encode("abb", false, false), ElementsAre(262, 263, 267));
  EXPECT_THAT((*tokenizer)->Encode("ab", true, false), ElementsAre(1, 266));
  // Characters without a token fall back to their bytes.
  EXPECT_THAT((*tokenizer)->Encode("aé", false, false), ElementsAre(262, 263, 6 + 0xC3, 6 + 0xA9));
  EXPECT_EQ((*tokenizer)->Decode((*tokenizer)->Encode("aé ab", true, false)), "aé ab");
}

TEST(TokenizerSentencePiece, UserDefinedTokensAreAlwaysSplitOut) {
  auto tokenizer = Tokenizer::FromVocab(TinySentencePieceVocab());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_THAT((*tokenizer)->Encode("a<br>b", false, /*parse_special=*/false),
              ElementsAre(262, 263, 5, 262, 264));
  EXPECT_EQ((*tokenizer)->TokenToPiece(5), "<br>");
}

TEST(TokenizerSentencePiece, LongestSpecialTokenWins) {
  TokenizerVocab vocab = TinySentencePieceVocab();
  vocab.add_space_prefix = false;
  auto tokenizer = Tokenizer::FromVocab(std::move(vocab));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  // "<turn>" is not cut out of "<end_of_turn>": the longer text is matched first.
  EXPECT_THAT((*tokenizer)->Encode("<turn>a<end_of_turn>", false, true), ElementsAre(3, 263, 4));
  EXPECT_THAT((*tokenizer)->Encode("<s><s>", false, true), ElementsAre(1, 1));
}

TEST(TokenizerSentencePiece, EndOfGenerationIncludesChatEndTokens) {
  auto tokenizer = Tokenizer::FromVocab(TinySentencePieceVocab());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_TRUE((*tokenizer)->IsEndOfGeneration(2));
  EXPECT_TRUE((*tokenizer)->IsEndOfGeneration(4));  // "<end_of_turn>" by its text
  EXPECT_FALSE((*tokenizer)->IsEndOfGeneration(3));
  EXPECT_FALSE((*tokenizer)->IsEndOfGeneration(1));
}

TEST(TokenizerSentencePiece, RejectsInconsistentVocabularies) {
  {
    TokenizerVocab vocab = TinySentencePieceVocab();
    vocab.eos_id = static_cast<int32_t>(vocab.tokens.size());
    auto tokenizer = Tokenizer::FromVocab(std::move(vocab));
    EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(tokenizer.status().message()), HasSubstr("eos_token_id"));
  }
  {
    TokenizerVocab vocab = TinySentencePieceVocab();
    vocab.scores.pop_back();
    EXPECT_EQ(Tokenizer::FromVocab(std::move(vocab)).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  {
    TokenizerVocab vocab = TinySentencePieceVocab();
    vocab.tokens[10] = "<0xZZ>";
    auto tokenizer = Tokenizer::FromVocab(std::move(vocab));
    EXPECT_THAT(std::string(tokenizer.status().message()), HasSubstr("<0xZZ>"));
  }
  EXPECT_FALSE(Tokenizer::FromVocab(TokenizerVocab{}).ok());
}

// A tiny byte-level BPE vocabulary.
TokenizerVocab TinyBpeVocab(std::string pre) {
  TokenizerVocab vocab;
  vocab.kind = TokenizerKind::kBytePairBpe;
  vocab.pre = std::move(pre);
  vocab.tokens = {"a",
                  "b",
                  "c",
                  "\xC4\xA0",
                  "ab",
                  "\xC4\xA0"
                  "ab",
                  "1",
                  "2",
                  "3",
                  "12",
                  "<|end|>"};
  vocab.types.assign(vocab.tokens.size(), TokenType::kNormal);
  vocab.types.back() = TokenType::kControl;
  vocab.merges = {"a b", "\xC4\xA0 ab", "1 2"};
  vocab.eos_id = 10;
  return vocab;
}

TEST(TokenizerBpe, MergesByRankWithinPreTokens) {
  auto tokenizer = Tokenizer::FromVocab(TinyBpeVocab("gpt2"));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  // "ab ab" -> pre-tokens "ab", " ab" -> ab, Ġab.
  EXPECT_THAT((*tokenizer)->Encode("ab ab", false, false), ElementsAre(4, 5));
  EXPECT_THAT((*tokenizer)->Encode("abc<|end|>", false, true), ElementsAre(4, 2, 10));
  EXPECT_EQ((*tokenizer)->Decode((*tokenizer)->Encode("ab ab", false, false)), "ab ab");
}

TEST(TokenizerBpe, PreTokenizerChoosesDigitGrouping) {
  // gpt2 keeps digit runs together (so "12" merges); smollm and qwen2 split every digit.
  auto gpt2 = Tokenizer::FromVocab(TinyBpeVocab("gpt2"));
  auto smollm = Tokenizer::FromVocab(TinyBpeVocab("smollm"));
  auto qwen2 = Tokenizer::FromVocab(TinyBpeVocab("qwen2"));
  auto llama3 = Tokenizer::FromVocab(TinyBpeVocab("llama-bpe"));
  ASSERT_TRUE(gpt2.ok() && smollm.ok() && qwen2.ok() && llama3.ok());
  EXPECT_THAT((*gpt2)->Encode("123", false, false), ElementsAre(9, 8));
  EXPECT_THAT((*smollm)->Encode("123", false, false), ElementsAre(6, 7, 8));
  EXPECT_THAT((*qwen2)->Encode("123", false, false), ElementsAre(6, 7, 8));
  EXPECT_THAT((*llama3)->Encode("123", false, false), ElementsAre(9, 8));
}

TEST(TokenizerBpe, RejectsUnknownPreTokenizerAndBadMerges) {
  auto unknown = Tokenizer::FromVocab(TinyBpeVocab("no-such-pre"));
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(unknown.status().message()), HasSubstr("no-such-pre"));
  TokenizerVocab vocab = TinyBpeVocab("gpt2");
  vocab.merges.push_back("nospace");
  EXPECT_THAT(std::string(Tokenizer::FromVocab(std::move(vocab)).status().message()),
              HasSubstr("nospace"));
}

TEST(TokenizerSpecialTokens, TrieMatcherAgreesWithDirectSearch) {
  using tokenizer_internal::SpecialTokenMatcher;
  // Overlapping patterns in priority order (longest first), some always enabled.
  const SpecialTokenMatcher matcher({{"<ab>", false},
                                     {"aba", true},
                                     {"bab", false},
                                     {"ab", false},
                                     {"ba", true},
                                     {"<a", true},
                                     {"ab", true},  // same text as a better-ranked pattern
                                     {"b", false},
                                     {">", true}});
  std::mt19937 random(12345);
  const std::string alphabet = "ab<>c";
  int total_matches = 0;
  for (int round = 0; round < 3000; ++round) {
    std::string text(random() % 24, ' ');
    for (char& c : text) c = alphabet[random() % alphabet.size()];
    for (bool parse_special : {false, true}) {
      const auto fast = matcher.Find(text, parse_special);
      const auto reference = matcher.FindReference(text, parse_special);
      ASSERT_EQ(fast.size(), reference.size()) << "'" << text << "' " << parse_special;
      for (size_t i = 0; i < fast.size(); ++i) {
        EXPECT_EQ(fast[i].offset, reference[i].offset) << "'" << text << "'";
        EXPECT_EQ(fast[i].length, reference[i].length) << "'" << text << "'";
        EXPECT_EQ(fast[i].pattern, reference[i].pattern) << "'" << text << "'";
      }
      total_matches += static_cast<int>(fast.size());
    }
  }
  EXPECT_GT(total_matches, 10000);
}

// ---- FromGguf on synthetic files ---------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Tokenizer>> TokenizerFromWriter(const GgufWriter& writer,
                                                               std::vector<uint8_t>& storage) {
  storage = writer.Serialize();
  auto file = GgufFile::FromBuffer(storage.data(), storage.size());
  if (!file.ok()) return file.status();
  return Tokenizer::FromGguf(**file);
}

GgufWriter MinimalSentencePieceWriter() {
  GgufWriter writer;
  writer.SetValue("general.architecture", GgufValue::String("llama"));
  writer.SetValue("tokenizer.ggml.model", GgufValue::String("llama"));
  writer.SetValue("tokenizer.ggml.tokens", GgufValue::StringArray({"<unk>", "<s>", "</s>", "a"}));
  writer.SetValue("tokenizer.ggml.scores", GgufValue::F32Array({0, 0, 0, -1}));
  writer.SetValue("tokenizer.ggml.token_type", GgufValue::I32Array({2, 3, 3, 1}));
  return writer;
}

TEST(TokenizerFromGguf, ReadsMinimalSentencePieceVocabWithLlamaDefaults) {
  std::vector<uint8_t> storage;
  auto tokenizer = TokenizerFromWriter(MinimalSentencePieceWriter(), storage);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->bos_id(), 1);
  EXPECT_EQ((*tokenizer)->eos_id(), 2);
  EXPECT_TRUE((*tokenizer)->add_bos());
  // "▁" has neither a token nor byte tokens here: each of its bytes becomes <unk>.
  EXPECT_THAT((*tokenizer)->Encode("a", true, false), ElementsAre(1, 0, 0, 0, 3));
}

TEST(TokenizerFromGguf, RejectsUnknownModel) {
  GgufWriter writer = MinimalSentencePieceWriter();
  writer.SetValue("tokenizer.ggml.model", GgufValue::String("t5"));
  std::vector<uint8_t> storage;
  auto tokenizer = TokenizerFromWriter(writer, storage);
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(tokenizer.status().message()), HasSubstr("'t5'"));
}

TEST(TokenizerFromGguf, RejectsMissingArraysAndMismatchedLengths) {
  std::vector<uint8_t> storage;
  {
    GgufWriter writer;
    writer.SetValue("tokenizer.ggml.model", GgufValue::String("llama"));
    writer.SetValue("tokenizer.ggml.tokens", GgufValue::StringArray({"a"}));
    writer.SetValue("tokenizer.ggml.token_type", GgufValue::I32Array({1}));
    auto tokenizer = TokenizerFromWriter(writer, storage);
    EXPECT_THAT(std::string(tokenizer.status().message()), HasSubstr("tokenizer.ggml.scores"));
  }
  {
    GgufWriter writer = MinimalSentencePieceWriter();
    writer.SetValue("tokenizer.ggml.scores", GgufValue::F32Array({0, 0, 0}));
    auto tokenizer = TokenizerFromWriter(writer, storage);
    EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(tokenizer.status().message()), HasSubstr("differ in length"));
  }
  {
    GgufWriter writer = MinimalSentencePieceWriter();
    writer.SetValue("tokenizer.ggml.model", GgufValue::String("gpt2"));
    writer.SetValue("tokenizer.ggml.pre", GgufValue::String("gpt-2"));
    auto tokenizer = TokenizerFromWriter(writer, storage);
    EXPECT_THAT(std::string(tokenizer.status().message()), HasSubstr("tokenizer.ggml.merges"));
  }
  {
    GgufWriter writer = MinimalSentencePieceWriter();
    writer.SetValue("tokenizer.ggml.token_type", GgufValue::I32Array({2, 3, 3, 9}));
    EXPECT_FALSE(TokenizerFromWriter(writer, storage).ok());
  }
}

TEST(TokenizerFromGguf, RejectsMistypedTokenArrays) {
  std::vector<uint8_t> storage;
  // Short arrays are decoded when read, long ones stay encoded: the errors are the same.
  for (size_t n : {size_t{4}, size_t{GgufFile::kMaxDecodedArrayElements + 1}}) {
    SCOPED_TRACE(n);
    GgufWriter writer = MinimalSentencePieceWriter();
    writer.SetValue("tokenizer.ggml.tokens", GgufValue::I32Array(std::vector<int32_t>(n, 1)));
    auto tokenizer = TokenizerFromWriter(writer, storage);
    EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(tokenizer.status().message()),
                HasSubstr("'tokenizer.ggml.tokens[0]' is int32, expected a string"));
  }
  GgufWriter writer = MinimalSentencePieceWriter();
  writer.SetValue("tokenizer.ggml.tokens", GgufValue::String("a"));
  auto tokenizer = TokenizerFromWriter(writer, storage);
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(tokenizer.status().message()), HasSubstr("expected an array"));
}

// A vocabulary long enough that the GGUF reader keeps its arrays encoded, with empty and repeated
// texts, read through FromGguf and built through FromVocab: both tokenizers must agree.
TEST(TokenizerFromGguf, LongVocabularyReadsLikeTheSameVocabBuiltInCode) {
  TokenizerVocab vocab;
  vocab.tokens = {"<unk>", "<s>", "</s>", "", "<ctl>"};
  for (int b = 0; b < 256; ++b) {
    char text[8];
    std::snprintf(text, sizeof(text), "<0x%02X>", b);
    vocab.tokens.push_back(text);
  }
  std::mt19937 rng(7);
  const std::string letters = "abcde \xE2\x96\x81";
  while (vocab.tokens.size() < 3000) {
    std::string text;
    const size_t length = 1 + rng() % 6;
    for (size_t i = 0; i < length; ++i) text += letters[rng() % letters.size()];
    vocab.tokens.push_back(text);  // repeats on purpose: the last id must win
  }
  vocab.tokens.push_back("");
  vocab.types.assign(vocab.tokens.size(), TokenType::kNormal);
  vocab.types[0] = TokenType::kUnknown;
  vocab.types[1] = vocab.types[2] = vocab.types[4] = TokenType::kControl;
  for (int b = 0; b < 256; ++b) vocab.types[5 + b] = TokenType::kByte;
  for (size_t i = 0; i < vocab.tokens.size(); ++i) {
    vocab.scores.push_back(-static_cast<float>(rng() % 1000));
  }

  GgufWriter writer;
  writer.SetValue("tokenizer.ggml.model", GgufValue::String("llama"));
  writer.SetValue("tokenizer.ggml.tokens", GgufValue::StringArray(vocab.tokens));
  writer.SetValue("tokenizer.ggml.scores", GgufValue::F32Array(vocab.scores));
  std::vector<int32_t> types;
  for (TokenType t : vocab.types) types.push_back(static_cast<int32_t>(t));
  writer.SetValue("tokenizer.ggml.token_type", GgufValue::I32Array(types));
  std::vector<uint8_t> storage = writer.Serialize();
  auto file = GgufFile::FromBuffer(storage.data(), storage.size());
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_TRUE(
      std::get<GgufValue::Array>((*file)->Find("tokenizer.ggml.tokens")->data).is_encoded());
  auto from_gguf = Tokenizer::FromGguf(**file);
  ASSERT_TRUE(from_gguf.ok()) << from_gguf.status();
  file->reset();  // the tokenizer owns its texts
  storage.assign(storage.size(), 0);

  vocab.bos_id = 1;
  vocab.eos_id = 2;
  vocab.unknown_id = 0;
  vocab.add_bos = true;
  vocab.add_space_prefix = true;
  const std::vector<std::string> texts = vocab.tokens;
  auto from_vocab = Tokenizer::FromVocab(vocab);
  ASSERT_TRUE(from_vocab.ok()) << from_vocab.status();

  const Tokenizer& a = **from_gguf;
  const Tokenizer& b = **from_vocab;
  ASSERT_EQ(a.vocab_size(), static_cast<int32_t>(texts.size()));
  ASSERT_EQ(b.vocab_size(), a.vocab_size());
  std::map<std::string, int32_t> last_id;
  for (int32_t id = 0; id < a.vocab_size(); ++id) {
    EXPECT_EQ(a.TokenText(id), texts[id]);
    EXPECT_EQ(b.TokenText(id), texts[id]);
    if (!texts[id].empty()) last_id[texts[id]] = id;
  }
  EXPECT_EQ(a.TokenText(-1), "");
  EXPECT_EQ(a.TokenText(a.vocab_size()), "");
  for (const auto& [text, id] : last_id) {
    EXPECT_EQ(a.FindToken(text), id) << text;
    EXPECT_EQ(b.FindToken(text), id) << text;
  }
  EXPECT_EQ(a.FindToken(""), std::nullopt);
  EXPECT_EQ(a.FindToken("not in the vocabulary"), std::nullopt);
  for (const char* text : {"abc de", "eeee a<ctl>b", "x\xC3\xA9y", "   "}) {
    EXPECT_EQ(a.Encode(text, true, true), b.Encode(text, true, true)) << text;
    EXPECT_EQ(a.Decode(a.Encode(text, false, false)), b.Decode(b.Encode(text, false, false)));
  }
}

TEST(TokenizerFromGguf, RejectsOutOfRangeIds) {
  GgufWriter writer = MinimalSentencePieceWriter();
  writer.SetValue("tokenizer.ggml.bos_token_id", GgufValue::U32(4));
  std::vector<uint8_t> storage;
  auto tokenizer = TokenizerFromWriter(writer, storage);
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(tokenizer.status().message()), HasSubstr("bos_token_id"));
}

// ---- Other pre-tokenizers, checked against llama.cpp -------------------------------------------

// The GPT-2 vocabulary with tokenizer.ggml.pre replaced, rebuilt in memory.
absl::StatusOr<std::unique_ptr<Tokenizer>> Gpt2VocabWithPre(const GgufFile& gpt2, std::string pre,
                                                            std::vector<uint8_t>& storage) {
  GgufWriter writer;
  for (const auto& [key, value] : gpt2.metadata()) writer.SetValue(key, value);
  writer.SetValue("tokenizer.ggml.pre", GgufValue::String(std::move(pre)));
  return TokenizerFromWriter(writer, storage);
}

// Expected ids made with llama-cpp-python 0.3.36 (llama.cpp): the GPT-2 test vocabulary rewritten
// with the gguf Python package, only tokenizer.ggml.pre changed, then
//   llama_cpp.Llama(model_path=..., vocab_only=True).tokenize(text.encode(), add_bos=False,
//                                                             special=False)
TEST(TokenizerBpe, PreTokenizersMatchLlamaCpp) {
  auto gpt2 = GgufFile::Open(kTokenizerData + "ggml-vocab-gpt-2.gguf");
  ASSERT_TRUE(gpt2.ok()) << gpt2.status();
  const std::vector<std::string> texts = {
      "Hello, y'all! How're you?",
      "123456789 and 3.14",
      "  spaces   here \n\n  x",
      "line\r\nbreak\n\n\nend",
      "ÜBER naïve CamelCaseWord élan",
      "emoji 🦙🚀 ok",
      "tab\tsep\t\tx",
      "a/b//c <tag> $5 +x=y^2|z~",
      "I'M SHOUTING, We'Re",
      "日本語のテキスト 한국어",
  };
  const std::vector<std::pair<std::string, std::vector<std::vector<int32_t>>>> expected = {
      {"llama-bpe",
       {{15496, 11, 331, 6, 439, 0, 1374, 821, 345, 30},
        {10163, 29228, 40401, 290, 220, 18, 13, 1415},
        {220, 9029, 220, 220, 994, 220, 628, 220, 2124},
        {1370, 201, 198, 9032, 628, 198, 437},
        {127, 250, 13246, 41492, 43281, 20448, 26449, 38251, 9620},
        {368, 31370, 12520, 99, 247, 8582, 248, 222, 12876},
        {8658, 197, 325, 79, 197, 197, 87},
        {64, 14, 65, 1003, 66, 1279, 12985, 29, 720, 20, 1343, 87, 28, 88, 61, 17, 91, 89, 93},
        {40, 6, 44, 6006, 12425, 2751, 11, 775, 6, 3041},
        {33768, 98, 17312, 105, 45739, 252, 5641, 24336, 25084, 43302, 220, 47991, 250, 166, 113,
         255, 168, 244, 112}}},
      {"qwen2",
       {{15496, 11, 331, 6, 439, 0, 1374, 821, 345, 30},
        {16, 17, 18, 19, 20, 21, 22, 23, 24, 290, 220, 18, 13, 16, 19},
        {220, 9029, 220, 220, 994, 220, 628, 220, 2124},
        {1370, 201, 198, 9032, 628, 198, 437},
        {127, 250, 13246, 41492, 43281, 20448, 26449, 38251, 9620},
        {368, 31370, 12520, 99, 247, 8582, 248, 222, 12876},
        {8658, 197, 325, 79, 197, 197, 87},
        {64, 14, 65, 1003, 66, 1279, 12985, 29, 720, 20, 1343, 87, 28, 88, 61, 17, 91, 89, 93},
        {40, 6, 44, 6006, 12425, 2751, 11, 775, 6, 3041},
        {33768, 98, 17312, 105, 45739, 252, 5641, 24336, 25084, 43302, 220, 47991, 250, 166, 113,
         255, 168, 244, 112}}},
      {"smollm",
       {{15496, 11, 331, 6, 439, 0, 1374, 821, 345, 30},
        {16, 17, 18, 19, 20, 21, 22, 23, 24, 290, 220, 18, 13, 16, 19},
        {220, 9029, 220, 220, 994, 220, 628, 220, 2124},
        {1370, 201, 198, 9032, 628, 198, 437},
        {127, 250, 13246, 41492, 43281, 20448, 26449, 38251, 9620},
        {368, 31370, 12520, 99, 247, 8582, 248, 222, 12876},
        {8658, 197, 325, 79, 197, 197, 87},
        {64, 14, 65, 1003, 66, 1279, 12985, 29, 720, 20, 1343, 87, 28, 88, 61, 17, 91, 89, 93},
        {40, 6, 44, 6006, 12425, 2751, 11, 775, 6, 3041},
        {33768, 98, 17312, 105, 45739, 252, 5641, 24336, 25084, 43302, 220, 47991, 250, 166, 113,
         255, 168, 244, 112}}},
      {"tekken",
       {{15496, 11, 331, 6, 439, 0, 1374, 821, 345, 30},
        {16, 17, 18, 19, 20, 21, 22, 23, 24, 290, 220, 18, 13, 16, 19},
        {220, 9029, 220, 220, 994, 220, 628, 220, 2124},
        {1370, 201, 198, 9032, 628, 198, 437},
        {127, 250, 13246, 41492, 43281, 20448, 26449, 38251, 9620},
        {368, 31370, 12520, 99, 247, 8582, 248, 222, 12876},
        {8658, 197, 325, 79, 197, 197, 87},
        {64, 14, 65, 1003, 66, 1279, 12985, 29, 720, 20, 1343, 87, 28, 88, 61, 17, 91, 89, 93},
        {40, 6, 44, 6006, 12425, 2751, 11, 775, 6, 3041},
        {33768, 98, 17312, 105, 45739, 252, 5641, 24336, 25084, 43302, 220, 47991, 250, 166, 113,
         255, 168, 244, 112}}},
      {"default",
       {{15496, 11, 331, 6, 439, 0, 1374, 6, 260, 345, 30},
        {10163, 29228, 40401, 290, 220, 18, 13, 1415},
        {220, 9029, 220, 220, 994, 220, 628, 220, 2124},
        {1370, 201, 198, 9032, 628, 198, 437},
        {127, 250, 13246, 41492, 43281, 20448, 26449, 38251, 9620},
        {368, 31370, 12520, 99, 247, 8582, 248, 222, 12876},
        {8658, 197, 325, 79, 197, 197, 87},
        {64, 14,  65, 1003, 66, 220, 27, 12985, 29, 220, 3,
         20, 220, 10, 87,   28, 88,  61, 17,    91, 89,  93},
        {40, 6, 44, 6006, 12425, 2751, 11, 775, 6, 3041},
        {33768, 98, 17312, 105, 45739, 252, 5641, 24336, 25084, 43302, 220, 47991, 250, 166, 113,
         255, 168, 244, 112}}},
  };
  for (const auto& [pre, ids] : expected) {
    std::vector<uint8_t> storage;
    auto tokenizer = Gpt2VocabWithPre(**gpt2, pre, storage);
    ASSERT_TRUE(tokenizer.ok()) << pre << ": " << tokenizer.status();
    ASSERT_EQ(ids.size(), texts.size());
    for (size_t i = 0; i < texts.size(); ++i) {
      EXPECT_THAT((*tokenizer)->Encode(texts[i], false, false), ElementsAreArray(ids[i]))
          << "pre '" << pre << "', text '" << texts[i] << "'";
      EXPECT_EQ((*tokenizer)->Decode(ids[i]), texts[i]) << "pre '" << pre << "'";
    }
  }
}

// ---- The default model's vocabulary (Gemma 3) --------------------------------------------------

std::string DefaultModelPath() {
  const char* home = std::getenv("HOME");
  return std::string(home != nullptr ? home : "") +
         "/.cache/exo-node/models/gemma-3-270m-q4_k_m.gguf";
}

class TokenizerGemma : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!std::filesystem::exists(DefaultModelPath())) return;
    vocab_ = new LoadedVocab(LoadVocab(DefaultModelPath()));
  }
  static void TearDownTestSuite() {
    delete vocab_;
    vocab_ = nullptr;
  }
  void SetUp() override {
    if (vocab_ == nullptr) GTEST_SKIP() << "default model not installed at " << DefaultModelPath();
    ASSERT_NE(vocab_->tokenizer, nullptr);
  }
  const Tokenizer& tokenizer() const { return *vocab_->tokenizer; }

  static LoadedVocab* vocab_;
};
LoadedVocab* TokenizerGemma::vocab_ = nullptr;

TEST_F(TokenizerGemma, SpecialTokens) {
  EXPECT_EQ(tokenizer().vocab_size(), 262144);
  EXPECT_EQ(tokenizer().bos_id(), 2);
  EXPECT_EQ(tokenizer().eos_id(), 1);
  EXPECT_TRUE(tokenizer().add_bos());
  EXPECT_FALSE(tokenizer().add_space_prefix());
  EXPECT_THAT(tokenizer().Encode("<start_of_turn>", false, /*parse_special=*/true),
              ElementsAre(105));
  EXPECT_THAT(tokenizer().Encode("<start_of_turn>", false, false), SizeIs(testing::Gt(1u)));
  EXPECT_EQ(tokenizer().FindToken("<end_of_turn>"), 106);
  EXPECT_TRUE(tokenizer().IsEndOfGeneration(106));
  EXPECT_TRUE(tokenizer().IsEndOfGeneration(1));
  EXPECT_FALSE(tokenizer().IsEndOfGeneration(105));
  EXPECT_THAT(tokenizer().Encode("Hi", /*add_bos=*/true, false), ElementsAre(2, 10979));
}

// Expected ids made with llama-cpp-python 0.3.36 (an independent implementation, llama.cpp):
//   llama_cpp.Llama(model_path=<gemma-3-270m-q4_k_m.gguf>, vocab_only=True)
//       .tokenize(text.encode(), add_bos=False, special=True)
// and, for the last case, special=False.
TEST_F(TokenizerGemma, MatchesLlamaCppIds) {
  struct Case {
    std::string text;
    bool parse_special;
    std::vector<int32_t> ids;
  };
  const Case cases[] = {
      {"Hello world", true, {9259, 1902}},
      {" Hello  world ", true, {26352, 138, 12392, 236743}},
      {"   leading and trailing spaces   ", true, {139, 26016, 532, 45330, 9952, 139}},
      {"line one\nline two\n\nline four\r\n",
       true,
       {1257, 886, 107, 1257, 1156, 108, 1257, 2390, 251, 107}},
      {"\t\tindented\ttabs", true, {255969, 724, 16764, 255968, 39218}},
      {"Ünïcödé: naïve café, 日本語のテキスト, Привет мир",
       true,
       {238194, 236749, 238527, 236755, 55515, 236859, 236787, 120362, 33443, 236764, 33375, 238582,
        236945, 95830, 236764, 15745, 8362, 58562}},
      {"emoji 🦙🚀😶‍🌫️ and ✅",
       true,
       {67906, 236743, 478, 397, 404, 391, 242015, 247717, 237243, 248989, 238178, 532, 113452}},
      {"def f(x):\n    return x * 2  # comment\n",
       true,
       {2063, 517, 236769, 236781, 1473, 107, 140, 2060, 1123, 808, 236743, 236778, 138, 236865,
        5739, 107}},
      {"Numbers: 3.14159, 1,000,000 and 2024-11-25",
       true,
       {37091,  236787, 236743, 236800, 236761, 236770, 236812, 236770, 236810, 236819, 236764,
        236743, 236770, 236764, 236771, 236771, 236771, 236764, 236771, 236771, 236771, 532,
        236743, 236778, 236771, 236778, 236812, 236772, 236770, 236770, 236772, 236778, 236810}},
      {"<start_of_turn>user\nHi!<end_of_turn>\n<start_of_turn>model\n",
       true,
       {105, 2364, 107, 10979, 236888, 106, 107, 105, 4368, 107}},
      {"C++ std::vector<int> v{1, 2, 3};",
       true,
       {236780, 2124, 5325, 1480, 8322, 236820, 720, 236813, 566, 236782, 236770, 236764, 236743,
        236778, 236764, 236743, 236800, 3796}},
      {"a\u00a0b\u2003c", true, {236746, 432, 398, 236763, 464, 366, 369, 236755}},
      {"<start_of_turn>user\nHi!<end_of_turn>\n",
       false,
       {236820, 3041, 236779, 1340, 236779, 887, 236813, 2364, 107, 10979, 200322, 643, 236779,
        1340, 236779, 887, 236813, 107}},
  };
  for (const Case& c : cases) {
    EXPECT_THAT(tokenizer().Encode(c.text, false, c.parse_special), ElementsAreArray(c.ids))
        << "text: '" << c.text << "' parse_special " << c.parse_special;
    if (!c.parse_special) {
      EXPECT_EQ(tokenizer().Decode(c.ids), c.text);
    }
  }
}

TEST_F(TokenizerGemma, DecodeInvertsEncode) {
  for (const std::string text : {"Hello world", "  two  spaces\n\n\ttab",
                                 "日本語 🦙 ✅ café", "<b>bold</b> & <i>x</i>"}) {
    EXPECT_EQ(tokenizer().Decode(tokenizer().Encode(text, true, false)), text);
  }
}

}  // namespace
}  // namespace exo::runtime
