#include "discovery/dns_message.h"

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace exo::discovery {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

using Bytes = std::vector<uint8_t>;

// The instance label zeroconf was given: spaces and a UTF-8 "Ä".
const char kInstanceLabel[] = "Exo Node \xc3\x84 1";

std::string DataPath(const std::string& name) {
  return std::string(EXO_SOURCE_DIR) + "/tests/discovery/data/" + name;
}

Bytes ReadData(const std::string& name) {
  std::ifstream in(DataPath(name), std::ios::binary);
  EXPECT_TRUE(in.good()) << "missing test data " << DataPath(name)
                         << " (regenerate with tests/discovery/capture_packets.py)";
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

DnsName Name(const std::string& presentation) {
  absl::StatusOr<DnsName> name = DnsName::Parse(presentation);
  EXPECT_TRUE(name.ok()) << presentation << ": " << name.status();
  return name.ok() ? *name : DnsName();
}

DnsMessage Parsed(const Bytes& packet) {
  absl::StatusOr<DnsMessage> message = ParseDnsMessage(packet);
  EXPECT_TRUE(message.ok()) << message.status();
  return message.ok() ? *message : DnsMessage();
}

Bytes Serialized(const DnsMessage& message, DnsSerializeOptions options = {}) {
  absl::StatusOr<Bytes> bytes = SerializeDnsMessage(message, options);
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  return bytes.ok() ? *bytes : Bytes();
}

// Parses `packet`, expecting InvalidArgument, and returns the message.
std::string ParseError(const Bytes& packet) {
  absl::StatusOr<DnsMessage> message = ParseDnsMessage(packet);
  EXPECT_EQ(message.status().code(), absl::StatusCode::kInvalidArgument)
      << (message.ok() ? DnsMessageToString(*message) : std::string(message.status().message()));
  return std::string(message.status().message());
}

// A header with the given counts, id 0, flags 0.
Bytes Header(uint16_t questions, uint16_t answers = 0, uint16_t authorities = 0,
             uint16_t additionals = 0) {
  return {0,
          0,
          0,
          0,
          static_cast<uint8_t>(questions >> 8),
          static_cast<uint8_t>(questions),
          static_cast<uint8_t>(answers >> 8),
          static_cast<uint8_t>(answers),
          static_cast<uint8_t>(authorities >> 8),
          static_cast<uint8_t>(authorities),
          static_cast<uint8_t>(additionals >> 8),
          static_cast<uint8_t>(additionals)};
}

void Append(Bytes& out, const Bytes& more) { out.insert(out.end(), more.begin(), more.end()); }

// Uncompressed wire form of a dotted name without escapes.
Bytes WireName(const std::string& dotted) {
  Bytes out;
  size_t start = 0;
  while (start < dotted.size()) {
    size_t dot = dotted.find('.', start);
    if (dot == std::string::npos) dot = dotted.size();
    out.push_back(static_cast<uint8_t>(dot - start));
    out.insert(out.end(), dotted.begin() + start, dotted.begin() + dot);
    start = dot + 1;
  }
  out.push_back(0);
  return out;
}

// One answer record: `name` (already in wire form), type, class IN, TTL 120, then rdata.
Bytes RecordBytes(const Bytes& name, uint16_t type, const Bytes& rdata,
                  size_t rdlength = static_cast<size_t>(-1)) {
  if (rdlength == static_cast<size_t>(-1)) rdlength = rdata.size();
  Bytes out = name;
  Append(out, {static_cast<uint8_t>(type >> 8), static_cast<uint8_t>(type), 0, 1, 0, 0, 0, 120,
               static_cast<uint8_t>(rdlength >> 8), static_cast<uint8_t>(rdlength)});
  Append(out, rdata);
  return out;
}

DnsRecord Record(const std::string& name, DnsType type, DnsRdata rdata, uint32_t ttl = 120,
                 bool cache_flush = false) {
  DnsRecord record;
  record.name = Name(name);
  record.type = type;
  record.ttl = ttl;
  record.cache_flush = cache_flush;
  record.rdata = std::move(rdata);
  return record;
}

// A message with every kind of rdata, both class bits, names sharing suffixes and an odd case.
DnsMessage SampleMessage() {
  DnsMessage message;
  message.header.id = 0x1234;
  message.header.set_response(true);
  message.header.set_authoritative(true);
  DnsQuestion question;
  question.name = Name("_exo-node._tcp.local");
  question.type = DnsType::kPtr;
  question.unicast_response = true;
  message.questions.push_back(question);

  DnsName instance = *Name("_exo-node._tcp.local").Prepend("My Node.with dots");
  message.answers.push_back(
      Record("_exo-node._tcp.local", DnsType::kPtr, PtrRdata{instance}, 4500));
  DnsRecord srv =
      Record("x", DnsType::kSrv, SrvRdata{1, 2, 50051, Name("Host-A.LOCAL")}, 120, true);
  srv.name = instance;
  message.answers.push_back(srv);
  DnsRecord txt = Record("x", DnsType::kTxt, TxtRdata{{"id=abc", "flag", "", "v=1"}}, 4500, true);
  txt.name = instance;
  message.answers.push_back(txt);
  message.additionals.push_back(
      Record("host-a.local", DnsType::kA, ARdata{{192, 168, 1, 20}}, 120, true));
  message.additionals.push_back(
      Record("host-a.local", DnsType::kAaaa,
             AaaaRdata{{0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7}}, 120, true));
  message.additionals.push_back(
      Record("host-a.local", DnsType::kNsec, NsecRdata{Name("host-a.local"), {1, 28}}, 120, true));
  message.authorities.push_back(Record("host-a.local", DnsType::kHinfo,
                                       RawRdata{{3, 'x', '8', '6', 5, 'L', 'i', 'n', 'u', 'x'}}));
  message.authorities.push_back(
      Record("alias.local", DnsType::kCname, PtrRdata{Name("host-a.local")}));
  DnsRecord opt = Record(".", DnsType::kOpt, RawRdata{});
  opt.rrclass = 1440;  // OPT carries the payload size in the class field
  message.additionals.push_back(opt);
  return message;
}

// Checks that every name in `a` and `b` matches byte for byte (== ignores case).
void ExpectIdenticalNames(const DnsMessage& a, const DnsMessage& b) {
  ASSERT_EQ(a, b);
  for (size_t i = 0; i < a.questions.size(); ++i) {
    EXPECT_TRUE(a.questions[i].name.IdenticalTo(b.questions[i].name));
  }
  const std::vector<DnsRecord>* sa[] = {&a.answers, &a.authorities, &a.additionals};
  const std::vector<DnsRecord>* sb[] = {&b.answers, &b.authorities, &b.additionals};
  for (int s = 0; s < 3; ++s) {
    for (size_t i = 0; i < sa[s]->size(); ++i) {
      const DnsRecord& ra = (*sa[s])[i];
      const DnsRecord& rb = (*sb[s])[i];
      EXPECT_TRUE(ra.name.IdenticalTo(rb.name)) << ra.name.ToString() << " " << rb.name.ToString();
      if (const auto* srv = std::get_if<SrvRdata>(&ra.rdata)) {
        EXPECT_TRUE(srv->target.IdenticalTo(std::get<SrvRdata>(rb.rdata).target));
      }
    }
  }
}

// ---- DnsName ----------------------------------------------------------------------------------

TEST(DnsName, ParsesPresentationFormWithEscapes) {
  DnsName name = Name("My\\ Node\\.1\\092x\\065._exo-node._tcp.local.");
  EXPECT_THAT(name.labels(), ElementsAre("My Node.1\\xA", "_exo-node", "_tcp", "local"));
  EXPECT_EQ(name.ToString(), "My Node\\.1\\\\xA._exo-node._tcp.local");
  EXPECT_TRUE(Name(name.ToString()).IdenticalTo(name));
  EXPECT_TRUE(Name("").is_root());
  EXPECT_TRUE(Name(".").is_root());
  EXPECT_EQ(DnsName().ToString(), ".");
  EXPECT_EQ(Name("a.local").wire_length(), 9u);
}

TEST(DnsName, PrintsControlBytesAsDecimalEscapes) {
  DnsName name = *DnsName::FromLabels({std::string("a\0b\x7f", 4)});
  EXPECT_EQ(name.ToString(), "a\\000b\\127");
  EXPECT_TRUE(Name(name.ToString()).IdenticalTo(name));
}

TEST(DnsName, RejectsBadNames) {
  EXPECT_THAT(DnsName::Parse("a..b").status().message(), HasSubstr("empty label"));
  EXPECT_THAT(DnsName::Parse(".a").status().message(), HasSubstr("empty label"));
  EXPECT_THAT(DnsName::Parse("a\\").status().message(), HasSubstr("backslash"));
  EXPECT_THAT(DnsName::Parse("a\\25").status().message(), HasSubstr("three digits"));
  EXPECT_THAT(DnsName::Parse("a\\256").status().message(), HasSubstr("above 255"));
  EXPECT_THAT(DnsName::Parse(std::string(64, 'x')).status().message(), HasSubstr("64 bytes"));
  EXPECT_TRUE(DnsName::Parse(std::string(63, 'x')).ok());
  // 4 labels of 63 bytes: 4 * 64 + 1 = 257 bytes in wire form.
  std::string long_name = absl::StrCat(std::string(63, 'a'), ".", std::string(63, 'b'), ".",
                                       std::string(63, 'c'), ".", std::string(63, 'd'));
  EXPECT_THAT(DnsName::Parse(long_name).status().message(), HasSubstr("exceeds 255"));
  // 3 labels of 63 and one of 61: exactly 255.
  EXPECT_TRUE(DnsName::Parse(long_name.substr(0, long_name.size() - 2)).ok());
  EXPECT_FALSE(DnsName::FromLabels({"a", ""}).ok());
  EXPECT_FALSE(Name("x").Prepend(std::string(64, 'y')).ok());
}

TEST(DnsName, ComparesAsciiCaseInsensitively) {
  EXPECT_EQ(Name("Exo-Node.LOCAL"), Name("exo-node.local"));
  EXPECT_FALSE(Name("Exo-Node.LOCAL").IdenticalTo(Name("exo-node.local")));
  EXPECT_EQ(Name("Exo-Node.LOCAL").CanonicalKey(), Name("exo-node.local").CanonicalKey());
  EXPECT_NE(Name("exo-node.local"), Name("exo-node2.local"));
  EXPECT_NE(Name("a.local"), Name("local"));
  // Only ASCII letters fold: "Ä" (C3 84) and "ä" (C3 A4) differ.
  EXPECT_NE(Name("\xc3\x84.local"), Name("\xc3\xa4.local"));
  EXPECT_TRUE(Name("A._exo-node._TCP.local").EndsWith(Name("_tcp.Local")));
  EXPECT_TRUE(Name("local").EndsWith(Name("local")));
  EXPECT_TRUE(Name("local").EndsWith(DnsName()));
  EXPECT_FALSE(Name("local").EndsWith(Name("a.local")));
  EXPECT_FALSE(Name("xlocal").EndsWith(Name("local")));
}

TEST(DnsName, PrependKeepsDotsInsideTheLabel) {
  DnsName name = *Name("_exo-node._tcp.local").Prepend("Node 1.2");
  EXPECT_THAT(name.labels(), ElementsAre("Node 1.2", "_exo-node", "_tcp", "local"));
  EXPECT_EQ(name.ToString(), "Node 1\\.2._exo-node._tcp.local");
}

TEST(DnsHeader, FlagAccessors) {
  DnsHeader header;
  header.flags = 0x8400 | (5 << 11) | 3;
  EXPECT_TRUE(header.is_response());
  EXPECT_TRUE(header.is_authoritative());
  EXPECT_FALSE(header.is_truncated());
  EXPECT_EQ(header.opcode(), 5);
  EXPECT_EQ(header.rcode(), 3);
  header.set_truncated(true);
  header.set_response(false);
  EXPECT_EQ(header.flags, 0x0600 | (5 << 11) | 3);
}

// ---- Round trips ------------------------------------------------------------------------------

TEST(DnsMessageRoundTrip, EveryRdataKindSurvives) {
  const DnsMessage message = SampleMessage();
  const Bytes bytes = Serialized(message);
  const DnsMessage parsed = Parsed(bytes);
  ExpectIdenticalNames(message, parsed);
  EXPECT_EQ(Serialized(parsed), bytes);
  EXPECT_THAT(DnsMessageToString(parsed), HasSubstr("SRV 1 2 50051 Host-A.LOCAL"));
}

TEST(DnsMessageRoundTrip, CompressesRepeatedSuffixes) {
  DnsMessage message;
  message.answers.push_back(Record("host-a.local", DnsType::kA, ARdata{{10, 0, 0, 1}}));
  message.answers.push_back(Record("host-a.local", DnsType::kA, ARdata{{10, 0, 0, 2}}));
  message.answers.push_back(Record("host-b.local", DnsType::kPtr, PtrRdata{Name("host-a.local")}));
  const Bytes bytes = Serialized(message);
  // First record: 14-byte name + 10 + 4. Second: pointer to offset 12.
  const size_t second = 12 + 14 + 10 + 4;
  EXPECT_EQ(bytes[second], 0xC0);
  EXPECT_EQ(bytes[second + 1], 12);
  // Third: "host-b" then a pointer to "local" (offset 12 + 7); its rdata is a 2-byte pointer.
  const size_t third = second + 2 + 10 + 4;
  EXPECT_EQ(bytes[third], 6);
  EXPECT_EQ(bytes[third + 7], 0xC0);
  EXPECT_EQ(bytes[third + 8], 19);
  EXPECT_EQ(bytes.size(), third + 9 + 10 + 2);
  EXPECT_EQ(Parsed(bytes), message);
}

TEST(DnsMessageRoundTrip, CompressionKeepsTheCaseOfEachName) {
  DnsMessage message;
  message.answers.push_back(Record("Host.Local", DnsType::kA, ARdata{{10, 0, 0, 1}}));
  message.answers.push_back(Record("host.local", DnsType::kA, ARdata{{10, 0, 0, 2}}));
  message.answers.push_back(Record("HOST.local", DnsType::kA, ARdata{{10, 0, 0, 3}}));
  ExpectIdenticalNames(message, Parsed(Serialized(message)));
}

TEST(DnsMessageRoundTrip, PointersOnlyReachTheFirst16KiB) {
  // Enough TXT data to push later names past offset 0x3FFF, where pointers cannot reach.
  DnsMessage message;
  for (int i = 0; i < 70; ++i) {
    message.answers.push_back(
        Record("pad.local", DnsType::kTxt, TxtRdata{{std::string(250, 'p')}}));
  }
  for (int i = 0; i < 3; ++i) {
    message.answers.push_back(
        Record("far" + std::to_string(i) + ".away.test", DnsType::kA, ARdata{{1, 2, 3, 4}}));
  }
  DnsSerializeOptions options;
  options.max_size = kMaxDnsMessageSize;
  const Bytes bytes = Serialized(message, options);
  ASSERT_GT(bytes.size(), 0x4000u);
  ExpectIdenticalNames(message, Parsed(bytes));
}

TEST(DnsMessageSerialize, RefusesMessagesOverTheSizeLimit) {
  DnsMessage message;
  for (int i = 0; i < 40; ++i) {
    message.answers.push_back(
        Record("pad.local", DnsType::kTxt, TxtRdata{{std::string(250, 'p')}}));
  }
  absl::StatusOr<Bytes> bytes = SerializeDnsMessage(message);
  ASSERT_EQ(bytes.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(bytes.status().message(), HasSubstr("limit of 9000"));
  DnsSerializeOptions small;
  small.max_size = 512;
  message.answers.resize(2);  // 12 + (11 + 10 + 251) + (2 + 10 + 251) = 547 bytes
  EXPECT_EQ(SerializeDnsMessage(message, small).status().code(), absl::StatusCode::kOutOfRange);
  small.max_size = 547;
  EXPECT_EQ(SerializeDnsMessage(message, small)->size(), 547u);
}

TEST(DnsMessageSerialize, RefusesRdataThatDoesNotMatchTheType) {
  DnsMessage message;
  message.answers.push_back(Record("a.local", DnsType::kA, SrvRdata{0, 0, 1, Name("b.local")}));
  EXPECT_THAT(SerializeDnsMessage(message).status().message(), HasSubstr("wrong kind of rdata"));
  message.answers[0] = Record("a.local", DnsType::kA, RawRdata{{1, 2, 3, 4}});
  EXPECT_FALSE(SerializeDnsMessage(message).ok());
  message.answers[0] = Record("a.local", DnsType::kTxt, TxtRdata{{std::string(256, 'x')}});
  EXPECT_THAT(SerializeDnsMessage(message).status().message(), HasSubstr("exceeds 255"));
}

TEST(DnsMessageSerialize, EmptyTxtIsOneEmptyString) {
  DnsMessage message;
  message.answers.push_back(Record("a.local", DnsType::kTxt, TxtRdata{}));
  const Bytes bytes = Serialized(message);
  EXPECT_EQ(bytes.back(), 0);
  EXPECT_EQ(bytes[bytes.size() - 2], 1);  // rdlength 1
  EXPECT_THAT(std::get<TxtRdata>(Parsed(bytes).answers[0].rdata).strings, ElementsAre(""));
}

TEST(DnsMessageSerialize, NsecBitmapUsesOneBlockPerWindow) {
  DnsMessage message;
  message.answers.push_back(
      Record("a.local", DnsType::kNsec, NsecRdata{Name("a.local"), {65535, 1, 28, 47, 1, 256}}));
  const Bytes bytes = Serialized(message);
  const DnsMessage parsed = Parsed(bytes);
  EXPECT_THAT(std::get<NsecRdata>(parsed.answers[0].rdata).types,
              ElementsAre(1, 28, 47, 256, 65535));
  // next name (pointer) + window 0 (6 bytes) + window 1 (1 byte) + window 255 (32 bytes).
  EXPECT_EQ(bytes.size(), 12 + 9 + 10 + 2 + (2 + 6) + (2 + 1) + (2 + 32));
}

// ---- Hostile packets --------------------------------------------------------------------------

TEST(ParseDnsMessage, RejectsShortAndHugePackets) {
  EXPECT_THAT(ParseError(Bytes(11, 0)), HasSubstr("shorter than the 12-byte header"));
  EXPECT_THAT(ParseError(Bytes(65536, 0)), HasSubstr("exceeds 65535"));
  EXPECT_TRUE(ParseDnsMessage(Bytes(12, 0)).ok());
}

TEST(ParseDnsMessage, RejectsCountsThePacketCannotHold) {
  Bytes packet = Header(0, 65535);
  Append(packet, Bytes(100, 0));
  EXPECT_THAT(ParseError(packet), HasSubstr("more than the limit of 1024"));
  packet = Header(10, 0, 0, 1);
  Append(packet, Bytes(60, 0));  // 10 root questions (50 bytes) + a record (11) do not fit
  EXPECT_THAT(ParseError(packet), HasSubstr("need at least 61 bytes but only 60"));
  packet.push_back(0);
  EXPECT_TRUE(ParseDnsMessage(packet).ok());  // now they do: all root names, zero fields
}

TEST(ParseDnsMessage, RejectsSelfAndForwardPointers) {
  Bytes packet = Header(1);
  Append(packet, {0xC0, 12, 0, 1, 0, 1});  // name at 12 points at itself
  EXPECT_THAT(ParseError(packet), HasSubstr("compression pointer loop"));
  EXPECT_THAT(ParseError(packet), HasSubstr("in name at offset 12"));
  packet = Header(1);
  Append(packet, {0xC0, 14, 0xC0, 12, 0, 1, 0, 1});  // 12 -> 14 -> 12
  EXPECT_THAT(ParseError(packet), HasSubstr("compression pointer loop"));
}

TEST(ParseDnsMessage, RejectsLoopsThroughBackwardPointers) {
  // A second question "b" "c" then a pointer back to its own "c": backwards from the pointer,
  // but inside the same name, so following it would loop forever.
  Bytes packet = Header(2);
  Append(packet, {1, 'a', 0, 0, 1, 0, 1});     // offsets 12..18
  Append(packet, {1, 'b', 1, 'c', 0xC0, 21});  // name at 19, pointer at 23 to 21
  Append(packet, {0, 1, 0, 1});
  std::string error = ParseError(packet);
  EXPECT_THAT(error, HasSubstr("compression pointer loop"));
  EXPECT_THAT(error, HasSubstr("at offset 23 in name at offset 19"));
}

TEST(ParseDnsMessage, AcceptsPointerChainsButBoundsTheirLength) {
  // Question 0 is the root name; question k's name is a pointer to question k-1's name, so the
  // name of question k takes k jumps.
  auto chain = [](int questions) {
    Bytes packet = Header(static_cast<uint16_t>(questions));
    Append(packet, {0, 0, 1, 0, 1});
    size_t previous = 12;
    for (int k = 1; k < questions; ++k) {
      const size_t here = packet.size();
      Append(packet, {static_cast<uint8_t>(0xC0 | (previous >> 8)), static_cast<uint8_t>(previous),
                      0, 1, 0, 1});
      previous = here;
    }
    return packet;
  };
  EXPECT_TRUE(ParseDnsMessage(chain(129)).ok());
  EXPECT_THAT(ParseError(chain(130)), HasSubstr("too many compression pointers"));
}

TEST(ParseDnsMessage, RejectsPointersOutOfRange) {
  Bytes packet = Header(1);
  Append(packet, {0xC1, 0x00, 0, 1, 0, 1});  // to 256, past the end
  EXPECT_THAT(ParseError(packet), HasSubstr("past the end of the packet"));
  packet = Header(1);
  Append(packet, {0xC0, 0x02, 0, 1, 0, 1});
  EXPECT_THAT(ParseError(packet), HasSubstr("into the header"));
  // A PTR target whose pointer straddles the end of the rdata (rdlength 1).
  packet = Header(0, 1);
  Append(packet, RecordBytes(WireName("p.local"), 12, {0xC0, 12}, 1));
  EXPECT_THAT(ParseError(packet), HasSubstr("truncated compression pointer at offset 31"));
}

TEST(ParseDnsMessage, RejectsReservedLabelTypes) {
  for (uint8_t type : {uint8_t{0x40}, uint8_t{0x80}}) {
    Bytes packet = Header(1);
    Append(packet, {1, 'a', static_cast<uint8_t>(type | 1), 'b', 0, 0, 1, 0, 1});
    std::string error = ParseError(packet);
    EXPECT_THAT(error, HasSubstr("is reserved at offset 14 in name at offset 12")) << error;
  }
}

TEST(ParseDnsMessage, RejectsNamesOver255BytesBuiltFromPointers) {
  // Question 1: labels of 63, 63, 63 and 59 bytes, 253 bytes in wire form. Question 2: one more
  // label, then a pointer to question 1.
  auto packet_with_prefix = [](const std::string& label) {
    Bytes packet = Header(2);
    Append(packet, WireName(absl::StrCat(std::string(63, 'a'), ".", std::string(63, 'b'), ".",
                                         std::string(63, 'c'), ".", std::string(59, 'd'))));
    Append(packet, {0, 1, 0, 1});
    packet.push_back(static_cast<uint8_t>(label.size()));
    packet.insert(packet.end(), label.begin(), label.end());
    Append(packet, {0xC0, 12, 0, 1, 0, 1});
    return packet;
  };
  const DnsMessage ok = Parsed(packet_with_prefix("x"));  // 255 bytes: the limit
  ASSERT_EQ(ok.questions.size(), 2u);
  EXPECT_EQ(ok.questions[1].name.wire_length(), 255u);
  EXPECT_THAT(ParseError(packet_with_prefix("xy")), HasSubstr("name longer than 255 bytes"));
}

TEST(ParseDnsMessage, RejectsTruncatedNamesAndRecords) {
  Bytes packet = Header(1);
  Append(packet, {5, 'a', 'b', 0, 0, 0});  // label of 5 with only 5 bytes left in the packet
  EXPECT_THAT(ParseError(packet), HasSubstr("runs past the end"));
  packet = Header(0, 1);
  Append(packet, WireName("a.local"));
  Append(packet, {0, 1, 0, 1, 0});  // type, class, then a cut-off TTL
  EXPECT_THAT(ParseError(packet), HasSubstr("truncated record at offset 12"));
  packet = Header(1);
  Append(packet, WireName("a.local"));
  Append(packet, {0, 1});
  EXPECT_THAT(ParseError(packet), HasSubstr("truncated question"));
}

TEST(ParseDnsMessage, RejectsRdataPastThePacket) {
  Bytes packet = Header(0, 1);
  Append(packet, RecordBytes(WireName("a.local"), 1, {10, 0, 0, 1}, 100));
  EXPECT_THAT(ParseError(packet), HasSubstr("A record rdata of 100 bytes runs past the end"));
}

TEST(ParseDnsMessage, RejectsFixedSizeRdataOfTheWrongSize) {
  Bytes packet = Header(0, 1);
  Append(packet, RecordBytes(WireName("a.local"), 1, {10, 0, 0, 1, 9}));
  EXPECT_THAT(ParseError(packet), HasSubstr("A rdata of 5 bytes, expected 4"));
  packet = Header(0, 1);
  Append(packet, RecordBytes(WireName("a.local"), 28, Bytes(15, 0)));
  EXPECT_THAT(ParseError(packet), HasSubstr("AAAA rdata of 15 bytes, expected 16"));
}

TEST(ParseDnsMessage, RejectsSrvTargetRunningPastRdlength) {
  Bytes rdata = {0, 0, 0, 0, 0xC3, 0x53};
  Append(rdata, WireName("host.local"));
  Bytes packet = Header(0, 1);
  // rdlength covers the fixed fields and "host" but not the rest of the target.
  Append(packet, RecordBytes(WireName("s.local"), 33, rdata, 6 + 5));
  std::string error = ParseError(packet);
  EXPECT_THAT(error, HasSubstr("name runs past the end of its record")) << error;
  packet = Header(0, 1);
  Append(packet, RecordBytes(WireName("s.local"), 33, {0, 0, 0, 0, 0xC3}));
  EXPECT_THAT(ParseError(packet), HasSubstr("SRV rdata of 5 bytes, need at least 7"));
}

TEST(ParseDnsMessage, RejectsRdataWithUnusedBytes) {
  Bytes rdata = WireName("t.local");
  rdata.push_back(0xAA);
  Bytes packet = Header(0, 1);
  Append(packet, RecordBytes(WireName("p.local"), 12, rdata));
  EXPECT_THAT(ParseError(packet), HasSubstr("PTR rdata leaves 1 of its 10 bytes unused"));
}

TEST(ParseDnsMessage, RejectsTxtStringsPastTheirRdata) {
  Bytes packet = Header(0, 1);
  Append(packet, RecordBytes(WireName("t.local"), 16, {3, 'a', '=', 'b', 9, 'x'}));
  EXPECT_THAT(ParseError(packet), HasSubstr("TXT string of 9 bytes runs past"));
}

TEST(ParseDnsMessage, ReadsAZeroLengthTxtAsOneEmptyString) {
  Bytes packet = Header(0, 1);
  Append(packet, RecordBytes(WireName("t.local"), 16, {}));
  EXPECT_THAT(std::get<TxtRdata>(Parsed(packet).answers[0].rdata).strings, ElementsAre(""));
}

TEST(ParseDnsMessage, RejectsMalformedNsecBitmaps) {
  Bytes rdata = WireName("n.local");
  Append(rdata, {0, 33});
  Append(rdata, Bytes(33, 0xFF));
  Bytes packet = Header(0, 1);
  Append(packet, RecordBytes(WireName("n.local"), 47, rdata));
  EXPECT_THAT(ParseError(packet), HasSubstr("NSEC bitmap length 33 above 32"));
  rdata = WireName("n.local");
  Append(rdata, {0, 4, 0x40});
  packet = Header(0, 1);
  Append(packet, RecordBytes(WireName("n.local"), 47, rdata));
  EXPECT_THAT(ParseError(packet), HasSubstr("NSEC bitmap runs past the end of its rdata"));
  rdata = WireName("n.local");
  rdata.push_back(0);
  packet = Header(0, 1);
  Append(packet, RecordBytes(WireName("n.local"), 47, rdata));
  EXPECT_THAT(ParseError(packet), HasSubstr("truncated NSEC type bitmap window"));
}

TEST(ParseDnsMessage, EveryStrictPrefixOfAValidPacketIsRefused) {
  const Bytes bytes = Serialized(SampleMessage());
  for (size_t size = 0; size < bytes.size(); ++size) {
    absl::StatusOr<DnsMessage> message =
        ParseDnsMessage(absl::Span<const uint8_t>(bytes.data(), size));
    EXPECT_EQ(message.status().code(), absl::StatusCode::kInvalidArgument) << size;
  }
}

TEST(ParseDnsMessage, RandomCorruptionNeverBreaksTheRoundTrip) {
  const Bytes original = Serialized(SampleMessage());
  std::mt19937 rng(1234);
  int parsed = 0;
  for (int trial = 0; trial < 5000; ++trial) {
    Bytes bytes = original;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < flips; ++i) bytes[rng() % bytes.size()] = static_cast<uint8_t>(rng());
    absl::StatusOr<DnsMessage> message = ParseDnsMessage(bytes);
    if (!message.ok()) {
      EXPECT_FALSE(message.status().message().empty());
      continue;
    }
    ++parsed;
    DnsSerializeOptions options;
    options.max_size = kMaxDnsMessageSize;
    absl::StatusOr<Bytes> again = SerializeDnsMessage(*message, options);
    ASSERT_TRUE(again.ok()) << again.status();
    absl::StatusOr<DnsMessage> reparsed = ParseDnsMessage(*again);
    ASSERT_TRUE(reparsed.ok()) << reparsed.status();
    ASSERT_EQ(*reparsed, *message) << DnsMessageToString(*message);
    ASSERT_EQ(Serialized(*reparsed, options), *again);
  }
  EXPECT_GT(parsed, 100);  // the corruption must leave some packets parseable to test anything
}

// ---- TXT entries ------------------------------------------------------------------------------

TEST(TxtEntries, FollowRfc6763Rules) {
  TxtRdata txt{{"id=node-a", "", "=novalue", "flag", "empty=", "ID=second", "eq=a=b", "Bin=\x01"}};
  std::vector<TxtEntry> entries = ParseTxtEntries(txt);
  ASSERT_EQ(entries.size(), 5u);
  EXPECT_EQ(entries[0], (TxtEntry{"id", "node-a"}));
  EXPECT_EQ(entries[1], (TxtEntry{"flag", std::nullopt}));
  EXPECT_EQ(entries[2], (TxtEntry{"empty", ""}));
  EXPECT_EQ(entries[3], (TxtEntry{"eq", "a=b"}));
  EXPECT_EQ(entries[4], (TxtEntry{"Bin", "\x01"}));
  ASSERT_NE(FindTxtEntry(entries, "ID"), nullptr);
  EXPECT_EQ(FindTxtEntry(entries, "ID")->value, "node-a");
  EXPECT_EQ(FindTxtEntry(entries, "missing"), nullptr);
}

TEST(TxtEntries, MakeTxtRdataValidatesKeys) {
  absl::StatusOr<TxtRdata> txt = MakeTxtRdata({{"id", "x"}, {"flag", std::nullopt}, {"e", ""}});
  ASSERT_TRUE(txt.ok()) << txt.status();
  EXPECT_THAT(txt->strings, ElementsAre("id=x", "flag", "e="));
  EXPECT_THAT(MakeTxtRdata({{"", "x"}}).status().message(), HasSubstr("empty key"));
  EXPECT_THAT(MakeTxtRdata({{"a=b", "x"}}).status().message(), HasSubstr("printable ASCII"));
  EXPECT_THAT(MakeTxtRdata({{"k\x01", "x"}}).status().message(), HasSubstr("printable ASCII"));
  EXPECT_THAT(MakeTxtRdata({{"id", "1"}, {"ID", "2"}}).status().message(),
              HasSubstr("appears twice"));
  EXPECT_THAT(MakeTxtRdata({{"k", std::string(254, 'v')}}).status().message(),
              HasSubstr("exceeds 255"));
  EXPECT_TRUE(MakeTxtRdata({{"k", std::string(253, 'v')}}).ok());
}

// ---- Packets encoded by python-zeroconf (tests/discovery/capture_packets.py) -----------------

DnsName Instance() { return *Name("_exo-node._tcp.local").Prepend(kInstanceLabel); }

void ExpectZeroconfAnnouncement(const DnsMessage& message, uint32_t host_ttl, uint32_t other_ttl) {
  EXPECT_EQ(message.header.id, 0);
  EXPECT_TRUE(message.header.is_response());
  EXPECT_TRUE(message.header.is_authoritative());
  EXPECT_TRUE(message.questions.empty());
  ASSERT_EQ(message.answers.size(), 5u);

  const DnsRecord& ptr = message.answers[0];
  EXPECT_TRUE(ptr.name.IdenticalTo(Name("_exo-node._tcp.local")));
  EXPECT_EQ(ptr.type, DnsType::kPtr);
  EXPECT_EQ(ptr.rrclass, kDnsClassIn);
  EXPECT_FALSE(ptr.cache_flush);  // shared record
  EXPECT_EQ(ptr.ttl, other_ttl);
  EXPECT_TRUE(std::get<PtrRdata>(ptr.rdata).target.IdenticalTo(Instance()));
  EXPECT_EQ(std::get<PtrRdata>(ptr.rdata).target.labels()[0], kInstanceLabel);

  const DnsRecord& srv = message.answers[1];
  EXPECT_TRUE(srv.name.IdenticalTo(Instance()));
  EXPECT_EQ(srv.type, DnsType::kSrv);
  EXPECT_TRUE(srv.cache_flush);
  EXPECT_EQ(srv.ttl, host_ttl);
  EXPECT_EQ(std::get<SrvRdata>(srv.rdata), (SrvRdata{0, 0, 50051, Name("exo-node-a.local")}));

  const DnsRecord& txt = message.answers[2];
  EXPECT_TRUE(txt.name.IdenticalTo(Instance()));
  EXPECT_EQ(txt.type, DnsType::kTxt);
  EXPECT_TRUE(txt.cache_flush);
  EXPECT_EQ(txt.ttl, other_ttl);
  EXPECT_THAT(
      ParseTxtEntries(std::get<TxtRdata>(txt.rdata)),
      ElementsAre(TxtEntry{"id", "node-a-7f3e"}, TxtEntry{"v", "1"}, TxtEntry{"bus", "5555"},
                  TxtEntry{"fp", "3f2a9c01"}, TxtEntry{"mem", "17179869184"},
                  TxtEntry{"kind", "cpu"}, TxtEntry{"gpu", std::nullopt}));

  const DnsRecord& a = message.answers[3];
  EXPECT_TRUE(a.name.IdenticalTo(Name("exo-node-a.local")));
  EXPECT_TRUE(a.cache_flush);
  EXPECT_EQ(a.ttl, host_ttl);
  EXPECT_EQ(std::get<ARdata>(a.rdata).address, (std::array<uint8_t, 4>{192, 168, 1, 20}));

  const DnsRecord& aaaa = message.answers[4];
  EXPECT_TRUE(aaaa.name.IdenticalTo(Name("exo-node-a.local")));
  EXPECT_EQ(aaaa.type, DnsType::kAaaa);
  EXPECT_EQ(aaaa.ttl, host_ttl);
  // fe80::1c2:3ff:fe04:506
  EXPECT_EQ(std::get<AaaaRdata>(aaaa.rdata).address,
            (std::array<uint8_t, 16>{0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x01, 0xc2, 0x03, 0xff, 0xfe,
                                     0x04, 0x05, 0x06}));
}

// Re-serializing what we parsed gives a message that parses to the same thing, and our
// compression is at least as good as zeroconf's.
void ExpectRoundTrip(const Bytes& packet) {
  const DnsMessage message = Parsed(packet);
  const Bytes ours = Serialized(message);
  ExpectIdenticalNames(message, Parsed(ours));
  EXPECT_LE(ours.size(), packet.size());
}

TEST(ZeroconfPackets, Announcement) {
  const Bytes packet = ReadData("zeroconf_announcement.bin");
  ExpectZeroconfAnnouncement(Parsed(packet), 120, 4500);
  ExpectRoundTrip(packet);
}

TEST(ZeroconfPackets, GoodbyeHasTtlZero) {
  const Bytes packet = ReadData("zeroconf_goodbye.bin");
  ExpectZeroconfAnnouncement(Parsed(packet), 0, 0);
  ExpectRoundTrip(packet);
}

TEST(ZeroconfPackets, QueryWithKnownAnswer) {
  const Bytes packet = ReadData("zeroconf_query_known_answer.bin");
  const DnsMessage message = Parsed(packet);
  EXPECT_FALSE(message.header.is_response());
  ASSERT_EQ(message.questions.size(), 2u);
  EXPECT_TRUE(message.questions[0].name.IdenticalTo(Name("_exo-node._tcp.local")));
  EXPECT_EQ(message.questions[0].type, DnsType::kPtr);
  EXPECT_FALSE(message.questions[0].unicast_response);
  EXPECT_TRUE(message.questions[1].name.IdenticalTo(Name("exo-node-a.local")));
  EXPECT_EQ(message.questions[1].type, DnsType::kA);
  EXPECT_TRUE(message.questions[1].unicast_response);
  EXPECT_EQ(message.questions[1].qclass, kDnsClassIn);
  ASSERT_EQ(message.answers.size(), 1u);
  EXPECT_EQ(message.answers[0].ttl, 3000u);
  EXPECT_TRUE(std::get<PtrRdata>(message.answers[0].rdata).target.IdenticalTo(Instance()));
  ExpectRoundTrip(packet);
}

TEST(ZeroconfPackets, NsecFromZeroconf047) {
  // zeroconf 0.47 writes each bitmap window and length as 16-bit numbers (fixed upstream in
  // 0.128); the parser reads the same types zeroconf meant.
  const Bytes packet = ReadData("zeroconf_nsec.bin");
  const DnsMessage message = Parsed(packet);
  ASSERT_EQ(message.answers.size(), 1u);
  ASSERT_EQ(message.additionals.size(), 2u);
  const DnsRecord& host = message.additionals[0];
  EXPECT_EQ(host.type, DnsType::kNsec);
  EXPECT_TRUE(host.cache_flush);
  EXPECT_EQ(host.ttl, 120u);
  EXPECT_EQ(std::get<NsecRdata>(host.rdata), (NsecRdata{Name("exo-node-a.local"), {1, 28}}));
  const DnsRecord& instance = message.additionals[1];
  EXPECT_TRUE(instance.name.IdenticalTo(Instance()));
  EXPECT_EQ(instance.ttl, 4500u);
  EXPECT_EQ(std::get<NsecRdata>(instance.rdata), (NsecRdata{Instance(), {16, 33}}));
  // Our serializer writes the RFC 4034 form, one byte each.
  const Bytes ours = Serialized(message);
  ExpectIdenticalNames(message, Parsed(ours));
  EXPECT_LT(ours.size(), packet.size());
}

// ---- Packets we write, checked by python-zeroconf (tests/e2e/test_dns_interop.py) -------------

// The same service as capture_packets.py, built with our types.
DnsMessage ExoAnnouncement() {
  DnsMessage message;
  message.header.set_response(true);
  message.header.set_authoritative(true);
  const DnsName host = Name("exo-node-a.local");
  message.answers.push_back(
      Record("_exo-node._tcp.local", DnsType::kPtr, PtrRdata{Instance()}, 4500));
  DnsRecord srv = Record("x", DnsType::kSrv, SrvRdata{0, 0, 50051, host}, 120, true);
  srv.name = Instance();
  message.answers.push_back(srv);
  absl::StatusOr<TxtRdata> txt = MakeTxtRdata({{"id", "node-a-7f3e"},
                                               {"v", "1"},
                                               {"bus", "5555"},
                                               {"fp", "3f2a9c01"},
                                               {"mem", "17179869184"},
                                               {"kind", "cpu"},
                                               {"gpu", std::nullopt}});
  EXPECT_TRUE(txt.ok());
  DnsRecord txt_record = Record("x", DnsType::kTxt, *txt, 4500, true);
  txt_record.name = Instance();
  message.answers.push_back(txt_record);
  message.answers.push_back(
      Record("exo-node-a.local", DnsType::kA, ARdata{{192, 168, 1, 20}}, 120, true));
  message.answers.push_back(Record(
      "exo-node-a.local", DnsType::kAaaa,
      AaaaRdata{{0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x01, 0xc2, 0x03, 0xff, 0xfe, 0x04, 0x05, 0x06}},
      120, true));
  DnsRecord nsec = Record("exo-node-a.local", DnsType::kNsec, NsecRdata{host, {1, 28}}, 120, true);
  message.additionals.push_back(nsec);
  return message;
}

DnsMessage ExoQuery() {
  DnsMessage message;
  DnsQuestion browse;
  browse.name = Name("_exo-node._tcp.local");
  browse.type = DnsType::kPtr;
  message.questions.push_back(browse);
  DnsQuestion host;
  host.name = Name("exo-node-a.local");
  host.type = DnsType::kAaaa;
  host.unicast_response = true;
  message.questions.push_back(host);
  message.answers.push_back(
      Record("_exo-node._tcp.local", DnsType::kPtr, PtrRdata{Instance()}, 3000));
  return message;
}

// Compares our serialization with the committed golden file, which the Python interop test
// parses with zeroconf. EXO_UPDATE_DNS_TESTDATA=1 rewrites the file instead.
void ExpectGolden(const DnsMessage& message, const std::string& file) {
  const Bytes bytes = Serialized(message);
  if (std::getenv("EXO_UPDATE_DNS_TESTDATA") != nullptr) {
    std::ofstream out(DataPath(file), std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    ASSERT_TRUE(out.good());
  }
  EXPECT_EQ(bytes, ReadData(file)) << "serializer output changed; if intended, rerun with "
                                      "EXO_UPDATE_DNS_TESTDATA=1 and run "
                                      "tests/e2e/test_dns_interop.py";
  EXPECT_EQ(Parsed(bytes), message);
}

TEST(ExoPackets, AnnouncementMatchesGolden) {
  ExpectGolden(ExoAnnouncement(), "exo_announcement.bin");
}

TEST(ExoPackets, QueryMatchesGolden) { ExpectGolden(ExoQuery(), "exo_query_known_answer.bin"); }

TEST(ExoPackets, GoodbyeMatchesGolden) {
  DnsMessage goodbye = ExoAnnouncement();
  goodbye.additionals.clear();
  for (DnsRecord& record : goodbye.answers) record.ttl = 0;
  ExpectGolden(goodbye, "exo_goodbye.bin");
}

}  // namespace
}  // namespace exo::discovery
