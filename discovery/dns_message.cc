#include "discovery/dns_message.h"

#include <algorithm>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace exo::discovery {
namespace {

constexpr size_t kHeaderSize = 12;
constexpr size_t kMinQuestionSize = 5;  // root name + type + class
constexpr size_t kMinRecordSize = 11;   // root name + type + class + ttl + rdlength
// A name has at most 127 labels, and a well-formed chain of pointers jumps at most once per
// label run; anything longer is hostile.
constexpr int kMaxPointerJumps = 128;
constexpr uint16_t kMaxPointerTarget = 0x3FFF;
constexpr uint16_t kClassTopBit = 0x8000;

absl::Status ErrorAt(absl::string_view what, size_t offset) {
  return absl::InvalidArgumentError(absl::StrCat("DNS: ", what, " at offset ", offset));
}

uint16_t ReadU16(absl::Span<const uint8_t> p, size_t at) {
  return static_cast<uint16_t>((p[at] << 8) | p[at + 1]);
}

uint32_t ReadU32(absl::Span<const uint8_t> p, size_t at) {
  return (uint32_t{p[at]} << 24) | (uint32_t{p[at + 1]} << 16) | (uint32_t{p[at + 2]} << 8) |
         uint32_t{p[at + 3]};
}

// ---- Parsing ----------------------------------------------------------------------------------

class Parser {
 public:
  explicit Parser(absl::Span<const uint8_t> packet) : p_(packet) {}

  absl::StatusOr<DnsMessage> Parse() {
    if (p_.size() < kHeaderSize) {
      return absl::InvalidArgumentError(
          absl::StrCat("DNS: packet of ", p_.size(), " bytes is shorter than the 12-byte header"));
    }
    if (p_.size() > kMaxDnsMessageSize) {
      return absl::InvalidArgumentError(
          absl::StrCat("DNS: packet of ", p_.size(), " bytes exceeds ", kMaxDnsMessageSize));
    }
    DnsMessage message;
    message.header.id = ReadU16(p_, 0);
    message.header.flags = ReadU16(p_, 2);
    const size_t questions = ReadU16(p_, 4);
    const size_t answers = ReadU16(p_, 6);
    const size_t authorities = ReadU16(p_, 8);
    const size_t additionals = ReadU16(p_, 10);
    const size_t records = answers + authorities + additionals;
    if (questions + records > kMaxDnsEntries) {
      return ErrorAt(absl::StrCat("header announces ", questions, " questions and ", records,
                                  " records, more than the limit of ", kMaxDnsEntries),
                     4);
    }
    const size_t needed = questions * kMinQuestionSize + records * kMinRecordSize;
    if (needed > p_.size() - kHeaderSize) {
      return ErrorAt(absl::StrCat("header announces ", questions, " questions and ", records,
                                  " records, which need at least ", needed, " bytes but only ",
                                  p_.size() - kHeaderSize, " follow the header"),
                     4);
    }

    size_t at = kHeaderSize;
    message.questions.reserve(questions);
    for (size_t i = 0; i < questions; ++i) {
      ASSIGN_OR_RETURN(DnsQuestion question, ReadQuestion(at));
      message.questions.push_back(std::move(question));
    }
    RETURN_IF_ERROR(ReadRecords(answers, at, message.answers));
    RETURN_IF_ERROR(ReadRecords(authorities, at, message.authorities));
    RETURN_IF_ERROR(ReadRecords(additionals, at, message.additionals));
    return message;
  }

