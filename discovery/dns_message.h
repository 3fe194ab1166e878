// DNS messages on the wire (RFC 1035) with the multicast DNS specifics of RFC 6762: the
// unicast-response bit of a question, the cache-flush bit of a record, name compression in the
// rdata of SRV and NSEC, and messages up to 9000 bytes. Pure code: no sockets, no clocks.
//
// Packets come from the LAN and are untrusted: ParseDnsMessage checks every length, count,
// offset and compression pointer and answers InvalidArgument saying what is wrong and where.
#ifndef EXO_DISCOVERY_DNS_MESSAGE_H_
#define EXO_DISCOVERY_DNS_MESSAGE_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace exo::discovery {

// Limits of the wire format (RFC 1035 §2.3.4) and of multicast DNS (RFC 6762 §17).
inline constexpr size_t kMaxDnsLabelLength = 63;
inline constexpr size_t kMaxDnsNameLength = 255;  // wire form, length bytes and root included
inline constexpr size_t kMaxMdnsMessageSize = 9000;
inline constexpr size_t kMaxDnsMessageSize = 65535;
// The parser refuses a message announcing more questions plus records than this.
inline constexpr size_t kMaxDnsEntries = 1024;

// A domain name as a list of labels, without the empty root label. A label is 1 to 63 arbitrary
// bytes (DNS-SD instance names are UTF-8 and may hold spaces and dots); the whole name is at most
// 255 bytes in wire form. Every DnsName that exists satisfies these limits.
class DnsName {
 public:
  DnsName() = default;  // the root name "."

  // Checks the limits above. InvalidArgument naming the offending label otherwise.
  static absl::StatusOr<DnsName> FromLabels(std::vector<std::string> labels);
  // Parses presentation form: labels separated by '.', with "\." for a dot inside a label,
  // "\\" for a backslash and "\DDD" (three decimal digits) for any byte. A trailing dot is
  // optional; "" and "." are the root.
  static absl::StatusOr<DnsName> Parse(absl::string_view presentation);

  // This name with `label` in front: "My Node" + "_exo-node._tcp.local".
  absl::StatusOr<DnsName> Prepend(absl::string_view label) const;

  const std::vector<std::string>& labels() const { return labels_; }
  bool is_root() const { return labels_.empty(); }
  // Bytes in uncompressed wire form, the final zero byte included (1 for the root).
  size_t wire_length() const;
  // Presentation form without the trailing dot ("." for the root); escapes '.', '\\' and
  // control bytes so that Parse(ToString()) gives the name back. Spaces and UTF-8 stay as is.
  std::string ToString() const;
  // ASCII-lower-cased wire form: equal for names that compare equal; use as a map key.
  std::string CanonicalKey() const;

  // Case-insensitive for ASCII letters, byte-exact otherwise (RFC 1035 §2.3.3, RFC 6762 §16).
  friend bool operator==(const DnsName& a, const DnsName& b);
  friend bool operator!=(const DnsName& a, const DnsName& b) { return !(a == b); }
  // Byte-exact comparison, case included.
  bool IdenticalTo(const DnsName& other) const { return labels_ == other.labels_; }
  // True when this name is `suffix` or ends with it (case-insensitive): "a._tcp.local" ends
  // with "local".
  bool EndsWith(const DnsName& suffix) const;

 private:
  explicit DnsName(std::vector<std::string> labels) : labels_(std::move(labels)) {}
  std::vector<std::string> labels_;
};

// Record types. Other values are valid too (unknown types are kept as raw bytes).
enum class DnsType : uint16_t {
  kA = 1,
  kNs = 2,
  kCname = 5,
  kPtr = 12,
  kHinfo = 13,
  kTxt = 16,
  kAaaa = 28,
  kSrv = 33,
  kOpt = 41,
  kNsec = 47,
  kAny = 255,
};
// "A", "PTR", ... or "TYPE1234" (RFC 3597) for others.
std::string DnsTypeName(DnsType type);

inline constexpr uint16_t kDnsClassIn = 1;
inline constexpr uint16_t kDnsClassAny = 255;

// The 12-byte header. The four counts are implied by the sections of DnsMessage.
struct DnsHeader {
  static constexpr uint16_t kResponseBit = 0x8000;       // QR
  static constexpr uint16_t kAuthoritativeBit = 0x0400;  // AA
  static constexpr uint16_t kTruncatedBit = 0x0200;      // TC

  uint16_t id = 0;  // 0 in multicast DNS
  uint16_t flags = 0;

  bool is_response() const { return (flags & kResponseBit) != 0; }
  bool is_authoritative() const { return (flags & kAuthoritativeBit) != 0; }
  bool is_truncated() const { return (flags & kTruncatedBit) != 0; }
  uint8_t opcode() const { return (flags >> 11) & 0xF; }
  uint8_t rcode() const { return flags & 0xF; }
  void set_response(bool on) { SetBit(kResponseBit, on); }
  void set_authoritative(bool on) { SetBit(kAuthoritativeBit, on); }
  void set_truncated(bool on) { SetBit(kTruncatedBit, on); }

  friend bool operator==(const DnsHeader&, const DnsHeader&) = default;

 private:
  void SetBit(uint16_t bit, bool on) { flags = on ? (flags | bit) : (flags & ~bit); }
};

struct DnsQuestion {
  DnsName name;
  DnsType type = DnsType::kAny;
  uint16_t qclass = kDnsClassIn;  // without the top bit
  bool unicast_response = false;  // top bit of the class: "QU" question (RFC 6762 §5.4)

