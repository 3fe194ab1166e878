// Small status-propagation macros (the packaged Abseil predates its own).
#ifndef EXO_COMMON_STATUS_MACROS_H_
#define EXO_COMMON_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define EXO_STATUS_CONCAT_INNER_(a, b) a##b
#define EXO_STATUS_CONCAT_(a, b) EXO_STATUS_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define RETURN_IF_ERROR(expr)                  \
  do {                                         \
    ::absl::Status exo_status_ = (expr);       \
    if (!exo_status_.ok()) return exo_status_; \
  } while (false)

// `ASSIGN_OR_RETURN(auto x, Foo());` evaluates Foo() (an absl::StatusOr<T>), returns its status if
// not OK, and otherwise moves the value into `x`.
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(EXO_STATUS_CONCAT_(exo_statusor_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr)        \
  auto statusor = (expr);                                  \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

#endif  // EXO_COMMON_STATUS_MACROS_H_