 private:
  // Reads the name at `at`, whose in-place labels must end before `limit`; leaves `at` just
  // after it. Compression pointers must point strictly before the start of the label run that
  // holds them, so every jump goes further back and decompression always ends.
  absl::StatusOr<DnsName> ReadName(size_t& at, size_t limit) {
    const size_t name_start = at;
    size_t pos = at;
    size_t run_start = at;
    size_t end = 0;  // just after the name's in-place bytes, known once they end
    bool jumped = false;
    int jumps = 0;
    size_t wire_length = 1;  // the root byte
    std::vector<std::string> labels;
    auto name_error = [&](absl::string_view what, size_t offset) {
      return absl::InvalidArgumentError(
          absl::StrCat("DNS: ", what, " at offset ", offset, " in name at offset ", name_start));
    };
    while (true) {
      const size_t bound = jumped ? p_.size() : limit;
      if (pos >= bound) {
        return name_error(jumped ? "name runs past the end of the packet"
                                 : "name runs past the end of its record",
                          pos);
      }
      const uint8_t length = p_[pos];
      if (length == 0) {
        if (!jumped) end = pos + 1;
        break;
      }
      switch (length & 0xC0) {
        case 0x00: {
          if (pos + 1 + length > bound) {
            return name_error(absl::StrCat("label of ", length, " bytes runs past the end of ",
                                           jumped ? "the packet" : "its record"),
                              pos);
          }
          wire_length += 1 + length;
          if (wire_length > kMaxDnsNameLength) {
            return name_error(absl::StrCat("name longer than ", kMaxDnsNameLength, " bytes"), pos);
          }
          labels.emplace_back(reinterpret_cast<const char*>(p_.data() + pos + 1), length);
          pos += 1 + length;
          break;
        }
        case 0xC0: {
          if (pos + 2 > bound) return name_error("truncated compression pointer", pos);
          const size_t target = ((length & 0x3F) << 8) | p_[pos + 1];
          if (!jumped) end = pos + 2;
          if (target >= p_.size()) {
            return name_error(
                absl::StrCat("compression pointer to ", target, " past the end of the packet"),
                pos);
          }
          if (target < kHeaderSize) {
            return name_error(absl::StrCat("compression pointer to ", target, " into the header"),
                              pos);
          }
          if (target >= run_start) {
            return name_error(absl::StrCat("compression pointer loop or forward pointer (to ",
                                           target, "; pointers must point before ", run_start, ")"),
                              pos);
          }
          if (++jumps > kMaxPointerJumps) {
            return name_error("too many compression pointers", pos);
          }
          jumped = true;
          run_start = target;
          pos = target;
          break;
        }
        default:
          return name_error(absl::StrFormat("label type 0x%02x is reserved", length & 0xC0), pos);
      }
    }
    at = end;
    return DnsName::FromLabels(std::move(labels));
  }

  absl::StatusOr<DnsQuestion> ReadQuestion(size_t& at) {
    const size_t start = at;
    DnsQuestion question;
    ASSIGN_OR_RETURN(question.name, ReadName(at, p_.size()));
    if (at + 4 > p_.size()) return ErrorAt("truncated question", start);
    question.type = static_cast<DnsType>(ReadU16(p_, at));
    const uint16_t qclass = ReadU16(p_, at + 2);
    question.qclass = qclass & ~kClassTopBit;
    question.unicast_response = (qclass & kClassTopBit) != 0;
    at += 4;
    return question;
  }

