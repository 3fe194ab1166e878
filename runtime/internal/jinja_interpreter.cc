#include "runtime/internal/jinja_interpreter.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "runtime/internal/jinja_builtins.h"
#include "runtime/internal/jinja_lexer.h"

namespace exo::runtime::jinja {
namespace {

absl::Status TypeError(std::string message) {
  return absl::InvalidArgumentError(std::move(message));
}

absl::Status UndefinedError(const Value& value) {
  return absl::InvalidArgumentError(value.UndefinedMessage());
}

// Python floor division and modulo on integers.
int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}
int64_t FloorMod(int64_t a, int64_t b) {
  int64_t m = a % b;
  if (m != 0 && ((m < 0) != (b < 0))) m += b;
  return m;
}

}  // namespace

const Value* Frame::Lookup(std::string_view name) const {
  for (const Frame* frame = this; frame != nullptr; frame = frame->parent) {
    for (const auto& [key, value] : frame->vars) {
      if (key == name) return &value;
    }
  }
  return nullptr;
}

void Frame::Set(std::string_view name, Value value) {
  for (auto& [key, existing] : vars) {
    if (key == name) {
      existing = std::move(value);
      return;
    }
  }
  vars.emplace_back(std::string(name), std::move(value));
}

Interpreter::Interpreter(const ParsedTemplate& parsed, const RenderLimits& limits)
    : parsed_(parsed), limits_(limits) {}

absl::StatusOr<std::string> Interpreter::Render(
    std::vector<std::pair<std::string, Value>> variables) {
  Frame globals;
  AddGlobals(globals);
  Frame root;
  root.parent = &globals;
  root.vars = std::move(variables);
  root_ = &root;
  std::string out;
  absl::Status status = ExecBody(parsed_.body, root, out);
  root_ = nullptr;
  if (!status.ok()) {
    if (raised_) return status;
    int line = 0;
    int column = 0;
    LineAndColumn(parsed_.source, error_offset_, line, column);
    return absl::Status(status.code(), absl::StrCat("chat template error at line ", line,
                                                    ", column ", column, ": ", status.message()));
  }
  return out;
}

absl::Status Interpreter::Step() {
  if (++steps_ > limits_.max_steps) {
    return absl::ResourceExhaustedError("chat template exceeded its step limit");
  }
  return absl::OkStatus();
}

absl::Status Interpreter::ChargeWalk(const Value& value) {
  steps_ += static_cast<int64_t>(std::min<uint64_t>(value.weight() / 16, uint64_t{1} << 40));
  if (steps_ > limits_.max_steps) {
    return absl::ResourceExhaustedError("chat template exceeded its step limit");
  }
  return absl::OkStatus();
}

absl::Status Interpreter::ChargeArgs(const CallArgs& args) {
  for (const Value& value : args.positional) RETURN_IF_ERROR(ChargeWalk(value));
  for (const auto& [key, value] : args.keyword) RETURN_IF_ERROR(ChargeWalk(value));
  return absl::OkStatus();
}

absl::Status Interpreter::ChargeBytes(size_t bytes) {
  bytes_built_ += static_cast<int64_t>(bytes);
  if (bytes_built_ > limits_.max_bytes_built) {
    return absl::ResourceExhaustedError("chat template built too much text");
  }
  return absl::OkStatus();
}

absl::Status Interpreter::CheckValueSize(size_t size) const {
  if (size > limits_.max_value_size) {
    return absl::ResourceExhaustedError("chat template built a value that is too large");
  }
  return absl::OkStatus();
}

