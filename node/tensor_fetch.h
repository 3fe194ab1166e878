// FetchTensors, both ends: a node with the model file streams exactly the requested tensors'
// bytes; a node without it fetches the GGUF header and then only the tensors its layers need into
// a sparse local copy (same size and layout as the original, holes elsewhere), verifying each
// tensor's SHA-256 and reporting progress. The copy is cached in the models directory with a
// manifest of the tensors it holds, so a restart fetches only what is still missing.
#ifndef EXO_NODE_TENSOR_FETCH_H_
#define EXO_NODE_TENSOR_FETCH_H_

#include <cstdint>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "exo/v1/node.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "runtime/gguf.h"
#include "runtime/weights.h"

namespace exo::node {

// A model file identified byte for byte (exo.v1.ModelIdentity).
struct ModelIdentity {
  std::string name;    // e.g. "gemma-3-270m-q4_k_m"
  std::string sha256;  // 32 raw bytes
  uint64_t file_size = 0;
};

// Reads the whole file once (about 1 s per GB).
absl::StatusOr<ModelIdentity> ComputeModelIdentity(const std::string& path);
void IdentityToProto(const ModelIdentity& identity, v1::ModelIdentity* out);
ModelIdentity IdentityFromProto(const v1::ModelIdentity& identity);
std::string HexString(const std::string& bytes);

// SHA-256 of a byte range, 32 raw bytes.
std::string Sha256(const void* data, size_t size);

// Names of the tensors a stage with these layers needs: blk.L.* for L in the range, the token
// embedding for the first stage and for a last stage whose head reuses it, output_norm and output
// for the last stage, and every tensor that belongs to no layer (such as rope_freqs).
std::vector<std::string> ShardTensorNames(const runtime::GgufFile& file, runtime::LayerRange layers,
                                          bool has_embedding, bool has_head);

// Server side: streams the request's tensors (or, for an empty list, the header) from `file`,
// whose bytes are also readable at `path` (for the header). Chunks of at most `chunk_bytes`.
grpc::Status ServeTensors(const runtime::GgufFile& file, const std::string& path,
                          const ModelIdentity& identity, const v1::FetchTensorsRequest& request,
                          grpc::ServerWriter<v1::TensorChunk>* writer,
                          size_t chunk_bytes = 1 << 20);

struct FetchOptions {
  ModelIdentity model;  // what to fetch (name, digest and size must match the peer's)
  runtime::LayerRange layers;
  bool has_embedding = false;
  bool has_head = false;
  std::string models_dir;            // where the sparse copy and its manifest live
  std::ostream* progress = nullptr;  // one line per second or so while fetching
  // Adds the caller's credentials (session token metadata) to each call.
  std::function<void(grpc::ClientContext&)> authorize;
};

struct FetchResult {
  std::string path;            // the sparse GGUF copy, ready for GgufFile::Open
  uint64_t fetched_bytes = 0;  // tensor bytes transferred by this call (0 when all were cached)
  int32_t fetched_tensors = 0;
};

// Fetches the header (when not cached) and the shard's missing tensors from `peer`.
absl::StatusOr<FetchResult> FetchShardTensors(v1::NodeService::StubInterface& peer,
                                              const FetchOptions& options);

}  // namespace exo::node

#endif  // EXO_NODE_TENSOR_FETCH_H_
