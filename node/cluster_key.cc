#include "node/cluster_key.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace exo::node {
namespace {

void AppendField(std::string& transcript, absl::string_view field) {
  const uint64_t size = field.size();
  for (int i = 0; i < 8; ++i) transcript.push_back(static_cast<char>((size >> (8 * i)) & 0xff));
  transcript.append(field.data(), field.size());
}

}  // namespace

ClusterKey ClusterKey::Default() { return ClusterKey(kDefaultKey); }

absl::StatusOr<ClusterKey> ClusterKey::FromString(absl::string_view key) {
  if (key.empty()) {
    return absl::InvalidArgumentError(
        "the cluster key is empty: give a non-empty --cluster_key, or leave it out to use the "
        "default key");
  }
  return ClusterKey(std::string(key));
}

absl::StatusOr<ClusterKey> ClusterKey::FromFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read the cluster key file ", path, " (check --cluster_key_file)"));
  }
  std::stringstream contents;
  contents << in.rdbuf();
  std::string key = contents.str();
  while (!key.empty() && absl::ascii_isspace(static_cast<unsigned char>(key.back()))) {
    key.pop_back();
  }
  if (key.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the cluster key file ", path, " is empty: put the shared key in it"));
  }
  return ClusterKey(std::move(key));
}

std::string ClusterKey::Fingerprint() const {
  std::string input = "exo-node cluster key fingerprint v1";
  AppendField(input, key_);
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(input.data()), input.size(), digest);
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(digest), 8));
}

std::string ClusterKey::Prove(absl::string_view context,
                              std::initializer_list<absl::string_view> fields) const {
  std::string transcript;
  AppendField(transcript, context);
  for (absl::string_view field : fields) AppendField(transcript, field);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_size = 0;
  HMAC(EVP_sha256(), key_.data(), static_cast<int>(key_.size()),
       reinterpret_cast<const unsigned char*>(transcript.data()), transcript.size(), mac,
       &mac_size);
  return std::string(reinterpret_cast<const char*>(mac), mac_size);
}

bool ClusterKey::Verify(absl::string_view proof, absl::string_view context,
                        std::initializer_list<absl::string_view> fields) const {
  const std::string expected = Prove(context, fields);
  return proof.size() == expected.size() &&
         CRYPTO_memcmp(proof.data(), expected.data(), expected.size()) == 0;
}

}  // namespace exo::node