void Interpreter::AddGlobals(Frame& globals) {
  globals.Set("raise_exception", Value::MakeCallable("raise_exception", [this](CallArgs& args) {
                MarkRaised();
                std::string message = args.positional.empty() ? "" : ToPyStr(args.positional[0]);
                return absl::StatusOr<Value>(absl::InvalidArgumentError(message));
              }));
  globals.Set("namespace",
              Value::MakeCallable("namespace", [](CallArgs& args) -> absl::StatusOr<Value> {
                Object object;
                object.is_namespace = true;
                for (const Value& positional : args.positional) {
                  if (!positional.is_object() || positional.object().is_namespace) {
                    return TypeError("namespace() takes a dict or keyword arguments");
                  }
                  for (const auto& [key, value] : positional.object().entries)
                    object.Set(key, value);
                }
                for (auto& [key, value] : args.keyword) object.Set(key, value);
                for (const auto& [key, value] : object.entries) {
                  if (value.contains_namespace() || value.is_callable()) {
                    return TypeError("a namespace cannot hold another namespace or a function");
                  }
                }
                return Value::MakeObject(std::move(object));
              }));
  globals.Set(
      "range", Value::MakeCallable("range", [this](CallArgs& args) -> absl::StatusOr<Value> {
        if (!args.keyword.empty() || args.positional.empty() || args.positional.size() > 3) {
          return TypeError("range() takes 1 to 3 integer arguments");
        }
        int64_t bounds[3] = {0, 0, 1};
        for (const Value& v : args.positional) {
          if (v.kind() != Value::Kind::kInt && v.kind() != Value::Kind::kBool) {
            return TypeError(
                absl::StrCat("'", PyTypeName(v), "' object cannot be interpreted as an integer"));
          }
        }
        if (args.positional.size() == 1) {
          bounds[1] = args.positional[0].int_value();
        } else {
          bounds[0] = args.positional[0].int_value();
          bounds[1] = args.positional[1].int_value();
          if (args.positional.size() == 3) bounds[2] = args.positional[2].int_value();
        }
        if (bounds[2] == 0) return TypeError("range() arg 3 must not be zero");
        // Count without overflow: work in long double-free integer arithmetic on the span.
        __int128 span = static_cast<__int128>(bounds[1]) - bounds[0];
        __int128 count = 0;
        if (bounds[2] > 0 && span > 0) count = (span + bounds[2] - 1) / bounds[2];
        if (bounds[2] < 0 && span < 0)
          count = (-span + (-static_cast<__int128>(bounds[2])) - 1) /
                  (-static_cast<__int128>(bounds[2]));
        if (count > static_cast<__int128>(limits_.max_value_size)) {
          return absl::ResourceExhaustedError("range() too large for a chat template");
        }
        Array items;
        items.reserve(static_cast<size_t>(count));
        for (__int128 i = 0; i < count; ++i) {
          items.push_back(Value::Int(static_cast<int64_t>(bounds[0] + i * bounds[2])));
        }
        return Value::MakeArray(std::move(items));
      }));
  globals.Set("dict", Value::MakeCallable("dict", [](CallArgs& args) -> absl::StatusOr<Value> {
                Object object;
                for (const Value& positional : args.positional) {
                  if (!positional.is_object())
                    return TypeError("dict() takes a dict or keyword arguments");
                  for (const auto& [key, value] : positional.object().entries)
                    object.Set(key, value);
                }
                for (auto& [key, value] : args.keyword) object.Set(key, value);
                return Value::MakeObject(std::move(object));
              }));
}

// ---- Statements ----

absl::Status Interpreter::ExecBody(const Body& body, Frame& frame, std::string& out) {
  for (const StmtPtr& stmt : body) {
    RETURN_IF_ERROR(Exec(*stmt, frame, out));
    if (flow_ != Flow::kNormal) return absl::OkStatus();
  }
  return absl::OkStatus();
}

absl::Status Interpreter::Exec(const Stmt& stmt, Frame& frame, std::string& out) {
  RETURN_IF_ERROR(Step());
  error_offset_ = stmt.offset;
  switch (stmt.kind) {
    case Stmt::Kind::kText:
      out += stmt.text;
      break;
    case Stmt::Kind::kOutput: {
      ASSIGN_OR_RETURN(Value value, Eval(*stmt.exprs[0], frame));
      RETURN_IF_ERROR(ChargeWalk(value));
      std::string text = ToPyStr(value);
      RETURN_IF_ERROR(ChargeBytes(text.size()));
      out += text;
      break;
    }
    case Stmt::Kind::kIf: {
      for (size_t i = 0; i < stmt.exprs.size(); ++i) {
        ASSIGN_OR_RETURN(Value condition, Eval(*stmt.exprs[i], frame));
        if (condition.Truthy()) return ExecBody(stmt.bodies[i], frame, out);
      }
      if (stmt.has_else) return ExecBody(stmt.bodies.back(), frame, out);
      break;
    }
    case Stmt::Kind::kFor:
      return ExecFor(stmt, frame, out);
    case Stmt::Kind::kSet: {
      ASSIGN_OR_RETURN(Value value, Eval(*stmt.exprs[0], frame));
      return BindTargets(stmt.names, value, frame);
    }
    case Stmt::Kind::kSetAttr: {
      ASSIGN_OR_RETURN(Value value, Eval(*stmt.exprs[0], frame));
      const Value* target = frame.Lookup(stmt.names[0]);
      if (target == nullptr || !target->is_object() || !target->object().is_namespace) {
        return TypeError("cannot assign attribute on non-namespace object");
      }
      if (value.contains_namespace() || value.is_callable()) {
        return TypeError("a namespace cannot hold another namespace or a function");
      }
      target->mutable_object().Set(stmt.names[1], std::move(value));
      break;
    }
    case Stmt::Kind::kSetBlock: {
      std::string captured;
      RETURN_IF_ERROR(ExecBody(stmt.bodies[0], frame, captured));
      frame.Set(stmt.names[0], Value::String(std::move(captured)));
      break;
    }
    case Stmt::Kind::kMacro: {
      const Stmt* macro = &stmt;
      frame.Set(stmt.names[0], Value::MakeCallable(stmt.names[0], [this, macro](CallArgs& args) {
                  return CallMacro(*macro, args);
                }));
      break;
    }
    case Stmt::Kind::kBreak:
      flow_ = Flow::kBreak;
      break;
    case Stmt::Kind::kContinue:
      flow_ = Flow::kContinue;
      break;
    case Stmt::Kind::kScope:
      return ExecBody(stmt.bodies[0], frame, out);
  }
  if (out.size() > limits_.max_output_bytes) {
    return absl::ResourceExhaustedError("chat template output too large");
  }
  return absl::OkStatus();
}

