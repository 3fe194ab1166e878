#include "node/handshake.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "node/bus.h"
#include "node/cluster_key.h"

namespace exo::node {
namespace {

using ::testing::HasSubstr;

ClusterKey Key(const std::string& text) { return *ClusterKey::FromString(text); }

LocalInstance Alice() { return {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 1, 1000}; }
LocalInstance Bob() { return {"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", 2, 2000}; }

TEST(ClusterKey, FingerprintIsShortStableAndNotTheKey) {
  const std::string fp = Key("hunter2").Fingerprint();
  EXPECT_EQ(fp.size(), 16u);
  EXPECT_EQ(fp, Key("hunter2").Fingerprint());
  EXPECT_NE(fp, Key("hunter3").Fingerprint());
  EXPECT_EQ(fp.find("hunter2"), std::string::npos);
  EXPECT_TRUE(ClusterKey::Default().is_default());
  EXPECT_FALSE(Key("x").is_default());
}

TEST(ClusterKey, EmptyKeysAreRefused) {
  EXPECT_EQ(ClusterKey::FromString("").status().code(), absl::StatusCode::kInvalidArgument);
  const std::string path = absl::StrCat(::testing::TempDir(), "/key_", getpid());
  std::ofstream(path) << "\n";
  EXPECT_THAT(std::string(ClusterKey::FromFile(path).status().message()), HasSubstr("empty"));
  std::ofstream(path) << "s3cret\n";
  absl::StatusOr<ClusterKey> from_file = ClusterKey::FromFile(path);
  ASSERT_TRUE(from_file.ok());
  EXPECT_EQ(from_file->Fingerprint(), Key("s3cret").Fingerprint());  // newline ignored
  std::filesystem::remove(path);
  EXPECT_FALSE(ClusterKey::FromFile(path).ok());
}

TEST(ClusterKey, ProofsBindEveryFieldAndItsBoundaries) {
  const ClusterKey key = Key("k");
  const std::string proof = key.Prove("ctx", {"ab", "c"});
  EXPECT_EQ(proof.size(), 32u);
  EXPECT_TRUE(key.Verify(proof, "ctx", {"ab", "c"}));
  EXPECT_FALSE(key.Verify(proof, "ctx", {"a", "bc"}));  // length prefixes
  EXPECT_FALSE(key.Verify(proof, "other", {"ab", "c"}));
  EXPECT_FALSE(Key("k2").Verify(proof, "ctx", {"ab", "c"}));
  EXPECT_FALSE(key.Verify(proof.substr(0, 31), "ctx", {"ab", "c"}));
}

TEST(Handshake, BothSidesProveTheSameKey) {
  const ClusterKey key = Key("home");
  exo::v1::Capabilities caps;
  caps.set_grpc_port(52416);
  const exo::v1::HelloRequest request = MakeHelloRequest(key, Alice(), caps);
  EXPECT_EQ(request.nonce().size(), kHelloNonceBytes);
  ASSERT_TRUE(CheckHelloRequest(key, request).ok());
  const exo::v1::HelloResponse response = MakeHelloResponse(key, Bob(), caps, request);
  EXPECT_TRUE(CheckHelloResponse(key, request, response).ok());
  EXPECT_EQ(response.node_id(), Bob().node_id);
  EXPECT_EQ(response.boot_id(), 2u);
  // Two requests never share a nonce, so an old answer does not fit a new question.
  const exo::v1::HelloRequest second = MakeHelloRequest(key, Alice(), caps);
  EXPECT_NE(second.nonce(), request.nonce());
  EXPECT_EQ(CheckHelloResponse(key, second, response).code(), absl::StatusCode::kPermissionDenied);
}

TEST(Handshake, CallerWithAnotherKeyIsRefusedWithBothFingerprints) {
  const exo::v1::HelloRequest request = MakeHelloRequest(Key("mine"), Alice(), {});
  const absl::Status status = CheckHelloRequest(Key("yours"), request);
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(status.message()), HasSubstr(Key("mine").Fingerprint()));
  EXPECT_THAT(std::string(status.message()), HasSubstr(Key("yours").Fingerprint()));
  EXPECT_THAT(std::string(status.message()), HasSubstr("--cluster_key"));
}

TEST(Handshake, CalleeWithAnotherKeyIsRefused) {
  const exo::v1::HelloRequest request = MakeHelloRequest(Key("mine"), Alice(), {});
  const exo::v1::HelloResponse response = MakeHelloResponse(Key("yours"), Bob(), {}, request);
  EXPECT_EQ(CheckHelloResponse(Key("mine"), request, response).code(),
            absl::StatusCode::kPermissionDenied);
}

TEST(Handshake, TamperedFieldsBreakTheProof) {
  const ClusterKey key = Key("home");
  exo::v1::HelloRequest request = MakeHelloRequest(key, Alice(), {});
  request.set_node_id(Bob().node_id);
  EXPECT_EQ(CheckHelloRequest(key, request).code(), absl::StatusCode::kPermissionDenied);
  request = MakeHelloRequest(key, Alice(), {});
  request.set_boot_id(99);
  EXPECT_EQ(CheckHelloRequest(key, request).code(), absl::StatusCode::kPermissionDenied);
  request = MakeHelloRequest(key, Alice(), {});
  exo::v1::HelloResponse response = MakeHelloResponse(key, Bob(), {}, request);
  response.set_node_id(Alice().node_id);
  EXPECT_EQ(CheckHelloResponse(key, request, response).code(), absl::StatusCode::kPermissionDenied);
}

TEST(Handshake, VersionMismatchIsFailedPreconditionOnBothSides) {
  const ClusterKey key = Key("home");
  const exo::v1::HelloRequest request = MakeHelloRequest(key, Alice(), {}, kProtocolVersion + 1);
  const absl::Status status = CheckHelloRequest(key, request);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(status.message()), HasSubstr("protocol version 2"));
  const exo::v1::HelloRequest good = MakeHelloRequest(key, Alice(), {});
  exo::v1::HelloResponse response = MakeHelloResponse(key, Bob(), {}, good);
  response.set_protocol_version(static_cast<exo::v1::ProtocolVersion>(7));
  EXPECT_EQ(CheckHelloResponse(key, good, response).code(), absl::StatusCode::kFailedPrecondition);
}

