#include "node/tensor_fetch.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "node/wire.h"

namespace exo::node {
namespace {

// Incremental SHA-256 over OpenSSL's EVP interface.
class Sha256Hasher {
 public:
  Sha256Hasher() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  ~Sha256Hasher() { EVP_MD_CTX_free(ctx_); }
  Sha256Hasher(const Sha256Hasher&) = delete;
  Sha256Hasher& operator=(const Sha256Hasher&) = delete;
  void Update(const void* data, size_t size) { EVP_DigestUpdate(ctx_, data, size); }
  std::string Finish() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    EVP_DigestFinal_ex(ctx_, digest, &length);
    return std::string(reinterpret_cast<char*>(digest), length);
  }

 private:
  EVP_MD_CTX* ctx_;
};

// A file name made only of safe characters (the name comes from a peer).
std::string SafeFileStem(const std::string& name) {
  std::string out;
  for (char ch : name.substr(0, 80)) {
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                    (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.';
    out += ok ? ch : '_';
  }
  if (out.empty() || out[0] == '.') out = "model" + out;
  return out;
}

// The manifest lists the tensors the sparse copy holds, with their digests.
struct Manifest {
  std::map<std::string, std::string> tensors;  // name -> hex sha256
};

absl::StatusOr<Manifest> ReadManifest(const std::string& path, const ModelIdentity& model) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("no manifest at ", path));
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("file_size") || !j.contains("sha256") ||
      !j.contains("tensors") || !j["tensors"].is_object() || !j["file_size"].is_number() ||
      !j["sha256"].is_string()) {
    return absl::DataLossError(absl::StrCat("manifest ", path, " is malformed"));
  }
  if (j["file_size"].get<uint64_t>() != model.file_size ||
      j["sha256"].get<std::string>() != HexString(model.sha256)) {
    return absl::DataLossError(absl::StrCat("manifest ", path, " describes another file"));
  }
  Manifest m;
  for (auto& [name, digest] : j["tensors"].items()) {
    if (digest.is_string()) m.tensors[name] = digest.get<std::string>();
  }
  return m;
}

absl::Status WriteManifest(const std::string& path, const ModelIdentity& model, const Manifest& m) {
  nlohmann::json j;
  j["name"] = model.name;
  j["file_size"] = model.file_size;
  j["sha256"] = HexString(model.sha256);
  j["tensors"] = m.tensors;
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << j.dump(1);
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", tmp));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot rename ", tmp, ": ", ec.message()));
  return absl::OkStatus();
}

absl::Status PWriteAll(int fd, const std::string& data, uint64_t offset) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = pwrite(fd, data.data() + done, data.size() - done, offset + done);
    if (n <= 0) return absl::InternalError(absl::StrCat("write failed: ", strerror(errno)));
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

// Prints a progress line at most once a second.
class Progress {
 public:
  Progress(std::ostream* out, uint64_t total) : out_(out), total_(total) {}
  void Add(uint64_t bytes) {
    done_ += bytes;
    const auto now = std::chrono::steady_clock::now();
    if (out_ != nullptr && (now - last_ > std::chrono::seconds(1) || done_ == total_)) {
      *out_ << absl::StrFormat("  fetched %.1f of %.1f MiB (%.0f%%)\n", done_ / 1048576.0,
                               total_ / 1048576.0, total_ ? 100.0 * done_ / total_ : 100.0)
            << std::flush;
      last_ = now;
    }
  }

 private:
  std::ostream* out_;
  uint64_t total_;
  uint64_t done_ = 0;
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

}  // namespace

std::string HexString(const std::string& bytes) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

std::string Sha256(const void* data, size_t size) {
  Sha256Hasher h;
  h.Update(data, size);
  return h.Finish();
}

