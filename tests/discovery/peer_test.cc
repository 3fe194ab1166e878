#include "discovery/peer.h"

#include <random>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace exo::discovery {
namespace {

using ::testing::HasSubstr;

// Parses `list`, expecting success, and returns "host|port" per peer.
std::vector<std::string> Parsed(std::string_view list) {
  absl::StatusOr<std::vector<PeerInfo>> peers = ParseStaticPeers(list);
  EXPECT_TRUE(peers.ok()) << list << ": " << peers.status();
  std::vector<std::string> out;
  if (!peers.ok()) return out;
  for (const PeerInfo& peer : *peers) {
    EXPECT_EQ(peer.source, PeerSource::kStatic);
    EXPECT_TRUE(peer.node_id.empty());
    out.push_back(peer.host + "|" + std::to_string(peer.grpc_port));
  }
  return out;
}

// Parses `list`, expecting InvalidArgument, and returns the message.
std::string Error(std::string_view list) {
  absl::StatusOr<std::vector<PeerInfo>> peers = ParseStaticPeers(list);
  EXPECT_EQ(peers.status().code(), absl::StatusCode::kInvalidArgument) << list;
  return std::string(peers.status().message());
}

TEST(ParseStaticPeers, ParsesNamesIpv4AndBracketedIpv6) {
  EXPECT_EQ(Parsed("node-a.local:50051,10.0.0.2:6000,[::1]:1"),
            (std::vector<std::string>{"node-a.local|50051", "10.0.0.2|6000", "::1|1"}));
}

TEST(ParseStaticPeers, EmptyOrBlankIsNoPeers) {
  EXPECT_TRUE(Parsed("").empty());
  EXPECT_TRUE(Parsed("  \t ").empty());
}

TEST(ParseStaticPeers, TrimsWhitespaceAroundEntries) {
  EXPECT_EQ(Parsed(" a:1 , b:2 "), (std::vector<std::string>{"a|1", "b|2"}));
}

TEST(ParseStaticPeers, CanonicalisesHosts) {
  EXPECT_EQ(Parsed("Node-A.Local.:80,[0:0:0:0:0:0:0:1]:80,[FE80::1%eth0]:80"),
            (std::vector<std::string>{"node-a.local|80", "::1|80", "fe80::1%eth0|80"}));
}

TEST(ParseStaticPeers, AcceptsThePortRangeEnds) {
  EXPECT_EQ(Parsed("a:1,a:65535"), (std::vector<std::string>{"a|1", "a|65535"}));
}

TEST(ParseStaticPeers, RejectsBadPorts) {
  EXPECT_THAT(Error("a:0"), HasSubstr("out of range: ports are 1 to 65535"));
  EXPECT_THAT(Error("a:65536"), HasSubstr("out of range"));
  EXPECT_THAT(Error("a:123456"), HasSubstr("out of range"));
  EXPECT_THAT(Error("a:-1"), HasSubstr("not a decimal number"));
  EXPECT_THAT(Error("a:+80"), HasSubstr("not a decimal number"));
  EXPECT_THAT(Error("a:8o"), HasSubstr("not a decimal number"));
  EXPECT_THAT(Error("a:"), HasSubstr("missing port"));
  EXPECT_THAT(Error("a"), HasSubstr("missing port; write host:port"));
  EXPECT_THAT(Error("[::1]"), HasSubstr("missing port after ']'"));
  EXPECT_THAT(Error("[::1]80"), HasSubstr("expected ':' and a port after ']'"));
}

TEST(ParseStaticPeers, RejectsEmptyEntriesAndNamesThem) {
  EXPECT_THAT(Error("a:1,,b:2"), HasSubstr("entry 2 is empty"));
  EXPECT_THAT(Error("a:1,"), HasSubstr("entry 2 is empty"));
  EXPECT_THAT(Error(",a:1"), HasSubstr("entry 1 is empty"));
  EXPECT_THAT(Error("a:1, ,b:2"), HasSubstr("entry 2 is empty"));
}

TEST(ParseStaticPeers, RequiresBracketsAroundIpv6) {
  EXPECT_THAT(Error("::1:50051"), HasSubstr("IPv6 addresses must be in brackets"));
  EXPECT_THAT(Error("fe80::1:80"), HasSubstr("IPv6 addresses must be in brackets"));
  EXPECT_THAT(Error("[::1:80"), HasSubstr("'[' without a closing ']'"));
  EXPECT_THAT(Error("::1]:80"), HasSubstr("brackets"));
  EXPECT_THAT(Error("a]:80"), HasSubstr("']' without an opening '['"));
  EXPECT_THAT(Error("[]:80"), HasSubstr("not a valid IPv6 address"));
  EXPECT_THAT(Error("[::g]:80"), HasSubstr("not a valid IPv6 address"));
  EXPECT_THAT(Error("[10.0.0.1]:80"), HasSubstr("not a valid IPv6 address"));
  EXPECT_THAT(Error("[fe80::1%]:80"), HasSubstr("empty IPv6 zone"));
  EXPECT_THAT(Error("[fe80::1%e/0]:80"), HasSubstr("bad IPv6 zone"));
}

TEST(ParseStaticPeers, RejectsBadHosts) {
  EXPECT_THAT(Error(":80"), HasSubstr("missing host"));
  EXPECT_THAT(Error("256.0.0.1:80"), HasSubstr("not a valid IPv4 address"));
  EXPECT_THAT(Error("10.0.0:80"), HasSubstr("not a valid IPv4 address"));
  EXPECT_THAT(Error("-a.local:80"), HasSubstr("starting or ending with '-'"));
  EXPECT_THAT(Error("a..local:80"), HasSubstr("labels are 1 to 63"));
  EXPECT_THAT(Error(std::string(64, 'x') + ":80"), HasSubstr("labels are 1 to 63"));
  EXPECT_THAT(Error("my_host:80"), HasSubstr("contains '_'"));
  EXPECT_THAT(Error("a b:80"), HasSubstr("contains ' '"));
}

TEST(ParseStaticPeers, ErrorsNameTheEntry) {
  EXPECT_THAT(Error("a:1,b:2,c:0"), HasSubstr("peer list entry 3 ('c:0')"));
}

TEST(ParseStaticPeers, RejectsDuplicates) {
  EXPECT_THAT(Error("a:1,b:1,a:1"), HasSubstr("entry 3 ('a:1'): duplicate of entry 1 (a:1)"));
  EXPECT_THAT(Error("A.local:1,a.LOCAL.:1"), HasSubstr("duplicate of entry 1"));
  EXPECT_THAT(Error("[::1]:5,[0::1]:5"), HasSubstr("duplicate of entry 1 ([::1]:5)"));
  // Same host on another port is a different peer.
  EXPECT_EQ(Parsed("a:1,a:2").size(), 2u);
}

TEST(ParseStaticPeers, ArbitraryInputGivesPeersOrInvalidArgument) {
  // Fixed-seed garbage from the characters the parser cares about; run under sanitizers in CI.
  const std::string alphabet = "[]:%,. -_09afAF:1::255\0x";
  std::mt19937_64 rng(99);
  for (int i = 0; i < 20000; ++i) {
    std::string input(rng() % 24, ' ');
    for (char& c : input) c = alphabet[rng() % alphabet.size()];
    absl::StatusOr<std::vector<PeerInfo>> peers = ParseStaticPeers(input);
    if (peers.ok()) {
      for (const PeerInfo& peer : *peers) {
        EXPECT_FALSE(peer.host.empty()) << input;
        EXPECT_NE(peer.grpc_port, 0) << input;
      }
    } else {
      EXPECT_EQ(peers.status().code(), absl::StatusCode::kInvalidArgument) << input;
    }
  }
}

PeerInfo Peer(std::string host, uint16_t port) {
  PeerInfo peer;
  peer.host = std::move(host);
  peer.grpc_port = port;
  return peer;
}

TEST(PeerAddress, BracketsIpv6) {
  EXPECT_EQ(PeerAddress(Peer("::1", 50051)), "[::1]:50051");
  EXPECT_EQ(PeerAddress(Peer("fe80::1%eth0", 80)), "[fe80::1%eth0]:80");
  EXPECT_EQ(PeerAddress(Peer("10.0.0.2", 80)), "10.0.0.2:80");
  EXPECT_EQ(PeerAddress(Peer("node.local", 80)), "node.local:80");
}

TEST(PeerAddress, RoundTripsThroughTheParser) {
  absl::StatusOr<std::vector<PeerInfo>> peers = ParseStaticPeers("[::1]:9,b.local:7,1.2.3.4:5");
  ASSERT_TRUE(peers.ok()) << peers.status();
  std::vector<std::string> addresses;
  for (const PeerInfo& peer : *peers) addresses.push_back(PeerAddress(peer));
  EXPECT_EQ(addresses, (std::vector<std::string>{"[::1]:9", "b.local:7", "1.2.3.4:5"}));
}

}  // namespace
}  // namespace exo::discovery
