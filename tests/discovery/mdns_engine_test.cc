// The mDNS responder/browser state machine driven with a made-up clock and no sockets.
#include "discovery/internal/mdns_engine.h"

#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace exo::discovery::mdns_internal {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using ::testing::ElementsAre;
using ::testing::SizeIs;

constexpr uint32_t kIf = 7;
const TimePoint kT0 = TimePoint() + seconds(1000);

DnsName Name(const std::string& text) { return *DnsName::Parse(text); }

MdnsOptions TestOptions() {
  MdnsOptions options;
  options.instance_name = "node-a";
  options.host_name = "node-a.local";
  options.port = 50051;
  options.txt = {{"id", std::string("aaa")}, {"ckf", std::string("f00d")}};
  options.ipv6 = false;
  options.random_seed = 1;
  return options;
}

std::vector<MdnsInterface> TestInterfaces() {
  MdnsInterface interface;
  interface.index = kIf;
  interface.name = "veth0";
  interface.ipv4.push_back({10, 0, 0, 1});
  return {interface};
}

Endpoint Peer(uint16_t port = 5353, uint8_t last = 2) {
  Endpoint endpoint;
  endpoint.address = {10, 0, 0, last};
  endpoint.port = port;
  return endpoint;
}

struct Sent {
  TimePoint at;
  OutgoingPacket packet;
  DnsMessage message;
};

// Runs every timer up to `until`, collecting what the engine sends.
std::vector<Sent> RunUntil(MdnsEngine& engine, TimePoint& now, TimePoint until) {
  std::vector<Sent> sent;
  auto collect = [&] {
    for (OutgoingPacket& packet : engine.TakeOutgoing()) {
      absl::StatusOr<DnsMessage> message = ParseDnsMessage(packet.bytes);
      EXPECT_TRUE(message.ok()) << message.status();
      sent.push_back(Sent{now, std::move(packet), message.ok() ? *message : DnsMessage()});
    }
  };
  collect();
  while (true) {
    std::optional<TimePoint> next = engine.NextWakeup();
    if (!next || *next > until) break;
    now = std::max(now, *next);
    engine.Advance(now);
    collect();
  }
  now = until;
  engine.Advance(now);
  collect();
  return sent;
}

void Feed(MdnsEngine& engine, const DnsMessage& message, TimePoint now, Endpoint from = Peer(),
          uint32_t interface = kIf) {
  absl::StatusOr<std::vector<uint8_t>> bytes = SerializeDnsMessage(message);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  engine.HandlePacket(interface, from, *bytes, now);
}

bool IsProbe(const DnsMessage& m) { return !m.header.is_response() && !m.authorities.empty(); }
bool IsResponse(const DnsMessage& m) { return m.header.is_response(); }

const DnsRecord* Find(const std::vector<DnsRecord>& records, DnsType type) {
  for (const DnsRecord& record : records) {
    if (record.type == type) return &record;
  }
  return nullptr;
}

// An engine that finished probing and announcing; `now` is after that.
MdnsEngine Announced(TimePoint& now, MdnsOptions options = TestOptions()) {
  MdnsEngine engine(options, TestInterfaces());
  engine.Start(now);
  RunUntil(engine, now, now + seconds(3));
  EXPECT_EQ(engine.state(), ResponderState::kAnnounced);
  return engine;
}

// What another node "node-b" announces.
DnsMessage PeerAnnouncement(uint32_t ttl = 120, uint16_t port = 6000,
                            const std::string& instance = "node-b") {
  DnsMessage m;
  m.header.set_response(true);
  m.header.set_authoritative(true);
  const DnsName inst = Name(instance + "._exo-node._tcp.local");
  const DnsName host = Name(instance + ".local");
  m.answers.push_back(
      {Name("_exo-node._tcp.local"), DnsType::kPtr, kDnsClassIn, false, ttl, PtrRdata{inst}});
  m.answers.push_back({inst, DnsType::kSrv, kDnsClassIn, true, ttl, SrvRdata{0, 0, port, host}});
  m.answers.push_back(
      {inst, DnsType::kTxt, kDnsClassIn, true, ttl, TxtRdata{{"id=bbb", "ckf=beef", "mem=42"}}});
  m.answers.push_back({host, DnsType::kA, kDnsClassIn, true, ttl, ARdata{{10, 0, 0, 2}}});
  return m;
}

