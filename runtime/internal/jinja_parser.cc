#include "runtime/internal/jinja_parser.h"

#include <algorithm>
#include <initializer_list>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "runtime/internal/jinja_builtins.h"
#include "runtime/internal/jinja_lexer.h"

namespace exo::runtime::jinja {
namespace {

class Parser {
 public:
  Parser(std::string_view source, std::vector<Token> tokens)
      : source_(source), tokens_(std::move(tokens)) {}

  absl::StatusOr<Body> ParseAll() {
    std::string end_name;
    ASSIGN_OR_RETURN(Body body, Subparse({}, end_name));
    return body;
  }

 private:
  // Counts nested parser calls; more than kMaxSyntaxDepth is an error.
  class DepthGuard {
   public:
    explicit DepthGuard(Parser& parser) : parser_(parser) { ++parser_.depth_; }
    ~DepthGuard() { --parser_.depth_; }
    bool too_deep() const { return parser_.depth_ > 3 * kMaxSyntaxDepth; }

   private:
    Parser& parser_;
  };

  const Token& Current() const { return tokens_[pos_]; }
  const Token& Peek(size_t ahead = 1) const {
    return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)];
  }
  void Advance() {
    if (pos_ + 1 < tokens_.size()) ++pos_;
  }
  bool IsOp(std::string_view op) const {
    return Current().kind == TokenKind::kOperator && Current().text == op;
  }
  bool IsName(std::string_view name) const {
    return Current().kind == TokenKind::kName && Current().text == name;
  }
  bool SkipOp(std::string_view op) {
    if (!IsOp(op)) return false;
    Advance();
    return true;
  }
  bool SkipName(std::string_view name) {
    if (!IsName(name)) return false;
    Advance();
    return true;
  }

  static std::string Describe(const Token& token) {
    switch (token.kind) {
      case TokenKind::kData:
        return "template text";
      case TokenKind::kVariableBegin:
        return "'{{'";
      case TokenKind::kVariableEnd:
        return "end of print statement '}}'";
      case TokenKind::kBlockBegin:
        return "'{%'";
      case TokenKind::kBlockEnd:
        return "end of statement block '%}'";
      case TokenKind::kName:
        return absl::StrCat("'", token.text, "'");
      case TokenKind::kString:
        return "string literal";
      case TokenKind::kInteger:
      case TokenKind::kFloat:
        return "number";
      case TokenKind::kOperator:
        return absl::StrCat("'", token.text, "'");
      case TokenKind::kEnd:
        return "end of template";
    }
    return "token";
  }