absl::StatusOr<ModelIdentity> ComputeModelIdentity(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open model file ", path));
  Sha256Hasher h;
  std::vector<char> buffer(1 << 20);
  ModelIdentity id;
  while (in) {
    in.read(buffer.data(), buffer.size());
    const std::streamsize n = in.gcount();
    if (n <= 0) break;
    h.Update(buffer.data(), n);
    id.file_size += n;
  }
  id.sha256 = h.Finish();
  id.name = std::filesystem::path(path).stem().string();
  return id;
}

void IdentityToProto(const ModelIdentity& identity, v1::ModelIdentity* out) {
  out->set_name(identity.name);
  out->set_sha256(identity.sha256);
  out->set_file_size(identity.file_size);
}

ModelIdentity IdentityFromProto(const v1::ModelIdentity& identity) {
  return ModelIdentity{identity.name(), identity.sha256(), identity.file_size()};
}

std::vector<std::string> ShardTensorNames(const runtime::GgufFile& file, runtime::LayerRange layers,
                                          bool has_embedding, bool has_head) {
  const bool separate_output = file.FindTensor("output.weight") != nullptr;
  std::vector<std::string> names;
  for (const runtime::GgufTensorInfo& t : file.tensors()) {
    const std::string& n = t.name;
    bool wanted;
    if (absl::StartsWith(n, "blk.")) {
      const size_t dot = n.find('.', 4);
      int32_t layer = -1;
      wanted = dot != std::string::npos && absl::SimpleAtoi(n.substr(4, dot - 4), &layer) &&
               layer >= layers.begin && layer < layers.end;
    } else if (n == "token_embd.weight") {
      wanted = has_embedding || (has_head && !separate_output);
    } else if (absl::StartsWith(n, "output")) {  // output.weight, output_norm.weight
      wanted = has_head;
    } else {
      wanted = true;  // tensors of no layer (rope_freqs, ...) are small and shared
    }
    if (wanted) names.push_back(n);
  }
  return names;
}

namespace {

// Serving a peer's tensors must not make them part of this node's resident memory (a stage's
// RSS follows its own share): drops the whole pages of [data, data + size) from this process's
// mapping. The file is mapped read-only, so nothing is lost: the bytes stay in the page cache
// and a local stage that uses them faults them back in.
void ReleasePages(const uint8_t* data, uint64_t size) {
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + page - 1) & ~(page - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + size) & ~(page - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

}  // namespace

grpc::Status ServeTensors(const runtime::GgufFile& file, const std::string& path,
                          const ModelIdentity& identity, const v1::FetchTensorsRequest& request,
                          grpc::ServerWriter<v1::TensorChunk>* writer, size_t chunk_bytes) {
  const v1::ModelIdentity& want = request.model();
  if ((want.file_size() != 0 && want.file_size() != identity.file_size) ||
      (!want.sha256().empty() && want.sha256() != identity.sha256)) {
    return grpc::Status(
        grpc::StatusCode::FAILED_PRECONDITION,
        absl::StrCat("this node serves model ", identity.name, " (", identity.file_size,
                     " bytes, sha256 ", HexString(identity.sha256).substr(0, 16),
                     "...), not the one requested"));
  }
  v1::TensorChunk chunk;
  if (request.tensor_names().empty()) {  // the header: magic, metadata and tensor table
    std::ifstream in(path, std::ios::binary);
    std::string header(file.data_offset(), '\0');
    if (!in.read(header.data(), header.size())) {
      return grpc::Status(grpc::StatusCode::INTERNAL, absl::StrCat("cannot read ", path));
    }
    for (uint64_t off = 0; off < header.size() || off == 0; off += chunk_bytes) {
      chunk.Clear();
      chunk.set_offset(off);
      chunk.set_total_bytes(header.size());
      chunk.set_file_size(identity.file_size);
      chunk.set_data(header.substr(off, chunk_bytes));
      if (!writer->Write(chunk)) return grpc::Status(grpc::StatusCode::CANCELLED, "peer left");
      if (header.empty()) break;
    }
    return grpc::Status::OK;
  }
  std::vector<const runtime::GgufTensorInfo*> infos;
  for (const std::string& name : request.tensor_names()) {
    const runtime::GgufTensorInfo* info = file.FindTensor(name);
    if (info == nullptr) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND,
                          absl::StrCat("model ", identity.name, " has no tensor '", name, "'"));
    }
    infos.push_back(info);
  }
  for (const runtime::GgufTensorInfo* info : infos) {
    Sha256Hasher hasher;
    uint64_t off = 0;
    do {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(chunk_bytes, info->nbytes - off));
      chunk.Clear();
      chunk.set_tensor_name(info->name);
      chunk.set_offset(off);
      chunk.set_total_bytes(info->nbytes);
      chunk.set_data(info->data + off, n);
      hasher.Update(info->data + off, n);
      off += n;
      if (off == info->nbytes) chunk.set_sha256(hasher.Finish());
      if (!writer->Write(chunk)) return grpc::Status(grpc::StatusCode::CANCELLED, "peer left");
    } while (off < info->nbytes);
    ReleasePages(info->data, info->nbytes);
  }
  return grpc::Status::OK;
}

