#include "node/identity.h"

#include <openssl/rand.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "node/paths.h"

namespace exo::node {
namespace {

void RandomBytes(unsigned char* out, int size) {
  // RAND_bytes only fails when the OS gives no entropy at all; that is not recoverable.
  if (RAND_bytes(out, size) != 1) {
    std::fprintf(stderr, "exo-node: fatal: the OS random source failed\n");
    std::abort();
  }
}

absl::Status WriteIdFile(const std::string& state_dir, const std::string& id) {
  std::error_code ec;
  std::filesystem::create_directories(state_dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(absl::StrCat("cannot create the state directory ",
                                                      state_dir, ": ", ec.message(),
                                                      " (choose another with --state_dir)"));
  }
  const std::string path = absl::StrCat(state_dir, "/", kNodeIdFile);
  const std::string temporary = absl::StrCat(path, ".tmp");
  {
    std::ofstream out(temporary, std::ios::trunc);
    out << id << "\n";
    out.flush();
    if (!out) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot write ", temporary, ": ", std::strerror(errno)));
    }
  }
  std::filesystem::rename(temporary, path, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot rename ", temporary, " to ", path, ": ", ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace

std::string DefaultStateDir() { return ExoHome() + "/state"; }

std::string NewNodeId() {
  unsigned char bytes[16];
  RandomBytes(bytes, sizeof(bytes));
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(bytes), sizeof(bytes)));
}

bool IsValidNodeId(absl::string_view id) {
  if (id.size() != 32) return false;
  for (char c : id) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

uint64_t RandomUint64() {
  uint64_t value = 0;
  while (value == 0) RandomBytes(reinterpret_cast<unsigned char*>(&value), sizeof(value));
  return value;
}

absl::StatusOr<std::string> LoadOrCreateNodeId(const std::string& state_dir) {
  const std::string path = absl::StrCat(state_dir, "/", kNodeIdFile);
  std::ifstream in(path);
  if (!in) {
    if (std::filesystem::exists(path)) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
    }
    const std::string id = NewNodeId();
    RETURN_IF_ERROR(WriteIdFile(state_dir, id));
    return id;
  }
  std::stringstream contents;
  contents << in.rdbuf();
  const std::string id(absl::StripAsciiWhitespace(contents.str()));
  if (!IsValidNodeId(id)) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " does not hold a node id (32 hex digits); delete it and the node ",
                     "makes a new one"));
  }
  return id;
}

absl::StatusOr<std::string> RenewNodeId(const std::string& state_dir, absl::string_view old_id) {
  std::string id = NewNodeId();
  while (id == old_id) id = NewNodeId();
  RETURN_IF_ERROR(WriteIdFile(state_dir, id));
  return id;
}

}  // namespace exo::node