absl::Status Interpreter::BindTargets(const std::vector<std::string>& names, const Value& value,
                                      Frame& frame) {
  if (names.size() == 1) {
    frame.Set(names[0], value);
    return absl::OkStatus();
  }
  if (value.is_undefined()) return UndefinedError(value);
  ASSIGN_OR_RETURN(Array items, Iterate(value));
  if (items.size() != names.size()) {
    return TypeError(items.size() > names.size()
                         ? absl::StrCat("too many values to unpack (expected ", names.size(), ")")
                         : absl::StrCat("not enough values to unpack (expected ", names.size(),
                                        ", got ", items.size(), ")"));
  }
  for (size_t i = 0; i < names.size(); ++i) frame.Set(names[i], items[i]);
  return absl::OkStatus();
}

absl::Status Interpreter::ExecFor(const Stmt& stmt, Frame& frame, std::string& out) {
  ASSIGN_OR_RETURN(Value iterable, Eval(*stmt.exprs[0], frame));
  if (iterable.is_none() || iterable.kind() == Value::Kind::kInt ||
      iterable.kind() == Value::Kind::kFloat || iterable.kind() == Value::Kind::kBool ||
      iterable.is_callable()) {
    return TypeError(absl::StrCat("'", PyTypeName(iterable), "' object is not iterable"));
  }
  RETURN_IF_ERROR(ChargeWalk(iterable));
  ASSIGN_OR_RETURN(Array items, Iterate(iterable));
  if (stmt.exprs.size() > 1) {
    Array kept;
    for (const Value& item : items) {
      RETURN_IF_ERROR(Step());
      Frame scope;
      scope.parent = &frame;
      RETURN_IF_ERROR(BindTargets(stmt.names, item, scope));
      ASSIGN_OR_RETURN(Value keep, Eval(*stmt.exprs[1], scope));
      if (keep.Truthy()) kept.push_back(item);
    }
    items = std::move(kept);
  }
  const int64_t length = static_cast<int64_t>(items.size());
  for (int64_t i = 0; i < length; ++i) {
    RETURN_IF_ERROR(Step());
    Frame scope;
    scope.parent = &frame;
    RETURN_IF_ERROR(BindTargets(stmt.names, items[i], scope));
    Object loop;
    loop.entries.reserve(12);
    loop.entries.emplace_back("index", Value::Int(i + 1));
    loop.entries.emplace_back("index0", Value::Int(i));
    loop.entries.emplace_back("revindex", Value::Int(length - i));
    loop.entries.emplace_back("revindex0", Value::Int(length - i - 1));
    loop.entries.emplace_back("first", Value::Bool(i == 0));
    loop.entries.emplace_back("last", Value::Bool(i == length - 1));
    loop.entries.emplace_back("length", Value::Int(length));
    loop.entries.emplace_back("depth", Value::Int(1));
    loop.entries.emplace_back("depth0", Value::Int(0));
    loop.entries.emplace_back("previtem",
                              i > 0 ? items[i - 1] : Value::Undefined("there is no previous item"));
    loop.entries.emplace_back(
        "nextitem", i + 1 < length ? items[i + 1] : Value::Undefined("there is no next item"));
    loop.entries.emplace_back(
        "cycle", Value::MakeCallable("cycle", [i](CallArgs& args) -> absl::StatusOr<Value> {
          if (args.positional.empty()) return TypeError("no items for cycling given");
          return args.positional[static_cast<size_t>(i) % args.positional.size()];
        }));
    ASSIGN_OR_RETURN(Value loop_value, Value::MakeObject(std::move(loop)));
    scope.Set("loop", std::move(loop_value));
    RETURN_IF_ERROR(ExecBody(stmt.bodies[0], scope, out));
    if (flow_ == Flow::kBreak) {
      flow_ = Flow::kNormal;
      break;
    }
    flow_ = Flow::kNormal;
  }
  if (length == 0 && stmt.has_else) return ExecBody(stmt.bodies[1], frame, out);
  return absl::OkStatus();
}

