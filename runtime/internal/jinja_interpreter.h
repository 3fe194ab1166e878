// Renders a parsed template: walks the syntax tree with jinja2's scoping rules (each for-loop
// iteration gets a fresh scope, so `set` inside a loop does not leak out; macros see the
// template's top-level scope) and bounded resources (output size, steps, call depth, value size).
#ifndef EXO_RUNTIME_INTERNAL_JINJA_INTERPRETER_H_
#define EXO_RUNTIME_INTERNAL_JINJA_INTERPRETER_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/internal/jinja_ast.h"
#include "runtime/internal/jinja_parser.h"
#include "runtime/internal/jinja_value.h"

namespace exo::runtime::jinja {

struct RenderLimits {
  size_t max_output_bytes = size_t{8} << 20;     // rendered text
  size_t max_value_size = size_t{8} << 20;       // bytes of one string / items of one list
  int64_t max_steps = 20'000'000;                // evaluated nodes + statements + iterations
  int max_call_depth = 32;                       // nested macro calls
  int64_t max_bytes_built = int64_t{256} << 20;  // all strings built during one render
};

// A variable scope. Lookups walk outwards through `parent`.
struct Frame {
  Frame* parent = nullptr;
  std::vector<std::pair<std::string, Value>> vars;

  const Value* Lookup(std::string_view name) const;
  void Set(std::string_view name, Value value);
};

class Interpreter {
 public:
  Interpreter(const ParsedTemplate& parsed, const RenderLimits& limits);

  // Renders with `variables` as the template's top-level names. Errors are InvalidArgument:
  // raise_exception(msg) gives exactly msg; other errors name the line and column.
  absl::StatusOr<std::string> Render(std::vector<std::pair<std::string, Value>> variables);

  // For builtins.
  absl::StatusOr<Value> CallValue(const Value& callee, CallArgs& args);
  // Accounts for `bytes` of newly built string; fails past the limits.
  absl::Status ChargeBytes(size_t bytes);
  // Fails when a string or list of `size` would exceed max_value_size.
  absl::Status CheckValueSize(size_t size) const;
  const RenderLimits& limits() const { return limits_; }
  void MarkRaised() { raised_ = true; }

 private:
  enum class Flow { kNormal, kBreak, kContinue };

  absl::Status Step();
  // Charges steps for an operation that may walk all of `value` (filters, tests, comparisons,
  // calls), so that repeating it on a large value cannot run for long.
  absl::Status ChargeWalk(const Value& value);
  absl::Status ChargeArgs(const CallArgs& args);
  absl::Status ExecBody(const Body& body, Frame& frame, std::string& out);
  absl::Status Exec(const Stmt& stmt, Frame& frame, std::string& out);
  absl::Status ExecFor(const Stmt& stmt, Frame& frame, std::string& out);
  absl::Status BindTargets(const std::vector<std::string>& names, const Value& value, Frame& frame);
  absl::StatusOr<Value> Eval(const Expr& expr, Frame& frame);
  absl::StatusOr<CallArgs> EvalArgs(const Expr& expr, Frame& frame);
  absl::StatusOr<Value> EvalBinary(const std::string& op, const Value& a, const Value& b);
  absl::StatusOr<bool> EvalCompare(const std::string& op, const Value& a, const Value& b);
  absl::StatusOr<Value> EvalSlice(const Value& object, const Value& start, const Value& stop,
                                  const Value& step);
  absl::StatusOr<Value> CallMacro(const Stmt& macro, CallArgs& args);
  void AddGlobals(Frame& globals);

  const ParsedTemplate& parsed_;
  RenderLimits limits_;
  Frame* root_ = nullptr;
  Flow flow_ = Flow::kNormal;
  int64_t steps_ = 0;
  int64_t bytes_built_ = 0;
  int call_depth_ = 0;
  size_t error_offset_ = 0;
  bool raised_ = false;
};

}  // namespace exo::runtime::jinja

#endif  // EXO_RUNTIME_INTERNAL_JINJA_INTERPRETER_H_