DnsMessage Query(const std::string& name, DnsType type, bool unicast = false) {
  DnsMessage m;
  m.questions.push_back({Name(name), type, kDnsClassIn, unicast});
  return m;
}

TEST(MdnsEngineTest, ProbesThreeTimes250MsApartThenAnnouncesTwiceOneSecondApart) {
  TimePoint now = kT0;
  MdnsEngine engine(TestOptions(), TestInterfaces());
  engine.Start(now);
  std::vector<Sent> sent = RunUntil(engine, now, kT0 + seconds(4));
  std::vector<Sent> probes;
  std::vector<Sent> announcements;
  for (const Sent& s : sent) {
    if (IsProbe(s.message)) probes.push_back(s);
    if (IsResponse(s.message)) announcements.push_back(s);
  }
  ASSERT_THAT(probes, SizeIs(3));
  EXPECT_LE(probes[0].at - kT0, milliseconds(250));  // random 0-250 ms first (§8.1)
  EXPECT_EQ(probes[1].at - probes[0].at, milliseconds(250));
  EXPECT_EQ(probes[2].at - probes[1].at, milliseconds(250));
  const DnsMessage& probe = probes[0].message;
  ASSERT_THAT(probe.questions, SizeIs(2));
  EXPECT_EQ(probe.questions[0].name, Name("node-a._exo-node._tcp.local"));
  EXPECT_EQ(probe.questions[0].type, DnsType::kAny);
  EXPECT_TRUE(probe.questions[0].unicast_response);
  EXPECT_EQ(probe.questions[1].name, Name("node-a.local"));
  EXPECT_NE(Find(probe.authorities, DnsType::kSrv), nullptr);
  EXPECT_NE(Find(probe.authorities, DnsType::kA), nullptr);
  EXPECT_FALSE(probes[0].packet.unicast_to.has_value());
  EXPECT_EQ(probes[0].packet.interface_index, kIf);

  ASSERT_THAT(announcements, SizeIs(2));
  EXPECT_GE(announcements[0].at - probes[2].at, milliseconds(250));
  EXPECT_EQ(announcements[1].at - announcements[0].at, seconds(1));
  const DnsMessage& a = announcements[0].message;
  EXPECT_TRUE(a.header.is_authoritative());
  const DnsRecord* ptr = Find(a.answers, DnsType::kPtr);
  const DnsRecord* srv = Find(a.answers, DnsType::kSrv);
  const DnsRecord* txt = Find(a.answers, DnsType::kTxt);
  const DnsRecord* addr = Find(a.answers, DnsType::kA);
  ASSERT_TRUE(ptr && srv && txt && addr);
  EXPECT_FALSE(ptr->cache_flush);  // shared
  EXPECT_TRUE(srv->cache_flush);   // unique
  EXPECT_EQ(ptr->ttl, 4500u);
  EXPECT_EQ(srv->ttl, 120u);
  EXPECT_EQ(std::get<SrvRdata>(srv->rdata).port, 50051);
  EXPECT_EQ(std::get<SrvRdata>(srv->rdata).target, Name("node-a.local"));
  EXPECT_THAT(std::get<TxtRdata>(txt->rdata).strings, ElementsAre("id=aaa", "ckf=f00d"));
  EXPECT_EQ(std::get<ARdata>(addr->rdata).address, (std::array<uint8_t, 4>{10, 0, 0, 1}));
  EXPECT_EQ(engine.state(), ResponderState::kAnnounced);
}

TEST(MdnsEngineTest, ConflictWhileProbingRenamesInstanceAndProbesAgain) {
  TimePoint now = kT0;
  MdnsEngine engine(TestOptions(), TestInterfaces());
  engine.Start(now);
  RunUntil(engine, now, kT0 + milliseconds(300));  // at least one probe out
  // Someone already owns node-a: it answers with its SRV.
  DnsMessage defence = PeerAnnouncement(120, 7000, "node-a");
  defence.answers[3].name = Name("other.local");
  std::get<SrvRdata>(defence.answers[1].rdata).target = Name("other.local");
  Feed(engine, defence, now);
  EXPECT_EQ(engine.instance_label(), "node-a (2)");
  EXPECT_EQ(engine.stats().conflicts, 1u);
  std::vector<Sent> sent = RunUntil(engine, now, now + seconds(4));
  int probes = 0;
  for (const Sent& s : sent) {
    if (!IsProbe(s.message)) continue;
    ++probes;
    EXPECT_EQ(s.message.questions[0].name, Name("node-a (2)._exo-node._tcp.local"));
  }
  EXPECT_EQ(probes, 3);
  EXPECT_EQ(engine.state(), ResponderState::kAnnounced);
}