absl::StatusOr<Value> Interpreter::CallMacro(const Stmt& macro, CallArgs& args) {
  if (call_depth_ >= limits_.max_call_depth) {
    return absl::ResourceExhaustedError("chat template macro calls nested too deeply");
  }
  const size_t num_params = macro.names.size() - 1;
  Frame scope;
  scope.parent = root_;
  std::vector<bool> bound(num_params, false);
  Array extra_positional;
  for (size_t i = 0; i < args.positional.size(); ++i) {
    if (i < num_params) {
      scope.Set(macro.names[i + 1], args.positional[i]);
      bound[i] = true;
    } else {
      extra_positional.push_back(args.positional[i]);
    }
  }
  Object extra_keyword;
  for (auto& [key, value] : args.keyword) {
    bool found = false;
    for (size_t i = 0; i < num_params; ++i) {
      if (macro.names[i + 1] == key) {
        if (bound[i]) {
          return TypeError(absl::StrCat("macro '", macro.names[0],
                                        "' got multiple values for argument '", key, "'"));
        }
        scope.Set(key, value);
        bound[i] = true;
        found = true;
      }
    }
    if (!found) extra_keyword.Set(key, value);
  }
  for (size_t i = 0; i < num_params; ++i) {
    if (bound[i]) continue;
    if (macro.exprs[i] != nullptr) {
      ASSIGN_OR_RETURN(Value default_value, Eval(*macro.exprs[i], scope));
      scope.Set(macro.names[i + 1], std::move(default_value));
    } else {
      scope.Set(macro.names[i + 1], Value::Undefined(absl::StrCat("parameter '", macro.names[i + 1],
                                                                  "' was not provided")));
    }
  }
  ASSIGN_OR_RETURN(Value varargs, Value::MakeArray(std::move(extra_positional), true));
  ASSIGN_OR_RETURN(Value kwargs, Value::MakeObject(std::move(extra_keyword)));
  scope.Set("varargs", std::move(varargs));
  scope.Set("kwargs", std::move(kwargs));
  ++call_depth_;
  std::string out;
  absl::Status status = ExecBody(macro.bodies[0], scope, out);
  --call_depth_;
  flow_ = Flow::kNormal;
  if (!status.ok()) return status;
  return Value::String(std::move(out));
}

absl::StatusOr<Value> Interpreter::CallValue(const Value& callee, CallArgs& args) {
  if (callee.is_undefined()) return UndefinedError(callee);
  if (!callee.is_callable()) {
    return TypeError(absl::StrCat("'", PyTypeName(callee), "' object is not callable"));
  }
  return callee.callable().fn(args);
}

// ---- Expressions ----

absl::StatusOr<CallArgs> Interpreter::EvalArgs(const Expr& expr, Frame& frame) {
  CallArgs args;
  const size_t num_keyword = expr.keyword_names.size();
  const size_t num_positional = expr.children.size() - 1 - num_keyword;
  for (size_t i = 0; i < num_positional; ++i) {
    ASSIGN_OR_RETURN(Value value, Eval(*expr.children[1 + i], frame));
    args.positional.push_back(std::move(value));
  }
  for (size_t i = 0; i < num_keyword; ++i) {
    ASSIGN_OR_RETURN(Value value, Eval(*expr.children[1 + num_positional + i], frame));
    args.keyword.emplace_back(expr.keyword_names[i], std::move(value));
  }
  return args;
}