  absl::Status ErrorAt(size_t offset, const std::string& message) const {
    int line = 0;
    int column = 0;
    LineAndColumn(source_, offset, line, column);
    return absl::InvalidArgumentError(absl::StrCat("chat template syntax error at line ", line,
                                                   ", column ", column, ": ", message));
  }
  absl::Status Unexpected(const std::string& expected) const {
    return ErrorAt(Current().offset,
                   absl::StrCat("expected ", expected, ", got ", Describe(Current())));
  }
  absl::Status TooDeep() const { return ErrorAt(Current().offset, "template nested too deeply"); }
  absl::Status ExpectOp(std::string_view op) {
    if (!SkipOp(op)) return Unexpected(absl::StrCat("'", std::string(op), "'"));
    return absl::OkStatus();
  }
  absl::Status ExpectBlockEnd() {
    if (Current().kind != TokenKind::kBlockEnd) return Unexpected("end of statement block '%}'");
    Advance();
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> ExpectName() {
    if (Current().kind != TokenKind::kName) return Unexpected("a name");
    std::string name = Current().text;
    Advance();
    return name;
  }

  absl::StatusOr<ExprPtr> MakeExpr(Expr::Kind kind, size_t offset, std::vector<ExprPtr> children) {
    auto expr = std::make_unique<Expr>();
    expr->kind = kind;
    expr->offset = offset;
    for (const ExprPtr& child : children) {
      if (child) expr->depth = std::max(expr->depth, child->depth + 1);
    }
    if (expr->depth > kMaxSyntaxDepth) return ErrorAt(offset, "expression nested too deeply");
    expr->children = std::move(children);
    return expr;
  }
  static std::vector<ExprPtr> Children(ExprPtr a, ExprPtr b = nullptr) {
    std::vector<ExprPtr> children;
    children.push_back(std::move(a));
    if (b) children.push_back(std::move(b));
    return children;
  }

  // ---- Statements ----

  // Parses statements until "{% name" with name in `end_names`; leaves the stream at that name.
  absl::StatusOr<Body> Subparse(std::initializer_list<std::string_view> end_names,
                                std::string& end_name) {
    DepthGuard guard(*this);
    if (guard.too_deep()) return TooDeep();
    Body body;
    while (true) {
      const Token& token = Current();
      switch (token.kind) {
        case TokenKind::kEnd: {
          if (end_names.size() == 0) return body;
          std::vector<std::string> expected(end_names.begin(), end_names.end());
          return ErrorAt(token.offset, absl::StrCat("unexpected end of template, expected '",
                                                    absl::StrJoin(expected, "' or '"), "'"));
        }
        case TokenKind::kData: {
          auto stmt = std::make_unique<Stmt>();
          stmt->kind = Stmt::Kind::kText;
          stmt->offset = token.offset;
          stmt->text = token.text;
          body.push_back(std::move(stmt));
          Advance();
          break;
        }
        case TokenKind::kVariableBegin: {
          auto stmt = std::make_unique<Stmt>();
          stmt->kind = Stmt::Kind::kOutput;
          stmt->offset = token.offset;
          Advance();
          ASSIGN_OR_RETURN(ExprPtr expr, ParseTuple(true, {}, false));
          stmt->exprs.push_back(std::move(expr));
          if (Current().kind != TokenKind::kVariableEnd) {
            return Unexpected("end of print statement '}}'");
          }
          Advance();
          body.push_back(std::move(stmt));
          break;
        }
        case TokenKind::kBlockBegin: {
          Advance();
          if (Current().kind != TokenKind::kName) return Unexpected("a statement name");
          if (std::find(end_names.begin(), end_names.end(), Current().text) != end_names.end()) {
            end_name = Current().text;
            return body;
          }
          ASSIGN_OR_RETURN(StmtPtr stmt, ParseStatement());
          body.push_back(std::move(stmt));
          break;
        }
        default:
          return Unexpected("template text or a tag");
      }
    }
  }

  absl::StatusOr<StmtPtr> ParseStatement() {
    const Token& token = Current();
    const std::string& name = token.text;
    auto stmt = std::make_unique<Stmt>();
    stmt->offset = token.offset;
    if (name == "if") {
      Advance();
      RETURN_IF_ERROR(ParseIf(*stmt));
    } else if (name == "for") {
      Advance();
      RETURN_IF_ERROR(ParseFor(*stmt));
    } else if (name == "set") {
      Advance();
      RETURN_IF_ERROR(ParseSet(*stmt));
    } else if (name == "macro") {
      Advance();
      RETURN_IF_ERROR(ParseMacro(*stmt));
    } else if (name == "break" || name == "continue") {
      stmt->kind = name == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue;
      if (loop_depth_ == 0) {
        return ErrorAt(token.offset, absl::StrCat("'", name, "' outside of a for loop"));
      }
      Advance();
      RETURN_IF_ERROR(ExpectBlockEnd());
    } else if (name == "generation") {
      Advance();
      stmt->kind = Stmt::Kind::kScope;
      RETURN_IF_ERROR(ExpectBlockEnd());
      std::string end_name;
      ASSIGN_OR_RETURN(Body body, Subparse({"endgeneration"}, end_name));
      stmt->bodies.push_back(std::move(body));
      Advance();
      RETURN_IF_ERROR(ExpectBlockEnd());
    } else {
      static constexpr std::string_view kEndTags[] = {
          "endif", "elif", "else", "endfor", "endset", "endmacro", "endgeneration"};
      for (std::string_view end_tag : kEndTags) {
        if (name == end_tag) {
          return ErrorAt(token.offset, absl::StrCat("unexpected '", name, "'"));
        }
      }
      return ErrorAt(token.offset, absl::StrCat("unknown or unsupported tag '", name, "'"));
    }
    return stmt;
  }

  absl::Status ParseIf(Stmt& stmt) {
    stmt.kind = Stmt::Kind::kIf;
    while (true) {
      ASSIGN_OR_RETURN(ExprPtr condition, ParseTuple(false, {}, false));
      RETURN_IF_ERROR(ExpectBlockEnd());
      stmt.exprs.push_back(std::move(condition));
      std::string end_name;
      ASSIGN_OR_RETURN(Body body, Subparse({"elif", "else", "endif"}, end_name));
      stmt.bodies.push_back(std::move(body));
      Advance();  // past the end name
      if (end_name == "elif") continue;
      if (end_name == "else") {
        RETURN_IF_ERROR(ExpectBlockEnd());
        ASSIGN_OR_RETURN(Body else_body, Subparse({"endif"}, end_name));
        stmt.bodies.push_back(std::move(else_body));
        stmt.has_else = true;
        Advance();
      }
      return ExpectBlockEnd();
    }
  }

  absl::Status ParseTargetNames(std::vector<std::string>& names, std::string_view stop_name) {
    bool parenthesized = SkipOp("(");
    while (true) {
      ASSIGN_OR_RETURN(std::string name, ExpectName());
      names.push_back(std::move(name));
      if (!SkipOp(",")) break;
      if (parenthesized ? IsOp(")") : IsName(stop_name)) break;
    }
    if (parenthesized) RETURN_IF_ERROR(ExpectOp(")"));
    return absl::OkStatus();
  }

  absl::Status ParseFor(Stmt& stmt) {
    stmt.kind = Stmt::Kind::kFor;
    RETURN_IF_ERROR(ParseTargetNames(stmt.names, "in"));
    if (!SkipName("in")) return Unexpected("'in'");
    ASSIGN_OR_RETURN(ExprPtr iterable, ParseTuple(false, {"recursive"}, false));
    stmt.exprs.push_back(std::move(iterable));
    if (SkipName("if")) {
      ASSIGN_OR_RETURN(ExprPtr filter, ParseExpression(true));
      stmt.exprs.push_back(std::move(filter));
    }
    if (IsName("recursive")) return ErrorAt(Current().offset, "recursive loops are not supported");
    RETURN_IF_ERROR(ExpectBlockEnd());
    ++loop_depth_;
    std::string end_name;
    absl::StatusOr<Body> body = Subparse({"endfor", "else"}, end_name);
    --loop_depth_;
    if (!body.ok()) return body.status();
    stmt.bodies.push_back(*std::move(body));
    Advance();
    if (end_name == "else") {
      RETURN_IF_ERROR(ExpectBlockEnd());
      ASSIGN_OR_RETURN(Body else_body, Subparse({"endfor"}, end_name));
      stmt.bodies.push_back(std::move(else_body));
      stmt.has_else = true;
      Advance();
    }
    return ExpectBlockEnd();
  }

  absl::Status ParseSet(Stmt& stmt) {
    ASSIGN_OR_RETURN(std::string first, ExpectName());
    if (SkipOp(".")) {
      stmt.kind = Stmt::Kind::kSetAttr;
      ASSIGN_OR_RETURN(std::string attribute, ExpectName());
      stmt.names = {first, attribute};
      RETURN_IF_ERROR(ExpectOp("="));
    } else {
      stmt.names.push_back(first);
      if (SkipOp(",")) {
        if (!IsOp("=")) RETURN_IF_ERROR(ParseTargetNames(stmt.names, ""));
      }
      if (stmt.names.size() == 1 && Current().kind == TokenKind::kBlockEnd) {
        stmt.kind = Stmt::Kind::kSetBlock;
        Advance();
        std::string end_name;
        ASSIGN_OR_RETURN(Body body, Subparse({"endset"}, end_name));
        stmt.bodies.push_back(std::move(body));
        Advance();
        return ExpectBlockEnd();
      }
      stmt.kind = Stmt::Kind::kSet;
      RETURN_IF_ERROR(ExpectOp("="));
    }
    ASSIGN_OR_RETURN(ExprPtr value, ParseTuple(true, {}, false));
    stmt.exprs.push_back(std::move(value));
    return ExpectBlockEnd();
  }

  absl::Status ParseMacro(Stmt& stmt) {
    stmt.kind = Stmt::Kind::kMacro;
    ASSIGN_OR_RETURN(std::string name, ExpectName());
    stmt.names.push_back(std::move(name));
    RETURN_IF_ERROR(ExpectOp("("));
    while (!IsOp(")")) {
      if (stmt.names.size() > 1) RETURN_IF_ERROR(ExpectOp(","));
      if (IsOp(")")) break;
      ASSIGN_OR_RETURN(std::string param, ExpectName());
      stmt.names.push_back(std::move(param));
      if (SkipOp("=")) {
        ASSIGN_OR_RETURN(ExprPtr default_value, ParseExpression(true));
        stmt.exprs.push_back(std::move(default_value));
      } else {
        if (!stmt.exprs.empty() && stmt.exprs.back() != nullptr) {
          return ErrorAt(Current().offset, "non-default argument follows default argument");
        }
        stmt.exprs.push_back(nullptr);
      }
    }
    Advance();
    RETURN_IF_ERROR(ExpectBlockEnd());
    int saved_loop_depth = loop_depth_;
    loop_depth_ = 0;
    std::string end_name;
    absl::StatusOr<Body> body = Subparse({"endmacro"}, end_name);
    loop_depth_ = saved_loop_depth;
    if (!body.ok()) return body.status();
    stmt.bodies.push_back(*std::move(body));
    Advance();
    if (Current().kind == TokenKind::kName) Advance();  // {% endmacro name %}
    return ExpectBlockEnd();
  }

  // ---- Expressions ----

  bool IsTupleEnd(std::initializer_list<std::string_view> extra_end_names) const {
    const Token& token = Current();
    if (token.kind == TokenKind::kVariableEnd || token.kind == TokenKind::kBlockEnd ||
        token.kind == TokenKind::kEnd) {
      return true;
    }
    if (token.kind == TokenKind::kOperator && token.text == ")") return true;
    if (token.kind == TokenKind::kName) {
      for (std::string_view name : extra_end_names) {
        if (token.text == name) return true;
      }
    }
    return false;
  }

  // `a, b, c` (a list) or a single expression.
  absl::StatusOr<ExprPtr> ParseTuple(bool with_condexpr,
                                     std::initializer_list<std::string_view> extra_end_names,
                                     bool explicit_parentheses) {
    size_t offset = Current().offset;
    std::vector<ExprPtr> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) RETURN_IF_ERROR(ExpectOp(","));
      if (IsTupleEnd(extra_end_names)) break;
      if (with_condexpr || explicit_parentheses) {
        ASSIGN_OR_RETURN(ExprPtr item, ParseExpression(true));
        items.push_back(std::move(item));
      } else {
        ASSIGN_OR_RETURN(ExprPtr item, ParseOr());
        items.push_back(std::move(item));
      }
      if (IsOp(",")) {
        is_tuple = true;
      } else {
        break;
      }
    }
    if (!is_tuple) {
      if (!items.empty()) return std::move(items[0]);
      if (!explicit_parentheses) return Unexpected("an expression");
    }
    ASSIGN_OR_RETURN(ExprPtr tuple, MakeExpr(Expr::Kind::kList, offset, std::move(items)));
    tuple->name = "tuple";
    return tuple;
  }

  absl::StatusOr<ExprPtr> ParseExpression(bool with_condexpr) {
    DepthGuard guard(*this);
    if (guard.too_deep()) return TooDeep();
    if (!with_condexpr) return ParseOr();
    ASSIGN_OR_RETURN(ExprPtr expr, ParseOr());
    while (IsName("if")) {
      size_t offset = Current().offset;
      Advance();
      ASSIGN_OR_RETURN(ExprPtr condition, ParseOr());
      ExprPtr otherwise;
      if (SkipName("else")) {
        ASSIGN_OR_RETURN(otherwise, ParseExpression(true));
      }
      std::vector<ExprPtr> children;
      children.push_back(std::move(expr));
      children.push_back(std::move(condition));
      children.push_back(std::move(otherwise));
      ASSIGN_OR_RETURN(expr, MakeExpr(Expr::Kind::kCondExpr, offset, std::move(children)));
    }
    return expr;
  }

  absl::StatusOr<ExprPtr> ParseOr() {
    ASSIGN_OR_RETURN(ExprPtr left, ParseAnd());
    while (IsName("or")) {
      size_t offset = Current().offset;
      Advance();
      ASSIGN_OR_RETURN(ExprPtr right, ParseAnd());
      ASSIGN_OR_RETURN(
          left, MakeExpr(Expr::Kind::kOr, offset, Children(std::move(left), std::move(right))));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseAnd() {
    ASSIGN_OR_RETURN(ExprPtr left, ParseNot());
    while (IsName("and")) {
      size_t offset = Current().offset;
      Advance();
      ASSIGN_OR_RETURN(ExprPtr right, ParseNot());
      ASSIGN_OR_RETURN(
          left, MakeExpr(Expr::Kind::kAnd, offset, Children(std::move(left), std::move(right))));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseNot() {
    DepthGuard guard(*this);
    if (guard.too_deep()) return TooDeep();
    if (IsName("not")) {
      size_t offset = Current().offset;
      Advance();
      ASSIGN_OR_RETURN(ExprPtr operand, ParseNot());
      return MakeExpr(Expr::Kind::kNot, offset, Children(std::move(operand)));
    }
    return ParseCompare();
  }

  absl::StatusOr<ExprPtr> ParseCompare() {
    size_t offset = Current().offset;
    ASSIGN_OR_RETURN(ExprPtr first, ParseMath1());
    std::vector<ExprPtr> children;
    std::vector<std::string> ops;
    children.push_back(std::move(first));
    while (true) {
      std::string op;
      if (Current().kind == TokenKind::kOperator &&
          (Current().text == "==" || Current().text == "!=" || Current().text == "<" ||
           Current().text == "<=" || Current().text == ">" || Current().text == ">=")) {
        op = Current().text;
        Advance();
      } else if (IsName("in")) {
        op = "in";
        Advance();
      } else if (IsName("not") && Peek().kind == TokenKind::kName && Peek().text == "in") {
        op = "notin";
        Advance();
        Advance();
      } else {
        break;
      }
      ASSIGN_OR_RETURN(ExprPtr operand, ParseMath1());
      children.push_back(std::move(operand));
      ops.push_back(std::move(op));
    }
    if (ops.empty()) return std::move(children[0]);
    ASSIGN_OR_RETURN(ExprPtr expr, MakeExpr(Expr::Kind::kCompare, offset, std::move(children)));
    expr->ops = std::move(ops);
    return expr;
  }

  absl::StatusOr<ExprPtr> Binary(std::string op, size_t offset, ExprPtr left, ExprPtr right) {
    ASSIGN_OR_RETURN(ExprPtr expr, MakeExpr(Expr::Kind::kBinary, offset,
                                            Children(std::move(left), std::move(right))));
    expr->name = std::move(op);
    return expr;
  }

  absl::StatusOr<ExprPtr> ParseMath1() {
    ASSIGN_OR_RETURN(ExprPtr left, ParseConcat());
    while (IsOp("+") || IsOp("-")) {
      std::string op = Current().text;
      size_t offset = Current().offset;
      Advance();
      ASSIGN_OR_RETURN(ExprPtr right, ParseConcat());
      ASSIGN_OR_RETURN(left, Binary(op, offset, std::move(left), std::move(right)));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseConcat() {
    ASSIGN_OR_RETURN(ExprPtr left, ParseMath2());
    while (IsOp("~")) {
      size_t offset = Current().offset;
      Advance();
      ASSIGN_OR_RETURN(ExprPtr right, ParseMath2());
      ASSIGN_OR_RETURN(left, Binary("~", offset, std::move(left), std::move(right)));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseMath2() {
    ASSIGN_OR_RETURN(ExprPtr left, ParsePow());
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      std::string op = Current().text;
      size_t offset = Current().offset;
      Advance();
      ASSIGN_OR_RETURN(ExprPtr right, ParsePow());
      ASSIGN_OR_RETURN(left, Binary(op, offset, std::move(left), std::move(right)));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParsePow() {
    ASSIGN_OR_RETURN(ExprPtr left, ParseUnary(true));
    while (IsOp("**")) {
      size_t offset = Current().offset;
      Advance();
      ASSIGN_OR_RETURN(ExprPtr right, ParseUnary(true));
      ASSIGN_OR_RETURN(left, Binary("**", offset, std::move(left), std::move(right)));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseUnary(bool with_filter) {
    DepthGuard guard(*this);
    if (guard.too_deep()) return TooDeep();
    ExprPtr node;
    size_t offset = Current().offset;
    if (IsOp("-") || IsOp("+")) {
      Expr::Kind kind = IsOp("-") ? Expr::Kind::kNeg : Expr::Kind::kPos;
      Advance();
      ASSIGN_OR_RETURN(ExprPtr operand, ParseUnary(false));
      ASSIGN_OR_RETURN(node, MakeExpr(kind, offset, Children(std::move(operand))));
    } else {
      ASSIGN_OR_RETURN(node, ParsePrimary());
    }
    ASSIGN_OR_RETURN(node, ParsePostfix(std::move(node)));
    if (with_filter) {
      ASSIGN_OR_RETURN(node, ParseFilterExpr(std::move(node)));
    }
    return node;
  }

  absl::StatusOr<ExprPtr> Literal(Value value, size_t offset) {
    ASSIGN_OR_RETURN(ExprPtr expr, MakeExpr(Expr::Kind::kLiteral, offset, {}));
    expr->literal = std::move(value);
    return expr;
  }

  absl::StatusOr<ExprPtr> ParsePrimary() {
    const Token& token = Current();
    size_t offset = token.offset;
    switch (token.kind) {
      case TokenKind::kName: {
        std::string name = token.text;
        Advance();
        if (name == "true" || name == "True") return Literal(Value::Bool(true), offset);
        if (name == "false" || name == "False") return Literal(Value::Bool(false), offset);
        if (name == "none" || name == "None") return Literal(Value::None(), offset);
        ASSIGN_OR_RETURN(ExprPtr expr, MakeExpr(Expr::Kind::kName, offset, {}));
        expr->name = std::move(name);
        return expr;
      }
      case TokenKind::kString: {
        std::string text;
        while (Current().kind == TokenKind::kString) {
          text += Current().text;
          Advance();
        }
        return Literal(Value::String(std::move(text)), offset);
      }
      case TokenKind::kInteger: {
        int64_t value = token.int_value;
        Advance();
        return Literal(Value::Int(value), offset);
      }
      case TokenKind::kFloat: {
        double value = token.float_value;
        Advance();
        return Literal(Value::Float(value), offset);
      }
      case TokenKind::kOperator:
        if (token.text == "(") {
          Advance();
          ASSIGN_OR_RETURN(ExprPtr expr, ParseTuple(true, {}, true));
          RETURN_IF_ERROR(ExpectOp(")"));
          return expr;
        }
        if (token.text == "[") return ParseList();
        if (token.text == "{") return ParseDict();
        break;
      default:
        break;
    }
    return Unexpected("an expression");
  }

  absl::StatusOr<ExprPtr> ParseList() {
    size_t offset = Current().offset;
    Advance();
    std::vector<ExprPtr> items;
    while (!IsOp("]")) {
      if (!items.empty()) RETURN_IF_ERROR(ExpectOp(","));
      if (IsOp("]")) break;
      ASSIGN_OR_RETURN(ExprPtr item, ParseExpression(true));
      items.push_back(std::move(item));
    }
    Advance();
    return MakeExpr(Expr::Kind::kList, offset, std::move(items));
  }

  absl::StatusOr<ExprPtr> ParseDict() {
    size_t offset = Current().offset;
    Advance();
    std::vector<ExprPtr> items;
    while (!IsOp("}")) {
      if (!items.empty()) RETURN_IF_ERROR(ExpectOp(","));
      if (IsOp("}")) break;
      ASSIGN_OR_RETURN(ExprPtr key, ParseExpression(true));
      RETURN_IF_ERROR(ExpectOp(":"));
      ASSIGN_OR_RETURN(ExprPtr value, ParseExpression(true));
      items.push_back(std::move(key));
      items.push_back(std::move(value));
    }
    Advance();
    return MakeExpr(Expr::Kind::kDict, offset, std::move(items));
  }

  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr node) {
    while (true) {
      size_t offset = Current().offset;
      if (IsOp(".")) {
        Advance();
        if (Current().kind == TokenKind::kName) {
          std::string name = Current().text;
          Advance();
          ASSIGN_OR_RETURN(node, MakeExpr(Expr::Kind::kGetAttr, offset, Children(std::move(node))));
          node->name = std::move(name);
        } else if (Current().kind == TokenKind::kInteger) {
          ASSIGN_OR_RETURN(ExprPtr index, Literal(Value::Int(Current().int_value), offset));
          Advance();
          ASSIGN_OR_RETURN(node, MakeExpr(Expr::Kind::kGetItem, offset,
                                          Children(std::move(node), std::move(index))));
        } else {
          return Unexpected("an attribute name");
        }
      } else if (IsOp("[")) {
        Advance();
        ASSIGN_OR_RETURN(node, ParseSubscript(std::move(node), offset));
        RETURN_IF_ERROR(ExpectOp("]"));
      } else if (IsOp("(")) {
        ASSIGN_OR_RETURN(node, ParseCall(Expr::Kind::kCall, std::move(node), offset));
      } else {
        return node;
      }
    }
  }

  absl::StatusOr<ExprPtr> ParseSubscript(ExprPtr node, size_t offset) {
    ExprPtr start;
    if (!IsOp(":")) {
      ASSIGN_OR_RETURN(start, ParseExpression(true));
      if (!IsOp(":")) {
        return MakeExpr(Expr::Kind::kGetItem, offset, Children(std::move(node), std::move(start)));
      }
    }
    Advance();  // ':'
    ExprPtr stop;
    ExprPtr step;
    if (!IsOp("]") && !IsOp(":")) {
      ASSIGN_OR_RETURN(stop, ParseExpression(true));
    }
    if (SkipOp(":")) {
      if (!IsOp("]")) {
        ASSIGN_OR_RETURN(step, ParseExpression(true));
      }
    }
    std::vector<ExprPtr> children;
    children.push_back(std::move(node));
    children.push_back(std::move(start));
    children.push_back(std::move(stop));
    children.push_back(std::move(step));
    return MakeExpr(Expr::Kind::kSlice, offset, std::move(children));
  }

  // Parses "(args)" after `callee`; for filters and tests `callee` is the operand.
  absl::StatusOr<ExprPtr> ParseCall(Expr::Kind kind, ExprPtr callee, size_t offset) {
    RETURN_IF_ERROR(ExpectOp("("));
    std::vector<ExprPtr> children;
    children.push_back(std::move(callee));
    std::vector<std::string> keyword_names;
    bool first = true;
    while (!IsOp(")")) {
      if (!first) RETURN_IF_ERROR(ExpectOp(","));
      first = false;
      if (IsOp(")")) break;
      if (IsOp("*") || IsOp("**")) {
        return ErrorAt(Current().offset, "*args and **kwargs in calls are not supported");
      }
      if (Current().kind == TokenKind::kName && Peek().kind == TokenKind::kOperator &&
          Peek().text == "=") {
        keyword_names.push_back(Current().text);
        Advance();
        Advance();
        ASSIGN_OR_RETURN(ExprPtr value, ParseExpression(true));
        children.push_back(std::move(value));
      } else {
        if (!keyword_names.empty()) {
          return ErrorAt(Current().offset, "positional argument follows keyword argument");
        }
        ASSIGN_OR_RETURN(ExprPtr value, ParseExpression(true));
        children.push_back(std::move(value));
      }
    }
    Advance();
    ASSIGN_OR_RETURN(ExprPtr expr, MakeExpr(kind, offset, std::move(children)));
    expr->keyword_names = std::move(keyword_names);
    return expr;
  }

  absl::StatusOr<std::string> ParseDottedName() {
    ASSIGN_OR_RETURN(std::string name, ExpectName());
    while (SkipOp(".")) {
      ASSIGN_OR_RETURN(std::string part, ExpectName());
      absl::StrAppend(&name, ".", part);
    }
    return name;
  }

  absl::StatusOr<ExprPtr> ParseFilterExpr(ExprPtr node) {
    while (true) {
      size_t offset = Current().offset;
      if (IsOp("|")) {
        Advance();
        size_t name_offset = Current().offset;
        ASSIGN_OR_RETURN(std::string name, ParseDottedName());
        if (!IsKnownFilter(name)) {
          return ErrorAt(name_offset, absl::StrCat("no filter named '", name, "'"));
        }
        if (IsOp("(")) {
          ASSIGN_OR_RETURN(node, ParseCall(Expr::Kind::kFilter, std::move(node), offset));
        } else {
          ASSIGN_OR_RETURN(node, MakeExpr(Expr::Kind::kFilter, offset, Children(std::move(node))));
        }
        node->name = std::move(name);
      } else if (IsName("is")) {
        Advance();
        bool negated = SkipName("not");
        size_t name_offset = Current().offset;
        ASSIGN_OR_RETURN(std::string name, ParseDottedName());
        if (!IsKnownTest(name)) {
          return ErrorAt(name_offset, absl::StrCat("no test named '", name, "'"));
        }
        if (IsOp("(")) {
          ASSIGN_OR_RETURN(node, ParseCall(Expr::Kind::kTest, std::move(node), offset));
        } else {
          const Token& token = Current();
          bool takes_argument =
              (token.kind == TokenKind::kName || token.kind == TokenKind::kString ||
               token.kind == TokenKind::kInteger || token.kind == TokenKind::kFloat ||
               (token.kind == TokenKind::kOperator &&
                (token.text == "(" || token.text == "[" || token.text == "{"))) &&
              !(token.kind == TokenKind::kName &&
                (token.text == "else" || token.text == "or" || token.text == "and"));
          if (takes_argument) {
            if (IsName("is")) return ErrorAt(token.offset, "cannot chain multiple tests with is");
            ASSIGN_OR_RETURN(ExprPtr argument, ParsePrimary());
            ASSIGN_OR_RETURN(argument, ParsePostfix(std::move(argument)));
            ASSIGN_OR_RETURN(node, MakeExpr(Expr::Kind::kTest, offset,
                                            Children(std::move(node), std::move(argument))));
          } else {
            ASSIGN_OR_RETURN(node, MakeExpr(Expr::Kind::kTest, offset, Children(std::move(node))));
          }
        }
        node->name = std::move(name);
        node->negated = negated;
      } else if (IsOp("(")) {
        ASSIGN_OR_RETURN(node, ParseCall(Expr::Kind::kCall, std::move(node), offset));
      } else {
        return node;
      }
    }
  }

  std::string_view source_;
  std::vector<Token> tokens_;
  size_t pos_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
};

}  // namespace

absl::StatusOr<std::shared_ptr<const ParsedTemplate>> ParseTemplate(std::string_view source) {
  auto parsed = std::make_shared<ParsedTemplate>();
  parsed->source = NormalizeTemplateSource(source);
  ASSIGN_OR_RETURN(std::vector<Token> tokens, Tokenize(parsed->source));
  Parser parser(parsed->source, std::move(tokens));
  ASSIGN_OR_RETURN(parsed->body, parser.ParseAll());
  return std::shared_ptr<const ParsedTemplate>(std::move(parsed));
}

}  // namespace exo::runtime::jinja