TEST(MdnsEngineTest, HostNameConflictRenamesHost) {
  TimePoint now = kT0;
  MdnsEngine engine(TestOptions(), TestInterfaces());
  engine.Start(now);
  RunUntil(engine, now, kT0 + milliseconds(300));
  DnsMessage m;
  m.header.set_response(true);
  m.answers.push_back(
      {Name("node-a.local"), DnsType::kA, kDnsClassIn, true, 120, ARdata{{192, 168, 9, 9}}});
  Feed(engine, m, now);
  EXPECT_EQ(engine.host_name(), "node-a-2.local");
  EXPECT_EQ(engine.instance_label(), "node-a");
}

class OwnPacketsTest : public ::testing::TestWithParam<bool> {};

TEST_P(OwnPacketsTest, OwnLoopedBackPacketsAreNoConflict) {
  TimePoint now = kT0;
  MdnsOptions options = TestOptions();
  if (GetParam()) options.txt.clear();  // an empty TXT comes back as one empty string
  MdnsEngine engine(options, TestInterfaces());
  engine.Start(now);
  // Feed every packet we send straight back, as multicast loopback does.
  for (int step = 0; step < 40; ++step) {
    std::vector<Sent> sent = RunUntil(engine, now, now + milliseconds(100));
    for (const Sent& s : sent) Feed(engine, s.message, now, Peer(5353, 1));
  }
  EXPECT_EQ(engine.state(), ResponderState::kAnnounced);
  EXPECT_EQ(engine.instance_label(), "node-a");
  EXPECT_EQ(engine.stats().conflicts, 0u);
  EXPECT_TRUE(engine.Peers().empty());  // our own instance is not a peer
  EXPECT_TRUE(engine.TakeEvents().empty());
}

INSTANTIATE_TEST_SUITE_P(MdnsEngineTest, OwnPacketsTest, ::testing::Bool());

TEST(MdnsEngineTest, SimultaneousProbeTieBreakDefersOnlyTheLesserRecords) {
  for (bool theirs_greater : {true, false}) {
    TimePoint now = kT0;
    MdnsEngine engine(TestOptions(), TestInterfaces());
    engine.Start(now);
    RunUntil(engine, now, kT0 + milliseconds(260));
    DnsMessage probe;
    probe.questions.push_back(
        {Name("node-a._exo-node._tcp.local"), DnsType::kAny, kDnsClassIn, true});
    // Same TXT as ours, so the SRV port decides (records sorted by class, type, rdata).
    probe.authorities.push_back({Name("node-a._exo-node._tcp.local"), DnsType::kTxt, kDnsClassIn,
                                 false, 4500, TxtRdata{{"id=aaa", "ckf=f00d"}}});
    probe.authorities.push_back(
        {Name("node-a._exo-node._tcp.local"), DnsType::kSrv, kDnsClassIn, false, 120,
         SrvRdata{0, 0, static_cast<uint16_t>(theirs_greater ? 60000 : 10), Name("node-a.local")}});
    Feed(engine, probe, now);
    const TimePoint fed = now;
    std::vector<Sent> sent = RunUntil(engine, now, now + seconds(5));
    TimePoint first_probe_after{};
    for (const Sent& s : sent) {
      if (IsProbe(s.message)) {
        first_probe_after = s.at;
        break;
      }
    }
    if (theirs_greater) {
      EXPECT_GE(first_probe_after - fed, seconds(1)) << "the loser waits one second (§8.2)";
    } else {
      EXPECT_LT(first_probe_after - fed, milliseconds(300)) << "the winner goes on probing";
    }
    EXPECT_EQ(engine.instance_label(), "node-a");
    EXPECT_EQ(engine.state(), ResponderState::kAnnounced);
  }
}