  absl::Status ReadRecords(size_t count, size_t& at, std::vector<DnsRecord>& out) {
    out.reserve(count);
    for (size_t i = 0; i < count; ++i) {
      ASSIGN_OR_RETURN(DnsRecord record, ReadRecord(at));
      out.push_back(std::move(record));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<DnsRecord> ReadRecord(size_t& at) {
    const size_t start = at;
    DnsRecord record;
    ASSIGN_OR_RETURN(record.name, ReadName(at, p_.size()));
    if (at + 10 > p_.size()) return ErrorAt("truncated record", start);
    record.type = static_cast<DnsType>(ReadU16(p_, at));
    const uint16_t rrclass = ReadU16(p_, at + 2);
    record.rrclass = rrclass & ~kClassTopBit;
    record.cache_flush = (rrclass & kClassTopBit) != 0;
    record.ttl = ReadU32(p_, at + 4);
    const size_t rdlength = ReadU16(p_, at + 8);
    at += 10;
    if (at + rdlength > p_.size()) {
      return ErrorAt(absl::StrCat(DnsTypeName(record.type), " record rdata of ", rdlength,
                                  " bytes runs past the end of the packet"),
                     at);
    }
    const size_t end = at + rdlength;
    ASSIGN_OR_RETURN(record.rdata, ReadRdata(record.type, at, end));
    if (at != end) {
      return ErrorAt(absl::StrCat(DnsTypeName(record.type), " rdata leaves ", end - at, " of its ",
                                  rdlength, " bytes unused"),
                     at);
    }
    return record;
  }

  // Reads the rdata in [at, end) and leaves `at` after what it used.
  absl::StatusOr<DnsRdata> ReadRdata(DnsType type, size_t& at, size_t end) {
    const size_t start = at;
    const size_t length = end - at;
    auto fixed_size = [&](size_t expected) -> absl::Status {
      if (length == expected) return absl::OkStatus();
      return ErrorAt(
          absl::StrCat(DnsTypeName(type), " rdata of ", length, " bytes, expected ", expected),
          start);
    };
    switch (type) {
      case DnsType::kA: {
        RETURN_IF_ERROR(fixed_size(4));
        ARdata a;
        std::copy_n(p_.data() + at, 4, a.address.begin());
        at = end;
        return a;
      }
      case DnsType::kAaaa: {
        RETURN_IF_ERROR(fixed_size(16));
        AaaaRdata aaaa;
        std::copy_n(p_.data() + at, 16, aaaa.address.begin());
        at = end;
        return aaaa;
      }
      case DnsType::kPtr:
      case DnsType::kCname:
      case DnsType::kNs: {
        PtrRdata ptr;
        ASSIGN_OR_RETURN(ptr.target, ReadName(at, end));
        return ptr;
      }
      case DnsType::kSrv: {
        if (length < 7) {
          return ErrorAt(absl::StrCat("SRV rdata of ", length, " bytes, need at least 7"), start);
        }
        SrvRdata srv;
        srv.priority = ReadU16(p_, at);
        srv.weight = ReadU16(p_, at + 2);
        srv.port = ReadU16(p_, at + 4);
        at += 6;
        ASSIGN_OR_RETURN(srv.target, ReadName(at, end));
        return srv;
      }
      case DnsType::kTxt: {
        TxtRdata txt;
        if (length == 0) {  // not legal, read as one empty string (RFC 6763 §6.1)
          txt.strings.emplace_back();
          return txt;
        }
        while (at < end) {
          const size_t string_length = p_[at];
          if (at + 1 + string_length > end) {
            return ErrorAt(absl::StrCat("TXT string of ", string_length,
                                        " bytes runs past the end of its rdata"),
                           at);
          }
          txt.strings.emplace_back(reinterpret_cast<const char*>(p_.data() + at + 1),
                                   string_length);
          at += 1 + string_length;
        }
        return txt;
      }
      case DnsType::kNsec: {
        NsecRdata nsec;
        ASSIGN_OR_RETURN(nsec.next_name, ReadName(at, end));
        // RFC 4034 §4.1.2 wants increasing windows of 1 to 32 bytes. python-zeroconf before
        // 0.128 writes the window and the length as 16-bit numbers, which reads as an empty
        // window-0 block followed by the real one; to keep those responders' packets, empty
        // blocks and windows in any order are accepted and the types are sorted afterwards.
        while (at < end) {
          if (at + 2 > end) return ErrorAt("truncated NSEC type bitmap window", at);
          const size_t window = p_[at];
          const size_t bitmap_length = p_[at + 1];
          if (bitmap_length > 32) {
            return ErrorAt(absl::StrCat("NSEC bitmap length ", bitmap_length, " above 32"), at + 1);
          }
          if (at + 2 + bitmap_length > end) {
            return ErrorAt("NSEC bitmap runs past the end of its rdata", at);
          }
          for (size_t i = 0; i < bitmap_length; ++i) {
            const uint8_t bits = p_[at + 2 + i];
            for (size_t bit = 0; bit < 8; ++bit) {
              if (bits & (0x80 >> bit)) {
                nsec.types.push_back(static_cast<uint16_t>(window * 256 + i * 8 + bit));
              }
            }
          }
          at += 2 + bitmap_length;
        }
        std::sort(nsec.types.begin(), nsec.types.end());
        nsec.types.erase(std::unique(nsec.types.begin(), nsec.types.end()), nsec.types.end());
        return nsec;
      }
      default: {
        RawRdata raw;
        raw.bytes.assign(p_.begin() + at, p_.begin() + end);
        at = end;
        return raw;
      }
    }
  }

  absl::Span<const uint8_t> p_;
};

// ---- Serialization ----------------------------------------------------------------------------

// Index of the DnsRdata alternative that records of `type` hold.
size_t RdataIndexForType(DnsType type) {
  switch (type) {
    case DnsType::kA:
      return 0;
    case DnsType::kAaaa:
      return 1;
    case DnsType::kPtr:
    case DnsType::kCname:
    case DnsType::kNs:
      return 2;
    case DnsType::kSrv:
      return 3;
    case DnsType::kTxt:
      return 4;
    case DnsType::kNsec:
      return 5;
    default:
      return 6;
  }
}

class Writer {
 public:
  absl::StatusOr<std::vector<uint8_t>> Write(const DnsMessage& message) {
    const size_t sizes[] = {message.questions.size(), message.answers.size(),
                            message.authorities.size(), message.additionals.size()};
    for (size_t size : sizes) {
      if (size > 0xFFFF) {
        return absl::InvalidArgumentError(
            absl::StrCat("DNS: a section of ", size, " entries exceeds 65535"));
      }
    }
    U16(message.header.id);
    U16(message.header.flags);
    for (size_t size : sizes) U16(static_cast<uint16_t>(size));
    for (const DnsQuestion& question : message.questions) {
      Name(question.name);
      U16(static_cast<uint16_t>(question.type));
      U16(question.qclass | (question.unicast_response ? kClassTopBit : 0));
    }
    for (const auto* section : {&message.answers, &message.authorities, &message.additionals}) {
      for (const DnsRecord& record : *section) RETURN_IF_ERROR(Record(record));
    }
    return std::move(out_);
  }

 private:
  void U8(uint8_t v) { out_.push_back(v); }
  void U16(uint16_t v) {
    out_.push_back(static_cast<uint8_t>(v >> 8));
    out_.push_back(static_cast<uint8_t>(v));
  }
  void U32(uint32_t v) {
    U16(static_cast<uint16_t>(v >> 16));
    U16(static_cast<uint16_t>(v));
  }
  void Bytes(absl::string_view bytes) { out_.insert(out_.end(), bytes.begin(), bytes.end()); }

  // Writes `name`, replacing its longest suffix already in the message by a pointer. Suffixes
  // match byte for byte so that a round trip keeps the case of every name.
  void Name(const DnsName& name) {
    const std::vector<std::string>& labels = name.labels();
    std::vector<std::string> keys(labels.size() + 1);
    for (size_t i = labels.size(); i-- > 0;) {
      keys[i] =
          absl::StrCat(std::string(1, static_cast<char>(labels[i].size())), labels[i], keys[i + 1]);
    }
    for (size_t i = 0; i < labels.size(); ++i) {
      auto found = suffixes_.find(keys[i]);
      if (found != suffixes_.end()) {
        U16(static_cast<uint16_t>(0xC000 | found->second));
        return;
      }
      if (out_.size() <= kMaxPointerTarget) {
        suffixes_.emplace(keys[i], static_cast<uint16_t>(out_.size()));
      }
      U8(static_cast<uint8_t>(labels[i].size()));
      Bytes(labels[i]);
    }
    U8(0);
  }

  absl::Status Record(const DnsRecord& record) {
    if (record.rdata.index() != RdataIndexForType(record.type)) {
      return absl::InvalidArgumentError(absl::StrCat("DNS: ", DnsTypeName(record.type),
                                                     " record for ", record.name.ToString(),
                                                     " holds the wrong kind of rdata"));
    }
    Name(record.name);
    U16(static_cast<uint16_t>(record.type));
    U16(record.rrclass | (record.cache_flush ? kClassTopBit : 0));
    U32(record.ttl);
    const size_t length_at = out_.size();
    U16(0);
    const size_t rdata_start = out_.size();
    RETURN_IF_ERROR(
        std::visit([&](const auto& rdata) { return Rdata(record, rdata); }, record.rdata));
    const size_t rdlength = out_.size() - rdata_start;
    if (rdlength > 0xFFFF) {
      return absl::InvalidArgumentError(absl::StrCat("DNS: ", DnsTypeName(record.type),
                                                     " rdata for ", record.name.ToString(), " of ",
                                                     rdlength, " bytes exceeds 65535"));
    }
    out_[length_at] = static_cast<uint8_t>(rdlength >> 8);
    out_[length_at + 1] = static_cast<uint8_t>(rdlength);
    return absl::OkStatus();
  }

  absl::Status Rdata(const DnsRecord&, const ARdata& a) {
    out_.insert(out_.end(), a.address.begin(), a.address.end());
    return absl::OkStatus();
  }
  absl::Status Rdata(const DnsRecord&, const AaaaRdata& aaaa) {
    out_.insert(out_.end(), aaaa.address.begin(), aaaa.address.end());
    return absl::OkStatus();
  }
  absl::Status Rdata(const DnsRecord&, const PtrRdata& ptr) {
    Name(ptr.target);
    return absl::OkStatus();
  }
  absl::Status Rdata(const DnsRecord&, const SrvRdata& srv) {
    U16(srv.priority);
    U16(srv.weight);
    U16(srv.port);
    Name(srv.target);
    return absl::OkStatus();
  }
  absl::Status Rdata(const DnsRecord& record, const TxtRdata& txt) {
    if (txt.strings.empty()) {
      U8(0);  // one empty string (RFC 6763 §6.1)
      return absl::OkStatus();
    }
    for (const std::string& string : txt.strings) {
      if (string.size() > 255) {
        return absl::InvalidArgumentError(absl::StrCat("DNS: TXT string of ", string.size(),
                                                       " bytes for ", record.name.ToString(),
                                                       " exceeds 255"));
      }
      U8(static_cast<uint8_t>(string.size()));
      Bytes(string);
    }
    return absl::OkStatus();
  }
  absl::Status Rdata(const DnsRecord&, const NsecRdata& nsec) {
    Name(nsec.next_name);
    std::vector<uint16_t> types = nsec.types;
    std::sort(types.begin(), types.end());
    types.erase(std::unique(types.begin(), types.end()), types.end());
    size_t i = 0;
    while (i < types.size()) {
      const int window = types[i] >> 8;
      uint8_t bitmap[32] = {};
      size_t bitmap_length = 0;
      for (; i < types.size() && (types[i] >> 8) == window; ++i) {
        const int low = types[i] & 0xFF;
        bitmap[low / 8] |= static_cast<uint8_t>(0x80 >> (low % 8));
        bitmap_length = low / 8 + 1;
      }
      U8(static_cast<uint8_t>(window));
      U8(static_cast<uint8_t>(bitmap_length));
      out_.insert(out_.end(), bitmap, bitmap + bitmap_length);
    }
    return absl::OkStatus();
  }
  absl::Status Rdata(const DnsRecord&, const RawRdata& raw) {
    out_.insert(out_.end(), raw.bytes.begin(), raw.bytes.end());
    return absl::OkStatus();
  }

  std::vector<uint8_t> out_;
  std::map<std::string, uint16_t> suffixes_;  // wire form of a suffix -> its offset
};

bool IsAsciiPrintable(unsigned char c) { return c >= 0x20 && c <= 0x7E; }

void AppendEscapedBytes(std::string& out, absl::string_view bytes, absl::string_view specials) {
  for (unsigned char c : bytes) {
    if (c < 0x20 || c == 0x7F) {
      absl::StrAppendFormat(&out, "\\%03d", c);
    } else if (specials.find(static_cast<char>(c)) != absl::string_view::npos) {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
}

std::string RdataToString(const DnsRdata& rdata) {
  struct Visitor {
    std::string operator()(const ARdata& a) const { return absl::StrJoin(a.address, "."); }
    std::string operator()(const AaaaRdata& aaaa) const {
      std::vector<std::string> groups;
      for (size_t i = 0; i < 16; i += 2) {
        groups.push_back(absl::StrFormat("%x", (aaaa.address[i] << 8) | aaaa.address[i + 1]));
      }
      return absl::StrJoin(groups, ":");
    }
    std::string operator()(const PtrRdata& ptr) const { return ptr.target.ToString(); }
    std::string operator()(const SrvRdata& srv) const {
      return absl::StrCat(srv.priority, " ", srv.weight, " ", srv.port, " ", srv.target.ToString());
    }
    std::string operator()(const TxtRdata& txt) const {
      std::vector<std::string> quoted;
      for (const std::string& string : txt.strings) {
        std::string q = "\"";
        AppendEscapedBytes(q, string, "\"\\");
        q.push_back('"');
        quoted.push_back(std::move(q));
      }
      return absl::StrJoin(quoted, " ");
    }
    std::string operator()(const NsecRdata& nsec) const {
      std::string out = nsec.next_name.ToString();
      for (uint16_t type : nsec.types) {
        absl::StrAppend(&out, " ", DnsTypeName(static_cast<DnsType>(type)));
      }
      return out;
    }
    std::string operator()(const RawRdata& raw) const {
      std::string out = absl::StrCat("\\# ", raw.bytes.size(), " ");
      for (uint8_t b : raw.bytes) absl::StrAppendFormat(&out, "%02x", b);
      return out;
    }
  };
  return std::visit(Visitor{}, rdata);
}

}  // namespace

// ---- DnsName ----------------------------------------------------------------------------------

absl::StatusOr<DnsName> DnsName::FromLabels(std::vector<std::string> labels) {
  size_t wire_length = 1;
  for (size_t i = 0; i < labels.size(); ++i) {
    const std::string& label = labels[i];
    if (label.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("DNS: label ", i, " of a name is empty"));
    }
    if (label.size() > kMaxDnsLabelLength) {
      return absl::InvalidArgumentError(absl::StrCat("DNS: label ", i, " of a name has ",
                                                     label.size(), " bytes, more than ",
                                                     kMaxDnsLabelLength));
    }
    wire_length += 1 + label.size();
  }
  if (wire_length > kMaxDnsNameLength) {
    return absl::InvalidArgumentError(absl::StrCat(
        "DNS: name of ", wire_length, " bytes in wire form exceeds ", kMaxDnsNameLength));
  }
  return DnsName(std::move(labels));
}

absl::StatusOr<DnsName> DnsName::Parse(absl::string_view presentation) {
  std::vector<std::string> labels;
  if (presentation.empty() || presentation == ".") return DnsName();
  std::string label;
  bool label_ended_by_dot = false;
  for (size_t i = 0; i < presentation.size(); ++i) {
    const char c = presentation[i];
    label_ended_by_dot = false;
    if (c == '\\') {
      if (i + 1 >= presentation.size()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "DNS: name \"", presentation, "\" ends with a lone backslash; write \\\\"));
      }
      const char next = presentation[i + 1];
      if (absl::ascii_isdigit(static_cast<unsigned char>(next))) {
        if (i + 3 >= presentation.size() ||
            !absl::ascii_isdigit(static_cast<unsigned char>(presentation[i + 2])) ||
            !absl::ascii_isdigit(static_cast<unsigned char>(presentation[i + 3]))) {
          return absl::InvalidArgumentError(absl::StrCat(
              "DNS: name \"", presentation, "\" has a \\DDD escape without three digits"));
        }
        const int value =
            (next - '0') * 100 + (presentation[i + 2] - '0') * 10 + (presentation[i + 3] - '0');
        if (value > 255) {
          return absl::InvalidArgumentError(absl::StrCat(
              "DNS: name \"", presentation, "\" has an escape \\", value, " above 255"));
        }
        label.push_back(static_cast<char>(value));
        i += 3;
      } else {
        label.push_back(next);
        i += 1;
      }
    } else if (c == '.') {
      if (label.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("DNS: name \"", presentation, "\" has an empty label"));
      }
      labels.push_back(std::move(label));
      label.clear();
      label_ended_by_dot = true;
    } else {
      label.push_back(c);
    }
  }
  if (!label.empty()) {
    labels.push_back(std::move(label));
  } else if (!label_ended_by_dot) {
    return absl::InvalidArgumentError(
        absl::StrCat("DNS: name \"", presentation, "\" has an empty label"));
  }
  return FromLabels(std::move(labels));
}