namespace {

absl::Status FetchHeader(v1::NodeService::StubInterface& peer, const FetchOptions& options,
                         const std::string& path) {
  grpc::ClientContext ctx;
  if (options.authorize) options.authorize(ctx);
  v1::FetchTensorsRequest request;
  IdentityToProto(options.model, request.mutable_model());
  auto reader = peer.FetchTensors(&ctx, request);
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot create ", path));
  absl::Status status;
  if (ftruncate(fd, static_cast<off_t>(options.model.file_size)) != 0) {
    status = absl::InternalError(absl::StrCat("cannot size ", path, ": ", strerror(errno)));
  }
  uint64_t received = 0, total = 0;
  v1::TensorChunk chunk;
  while (status.ok() && reader->Read(&chunk)) {
    if (!chunk.tensor_name().empty() || chunk.file_size() != options.model.file_size ||
        chunk.total_bytes() > chunk.file_size() || chunk.offset() != received ||
        chunk.offset() + chunk.data().size() > chunk.total_bytes() ||
        (total != 0 && total != chunk.total_bytes())) {
      status = absl::DataLossError("the peer sent an inconsistent header chunk");
      break;
    }
    total = chunk.total_bytes();
    status = PWriteAll(fd, chunk.data(), chunk.offset());
    received += chunk.data().size();
  }
  close(fd);
  const grpc::Status rpc = reader->Finish();
  if (!rpc.ok()) return FromGrpcStatus(rpc);
  RETURN_IF_ERROR(status);
  if (total == 0 || received != total) {
    return absl::DataLossError(
        absl::StrCat("the peer sent ", received, " of ", total, " header bytes"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<FetchResult> FetchShardTensors(v1::NodeService::StubInterface& peer,
                                              const FetchOptions& options) {
  if (options.model.sha256.size() != 32 || options.model.file_size == 0) {
    return absl::InvalidArgumentError("fetching a model needs its sha256 and file size");
  }
  std::error_code ec;
  std::filesystem::create_directories(options.models_dir, ec);
  const std::string stem = absl::StrCat(options.models_dir, "/", SafeFileStem(options.model.name),
                                        ".", HexString(options.model.sha256).substr(0, 12));
  FetchResult result;
  result.path = stem + ".partial.gguf";
  const std::string manifest_path = stem + ".manifest.json";

  absl::StatusOr<Manifest> manifest = ReadManifest(manifest_path, options.model);
  struct stat st;
  if (!manifest.ok() || stat(result.path.c_str(), &st) != 0 ||
      uint64_t(st.st_size) != options.model.file_size) {
    if (options.progress) *options.progress << "fetching the model header\n";
    RETURN_IF_ERROR(FetchHeader(peer, options, result.path));
    manifest = Manifest{};
    RETURN_IF_ERROR(WriteManifest(manifest_path, options.model, *manifest));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<runtime::GgufFile> file, runtime::GgufFile::Open(result.path));
  std::vector<std::string> missing;
  uint64_t missing_bytes = 0;
  for (const std::string& name :
       ShardTensorNames(*file, options.layers, options.has_embedding, options.has_head)) {
    if (manifest->tensors.count(name)) continue;
    missing.push_back(name);
    missing_bytes += file->FindTensor(name)->nbytes;
  }
  if (missing.empty()) return result;
  if (options.progress) {
    *options.progress << absl::StrFormat("fetching %d tensors (%.1f MiB) for layers %d to %d\n",
                                         missing.size(), missing_bytes / 1048576.0,
                                         options.layers.begin, options.layers.end)
                      << std::flush;
  }
  const auto start = std::chrono::steady_clock::now();
  grpc::ClientContext ctx;
  if (options.authorize) options.authorize(ctx);
  v1::FetchTensorsRequest request;
  IdentityToProto(options.model, request.mutable_model());
  for (const std::string& name : missing) request.add_tensor_names(name);
  auto reader = peer.FetchTensors(&ctx, request);
  const int fd = open(result.path.c_str(), O_RDWR);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot open ", result.path));
  std::set<std::string> wanted(missing.begin(), missing.end());
  std::map<std::string, uint64_t> received;
  std::map<std::string, std::unique_ptr<Sha256Hasher>> hashers;
  Progress progress(options.progress, missing_bytes);
  absl::Status status;
  v1::TensorChunk chunk;
  while (status.ok() && reader->Read(&chunk)) {
    const runtime::GgufTensorInfo* info = file->FindTensor(chunk.tensor_name());
    if (!wanted.count(chunk.tensor_name()) || info == nullptr ||
        chunk.total_bytes() != info->nbytes || chunk.offset() != received[chunk.tensor_name()] ||
        chunk.offset() + chunk.data().size() > info->nbytes) {
      status = absl::DataLossError(absl::StrCat("the peer sent an unexpected chunk of tensor '",
                                                chunk.tensor_name().substr(0, 100), "'"));
      break;
    }
    auto& hasher = hashers[chunk.tensor_name()];
    if (!hasher) hasher = std::make_unique<Sha256Hasher>();
    hasher->Update(chunk.data().data(), chunk.data().size());
    status = PWriteAll(fd, chunk.data(), file->data_offset() + info->offset + chunk.offset());
    if (!status.ok()) break;
    received[chunk.tensor_name()] += chunk.data().size();
    progress.Add(chunk.data().size());
    result.fetched_bytes += chunk.data().size();
    if (received[chunk.tensor_name()] == info->nbytes) {
      const std::string digest = hasher->Finish();
      if (digest != chunk.sha256()) {
        status = absl::DataLossError(absl::StrCat("tensor '", info->name,
                                                  "' failed its SHA-256 check (got ",
                                                  HexString(digest).substr(0, 16), "...)"));
        break;
      }
      wanted.erase(info->name);
      manifest->tensors[info->name] = HexString(digest);
      ++result.fetched_tensors;
      status = WriteManifest(manifest_path, options.model, *manifest);
    }
  }
  if (!status.ok()) ctx.TryCancel();
  close(fd);
  const grpc::Status rpc = reader->Finish();
  RETURN_IF_ERROR(status);
  if (!rpc.ok()) return FromGrpcStatus(rpc);
  if (!wanted.empty()) {
    return absl::DataLossError(
        absl::StrCat("the peer ended the stream before sending tensor '", *wanted.begin(), "'"));
  }
  if (options.progress) {
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    *options.progress << absl::StrFormat("fetched %d tensors (%.1f MiB) in %.2f s into %s\n",
                                         result.fetched_tensors, result.fetched_bytes / 1048576.0,
                                         s, result.path)
                      << std::flush;
  }
  return result;
}

}  // namespace exo::node