TEST(MdnsEngineTest, AnswersPtrQueryAfterSharedDelayWithAdditionals) {
  TimePoint now = kT0;
  MdnsEngine engine = Announced(now);
  Feed(engine, Query("_exo-node._tcp.local", DnsType::kPtr), now);
  const TimePoint asked = now;
  EXPECT_TRUE(engine.TakeOutgoing().empty()) << "shared answers wait 20-120 ms";
  std::vector<Sent> sent;
  for (Sent& s : RunUntil(engine, now, now + milliseconds(200))) {
    if (IsResponse(s.message)) sent.push_back(std::move(s));
  }
  ASSERT_THAT(sent, SizeIs(1));
  EXPECT_GE(sent[0].at - asked, milliseconds(20));
  EXPECT_LE(sent[0].at - asked, milliseconds(120));
  const DnsMessage& r = sent[0].message;
  EXPECT_FALSE(sent[0].packet.unicast_to.has_value());
  ASSERT_THAT(r.answers, SizeIs(1));
  EXPECT_EQ(r.answers[0].type, DnsType::kPtr);
  EXPECT_NE(Find(r.additionals, DnsType::kSrv), nullptr);
  EXPECT_NE(Find(r.additionals, DnsType::kTxt), nullptr);
  EXPECT_NE(Find(r.additionals, DnsType::kA), nullptr);
  EXPECT_EQ(engine.stats().queries_answered, 1u);
}

TEST(MdnsEngineTest, AnswersSrvAndAddressQueriesImmediately) {
  TimePoint now = kT0;
  MdnsEngine engine = Announced(now);
  Feed(engine, Query("NODE-A._exo-node._tcp.local", DnsType::kSrv), now);  // case-insensitive
  std::vector<OutgoingPacket> out = engine.TakeOutgoing();
  ASSERT_THAT(out, SizeIs(1));
  DnsMessage r = *ParseDnsMessage(out[0].bytes);
  ASSERT_THAT(r.answers, SizeIs(1));
  EXPECT_EQ(r.answers[0].type, DnsType::kSrv);
  EXPECT_NE(Find(r.additionals, DnsType::kA), nullptr);
  Feed(engine, Query("node-a.local", DnsType::kA), now);
  out = engine.TakeOutgoing();
  ASSERT_THAT(out, SizeIs(1));
  r = *ParseDnsMessage(out[0].bytes);
  ASSERT_THAT(r.answers, SizeIs(1));
  EXPECT_EQ(r.answers[0].type, DnsType::kA);
  // Names we do not own get no answer.
  Feed(engine, Query("node-z.local", DnsType::kA), now);
  EXPECT_TRUE(engine.TakeOutgoing().empty());
}

TEST(MdnsEngineTest, KnownAnswerWithHalfTheTtlSuppressesOurAnswer) {
  TimePoint now = kT0;
  MdnsEngine engine = Announced(now);
  const DnsRecord our_ptr = engine.OwnRecords(TestInterfaces()[0])[0];
  for (uint32_t known_ttl : {4500u, 2250u, 2249u, 100u}) {
    DnsMessage q = Query("_exo-node._tcp.local", DnsType::kPtr);
    DnsRecord known = our_ptr;
    known.ttl = known_ttl;
    q.answers.push_back(known);
    const uint64_t before = engine.stats().answers_suppressed;
    Feed(engine, q, now);
    std::vector<Sent> sent;
    for (Sent& s : RunUntil(engine, now, now + milliseconds(200))) {
      if (IsResponse(s.message)) sent.push_back(std::move(s));
    }
    const bool suppressed = known_ttl * 2 >= 4500;
    EXPECT_EQ(sent.empty(), suppressed) << "known TTL " << known_ttl;
    EXPECT_EQ(engine.stats().answers_suppressed - before, suppressed ? 1u : 0u);
  }
}

TEST(MdnsEngineTest, LegacyUnicastQueryGetsUnicastReplyWithIdAndShortTtl) {
  TimePoint now = kT0;
  MdnsEngine engine = Announced(now);
  DnsMessage q = Query("_exo-node._tcp.local", DnsType::kPtr);
  q.header.id = 0x1234;
  Feed(engine, q, now, Peer(40000));
  std::vector<OutgoingPacket> out = engine.TakeOutgoing();
  ASSERT_THAT(out, SizeIs(1));
  ASSERT_TRUE(out[0].unicast_to.has_value());
  EXPECT_EQ(*out[0].unicast_to, Peer(40000));
  DnsMessage r = *ParseDnsMessage(out[0].bytes);
  EXPECT_EQ(r.header.id, 0x1234);
  EXPECT_TRUE(r.header.is_response());
  ASSERT_THAT(r.questions, SizeIs(1));
  EXPECT_EQ(r.questions[0].name, Name("_exo-node._tcp.local"));
  for (const auto* section : {&r.answers, &r.additionals}) {
    for (const DnsRecord& record : *section) {
      EXPECT_LE(record.ttl, 10u);
      EXPECT_FALSE(record.cache_flush);
    }
  }
  EXPECT_FALSE(r.additionals.empty());
}