absl::StatusOr<DnsName> DnsName::Prepend(absl::string_view label) const {
  std::vector<std::string> labels;
  labels.reserve(labels_.size() + 1);
  labels.emplace_back(label);
  labels.insert(labels.end(), labels_.begin(), labels_.end());
  return FromLabels(std::move(labels));
}

size_t DnsName::wire_length() const {
  size_t length = 1;
  for (const std::string& label : labels_) length += 1 + label.size();
  return length;
}

std::string DnsName::ToString() const {
  if (labels_.empty()) return ".";
  std::string out;
  for (size_t i = 0; i < labels_.size(); ++i) {
    if (i > 0) out.push_back('.');
    AppendEscapedBytes(out, labels_[i], ".\\");
  }
  return out;
}

std::string DnsName::CanonicalKey() const {
  std::string key;
  for (const std::string& label : labels_) {
    key.push_back(static_cast<char>(label.size()));
    key.append(absl::AsciiStrToLower(label));
  }
  key.push_back('\0');
  return key;
}

bool operator==(const DnsName& a, const DnsName& b) {
  if (a.labels_.size() != b.labels_.size()) return false;
  for (size_t i = 0; i < a.labels_.size(); ++i) {
    if (!absl::EqualsIgnoreCase(a.labels_[i], b.labels_[i])) return false;
  }
  return true;
}

