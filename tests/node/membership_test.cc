#include "node/membership.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

namespace exo::node {
namespace {

using Kind = MembershipEffect::Kind;
using ::testing::HasSubstr;

const absl::Time kT0 = absl::FromUnixSeconds(1'700'000'000);

Instance Self() { return {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 111, 5000}; }
Instance PeerB() { return {"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", 222, 4000}; }

MembershipState Fresh() {
  MembershipState state;
  state.self = Self();
  return state;
}

HelloSucceeded HelloFrom(const Instance& peer, absl::Time now) {
  NodeCapabilities caps;
  caps.cpu_cores = 8;
  caps.device_kind = "cpu-avx2";
  caps.bus_port = 7001;
  return {peer, "10.0.0.2:52416", "10.0.0.2:7001", caps, now};
}

std::vector<Kind> Kinds(const MembershipTransition& t) {
  std::vector<Kind> kinds;
  for (const auto& e : t.effects) kinds.push_back(e.kind);
  return kinds;
}

TEST(Membership, HelloMakesAPeerUpAndSubscribesToItsBus) {
  MembershipTransition t = Apply(Fresh(), HelloFrom(PeerB(), kT0));
  ASSERT_EQ(Kinds(t), std::vector<Kind>{Kind::kPeerUp});
  EXPECT_EQ(t.effects[0].bus_endpoint, "10.0.0.2:7001");
  EXPECT_THAT(t.effects[0].message, HasSubstr(PeerB().node_id));
  ASSERT_EQ(UpPeers(t.state).size(), 1u);
  EXPECT_EQ(t.state.peers.at(PeerB().node_id).capabilities.cpu_cores, 8u);
  // A second answer from the same process is not news.
  MembershipTransition again = Apply(t.state, HelloFrom(PeerB(), kT0 + absl::Seconds(1)));
  EXPECT_TRUE(again.effects.empty());
}

TEST(Membership, HeartbeatsNeverAdmitAStranger) {
  MembershipTransition t =
      Apply(Fresh(), HeartbeatReceived{PeerB(), NodeCapabilities{}, NodeLoad{}, kT0});
  EXPECT_TRUE(t.effects.empty());
  EXPECT_TRUE(t.state.peers.empty());
}

TEST(Membership, PeerGoesDownAfterMissedHeartbeats) {
  MembershipOptions options;
  options.heartbeat_timeout = absl::Seconds(3);
  MembershipState s = Apply(Fresh(), HelloFrom(PeerB(), kT0), options).state;
  // Heartbeats every 500 ms keep it up well past the timeout.
  for (int i = 1; i <= 10; ++i) {
    const absl::Time now = kT0 + absl::Milliseconds(500 * i);
    NodeLoad load;
    load.free_memory_bytes = 1000 + i;
    s = Apply(s, HeartbeatReceived{PeerB(), NodeCapabilities{}, load, now}, options).state;
    MembershipTransition tick = Apply(s, Tick{now}, options);
    EXPECT_TRUE(tick.effects.empty()) << "tick " << i;
    s = tick.state;
  }
  EXPECT_EQ(s.peers.at(PeerB().node_id).load.free_memory_bytes, 1010u);
  const absl::Time last = kT0 + absl::Seconds(5);
  // Exactly at the timeout it is still up; just past it, it is down, once.
  EXPECT_TRUE(Apply(s, Tick{last + absl::Seconds(3)}, options).effects.empty());
  MembershipTransition down = Apply(s, Tick{last + absl::Milliseconds(3001)}, options);
  ASSERT_EQ(Kinds(down), std::vector<Kind>{Kind::kPeerDown});
  EXPECT_EQ(down.effects[0].bus_endpoint, "10.0.0.2:7001");
  EXPECT_EQ(down.state.peers.at(PeerB().node_id).state, PeerState::kDown);
  EXPECT_THAT(down.state.peers.at(PeerB().node_id).down_reason, HasSubstr("no heartbeat"));
  EXPECT_TRUE(Apply(down.state, Tick{last + absl::Seconds(10)}, options).effects.empty());
  // Late heartbeats do not bring it back; a new Hello does.
  MembershipTransition late =
      Apply(down.state, HeartbeatReceived{PeerB(), {}, {}, last + absl::Seconds(11)}, options);
  EXPECT_EQ(late.state.peers.at(PeerB().node_id).state, PeerState::kDown);
  MembershipTransition back =
      Apply(late.state, HelloFrom(PeerB(), last + absl::Seconds(12)), options);
  EXPECT_EQ(Kinds(back), std::vector<Kind>{Kind::kPeerUp});
}

TEST(Membership, TimeoutIsConfigurable) {
  MembershipOptions options;
  options.heartbeat_timeout = absl::Seconds(1);
  MembershipState s = Apply(Fresh(), HelloFrom(PeerB(), kT0), options).state;
  EXPECT_EQ(Kinds(Apply(s, Tick{kT0 + absl::Milliseconds(1100)}, options)),
            std::vector<Kind>{Kind::kPeerDown});
}

TEST(Membership, GoodbyeTakesAPeerDownAtOnceAndALateAnswerDoesNotRevive) {
  MembershipState s = Apply(Fresh(), HelloFrom(PeerB(), kT0)).state;
  MembershipTransition left = Apply(s, LeavingReceived{PeerB(), "received SIGTERM", kT0});
  ASSERT_EQ(Kinds(left), std::vector<Kind>{Kind::kPeerDown});
  EXPECT_EQ(left.state.peers.at(PeerB().node_id).state, PeerState::kLeft);
  EXPECT_THAT(left.effects[0].message, HasSubstr("received SIGTERM"));
  // The same process answering a Hello it got before leaving stays gone.
  EXPECT_TRUE(Apply(left.state, HelloFrom(PeerB(), kT0 + absl::Milliseconds(10))).effects.empty());
  // A goodbye from another process with that id (an old one) changes nothing.
  Instance restarted = PeerB();
  restarted.boot_id = 999;
  EXPECT_TRUE(Apply(s, LeavingReceived{restarted, "", kT0}).effects.empty());
  // The node restarted: admitted again.
  EXPECT_EQ(Kinds(Apply(left.state, HelloFrom(restarted, kT0 + absl::Seconds(2)))),
            std::vector<Kind>{Kind::kPeerUp});
}

TEST(Membership, RestartedPeerReplacesItsOldProcess) {
  MembershipState s = Apply(Fresh(), HelloFrom(PeerB(), kT0)).state;
  Instance restarted = PeerB();
  restarted.boot_id = 999;
  MembershipTransition t = Apply(s, HelloFrom(restarted, kT0 + absl::Seconds(1)));
  EXPECT_EQ(Kinds(t), (std::vector<Kind>{Kind::kPeerDown, Kind::kPeerUp}));
  EXPECT_EQ(t.state.peers.at(PeerB().node_id).instance.boot_id, 999u);
  // Heartbeats of the old process no longer count.
  MembershipTransition old =
      Apply(t.state, HeartbeatReceived{PeerB(), {}, {}, kT0 + absl::Seconds(3)});
  EXPECT_EQ(old.state.peers.at(PeerB().node_id).last_heard, kT0 + absl::Seconds(1));
}

TEST(Membership, KeyMismatchIsIgnoredWithOneLogLine) {
  const std::string reason = "cluster key mismatch: fingerprint 1234 vs 5678";
  MembershipTransition first = Apply(Fresh(), HelloRefused{"10.0.0.9:52416", "", reason, kT0});
  ASSERT_EQ(Kinds(first), std::vector<Kind>{Kind::kRefused});
  EXPECT_THAT(first.effects[0].message, HasSubstr("cluster key mismatch"));
  EXPECT_TRUE(first.state.peers.empty());
  MembershipState s = first.state;
  for (int i = 1; i < 5; ++i) {
    MembershipTransition again =
        Apply(s, HelloRefused{"10.0.0.9:52416", "", reason, kT0 + absl::Seconds(i)});
    EXPECT_TRUE(again.effects.empty());
    s = again.state;
  }
  ASSERT_EQ(s.refusals.size(), 1u);
  EXPECT_EQ(s.refusals[0].count, 5);
  EXPECT_EQ(s.refusals[0].last_seen, kT0 + absl::Seconds(4));
  // Another reason (a version mismatch) is news again.
  EXPECT_EQ(Kinds(Apply(s, HelloRefused{"10.0.0.9:52416", "", "protocol version 2", kT0})),
            std::vector<Kind>{Kind::kRefused});
}

TEST(Membership, RefusalListIsBounded) {
  MembershipState s = Fresh();
  for (int i = 0; i < 100; ++i) {
    s = Apply(s, HelloRefused{absl::StrCat("10.0.1.", i, ":1"), "", "key", kT0}).state;
  }
  EXPECT_EQ(s.refusals.size(), kMaxRefusals);
  EXPECT_EQ(s.refusals.back().address, "10.0.1.99:1");
}

TEST(Membership, DuplicateIdTheLaterNodeRenames) {
  // A clone that started earlier (4000 < 5000) claims our id: we rename.
  Instance clone = Self();
  clone.boot_id = 77;
  clone.started_unix_millis = 4000;
  MembershipTransition t = Apply(Fresh(), HelloReceived{clone, "10.0.0.5:52416", kT0});
  ASSERT_EQ(Kinds(t), std::vector<Kind>{Kind::kRenameSelf});
  EXPECT_THAT(t.effects[0].message, HasSubstr("10.0.0.5:52416"));
  EXPECT_TRUE(t.state.peers.empty());
  MembershipState renamed = Apply(t.state, SelfRenamed{"cccccccccccccccccccccccccccccccc"}).state;
  EXPECT_EQ(renamed.self.node_id, "cccccccccccccccccccccccccccccccc");
  // Now the clone is an ordinary peer.
  EXPECT_EQ(Kinds(Apply(renamed, HelloFrom(clone, kT0))), std::vector<Kind>{Kind::kPeerUp});

  // A clone that started later renames itself: we do nothing and never list it as a peer.
  Instance younger = Self();
  younger.boot_id = 78;
  younger.started_unix_millis = 6000;
  EXPECT_TRUE(Apply(Fresh(), HelloReceived{younger, "10.0.0.6:52416", kT0}).effects.empty());
  MembershipTransition answered = Apply(Fresh(), HelloFrom(younger, kT0));
  EXPECT_TRUE(answered.effects.empty());
  EXPECT_TRUE(answered.state.peers.empty());
  // Seen on the bus (a heartbeat) the rule is the same.
  EXPECT_EQ(Kinds(Apply(Fresh(), HeartbeatReceived{clone, {}, {}, kT0})),
            std::vector<Kind>{Kind::kRenameSelf});
  // Same start time: the larger boot id renames.
  Instance tie = Self();
  tie.boot_id = Self().boot_id + 1;
  EXPECT_TRUE(Apply(Fresh(), HelloReceived{tie, "x", kT0}).effects.empty());
  tie.boot_id = Self().boot_id - 1;
  EXPECT_EQ(Kinds(Apply(Fresh(), HelloReceived{tie, "x", kT0})),
            std::vector<Kind>{Kind::kRenameSelf});
}

TEST(Membership, DialingOurselvesIsRecognised) {
  MembershipTransition t = Apply(Fresh(), HelloSucceeded{Self(), "127.0.0.1:52416", "", {}, kT0});
  ASSERT_EQ(Kinds(t), std::vector<Kind>{Kind::kSelfDialed});
  EXPECT_EQ(t.effects[0].address, "127.0.0.1:52416");
  EXPECT_TRUE(t.state.peers.empty());
  // Our own heartbeat is silent.
  EXPECT_TRUE(Apply(Fresh(), HeartbeatReceived{Self(), {}, {}, kT0}).effects.empty());
}

}  // namespace
}  // namespace exo::node