TEST(MdnsEngineTest, QuQuestionGetsUnicastReplyAndMulticastOnlyWhenNotRecent) {
  TimePoint now = kT0;
  MdnsEngine engine = Announced(now);
  Feed(engine, Query("node-a._exo-node._tcp.local", DnsType::kSrv, /*unicast=*/true), now);
  std::vector<OutgoingPacket> out = engine.TakeOutgoing();
  ASSERT_THAT(out, SizeIs(1)) << "we multicast the records at the announcement just now";
  ASSERT_TRUE(out[0].unicast_to.has_value());
  EXPECT_EQ(out[0].unicast_to->port, 5353);
  now += seconds(31);  // more than a quarter of the 120 s TTL later
  Feed(engine, Query("node-a._exo-node._tcp.local", DnsType::kSrv, /*unicast=*/true), now);
  out = engine.TakeOutgoing();
  ASSERT_THAT(out, SizeIs(2));
  EXPECT_TRUE(out[0].unicast_to.has_value());
  EXPECT_FALSE(out[1].unicast_to.has_value());
}

TEST(MdnsEngineTest, StopSendsGoodbyeWithTtlZero) {
  TimePoint now = kT0;
  MdnsEngine engine = Announced(now);
  engine.Stop(now);
  std::vector<OutgoingPacket> out = engine.TakeOutgoing();
  ASSERT_THAT(out, SizeIs(1));
  DnsMessage goodbye = *ParseDnsMessage(out[0].bytes);
  EXPECT_TRUE(goodbye.header.is_response());
  ASSERT_GE(goodbye.answers.size(), 4u);
  for (const DnsRecord& record : goodbye.answers) EXPECT_EQ(record.ttl, 0u);
  EXPECT_NE(Find(goodbye.answers, DnsType::kPtr), nullptr);
  EXPECT_EQ(engine.state(), ResponderState::kStopped);
  EXPECT_FALSE(engine.NextWakeup().has_value());
}

TEST(MdnsEngineTest, StopBeforeAnnouncingSendsNothing) {
  TimePoint now = kT0;
  MdnsEngine engine(TestOptions(), TestInterfaces());
  engine.Start(now);
  RunUntil(engine, now, now + milliseconds(300));
  engine.Stop(now);
  for (const OutgoingPacket& p : engine.TakeOutgoing()) {
    EXPECT_FALSE(ParseDnsMessage(p.bytes)->header.is_response());
  }
}

TEST(MdnsEngineTest, UpdateTxtReannounces) {
  TimePoint now = kT0;
  MdnsEngine engine = Announced(now);
  ASSERT_TRUE(engine.UpdateTxt({{"id", std::string("aaa")}, {"mem", std::string("99")}}, now).ok());
  std::vector<Sent> sent = RunUntil(engine, now, now + seconds(3));
  int announcements = 0;
  for (const Sent& s : sent) {
    if (!IsResponse(s.message)) continue;
    ++announcements;
    const DnsRecord* txt = Find(s.message.answers, DnsType::kTxt);
    ASSERT_NE(txt, nullptr);
    EXPECT_THAT(std::get<TxtRdata>(txt->rdata).strings, ElementsAre("id=aaa", "mem=99"));
  }
  EXPECT_EQ(announcements, 2);
  EXPECT_FALSE(engine.UpdateTxt({{"bad=key", std::nullopt}}, now).ok());
}