bool DnsName::EndsWith(const DnsName& suffix) const {
  if (suffix.labels_.size() > labels_.size()) return false;
  const size_t skip = labels_.size() - suffix.labels_.size();
  for (size_t i = 0; i < suffix.labels_.size(); ++i) {
    if (!absl::EqualsIgnoreCase(labels_[skip + i], suffix.labels_[i])) return false;
  }
  return true;
}

// ---- Types, parse, serialize ------------------------------------------------------------------

std::string DnsTypeName(DnsType type) {
  switch (type) {
    case DnsType::kA:
      return "A";
    case DnsType::kNs:
      return "NS";
    case DnsType::kCname:
      return "CNAME";
    case DnsType::kPtr:
      return "PTR";
    case DnsType::kHinfo:
      return "HINFO";
    case DnsType::kTxt:
      return "TXT";
    case DnsType::kAaaa:
      return "AAAA";
    case DnsType::kSrv:
      return "SRV";
    case DnsType::kOpt:
      return "OPT";
    case DnsType::kNsec:
      return "NSEC";
    case DnsType::kAny:
      return "ANY";
  }
  return absl::StrCat("TYPE", static_cast<uint16_t>(type));
}

absl::StatusOr<DnsMessage> ParseDnsMessage(absl::Span<const uint8_t> packet) {
  return Parser(packet).Parse();
}

