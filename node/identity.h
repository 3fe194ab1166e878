// A node's stable identity: a random 128-bit id kept in the state directory, so a node keeps its
// name across restarts, plus a per-process boot id that tells two live holders of one id apart
// (a cloned disk).
#ifndef EXO_NODE_IDENTITY_H_
#define EXO_NODE_IDENTITY_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace exo::node {

// Name of the file in the state directory that holds the node id (32 hex digits and a newline).
inline constexpr char kNodeIdFile[] = "node_id";

// The default state directory: $EXO_HOME/state.
std::string DefaultStateDir();

// A fresh random id: 32 lower-case hex digits (128 bits from the OS's random source).
std::string NewNodeId();

// True for exactly 32 lower-case hex digits.
bool IsValidNodeId(absl::string_view id);

// Random non-zero 64-bit number, e.g. a boot id.
uint64_t RandomUint64();

// Reads the node id from `state_dir`/node_id, creating the directory and a new id if there is
// none. A file that exists but does not hold a valid id is an error (FailedPrecondition saying
// which file to delete), never silently replaced.
absl::StatusOr<std::string> LoadOrCreateNodeId(const std::string& state_dir);

// Writes a new id that differs from `old_id` into `state_dir`/node_id (atomically: temporary file
// then rename) and returns it. Used when a live peer turns out to carry the same id.
absl::StatusOr<std::string> RenewNodeId(const std::string& state_dir, absl::string_view old_id);

}  // namespace exo::node

#endif  // EXO_NODE_IDENTITY_H_