TEST(MdnsEngineTest, BrowserResolvesPeerFromAnnouncement) {
  TimePoint now = kT0;
  MdnsEngine engine = Announced(now);
  engine.TakeEvents();
  Feed(engine, PeerAnnouncement(), now);
  std::vector<PeerEvent> events = engine.TakeEvents();
  ASSERT_THAT(events, SizeIs(1));
  EXPECT_EQ(events[0].kind, PeerEventKind::kAdded);
  const PeerInfo& peer = events[0].peer;
  EXPECT_EQ(peer.instance_name, "node-b");
  EXPECT_EQ(peer.host_name, "node-b.local");
  EXPECT_EQ(peer.host, "10.0.0.2");
  EXPECT_EQ(peer.grpc_port, 6000);
  EXPECT_EQ(peer.node_id, "bbb");
  EXPECT_EQ(peer.cluster_fingerprint, "beef");
  EXPECT_EQ(peer.txt.at("mem"), "42");
  EXPECT_EQ(peer.interface_name, "veth0");
  EXPECT_EQ(peer.source, PeerSource::kMdns);
  EXPECT_THAT(engine.Peers(), SizeIs(1));
  // The same announcement again changes nothing.
  Feed(engine, PeerAnnouncement(), now + seconds(1));
  EXPECT_TRUE(engine.TakeEvents().empty());
}

TEST(MdnsEngineTest, PartialAnswersTriggerResolveQueries) {
  TimePoint now = kT0;
  MdnsOptions options = TestOptions();
  options.publish = false;
  MdnsEngine engine(options, TestInterfaces());
  engine.Start(now);
  RunUntil(engine, now, now + milliseconds(500));
  DnsMessage only_ptr = PeerAnnouncement();
  only_ptr.answers.resize(1);
  Feed(engine, only_ptr, now);
  std::vector<OutgoingPacket> out = engine.TakeOutgoing();
  ASSERT_THAT(out, SizeIs(1));
  DnsMessage q = *ParseDnsMessage(out[0].bytes);
  ASSERT_THAT(q.questions, SizeIs(2));
  EXPECT_EQ(q.questions[0].type, DnsType::kSrv);
  EXPECT_EQ(q.questions[1].type, DnsType::kTxt);
  EXPECT_TRUE(engine.TakeEvents().empty());
  DnsMessage rest = PeerAnnouncement();
  rest.answers.erase(rest.answers.begin());
  Feed(engine, rest, now + milliseconds(10));
  EXPECT_THAT(engine.TakeEvents(), SizeIs(1));
}

TEST(MdnsEngineTest, CacheExpiresByTtlAfterRefreshQueriesAt80To95Percent) {
  TimePoint now = kT0;
  MdnsOptions options = TestOptions();
  options.publish = false;
  MdnsEngine engine(options, TestInterfaces());
  engine.Start(now);
  RunUntil(engine, now, now + milliseconds(500));
  const TimePoint received = now;
  Feed(engine, PeerAnnouncement(/*ttl=*/100), now);
  ASSERT_THAT(engine.TakeEvents(), SizeIs(1));
  std::vector<Sent> sent = RunUntil(engine, now, received + seconds(99));
  std::vector<TimePoint> srv_refreshes;
  for (const Sent& s : sent) {
    for (const DnsQuestion& q : s.message.questions) {
      if (q.type == DnsType::kSrv) srv_refreshes.push_back(s.at);
    }
  }
  ASSERT_THAT(srv_refreshes, SizeIs(4));
  for (int i = 0; i < 4; ++i) {
    const auto offset = srv_refreshes[i] - received;
    EXPECT_GE(offset, seconds(80 + 5 * i));
    EXPECT_LE(offset, seconds(82 + 5 * i));  // 0-2% jitter
  }
  EXPECT_THAT(engine.Peers(), SizeIs(1));
  EXPECT_TRUE(engine.TakeEvents().empty());
  RunUntil(engine, now, received + seconds(101));
  std::vector<PeerEvent> events = engine.TakeEvents();
  ASSERT_THAT(events, SizeIs(1));
  EXPECT_EQ(events[0].kind, PeerEventKind::kRemoved);
  EXPECT_TRUE(engine.Peers().empty());
  EXPECT_EQ(engine.stats().cache_entries, 0u);
}

TEST(MdnsEngineTest, RefreshedRecordsStay) {
  TimePoint now = kT0;
  MdnsEngine engine = Announced(now);
  Feed(engine, PeerAnnouncement(100), now);
  RunUntil(engine, now, now + seconds(85));
  Feed(engine, PeerAnnouncement(100), now);  // the answer to our refresh query
  RunUntil(engine, now, now + seconds(60));
  EXPECT_THAT(engine.Peers(), SizeIs(1));
}