absl::StatusOr<std::vector<uint8_t>> SerializeDnsMessage(const DnsMessage& message,
                                                         const DnsSerializeOptions& options) {
  ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, Writer().Write(message));
  const size_t limit = std::min(options.max_size, kMaxDnsMessageSize);
  if (bytes.size() > limit) {
    return absl::OutOfRangeError(absl::StrCat("DNS: message of ", bytes.size(),
                                              " bytes exceeds the limit of ", limit,
                                              "; split its records across several messages"));
  }
  return bytes;
}

// ---- TXT entries ------------------------------------------------------------------------------

std::vector<TxtEntry> ParseTxtEntries(const TxtRdata& txt) {
  std::vector<TxtEntry> entries;
  for (const std::string& string : txt.strings) {
    if (string.empty()) continue;
    const size_t equals = string.find('=');
    if (equals == 0) continue;  // no key: ignored (RFC 6763 §6.4)
    TxtEntry entry;
    entry.key = string.substr(0, equals);
    if (FindTxtEntry(entries, entry.key) != nullptr) continue;  // first occurrence wins
    if (equals != std::string::npos) entry.value = string.substr(equals + 1);
    entries.push_back(std::move(entry));
  }
  return entries;
}

const TxtEntry* FindTxtEntry(const std::vector<TxtEntry>& entries, absl::string_view key) {
  for (const TxtEntry& entry : entries) {
    if (absl::EqualsIgnoreCase(entry.key, key)) return &entry;
  }
  return nullptr;
}