absl::StatusOr<Value> Interpreter::Eval(const Expr& expr, Frame& frame) {
  RETURN_IF_ERROR(Step());
  error_offset_ = expr.offset;
  switch (expr.kind) {
    case Expr::Kind::kLiteral:
      return expr.literal;
    case Expr::Kind::kName: {
      const Value* value = frame.Lookup(expr.name);
      if (value == nullptr) return Value::Undefined(absl::StrCat("'", expr.name, "' is undefined"));
      return *value;
    }
    case Expr::Kind::kList: {
      Array items;
      items.reserve(expr.children.size());
      for (const ExprPtr& child : expr.children) {
        ASSIGN_OR_RETURN(Value item, Eval(*child, frame));
        items.push_back(std::move(item));
      }
      return Value::MakeArray(std::move(items), expr.name == "tuple");
    }
    case Expr::Kind::kDict: {
      Object object;
      for (size_t i = 0; i + 1 < expr.children.size(); i += 2) {
        ASSIGN_OR_RETURN(Value key, Eval(*expr.children[i], frame));
        ASSIGN_OR_RETURN(Value value, Eval(*expr.children[i + 1], frame));
        if (!key.is_string()) return TypeError("dict keys must be strings in chat templates");
        object.Set(key.string_value(), std::move(value));
      }
      return Value::MakeObject(std::move(object));
    }
    case Expr::Kind::kGetAttr: {
      ASSIGN_OR_RETURN(Value object, Eval(*expr.children[0], frame));
      error_offset_ = expr.offset;
      if (object.is_string()) RETURN_IF_ERROR(ChargeWalk(object));  // a method will walk it
      return GetAttribute(*this, object, expr.name);
    }
    case Expr::Kind::kGetItem: {
      ASSIGN_OR_RETURN(Value object, Eval(*expr.children[0], frame));
      ASSIGN_OR_RETURN(Value key, Eval(*expr.children[1], frame));
      error_offset_ = expr.offset;
      if (object.is_string()) RETURN_IF_ERROR(ChargeWalk(object));  // code point indexing
      return GetItem(*this, object, key);
    }
    case Expr::Kind::kSlice: {
      ASSIGN_OR_RETURN(Value object, Eval(*expr.children[0], frame));
      Value bounds[3] = {Value::None(), Value::None(), Value::None()};
      for (int i = 0; i < 3; ++i) {
        if (expr.children[1 + i] != nullptr) {
          ASSIGN_OR_RETURN(bounds[i], Eval(*expr.children[1 + i], frame));
        }
      }
      error_offset_ = expr.offset;
      RETURN_IF_ERROR(ChargeWalk(object));
      return EvalSlice(object, bounds[0], bounds[1], bounds[2]);
    }
    case Expr::Kind::kCall: {
      ASSIGN_OR_RETURN(Value callee, Eval(*expr.children[0], frame));
      ASSIGN_OR_RETURN(CallArgs args, EvalArgs(expr, frame));
      error_offset_ = expr.offset;
      RETURN_IF_ERROR(ChargeArgs(args));
      return CallValue(callee, args);
    }
    case Expr::Kind::kFilter: {
      ASSIGN_OR_RETURN(Value operand, Eval(*expr.children[0], frame));
      ASSIGN_OR_RETURN(CallArgs args, EvalArgs(expr, frame));
      error_offset_ = expr.offset;
      RETURN_IF_ERROR(ChargeWalk(operand));
      RETURN_IF_ERROR(ChargeArgs(args));
      return ApplyFilter(*this, expr.name, operand, args);
    }
    case Expr::Kind::kTest: {
      ASSIGN_OR_RETURN(Value operand, Eval(*expr.children[0], frame));
      ASSIGN_OR_RETURN(CallArgs args, EvalArgs(expr, frame));
      error_offset_ = expr.offset;
      RETURN_IF_ERROR(ChargeWalk(operand));
      RETURN_IF_ERROR(ChargeArgs(args));
      ASSIGN_OR_RETURN(bool result, ApplyTest(*this, expr.name, operand, args));
      return Value::Bool(result != expr.negated);
    }
    case Expr::Kind::kNeg:
    case Expr::Kind::kPos: {
      ASSIGN_OR_RETURN(Value operand, Eval(*expr.children[0], frame));
      if (operand.is_undefined()) return UndefinedError(operand);
      if (!operand.is_number()) {
        return TypeError(absl::StrCat("bad operand type for unary ",
                                      expr.kind == Expr::Kind::kNeg ? "-" : "+", ": '",
                                      PyTypeName(operand), "'"));
      }
      if (expr.kind == Expr::Kind::kPos) {
        if (operand.kind() == Value::Kind::kBool) return Value::Int(operand.int_value());
        return operand;
      }
      if (operand.kind() == Value::Kind::kFloat) return Value::Float(-operand.float_value());
      if (operand.int_value() == INT64_MIN) return TypeError("integer overflow");
      return Value::Int(-operand.int_value());
    }
    case Expr::Kind::kNot: {
      ASSIGN_OR_RETURN(Value operand, Eval(*expr.children[0], frame));
      return Value::Bool(!operand.Truthy());
    }
    case Expr::Kind::kAnd: {
      ASSIGN_OR_RETURN(Value left, Eval(*expr.children[0], frame));
      if (!left.Truthy()) return left;
      return Eval(*expr.children[1], frame);
    }
    case Expr::Kind::kOr: {
      ASSIGN_OR_RETURN(Value left, Eval(*expr.children[0], frame));
      if (left.Truthy()) return left;
      return Eval(*expr.children[1], frame);
    }
    case Expr::Kind::kCondExpr: {
      ASSIGN_OR_RETURN(Value condition, Eval(*expr.children[1], frame));
      if (condition.Truthy()) return Eval(*expr.children[0], frame);
      if (expr.children[2] == nullptr) {
        return Value::Undefined(
            "the inline if-expression evaluated to false and no else "
            "section was defined.");
      }
      return Eval(*expr.children[2], frame);
    }
    case Expr::Kind::kCompare: {
      ASSIGN_OR_RETURN(Value left, Eval(*expr.children[0], frame));
      for (size_t i = 0; i < expr.ops.size(); ++i) {
        ASSIGN_OR_RETURN(Value right, Eval(*expr.children[i + 1], frame));
        error_offset_ = expr.offset;
        RETURN_IF_ERROR(ChargeWalk(left));
        RETURN_IF_ERROR(ChargeWalk(right));
        ASSIGN_OR_RETURN(bool holds, EvalCompare(expr.ops[i], left, right));
        if (!holds) return Value::Bool(false);
        left = std::move(right);
      }
      return Value::Bool(true);
    }
    case Expr::Kind::kBinary: {
      ASSIGN_OR_RETURN(Value left, Eval(*expr.children[0], frame));
      ASSIGN_OR_RETURN(Value right, Eval(*expr.children[1], frame));
      error_offset_ = expr.offset;
      RETURN_IF_ERROR(ChargeWalk(left));
      RETURN_IF_ERROR(ChargeWalk(right));
      return EvalBinary(expr.name, left, right);
    }
  }
  return absl::InternalError("unknown expression");
}

