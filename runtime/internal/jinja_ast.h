// Syntax tree of a parsed Jinja template. Built by jinja_parser, walked by jinja_interpreter.
// The parser bounds the tree's depth (kMaxSyntaxDepth), so recursive walks are safe.
#ifndef EXO_RUNTIME_INTERNAL_JINJA_AST_H_
#define EXO_RUNTIME_INTERNAL_JINJA_AST_H_

#include <memory>
#include <string>
#include <vector>

#include "runtime/internal/jinja_value.h"

namespace exo::runtime::jinja {

inline constexpr int kMaxSyntaxDepth = 96;

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    kLiteral,   // literal
    kName,      // name
    kList,      // children: items; name "tuple" for a tuple
    kDict,      // children: key0, value0, key1, value1, ...
    kGetAttr,   // children[0].name
    kGetItem,   // children[0][children[1]]
    kSlice,     // children[0][children[1]:children[2]:children[3]] (null = omitted)
    kCall,      // children[0](children[1..]); the last keyword_names.size() are keyword args
    kFilter,    // children[0] | name(children[1..])
    kTest,      // children[0] is [not] name(children[1..])
    kNeg,       // -children[0]
    kPos,       // +children[0]
    kNot,       // not children[0]
    kBinary,    // children[0] name children[1]; name is + - * / // % ** ~
    kCompare,   // children[0] ops[0] children[1] ops[1] children[2] ... (chained)
    kAnd,       // children[0] and children[1]
    kOr,        // children[0] or children[1]
    kCondExpr,  // children[0] if children[1] else children[2] (null: undefined)
  };
  Kind kind = Kind::kLiteral;
  size_t offset = 0;  // into the normalised source, for error messages
  int depth = 1;      // 1 + the deepest child
  Value literal;
  std::string name;
  bool negated = false;           // kTest: "is not"
  std::vector<ExprPtr> children;  // may hold nulls where noted
  std::vector<std::string> keyword_names;
  std::vector<std::string> ops;  // kCompare: == != < <= > >= in notin
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

struct Stmt {
  enum class Kind {
    kText,      // text
    kOutput,    // {{ exprs[0] }}
    kIf,        // exprs: one condition per branch; bodies: one per branch, plus else if has_else
    kFor,       // for names in exprs[0] [if exprs[1]]: bodies[0], else bodies[1]
    kSet,       // set names = exprs[0] (several names unpack a sequence)
    kSetAttr,   // set names[0].names[1] = exprs[0] (namespace attribute)
    kSetBlock,  // set names[0] %} bodies[0] {% endset
    kMacro,     // macro names[0](names[1..] = exprs[...] or null defaults): bodies[0]
    kBreak,
    kContinue,
    kScope,  // bodies[0] rendered in place (the {% generation %} marker of Hugging Face)
  };
  Kind kind = Kind::kText;
  size_t offset = 0;
  std::string text;
  std::vector<std::string> names;
  std::vector<ExprPtr> exprs;
  std::vector<Body> bodies;
  bool has_else = false;
};

}  // namespace exo::runtime::jinja

#endif  // EXO_RUNTIME_INTERNAL_JINJA_AST_H_