  friend bool operator==(const DnsQuestion&, const DnsQuestion&) = default;
};

// Typed rdata. Which alternative a record holds follows from its type (see DnsRecord).
struct ARdata {
  std::array<uint8_t, 4> address{};
  friend bool operator==(const ARdata&, const ARdata&) = default;
};
struct AaaaRdata {
  std::array<uint8_t, 16> address{};
  friend bool operator==(const AaaaRdata&, const AaaaRdata&) = default;
};
// The rdata of PTR, CNAME and NS: one name.
struct PtrRdata {
  DnsName target;
  friend bool operator==(const PtrRdata&, const PtrRdata&) = default;
};
struct SrvRdata {
  uint16_t priority = 0;
  uint16_t weight = 0;
  uint16_t port = 0;
  DnsName target;
  friend bool operator==(const SrvRdata&, const SrvRdata&) = default;
};
// Character strings of at most 255 bytes each. An empty list is written as one empty string
// (RFC 6763 §6.1), and a zero-length TXT rdata is read as one empty string.
struct TxtRdata {
  std::vector<std::string> strings;
  friend bool operator==(const TxtRdata&, const TxtRdata&) = default;
};
// mDNS negative responses (RFC 6762 §6.1): the types that exist for a name.
struct NsecRdata {
  DnsName next_name;
  std::vector<uint16_t> types;  // sorted, no duplicates
  friend bool operator==(const NsecRdata&, const NsecRdata&) = default;
};
// Any other type, kept byte for byte.
struct RawRdata {
  std::vector<uint8_t> bytes;
  friend bool operator==(const RawRdata&, const RawRdata&) = default;
};
using DnsRdata = std::variant<ARdata, AaaaRdata, PtrRdata, SrvRdata, TxtRdata, NsecRdata, RawRdata>;

// A resource record. `rdata` must hold the alternative for `type`: ARdata for A, AaaaRdata for
// AAAA, PtrRdata for PTR/CNAME/NS, SrvRdata for SRV, TxtRdata for TXT, NsecRdata for NSEC,
// RawRdata for every other type. The parser guarantees it; the serializer checks it.
struct DnsRecord {
  DnsName name;
  DnsType type = DnsType::kA;
  uint16_t rrclass = kDnsClassIn;  // without the top bit
  bool cache_flush = false;        // top bit of the class (RFC 6762 §10.2)
  uint32_t ttl = 0;                // seconds; 0 is a goodbye in mDNS
  DnsRdata rdata;

  friend bool operator==(const DnsRecord&, const DnsRecord&) = default;
};

struct DnsMessage {
  DnsHeader header;
  std::vector<DnsQuestion> questions;
  std::vector<DnsRecord> answers;
  std::vector<DnsRecord> authorities;
  std::vector<DnsRecord> additionals;

  friend bool operator==(const DnsMessage&, const DnsMessage&) = default;
};

// Parses one message. Refuses, with InvalidArgument "DNS: <what> at offset <n>": packets shorter
// than a header or longer than 65535 bytes; counts the remaining bytes could not hold or above
// kMaxDnsEntries (checked before anything is allocated); truncated names, records and rdata;
// labels with the reserved 0x40/0x80 length bits; compression pointers past the end, into the
// header, or not strictly before the label run that holds them (which rules out loops); names
// over 255 bytes; rdata whose structure does not fill its rdlength exactly (an SRV target running
// past it, an A record of 5 bytes); NSEC bitmap blocks over 32 bytes or past the rdata (empty
// blocks and unordered windows are accepted, see the parser). Bytes after the last record are
// ignored.
absl::StatusOr<DnsMessage> ParseDnsMessage(absl::Span<const uint8_t> packet);

struct DnsSerializeOptions {
  // A message that would be larger is refused with OutOfRange; callers split across packets.
  size_t max_size = kMaxMdnsMessageSize;
};

// Writes `message`, compressing every name (owner names, and the names inside PTR, CNAME, NS,
// SRV and NSEC rdata) against suffixes already written, byte-exactly (case preserved).
// InvalidArgument if a record's rdata does not match its type, a TXT string is over 255 bytes,
// or a section has more than 65535 entries; OutOfRange over `options.max_size`.
absl::StatusOr<std::vector<uint8_t>> SerializeDnsMessage(const DnsMessage& message,
                                                         const DnsSerializeOptions& options = {});

// A "key=value" TXT entry per RFC 6763 §6.4: no value ("key" alone, a boolean attribute) is
// distinct from an empty value ("key=").
struct TxtEntry {
  std::string key;
  std::optional<std::string> value;
  friend bool operator==(const TxtEntry&, const TxtEntry&) = default;
};
// Reads TXT strings per RFC 6763 §6: empty strings and strings starting with '=' are skipped, a
// key seen again (case-insensitively) is ignored after its first occurrence, values are bytes.
std::vector<TxtEntry> ParseTxtEntries(const TxtRdata& txt);
// The first entry whose key equals `key` case-insensitively, or nullptr.
const TxtEntry* FindTxtEntry(const std::vector<TxtEntry>& entries, absl::string_view key);
// Builds TXT strings. InvalidArgument for an empty key, a key with '=' or bytes outside
// printable ASCII, a duplicate key, or an entry over 255 bytes.
absl::StatusOr<TxtRdata> MakeTxtRdata(const std::vector<TxtEntry>& entries);

// Multi-line, dig-like text for logs and test failures.
std::string DnsMessageToString(const DnsMessage& message);

}  // namespace exo::discovery

#endif  // EXO_DISCOVERY_DNS_MESSAGE_H_