absl::StatusOr<TxtRdata> MakeTxtRdata(const std::vector<TxtEntry>& entries) {
  TxtRdata txt;
  for (size_t i = 0; i < entries.size(); ++i) {
    const TxtEntry& entry = entries[i];
    if (entry.key.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("DNS: TXT entry ", i, " has an empty key"));
    }
    for (unsigned char c : entry.key) {
      if (!IsAsciiPrintable(c) || c == '=') {
        return absl::InvalidArgumentError(
            absl::StrCat("DNS: TXT key \"", entry.key,
                         "\" must be printable ASCII without '=' (RFC 6763 §6.4)"));
      }
    }
    for (size_t j = 0; j < i; ++j) {
      if (absl::EqualsIgnoreCase(entries[j].key, entry.key)) {
        return absl::InvalidArgumentError(
            absl::StrCat("DNS: TXT key \"", entry.key, "\" appears twice"));
      }
    }
    std::string string = entry.key;
    if (entry.value.has_value()) absl::StrAppend(&string, "=", *entry.value);
    if (string.size() > 255) {
      return absl::InvalidArgumentError(absl::StrCat("DNS: TXT entry \"", entry.key, "\" of ",
                                                     string.size(), " bytes exceeds 255"));
    }
    txt.strings.push_back(std::move(string));
  }
  return txt;
}

std::string DnsMessageToString(const DnsMessage& message) {
  std::string out = absl::StrFormat(
      "id %u flags 0x%04x%s%s%s opcode %u rcode %u\n", message.header.id, message.header.flags,
      message.header.is_response() ? " qr" : "", message.header.is_authoritative() ? " aa" : "",
      message.header.is_truncated() ? " tc" : "", message.header.opcode(), message.header.rcode());
  for (const DnsQuestion& question : message.questions) {
    absl::StrAppend(&out, "question: ", question.name.ToString(), " class ", question.qclass,
                    question.unicast_response ? " QU " : " QM ", DnsTypeName(question.type), "\n");
  }
  const std::pair<const char*, const std::vector<DnsRecord>*> sections[] = {
      {"answer", &message.answers},
      {"authority", &message.authorities},
      {"additional", &message.additionals}};
  for (const auto& [title, records] : sections) {
    for (const DnsRecord& record : *records) {
      absl::StrAppend(&out, title, ": ", record.name.ToString(), " ", record.ttl, " class ",
                      record.rrclass, record.cache_flush ? " flush " : " ",
                      DnsTypeName(record.type), " ", RdataToString(record.rdata), "\n");
    }
  }
  return out;
}

}  // namespace exo::discovery