TEST(MdnsEngineTest, GoodbyeRemovesPeerAtOnceAndCacheAfterOneSecond) {
  TimePoint now = kT0;
  MdnsEngine engine = Announced(now);
  Feed(engine, PeerAnnouncement(), now);
  engine.TakeEvents();
  const size_t cached = engine.stats().cache_entries;
  Feed(engine, PeerAnnouncement(/*ttl=*/0), now);
  std::vector<PeerEvent> events = engine.TakeEvents();
  ASSERT_THAT(events, SizeIs(1));
  EXPECT_EQ(events[0].kind, PeerEventKind::kRemoved);
  EXPECT_EQ(events[0].peer.instance_name, "node-b");
  RunUntil(engine, now, now + milliseconds(900));
  EXPECT_EQ(engine.stats().cache_entries, cached) << "kept one second (§10.1)";
  RunUntil(engine, now, now + milliseconds(200));
  EXPECT_EQ(engine.stats().cache_entries, 0u);

  // A re-announcement within the grace second brings the peer back.
  Feed(engine, PeerAnnouncement(), now);
  engine.TakeEvents();
  Feed(engine, PeerAnnouncement(0), now);
  Feed(engine, PeerAnnouncement(), now + milliseconds(300));
  events = engine.TakeEvents();
  ASSERT_THAT(events, SizeIs(2));
  EXPECT_EQ(events[1].kind, PeerEventKind::kAdded);
}

TEST(MdnsEngineTest, CacheFlushReplacesOlderRecordsAndReportsUpdate) {
  TimePoint now = kT0;
  MdnsEngine engine = Announced(now);
  Feed(engine, PeerAnnouncement(120, 6000), now);
  engine.TakeEvents();
  now += seconds(2);
  Feed(engine, PeerAnnouncement(120, 6001), now);
  std::vector<PeerEvent> events = engine.TakeEvents();
  ASSERT_THAT(events, SizeIs(1));
  EXPECT_EQ(events[0].kind, PeerEventKind::kUpdated);
  EXPECT_EQ(events[0].peer.grpc_port, 6001);
  RunUntil(engine, now, now + seconds(2));
  EXPECT_TRUE(engine.TakeEvents().empty());
  EXPECT_EQ(engine.Peers().at(0).grpc_port, 6001);
}

TEST(MdnsEngineTest, BrowseQueriesBackOffExponentiallyWithKnownAnswers) {
  TimePoint now = kT0;
  MdnsOptions options = TestOptions();
  options.publish = false;
  options.timings.query_max_interval = milliseconds(8000);
  MdnsEngine engine(options, TestInterfaces());
  engine.Start(now);
  std::vector<TimePoint> times;
  auto browse_queries = [&](const std::vector<Sent>& sent) {
    std::vector<const Sent*> queries;
    for (const Sent& s : sent) {
      if (s.message.questions.empty() || s.message.questions[0].type != DnsType::kPtr) continue;
      EXPECT_FALSE(s.message.questions[0].unicast_response);
      times.push_back(s.at);
      queries.push_back(&s);
    }
    return queries;
  };
  std::vector<Sent> first = RunUntil(engine, now, kT0 + milliseconds(500));
  ASSERT_THAT(browse_queries(first), SizeIs(1));
  EXPECT_TRUE(first[0].message.answers.empty());
  DnsMessage a = PeerAnnouncement();
  a.answers[0].ttl = 4500;
  Feed(engine, a, now);
  std::vector<Sent> later = RunUntil(engine, now, kT0 + seconds(40));
  for (const Sent* s : browse_queries(later)) {
    // The PTR we cached is listed as a known answer with its remaining TTL.
    ASSERT_THAT(s->message.answers, SizeIs(1));
    EXPECT_EQ(std::get<PtrRdata>(s->message.answers[0].rdata).target,
              Name("node-b._exo-node._tcp.local"));
    EXPECT_LE(s->message.answers[0].ttl, 4500u);
    EXPECT_GT(s->message.answers[0].ttl, 4400u);
  }
  ASSERT_GE(times.size(), 6u);
  EXPECT_GE(times[0] - kT0, milliseconds(20));
  EXPECT_LE(times[0] - kT0, milliseconds(120));
  EXPECT_EQ(times[1] - times[0], seconds(1));
  EXPECT_EQ(times[2] - times[1], seconds(2));
  EXPECT_EQ(times[3] - times[2], seconds(4));
  EXPECT_EQ(times[4] - times[3], seconds(8));
  EXPECT_EQ(times[5] - times[4], seconds(8));  // capped
}