TEST(Handshake, MalformedRequestsAreInvalidArgument) {
  const ClusterKey key = Key("home");
  exo::v1::HelloRequest request = MakeHelloRequest(key, Alice(), {});
  request.set_nonce("short");
  EXPECT_EQ(CheckHelloRequest(key, request).code(), absl::StatusCode::kInvalidArgument);
  request = MakeHelloRequest(key, Alice(), {});
  request.set_node_id("../../etc/passwd");
  EXPECT_EQ(CheckHelloRequest(key, request).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(CheckHelloRequest(key, exo::v1::HelloRequest()).ok());
}

TEST(BusCodec, SignedEventsRoundTripAndOthersAreRejected) {
  const ClusterKey key = Key("home");
  exo::v1::BusEvent event;
  event.set_sender_node_id(Alice().node_id);
  event.set_sender_boot_id(5);
  event.mutable_heartbeat()->set_free_memory_bytes(1234);
  const std::string bytes = EncodeBusEvent(key, event);
  absl::StatusOr<exo::v1::BusEvent> decoded = DecodeBusEvent(key, bytes);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->sender_node_id(), Alice().node_id);
  EXPECT_EQ(decoded->heartbeat().free_memory_bytes(), 1234u);

  EXPECT_EQ(DecodeBusEvent(Key("other"), bytes).status().code(),
            absl::StatusCode::kPermissionDenied);
  std::string flipped = bytes;
  flipped[3] ^= 1;
  EXPECT_FALSE(DecodeBusEvent(key, flipped).ok());
  EXPECT_EQ(DecodeBusEvent(key, "").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeBusEvent(key, bytes.substr(0, bytes.size() - 1)).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Unsigned protobuf is refused even if it parses.
  EXPECT_FALSE(DecodeBusEvent(key, event.SerializeAsString()).ok());
}

}  // namespace
}  // namespace exo::node
