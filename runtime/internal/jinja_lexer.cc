#include "runtime/internal/jinja_lexer.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "runtime/internal/jinja_value.h"

namespace exo::runtime::jinja {
namespace {

bool IsAsciiSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool IsNameStart(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsNameChar(char c) { return IsNameStart(c) || IsDigit(c); }

// Python str.rstrip() on template text.
std::string RStripAll(std::string_view text) {
  return PyStrip(text, nullptr, /*left=*/false, /*right=*/true);
}

// True when text is non-empty and all Python whitespace (re's \s on a str).
bool AllSpace(std::string_view text) {
  if (text.empty()) return false;
  size_t pos = 0;
  while (pos < text.size()) {
    if (!IsPySpace(DecodeCodePoint(text, pos))) return false;
  }
  return true;
}

// Index just past the whitespace starting at pos (Python's \s*).
size_t SkipSpace(std::string_view text, size_t pos) {
  while (pos < text.size()) {
    size_t next = pos;
    if (!IsPySpace(DecodeCodePoint(text, next))) break;
    pos = next;
  }
  return pos;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

class Lexer {
 public:
  explicit Lexer(std::string_view source) : src_(source) {}

  absl::StatusOr<std::vector<Token>> Run() {
    size_t pos = 0;
    bool line_starting = true;
    while (pos < src_.size()) {
      size_t open = FindOpener(pos);
      if (open == std::string_view::npos) {
        Push(TokenKind::kData, std::string(src_.substr(pos)), pos);
        break;
      }
      char kind = src_[open + 1];  // '{', '%' or '#'
      char sign = open + 2 < src_.size() ? src_[open + 2] : '\0';
      if (sign != '-' && sign != '+') sign = '\0';
      std::string text(src_.substr(pos, open - pos));
      if (sign == '-') {
        text = RStripAll(text);
      } else if (sign != '+' && kind != '{') {
        // lstrip_blocks: drop spaces between the start of the line and the tag.
        size_t line_start = text.rfind('\n');
        line_start = line_start == std::string::npos ? 0 : line_start + 1;
        if ((line_start > 0 || line_starting) &&
            AllSpace(std::string_view(text).substr(line_start))) {
          text.resize(line_start);
        }
      }
      if (!text.empty()) Push(TokenKind::kData, std::move(text), pos);
      size_t body = open + 2 + (sign != '\0' ? 1 : 0);
      absl::StatusOr<size_t> end = kind == '#' ? LexComment(open, body) : LexTag(open, body, kind);
      if (!end.ok()) return end.status();
      line_starting = *end > 0 && src_[*end - 1] == '\n';
      pos = *end;
    }
    Push(TokenKind::kEnd, "", src_.size());
    return std::move(tokens_);
  }

 private:
  size_t FindOpener(size_t pos) const {
    while (true) {
      size_t brace = src_.find('{', pos);
      if (brace == std::string_view::npos || brace + 1 >= src_.size())
        return std::string_view::npos;
      char next = src_[brace + 1];
      if (next == '{' || next == '%' || next == '#') return brace;
      pos = brace + 1;
    }
  }

  void Push(TokenKind kind, std::string text, size_t offset) {
    Token token;
    token.kind = kind;
    token.text = std::move(text);
    token.offset = offset;
    tokens_.push_back(std::move(token));
  }

  absl::Status Error(size_t offset, const std::string& message) const {
    int line = 0;
    int column = 0;
    LineAndColumn(src_, offset, line, column);
    return absl::InvalidArgumentError(absl::StrCat("chat template syntax error at line ", line,
                                                   ", column ", column, ": ", message));
  }

  // Returns the position after the comment (and any whitespace it trims).
  absl::StatusOr<size_t> LexComment(size_t open, size_t body) {
    size_t close = src_.find("#}", body);
    if (close == std::string_view::npos) return Error(open, "missing end of comment tag '#}'");
    size_t after = close + 2;
    char sign = close > body ? src_[close - 1] : '\0';
    if (sign == '-') return SkipSpace(src_, after);
    if (sign == '+') return after;
    if (after < src_.size() && src_[after] == '\n') ++after;  // trim_blocks
    return after;
  }

  // Lexes the inside of "{{ ... }}" or "{% ... %}" and returns the position after the tag.
  absl::StatusOr<size_t> LexTag(size_t open, size_t pos, char kind) {
    const bool is_block = kind == '%';
    Push(is_block ? TokenKind::kBlockBegin : TokenKind::kVariableBegin, "", open);
    std::vector<char> brackets;
    while (true) {
      while (pos < src_.size() && IsAsciiSpace(src_[pos])) ++pos;
      if (pos >= src_.size()) {
        return Error(open, is_block ? "unclosed block tag: missing '%}'"
                                    : "unclosed expression: missing '}}'");
      }
      std::string_view rest = src_.substr(pos);
      if (brackets.empty()) {
        if (is_block) {
          if (rest.starts_with("-%}")) {
            Push(TokenKind::kBlockEnd, "", pos);
            return SkipSpace(src_, pos + 3);
          }
          if (rest.starts_with("+%}")) {
            Push(TokenKind::kBlockEnd, "", pos);
            return pos + 3;
          }
          if (rest.starts_with("%}")) {
            Push(TokenKind::kBlockEnd, "", pos);
            size_t after = pos + 2;
            if (after < src_.size() && src_[after] == '\n') ++after;  // trim_blocks
            return after;
          }
        } else {
          if (rest.starts_with("-}}")) {
            Push(TokenKind::kVariableEnd, "", pos);
            return SkipSpace(src_, pos + 3);
          }
          if (rest.starts_with("}}")) {
            Push(TokenKind::kVariableEnd, "", pos);
            return pos + 2;
          }
        }
      }
      char c = src_[pos];
      if (IsNameStart(c)) {
        size_t end = pos;
        while (end < src_.size() && IsNameChar(src_[end])) ++end;
        Push(TokenKind::kName, std::string(src_.substr(pos, end - pos)), pos);
        pos = end;
      } else if (IsDigit(c)) {
        absl::StatusOr<size_t> end = LexNumber(pos);
        if (!end.ok()) return end.status();
        pos = *end;
      } else if (c == '\'' || c == '"') {
        absl::StatusOr<size_t> end = LexString(pos);
        if (!end.ok()) return end.status();
        pos = *end;
      } else {
        static constexpr std::string_view kTwoCharOps[] = {"//", "**", "==", "!=", ">=", "<="};
        std::string op;
        for (std::string_view two : kTwoCharOps) {
          if (rest.starts_with(two)) op = std::string(two);
        }
        if (op.empty()) {
          static constexpr std::string_view kOneCharOps = "+-*/%~[](){}<>=.:|,;";
          if (kOneCharOps.find(c) == std::string_view::npos) {
            return Error(pos, absl::StrCat("unexpected character '", std::string(1, c), "'"));
          }
          op = std::string(1, c);
        }
        if (op == "(" || op == "[" || op == "{") {
          brackets.push_back(op[0]);
        } else if (op == ")" || op == "]" || op == "}") {
          char expected = op == ")" ? '(' : op == "]" ? '[' : '{';
          if (brackets.empty() || brackets.back() != expected) {
            return Error(pos, absl::StrCat("unexpected '", op, "'"));
          }
          brackets.pop_back();
        }
        Push(TokenKind::kOperator, op, pos);
        pos += op.size();
      }
    }
  }

  absl::StatusOr<size_t> LexNumber(size_t pos) {
    size_t start = pos;
    auto digits = [&](size_t p) {
      // (\d+_)*\d+ ; returns end or p when no digit.
      size_t q = p;
      while (q < src_.size() && IsDigit(src_[q])) {
        while (q < src_.size() && IsDigit(src_[q])) ++q;
        if (q + 1 < src_.size() && src_[q] == '_' && IsDigit(src_[q + 1])) ++q;
      }
      return q;
    };
    pos = digits(pos);
    bool is_float = false;
    if (pos + 1 < src_.size() && src_[pos] == '.' && IsDigit(src_[pos + 1])) {
      is_float = true;
      pos = digits(pos + 1);
    }
    if (pos < src_.size() && (src_[pos] == 'e' || src_[pos] == 'E')) {
      size_t q = pos + 1;
      if (q < src_.size() && (src_[q] == '+' || src_[q] == '-')) ++q;
      if (q < src_.size() && IsDigit(src_[q])) {
        is_float = true;
        pos = digits(q);
      }
    }
    std::string text;
    for (size_t i = start; i < pos; ++i) {
      if (src_[i] != '_') text.push_back(src_[i]);
    }
    Token token;
    token.offset = start;
    token.text = text;
    if (is_float) {
      token.kind = TokenKind::kFloat;
      token.float_value = std::strtod(text.c_str(), nullptr);
    } else {
      token.kind = TokenKind::kInteger;
      errno = 0;
      char* end = nullptr;
      long long value = std::strtoll(text.c_str(), &end, 10);
      if (errno == ERANGE) return Error(start, "integer literal too large");
      token.int_value = value;
    }
    tokens_.push_back(std::move(token));
    return pos;
  }

  // Decodes a quoted string with Python's escape rules.
  absl::StatusOr<size_t> LexString(size_t pos) {
    char quote = src_[pos];
    size_t start = pos;
    ++pos;
    std::string value;
    while (true) {
      if (pos >= src_.size()) return Error(start, "unterminated string literal");
      char c = src_[pos];
      if (c == quote) {
        ++pos;
        break;
      }
      if (c != '\\') {
        value.push_back(c);
        ++pos;
        continue;
      }
      if (pos + 1 >= src_.size()) return Error(start, "unterminated string literal");
      char e = src_[pos + 1];
      pos += 2;
      switch (e) {
        case '\n':
          break;
        case '\\':
          value.push_back('\\');
          break;
        case '\'':
          value.push_back('\'');
          break;
        case '"':
          value.push_back('"');
          break;
        case 'a':
          value.push_back('\a');
          break;
        case 'b':
          value.push_back('\b');
          break;
        case 'f':
          value.push_back('\f');
          break;
        case 'n':
          value.push_back('\n');
          break;
        case 'r':
          value.push_back('\r');
          break;
        case 't':
          value.push_back('\t');
          break;
        case 'v':
          value.push_back('\v');
          break;
        case 'x':
        case 'u':
        case 'U': {
          int count = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          uint32_t cp = 0;
          for (int k = 0; k < count; ++k) {
            int h = pos < src_.size() ? HexValue(src_[pos]) : -1;
            if (h < 0)
              return Error(pos, absl::StrCat("truncated \\", std::string(1, e), " escape"));
            cp = cp * 16 + static_cast<uint32_t>(h);
            ++pos;
          }
          if (cp > 0x10FFFF) return Error(pos, "escape sequence out of the Unicode range");
          AppendUtf8(cp, value);
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            uint32_t cp = static_cast<uint32_t>(e - '0');
            for (int k = 0; k < 2 && pos < src_.size() && src_[pos] >= '0' && src_[pos] <= '7';
                 ++k) {
              cp = cp * 8 + static_cast<uint32_t>(src_[pos] - '0');
              ++pos;
            }
            AppendUtf8(cp, value);
          } else {
            // Unknown escapes stay as written, like Python.
            value.push_back('\\');
            value.push_back(e);
          }
      }
    }
    Push(TokenKind::kString, std::move(value), start);
    return pos;
  }

  std::string_view src_;
  std::vector<Token> tokens_;
};

}  // namespace

std::string NormalizeTemplateSource(std::string_view source) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out.push_back('\n');
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out.push_back(source[i]);
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

absl::StatusOr<std::vector<Token>> Tokenize(std::string_view normalized_source) {
  return Lexer(normalized_source).Run();
}

void LineAndColumn(std::string_view source, size_t offset, int& line, int& column) {
  line = 1;
  column = 1;
  size_t pos = 0;
  while (pos < offset && pos < source.size()) {
    if (source[pos] == '\n') {
      ++line;
      column = 1;
      ++pos;
    } else {
      DecodeCodePoint(source, pos);
      ++column;
    }
  }
}

}  // namespace exo::runtime::jinja