TEST(MdnsEngineTest, MalformedAndMisdirectedPacketsAreDroppedAndCounted) {
  TimePoint now = kT0;
  MdnsEngine engine = Announced(now);
  engine.TakeOutgoing();
  const std::vector<std::vector<uint8_t>> hostile = {
      {},
      {0x00},
      {0, 0, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 0},           // one answer announced, none present
      {0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 0x0C},  // question name pointing at itself
      std::vector<uint8_t>(70000, 0xFF),
  };
  for (const auto& packet : hostile) engine.HandlePacket(kIf, Peer(), packet, now);
  EXPECT_EQ(engine.stats().packets_malformed, hostile.size());
  // A valid announcement from a port other than 5353 is not a response we accept (§11).
  Feed(engine, PeerAnnouncement(), now, Peer(40000));
  // Nor one on an interface we do not use.
  Feed(engine, PeerAnnouncement(), now, Peer(), kIf + 1);
  EXPECT_EQ(engine.stats().packets_ignored, 2u);
  EXPECT_TRUE(engine.Peers().empty());
  EXPECT_TRUE(engine.TakeOutgoing().empty());
}

TEST(MdnsEngineTest, CacheIsBounded) {
  TimePoint now = kT0;
  MdnsOptions options = TestOptions();
  options.max_cache_entries = 10;
  MdnsEngine engine = Announced(now, options);
  for (int i = 0; i < 50; ++i) {
    DnsMessage m;
    m.header.set_response(true);
    m.answers.push_back({Name("h" + std::to_string(i) + ".local"), DnsType::kA, kDnsClassIn, true,
                         4500, ARdata{{10, 0, 1, static_cast<uint8_t>(i)}}});
    Feed(engine, m, now);
  }
  EXPECT_EQ(engine.stats().cache_entries, 10u);
  EXPECT_EQ(engine.stats().cache_full_drops, 40u);
}

TEST(MdnsEngineTest, RenamedInstanceKeepsUtf8AndLabelLimit) {
  EXPECT_EQ(RenamedInstance("node-a", 2), "node-a (2)");
  const std::string long_name = std::string(58, 'x') + "\xc3\x84" + "yy";  // 62 bytes
  const std::string renamed = RenamedInstance(long_name, 12);
  EXPECT_LE(renamed.size(), 63u);
  EXPECT_EQ(renamed, std::string(58, 'x') + " (12)");
}

TEST(MdnsEngineTest, CompareRecordSetsIsLexicographic) {
  DnsRecord a{Name("x.local"), DnsType::kA, kDnsClassIn, false, 120, ARdata{{10, 0, 0, 1}}};
  DnsRecord b = a;
  std::get<ARdata>(b.rdata).address[3] = 2;
  EXPECT_EQ(CompareRecordSets({a}, {b}), -1);
  EXPECT_EQ(CompareRecordSets({b}, {a}), 1);
  EXPECT_EQ(CompareRecordSets({a, b}, {b, a}), 0);
  EXPECT_EQ(CompareRecordSets({a}, {a, b}), -1);
}

TEST(MdnsOptionsTest, ValidationSaysWhatToChange) {
  MdnsOptions options = TestOptions();
  EXPECT_TRUE(ValidateMdnsOptions(options).ok());
  options.port = 0;
  EXPECT_FALSE(ValidateMdnsOptions(options).ok());
  options = TestOptions();
  options.instance_name = std::string(64, 'n');
  EXPECT_THAT(std::string(ValidateMdnsOptions(options).message()), ::testing::HasSubstr("63"));
  options = TestOptions();
  options.ipv4 = options.ipv6 = false;
  EXPECT_FALSE(ValidateMdnsOptions(options).ok());
  options = TestOptions();
  options.txt.push_back({"id", std::string("dup")});
  EXPECT_FALSE(ValidateMdnsOptions(options).ok());
  options = TestOptions();
  options.service_type = "not a service";
  EXPECT_FALSE(ValidateMdnsOptions(options).ok());
}

}  // namespace
}  // namespace exo::discovery::mdns_internal