absl::StatusOr<bool> Interpreter::EvalCompare(const std::string& op, const Value& a,
                                              const Value& b) {
  if (op == "==") return PyEquals(a, b);
  if (op == "!=") return !PyEquals(a, b);
  if (op == "in") return Contains(b, a);
  if (op == "notin") {
    ASSIGN_OR_RETURN(bool contained, Contains(b, a));
    return !contained;
  }
  if (a.is_undefined()) return UndefinedError(a);
  if (b.is_undefined()) return UndefinedError(b);
  auto less = [](const Value& x, const Value& y, const std::string& shown) -> absl::StatusOr<bool> {
    absl::StatusOr<bool> result = PyLess(x, y);
    if (!result.ok()) {
      return TypeError(absl::StrCat("'", shown, "' not supported between instances of '",
                                    PyTypeName(x), "' and '", PyTypeName(y), "'"));
    }
    return result;
  };
  if (op == "<") return less(a, b, op);
  if (op == ">") return less(b, a, op);
  if (op == "<=") {
    ASSIGN_OR_RETURN(bool lt, less(a, b, op));
    return lt || PyEquals(a, b);
  }
  if (op == ">=") {
    ASSIGN_OR_RETURN(bool gt, less(b, a, op));
    return gt || PyEquals(a, b);
  }
  return absl::InternalError("unknown comparison");
}

absl::StatusOr<Value> Interpreter::EvalBinary(const std::string& op, const Value& a,
                                              const Value& b) {
  if (op == "~") {
    std::string text = ToPyStr(a) + ToPyStr(b);
    RETURN_IF_ERROR(CheckValueSize(text.size()));
    RETURN_IF_ERROR(ChargeBytes(text.size()));
    return Value::String(std::move(text));
  }
  if (a.is_undefined()) return UndefinedError(a);
  if (b.is_undefined()) return UndefinedError(b);
  auto unsupported = [&]() {
    return TypeError(absl::StrCat("unsupported operand type(s) for ", op, ": '", PyTypeName(a),
                                  "' and '", PyTypeName(b), "'"));
  };
  const bool both_numbers = a.is_number() && b.is_number();
  const bool any_float = a.kind() == Value::Kind::kFloat || b.kind() == Value::Kind::kFloat;
  if (op == "+") {
    if (both_numbers) {
      if (any_float) return Value::Float(a.float_value() + b.float_value());
      int64_t sum = 0;
      if (__builtin_add_overflow(a.int_value(), b.int_value(), &sum)) {
        return TypeError("integer overflow");
      }
      return Value::Int(sum);
    }
    if (a.is_string()) {
      if (!b.is_string()) {
        return TypeError(
            absl::StrCat("can only concatenate str (not \"", PyTypeName(b), "\") to str"));
      }
      size_t size = a.string_value().size() + b.string_value().size();
      RETURN_IF_ERROR(CheckValueSize(size));
      RETURN_IF_ERROR(ChargeBytes(size));
      return Value::String(a.string_value() + b.string_value());
    }
    if (a.is_array()) {
      if (!b.is_array() || a.is_tuple() != b.is_tuple()) {
        return TypeError(absl::StrCat("can only concatenate ", PyTypeName(a), " (not \"",
                                      PyTypeName(b), "\") to ", PyTypeName(a)));
      }
      size_t size = a.array().size() + b.array().size();
      RETURN_IF_ERROR(CheckValueSize(size));
      RETURN_IF_ERROR(ChargeBytes(size * sizeof(Value)));
      Array items = a.array();
      items.insert(items.end(), b.array().begin(), b.array().end());
      return Value::MakeArray(std::move(items), a.is_tuple());
    }
    return unsupported();
  }
  if (op == "*") {
    const Value* sequence = nullptr;
    const Value* count = nullptr;
    if ((a.is_string() || a.is_array()) && b.is_number() && b.kind() != Value::Kind::kFloat) {
      sequence = &a;
      count = &b;
    } else if ((b.is_string() || b.is_array()) && a.is_number() &&
               a.kind() != Value::Kind::kFloat) {
      sequence = &b;
      count = &a;
    }
    if (sequence != nullptr) {
      int64_t times = std::max<int64_t>(0, count->int_value());
      size_t unit =
          sequence->is_string() ? sequence->string_value().size() : sequence->array().size();
      if (unit == 0) times = 0;  // an empty sequence stays empty, however many times
      if (unit != 0 && static_cast<uint64_t>(times) > limits_.max_value_size / unit) {
        return CheckValueSize(limits_.max_value_size + 1);
      }
      size_t size = unit * static_cast<size_t>(times);
      RETURN_IF_ERROR(ChargeBytes(sequence->is_string() ? size : size * sizeof(Value)));
      if (sequence->is_string()) {
        std::string text;
        text.reserve(size);
        for (int64_t i = 0; i < times; ++i) text += sequence->string_value();
        return Value::String(std::move(text));
      }
      Array items;
      items.reserve(size);
      for (int64_t i = 0; i < times; ++i) {
        items.insert(items.end(), sequence->array().begin(), sequence->array().end());
      }
      return Value::MakeArray(std::move(items), sequence->is_tuple());
    }
    if (!both_numbers) return unsupported();
    if (any_float) return Value::Float(a.float_value() * b.float_value());
    int64_t product = 0;
    if (__builtin_mul_overflow(a.int_value(), b.int_value(), &product)) {
      return TypeError("integer overflow");
    }
    return Value::Int(product);
  }
  if (!both_numbers) return unsupported();
  if (op == "-") {
    if (any_float) return Value::Float(a.float_value() - b.float_value());
    int64_t difference = 0;
    if (__builtin_sub_overflow(a.int_value(), b.int_value(), &difference)) {
      return TypeError("integer overflow");
    }
    return Value::Int(difference);
  }
  if (op == "/") {
    if (b.float_value() == 0) return TypeError("division by zero");
    return Value::Float(a.float_value() / b.float_value());
  }
  if (op == "//" || op == "%") {
    if (any_float) {
      double x = a.float_value();
      double y = b.float_value();
      if (y == 0) return TypeError(op == "//" ? "float floor division by zero" : "float modulo");
      double mod = std::fmod(x, y);
      if (mod != 0 && ((mod < 0) != (y < 0))) mod += y;
      if (op == "%") return Value::Float(mod);
      return Value::Float(std::round((x - mod) / y));
    }
    if (b.int_value() == 0) {
      return TypeError(op == "//" ? "integer division or modulo by zero"
                                  : "integer modulo by zero");
    }
    if (a.int_value() == INT64_MIN && b.int_value() == -1) {
      if (op == "%") return Value::Int(0);
      return TypeError("integer overflow");
    }
    if (op == "//") return Value::Int(FloorDiv(a.int_value(), b.int_value()));
    return Value::Int(FloorMod(a.int_value(), b.int_value()));
  }
  if (op == "**") {
    if (!any_float && b.int_value() >= 0) {
      int64_t result = 1;
      int64_t base = a.int_value();
      int64_t exponent = b.int_value();
      while (exponent > 0) {
        if (exponent & 1) {
          if (__builtin_mul_overflow(result, base, &result)) return TypeError("integer overflow");
        }
        exponent >>= 1;
        if (exponent > 0 && __builtin_mul_overflow(base, base, &base)) {
          return TypeError("integer overflow");
        }
      }
      return Value::Int(result);
    }
    if (a.float_value() == 0 && b.float_value() < 0) {
      return TypeError("0.0 cannot be raised to a negative power");
    }
    return Value::Float(std::pow(a.float_value(), b.float_value()));
  }
  return unsupported();
}

absl::StatusOr<Value> Interpreter::EvalSlice(const Value& object, const Value& start,
                                             const Value& stop, const Value& step) {
  if (object.is_undefined()) return UndefinedError(object);
  if (!object.is_string() && !object.is_array()) {
    return TypeError(absl::StrCat("'", PyTypeName(object), "' object is not subscriptable"));
  }
  auto bound = [](const Value& v, const char* what) -> absl::StatusOr<std::optional<int64_t>> {
    if (v.is_none() || v.is_undefined()) return std::optional<int64_t>();
    if (v.kind() != Value::Kind::kInt && v.kind() != Value::Kind::kBool) {
      return TypeError(absl::StrCat("slice ", what, " must be an integer or None"));
    }
    return std::optional<int64_t>(v.int_value());
  };
  ASSIGN_OR_RETURN(std::optional<int64_t> start_index, bound(start, "start"));
  ASSIGN_OR_RETURN(std::optional<int64_t> stop_index, bound(stop, "stop"));
  ASSIGN_OR_RETURN(std::optional<int64_t> step_value, bound(step, "step"));
  int64_t stride = step_value.value_or(1);
  if (stride == 0) return TypeError("slice step cannot be zero");
  if (stride == INT64_MIN) stride = -INT64_MAX;
  std::vector<size_t> offsets;
  int64_t length = 0;
  if (object.is_string()) {
    offsets = CodePointOffsets(object.string_value());
    length = static_cast<int64_t>(offsets.size()) - 1;
  } else {
    length = static_cast<int64_t>(object.array().size());
  }
  // Python's PySlice_AdjustIndices.
  auto adjust = [&](std::optional<int64_t> index, int64_t fallback) {
    if (!index) return fallback;
    int64_t i = *index;
    if (i < 0) {
      i = i < -length ? (stride < 0 ? -1 : 0) : i + length;
    } else if (i >= length) {
      i = stride < 0 ? length - 1 : length;
    }
    return i;
  };
  int64_t first = adjust(start_index, stride < 0 ? length - 1 : 0);
  int64_t last = adjust(stop_index, stride < 0 ? -1 : length);
  std::vector<int64_t> indices;
  if (stride > 0) {
    for (int64_t i = first; i < last;) {
      indices.push_back(i);
      if (last - i <= stride) break;
      i += stride;
    }
  } else {
    for (int64_t i = first; i > last;) {
      indices.push_back(i);
      if (i - last <= -stride) break;
      i += stride;
    }
  }
  if (object.is_string()) {
    const std::string& s = object.string_value();
    std::string out;
    if (stride == 1 && !indices.empty()) {
      out = s.substr(offsets[indices.front()],
                     offsets[indices.back() + 1] - offsets[indices.front()]);
    } else {
      for (int64_t i : indices) out += s.substr(offsets[i], offsets[i + 1] - offsets[i]);
    }
    RETURN_IF_ERROR(ChargeBytes(out.size()));
    return Value::String(std::move(out));
  }
  Array items;
  items.reserve(indices.size());
  for (int64_t i : indices) items.push_back(object.array()[i]);
  RETURN_IF_ERROR(ChargeBytes(items.size() * sizeof(Value)));
  return Value::MakeArray(std::move(items), object.is_tuple());
}

}  // namespace exo::runtime::jinja
