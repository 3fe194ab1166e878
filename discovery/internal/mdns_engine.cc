#include "discovery/internal/mdns_engine.h"

#include <arpa/inet.h>

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace exo::discovery::mdns_internal {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr uint32_t kLegacyUnicastMaxTtl = 10;  // RFC 6762 §6.7
constexpr size_t kQueryBudget = 1400;          // bytes; known answers beyond it are left out

DnsName MustParse(const std::string& text) {
  absl::StatusOr<DnsName> name = DnsName::Parse(text);
  return name.ok() ? *name : DnsName();
}

bool SameRecordData(const DnsRecord& a, const DnsRecord& b) {
  return a.type == b.type && a.rrclass == b.rrclass && a.name == b.name && a.rdata == b.rdata;
}

void AppendName(const DnsName& name, std::vector<uint8_t>& out) {
  for (const std::string& label : name.labels()) {
    out.push_back(static_cast<uint8_t>(label.size()));
    for (char c : label) out.push_back(static_cast<uint8_t>(absl::ascii_tolower(c)));
  }
  out.push_back(0);
}

void Append16(uint16_t value, std::vector<uint8_t>& out) {
  out.push_back(static_cast<uint8_t>(value >> 8));
  out.push_back(static_cast<uint8_t>(value));
}

bool IsLinkLocal(const std::array<uint8_t, 16>& address) {
  return address[0] == 0xfe && (address[1] & 0xc0) == 0x80;
}

}  // namespace

std::string AddressToString(bool ipv6, const std::array<uint8_t, 16>& address) {
  char buffer[INET6_ADDRSTRLEN] = {};
  if (inet_ntop(ipv6 ? AF_INET6 : AF_INET, address.data(), buffer, sizeof(buffer)) == nullptr) {
    return "?";
  }
  return buffer;
}

std::vector<uint8_t> CanonicalRdata(const DnsRecord& record) {
  std::vector<uint8_t> out;
  if (const auto* a = std::get_if<ARdata>(&record.rdata)) {
    out.assign(a->address.begin(), a->address.end());
  } else if (const auto* aaaa = std::get_if<AaaaRdata>(&record.rdata)) {
    out.assign(aaaa->address.begin(), aaaa->address.end());
  } else if (const auto* ptr = std::get_if<PtrRdata>(&record.rdata)) {
    AppendName(ptr->target, out);
  } else if (const auto* srv = std::get_if<SrvRdata>(&record.rdata)) {
    Append16(srv->priority, out);
    Append16(srv->weight, out);
    Append16(srv->port, out);
    AppendName(srv->target, out);
  } else if (const auto* txt = std::get_if<TxtRdata>(&record.rdata)) {
    if (txt->strings.empty()) out.push_back(0);  // written as one empty string
    for (const std::string& s : txt->strings) {
      out.push_back(static_cast<uint8_t>(std::min<size_t>(s.size(), 255)));
      out.insert(out.end(), s.begin(), s.begin() + std::min<size_t>(s.size(), 255));
    }
  } else if (const auto* nsec = std::get_if<NsecRdata>(&record.rdata)) {
    AppendName(nsec->next_name, out);
    for (uint16_t type : nsec->types) Append16(type, out);
  } else if (const auto* raw = std::get_if<RawRdata>(&record.rdata)) {
    out = raw->bytes;
  }
  return out;
}

std::string RenamedInstance(const std::string& base, int n) {
  std::string suffix = absl::StrCat(" (", n, ")");
  std::string head = base;
  if (head.size() + suffix.size() > kMaxDnsLabelLength) {
    head.resize(kMaxDnsLabelLength - suffix.size());
    // Do not cut a UTF-8 sequence: drop continuation bytes and the lead byte they follow.
    while (!head.empty() && (static_cast<uint8_t>(head.back()) & 0xC0) == 0x80) head.pop_back();
    if (!head.empty() && (static_cast<uint8_t>(head.back()) & 0x80) != 0) head.pop_back();
  }
  return head + suffix;
}

int CompareRecordSets(std::vector<DnsRecord> ours, std::vector<DnsRecord> theirs) {
  auto key = [](const DnsRecord& r) {
    return std::make_tuple(r.rrclass, static_cast<uint16_t>(r.type), CanonicalRdata(r));
  };
  auto less = [&](const DnsRecord& a, const DnsRecord& b) { return key(a) < key(b); };
  std::sort(ours.begin(), ours.end(), less);
  std::sort(theirs.begin(), theirs.end(), less);
  for (size_t i = 0; i < ours.size() && i < theirs.size(); ++i) {
    auto a = key(ours[i]);
    auto b = key(theirs[i]);
    if (a < b) return -1;
    if (b < a) return 1;
  }
  if (ours.size() == theirs.size()) return 0;
  return ours.size() < theirs.size() ? -1 : 1;
}

MdnsEngine::MdnsEngine(const MdnsOptions& options, std::vector<MdnsInterface> interfaces)
    : options_(options), interfaces_(std::move(interfaces)), random_(options.random_seed) {
  options_.on_peer_event = nullptr;
  service_ = MustParse(options_.service_type);
  services_enumeration_ = MustParse("_services._dns-sd._udp.local");
  instance_base_ = options_.instance_name;
  instance_label_ = instance_base_;
  absl::StatusOr<DnsName> instance = service_.Prepend(instance_label_);
  if (instance.ok()) instance_ = *instance;
  host_ = MustParse(options_.host_name);
  host_base_ = host_.labels().empty() ? "exo" : host_.labels().front();
  absl::StatusOr<TxtRdata> txt = MakeTxtRdata(options_.txt);
  if (txt.ok()) txt_ = *txt;
  // An empty TXT goes on the wire as one empty string and comes back so (RFC 6763 §6.1); keep
  // that form so our records compare equal to their looped-back copies.
  if (txt_.strings.empty()) txt_.strings.push_back("");
}

const MdnsInterface* MdnsEngine::FindInterface(uint32_t index) const {
  for (const MdnsInterface& interface : interfaces_) {
    if (interface.index == index) return &interface;
  }
  return nullptr;
}

std::vector<bool> MdnsEngine::Families(const MdnsInterface& interface) const {
  return {options_.ipv4 && !interface.ipv4.empty(), options_.ipv6 && !interface.ipv6.empty()};
}

void MdnsEngine::Emit(uint32_t interface_index, bool ipv6, std::optional<Endpoint> to,
                      const DnsMessage& message) {
  DnsSerializeOptions serialize;
  serialize.max_size = to.has_value() && to->port != options_.mdns_port ? 512 : kMaxMdnsMessageSize;
  absl::StatusOr<std::vector<uint8_t>> bytes = SerializeDnsMessage(message, serialize);
  if (!bytes.ok()) {
    ++stats_.send_errors;
    return;
  }
  outgoing_.push_back(OutgoingPacket{interface_index, ipv6, std::move(to), std::move(*bytes)});
}

void MdnsEngine::EmitOnAllFamilies(const MdnsInterface& interface, const DnsMessage& message) {
  std::vector<bool> families = Families(interface);
  if (families[0]) Emit(interface.index, false, std::nullopt, message);
  if (families[1]) Emit(interface.index, true, std::nullopt, message);
}

std::vector<DnsRecord> MdnsEngine::OwnRecords(const MdnsInterface& interface) const {
  const uint32_t host_ttl = static_cast<uint32_t>(options_.timings.host_record_ttl.count());
  const uint32_t other_ttl = static_cast<uint32_t>(options_.timings.other_record_ttl.count());
  std::vector<DnsRecord> records;
  records.push_back(
      DnsRecord{service_, DnsType::kPtr, kDnsClassIn, false, other_ttl, PtrRdata{instance_}});
  records.push_back(DnsRecord{instance_, DnsType::kSrv, kDnsClassIn, true, host_ttl,
                              SrvRdata{0, 0, options_.port, host_}});
  records.push_back(DnsRecord{instance_, DnsType::kTxt, kDnsClassIn, true, other_ttl, txt_});
  if (options_.ipv4) {
    for (const auto& address : interface.ipv4) {
      records.push_back(
          DnsRecord{host_, DnsType::kA, kDnsClassIn, true, host_ttl, ARdata{address}});
    }
  }
  if (options_.ipv6) {
    for (const auto& address : interface.ipv6) {
      records.push_back(
          DnsRecord{host_, DnsType::kAaaa, kDnsClassIn, true, host_ttl, AaaaRdata{address}});
    }
  }
  return records;
}

void MdnsEngine::Start(TimePoint now) {
  if (options_.publish) {
    state_ = ResponderState::kProbing;
    probes_sent_ = 0;
    // §8.1: wait a random 0-250 ms before the first probe.
    next_probe_ = now + milliseconds(std::uniform_int_distribution<int>(0, 250)(random_));
  }
  if (options_.browse) {
    browsing_ = true;
    // §5.2: the first query goes out after a random 20-120 ms.
    next_query_ = now + milliseconds(std::uniform_int_distribution<int>(20, 120)(random_));
    query_interval_ = options_.timings.query_initial_interval;
  }
}

void MdnsEngine::Stop(TimePoint now) {
  if (state_ == ResponderState::kAnnouncing || state_ == ResponderState::kAnnounced) {
    SendAnnouncement(now, 0, /*goodbye=*/true);
  }
  // Pending delayed answers would announce records we just withdrew.
  pending_.clear();
  state_ = ResponderState::kStopped;
  browsing_ = false;
  resolving_.clear();
}

absl::Status MdnsEngine::UpdateTxt(const std::vector<TxtEntry>& txt, TimePoint now) {
  absl::StatusOr<TxtRdata> rdata = MakeTxtRdata(txt);
  if (!rdata.ok()) return rdata.status();
  txt_ = *rdata;
  if (txt_.strings.empty()) txt_.strings.push_back("");
  options_.txt = txt;
  if (state_ == ResponderState::kAnnouncing || state_ == ResponderState::kAnnounced) {
    // §8.4: announce the new data like at start.
    state_ = ResponderState::kAnnouncing;
    announcements_left_ = options_.timings.announce_count;
    next_announcement_ = now;
  }
  return absl::OkStatus();
}

void MdnsEngine::SendProbe(TimePoint now) {
  (void)now;
  for (const MdnsInterface& interface : interfaces_) {
    DnsMessage probe;
    probe.questions.push_back(DnsQuestion{instance_, DnsType::kAny, kDnsClassIn, true});
    probe.questions.push_back(DnsQuestion{host_, DnsType::kAny, kDnsClassIn, true});
    for (DnsRecord& record : OwnRecords(interface)) {
      if (record.type == DnsType::kPtr) continue;  // shared, not probed
      record.cache_flush = false;  // §8.1: no cache-flush bit in the authority section
      probe.authorities.push_back(std::move(record));
    }
    EmitOnAllFamilies(interface, probe);
  }
}

void MdnsEngine::SendAnnouncement(TimePoint now, uint32_t ttl_override, bool goodbye) {
  for (const MdnsInterface& interface : interfaces_) {
    DnsMessage message;
    message.header.set_response(true);
    message.header.set_authoritative(true);
    message.answers = OwnRecords(interface);
    if (goodbye) {
      for (DnsRecord& record : message.answers) record.ttl = ttl_override;
    }
    EmitOnAllFamilies(interface, message);
    last_multicast_[interface.index] = now;
  }
}

void MdnsEngine::SendBrowseQuery(TimePoint now) {
  for (const MdnsInterface& interface : interfaces_) {
    DnsMessage query;
    query.questions.push_back(DnsQuestion{service_, DnsType::kPtr, kDnsClassIn, false});
    size_t budget = 12 + service_.wire_length() + 4;
    // §7.1 known answers: PTRs we hold with more than half their TTL left. Our own PTR counts,
    // so our own responder (which sees this query looped back) does not answer it.
    std::vector<DnsRecord> known;
    if (state_ == ResponderState::kAnnounced || state_ == ResponderState::kAnnouncing) {
      known.push_back(OwnRecords(interface).front());
    }
    for (const CacheEntry& entry : cache_) {
      if (entry.goodbye || entry.record.type != DnsType::kPtr || !(entry.record.name == service_)) {
        continue;
      }
      const Duration left = entry.expires - now;
      if (left * 2 <= seconds(entry.record.ttl)) continue;
      DnsRecord record = entry.record;
      record.ttl = static_cast<uint32_t>(std::chrono::duration_cast<seconds>(left).count());
      known.push_back(std::move(record));
    }
    for (DnsRecord& record : known) {
      const size_t size = 2 + 10 + std::get<PtrRdata>(record.rdata).target.wire_length();
      if (budget + size > kQueryBudget) break;
      budget += size;
      query.answers.push_back(std::move(record));
    }
    EmitOnAllFamilies(interface, query);
  }
}

void MdnsEngine::Advance(TimePoint now) {
  // Delayed multicast answers.
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->due <= now) {
      outgoing_.push_back(std::move(it->packet));
      it = pending_.erase(it);
    } else {
      ++it;
    }
  }
  if (state_ == ResponderState::kProbing && now >= next_probe_) {
    if (probes_sent_ < options_.timings.probe_count) {
      SendProbe(now);
      ++probes_sent_;
      next_probe_ = now + options_.timings.probe_interval;
    } else {
      // No conflict during the probes: the names are ours (§8.1).
      state_ = ResponderState::kAnnouncing;
      announcements_left_ = options_.timings.announce_count;
      next_announcement_ = now;
    }
  }
  if (state_ == ResponderState::kAnnouncing && now >= next_announcement_) {
    SendAnnouncement(now, 0, /*goodbye=*/false);
    if (--announcements_left_ <= 0) {
      state_ = ResponderState::kAnnounced;
    } else {
      next_announcement_ = now + options_.timings.announce_interval;
    }
  }
  if (browsing_ && now >= next_query_) {
    SendBrowseQuery(now);
    next_query_ = now + query_interval_;
    query_interval_ = std::min<Duration>(query_interval_ * 2, options_.timings.query_max_interval);
  }
  ExpireAndRefresh(now);
  Resolve(now);
}

std::optional<TimePoint> MdnsEngine::NextRefresh(const CacheEntry& entry) const {
  if (entry.goodbye || entry.refreshes_sent >= 4) return std::nullopt;
  // §5.2: queries at 80%, 85%, 90% and 95% of the TTL, plus 0-2% of random jitter.
  const Duration ttl = seconds(entry.record.ttl);
  return entry.received + ttl * (80 + 5 * entry.refreshes_sent) / 100 + entry.refresh_jitter;
}

std::optional<TimePoint> MdnsEngine::NextWakeup() const {
  std::optional<TimePoint> next;
  auto consider = [&](TimePoint t) {
    if (!next || t < *next) next = t;
  };
  for (const Pending& pending : pending_) consider(pending.due);
  if (state_ == ResponderState::kProbing) consider(next_probe_);
  if (state_ == ResponderState::kAnnouncing) consider(next_announcement_);
  if (browsing_) {
    consider(next_query_);
    for (const CacheEntry& entry : cache_) {
      consider(entry.expires);
      if (std::optional<TimePoint> refresh = NextRefresh(entry)) consider(*refresh);
    }
    for (const auto& [key, state] : resolving_) consider(state.next);
  }
  return next;
}

bool MdnsEngine::IsOwnRecord(const DnsRecord& record) const {
  if (state_ == ResponderState::kIdle || state_ == ResponderState::kStopped) return false;
  if (record.type == DnsType::kPtr && record.name == service_) {
    const auto* ptr = std::get_if<PtrRdata>(&record.rdata);
    return ptr != nullptr && ptr->target == instance_;
  }
  return record.name == instance_;
}

bool MdnsEngine::IsRelevant(const DnsRecord& record) const {
  switch (record.type) {
    case DnsType::kPtr:
      return record.name == service_;
    case DnsType::kSrv:
    case DnsType::kTxt:
      return record.name.labels().size() == service_.labels().size() + 1 &&
             record.name.EndsWith(service_);
    case DnsType::kA:
    case DnsType::kAaaa:
      return true;
    default:
      return false;
  }
}

void MdnsEngine::HandlePacket(uint32_t interface_index, const Endpoint& source,
                              absl::Span<const uint8_t> bytes, TimePoint now) {
  ++stats_.packets_received;
  const MdnsInterface* interface = FindInterface(interface_index);
  if (interface == nullptr) {
    ++stats_.packets_ignored;
    return;
  }
  absl::StatusOr<DnsMessage> message = ParseDnsMessage(bytes);
  if (!message.ok()) {
    ++stats_.packets_malformed;
    return;
  }
  // §18.3, §18.11: messages with another opcode or a non-zero rcode are ignored.
  if (message->header.opcode() != 0 || message->header.rcode() != 0) {
    ++stats_.packets_ignored;
    return;
  }
  if (message->header.is_response()) {
    // §11: responses must come from port 5353.
    if (source.port != options_.mdns_port) {
      ++stats_.packets_ignored;
      return;
    }
    HandleResponse(*message, *interface, now);
  } else {
    HandleQuery(*message, *interface, source, now);
  }
}

void MdnsEngine::HandleQuery(const DnsMessage& message, const MdnsInterface& interface,
                             const Endpoint& source, TimePoint now) {
  if (!options_.publish) return;
  const bool is_probe = !message.authorities.empty();
  if (state_ == ResponderState::kProbing && is_probe) {
    // §8.2 simultaneous probe tie-break: compare our records for the name with theirs.
    std::vector<DnsRecord> ours_all = OwnRecords(interface);
    for (const DnsName* name : {&instance_, &host_}) {
      std::vector<DnsRecord> theirs;
      for (const DnsRecord& record : message.authorities) {
        if (record.name == *name) theirs.push_back(record);
      }
      if (theirs.empty()) continue;
      std::vector<DnsRecord> ours;
      for (const DnsRecord& record : ours_all) {
        if (record.type != DnsType::kPtr && record.name == *name) {
          ours.push_back(record);
          ours.back().cache_flush = false;
        }
      }
      for (DnsRecord& record : theirs) record.cache_flush = false;
      if (CompareRecordSets(ours, theirs) < 0) {
        // We lose: wait one second and probe again with the same name (§8.2).
        ++stats_.conflicts;
        probes_sent_ = 0;
        next_probe_ = now + seconds(1);
        return;
      }
    }
    return;
  }
  if (state_ != ResponderState::kAnnouncing && state_ != ResponderState::kAnnounced) return;

  const bool legacy = source.port != options_.mdns_port;  // §6.7
  std::vector<DnsRecord> own = OwnRecords(interface);
  std::vector<DnsRecord> answers;
  bool any_multicast_question = false;
  bool any_shared = false;
  auto add_answer = [&](const DnsRecord& record) {
    for (const DnsRecord& known : message.answers) {
      // §7.1: a known answer with at least half our TTL suppresses ours.
      if (SameRecordData(known, record) && known.ttl * 2 >= record.ttl) {
        ++stats_.answers_suppressed;
        return false;
      }
    }
    for (const DnsRecord& existing : answers) {
      if (SameRecordData(existing, record)) return true;
    }
    answers.push_back(record);
    return true;
  };
  for (const DnsQuestion& question : message.questions) {
    if (question.qclass != kDnsClassIn && question.qclass != kDnsClassAny) continue;
    const bool any = question.type == DnsType::kAny;
    size_t before = answers.size();
    bool matched = false;
    if (question.name == services_enumeration_ && (any || question.type == DnsType::kPtr)) {
      matched = true;
      add_answer(DnsRecord{services_enumeration_, DnsType::kPtr, kDnsClassIn, false,
                           own.front().ttl, PtrRdata{service_}});
      any_shared = true;
    }
    for (const DnsRecord& record : own) {
      if (!(record.name == question.name)) continue;
      if (!any && record.type != question.type) continue;
      matched = true;
      if (add_answer(record) && record.type == DnsType::kPtr) any_shared = true;
    }
    if (matched && answers.size() > before && !question.unicast_response) {
      any_multicast_question = true;
    }
  }
  if (answers.empty()) return;
  ++stats_.queries_answered;

  // Additional records (§12, RFC 6763 §12): SRV, TXT and addresses for a PTR, addresses for SRV.
  std::vector<DnsRecord> additionals;
  auto add_additional = [&](DnsType type, const DnsName& name) {
    for (const DnsRecord& record : own) {
      if (record.type != type || !(record.name == name)) continue;
      bool present = false;
      for (const DnsRecord& a : answers) present = present || SameRecordData(a, record);
      for (const DnsRecord& a : additionals) present = present || SameRecordData(a, record);
      if (!present) additionals.push_back(record);
    }
  };
  bool wants_service = false;
  bool wants_host = false;
  for (const DnsRecord& answer : answers) {
    if (answer.type == DnsType::kPtr && answer.name == service_) wants_service = true;
    if (answer.type == DnsType::kSrv) wants_host = true;
  }
  if (wants_service) {
    add_additional(DnsType::kSrv, instance_);
    add_additional(DnsType::kTxt, instance_);
    wants_host = true;
  }
  if (wants_host) {
    add_additional(DnsType::kA, host_);
    add_additional(DnsType::kAaaa, host_);
  }

  DnsMessage response;
  response.header.set_response(true);
  response.header.set_authoritative(true);
  if (legacy) {
    // §6.7: unicast to the querier, its id and questions echoed, TTLs at most 10 s, no
    // cache-flush bits.
    response.header.id = message.header.id;
    response.questions = message.questions;
    for (DnsQuestion& question : response.questions) question.unicast_response = false;
    for (auto* section : {&answers, &additionals}) {
      for (DnsRecord& record : *section) {
        record.ttl = std::min(record.ttl, kLegacyUnicastMaxTtl);
        record.cache_flush = false;
      }
    }
    response.answers = std::move(answers);
    response.additionals = std::move(additionals);
    Emit(interface.index, source.ipv6, source, response);
    return;
  }
  response.answers = std::move(answers);
  response.additionals = std::move(additionals);
  if (!any_multicast_question && !is_probe) {
    // §5.4: QU questions get a unicast answer; we also multicast if we have not done so on this
    // interface within a quarter of the host-record TTL.
    Emit(interface.index, source.ipv6, source, response);
    auto last = last_multicast_.find(interface.index);
    if (last != last_multicast_.end() &&
        now - last->second < options_.timings.host_record_ttl / 4) {
      return;
    }
  }
  last_multicast_[interface.index] = now;
  if (any_shared && !is_probe) {
    // §6: shared answers wait a random 20-120 ms so several responders do not collide.
    const size_t first = outgoing_.size();
    Emit(interface.index, source.ipv6, std::nullopt, response);
    const TimePoint due = now + milliseconds(std::uniform_int_distribution<int>(20, 120)(random_));
    for (size_t i = first; i < outgoing_.size(); ++i) {
      pending_.push_back(Pending{due, std::move(outgoing_[i])});
    }
    outgoing_.resize(first);
  } else {
    Emit(interface.index, source.ipv6, std::nullopt, response);
  }
}

void MdnsEngine::OnConflict(TimePoint now, bool rename_instance) {
  ++stats_.conflicts;
  // §8.1: after 15 conflicts within 10 s, wait 5 s before probing again.
  recent_conflicts_.push_back(now);
  std::erase_if(recent_conflicts_, [&](TimePoint t) { return now - t > seconds(10); });
  if (rename_instance) {
    instance_label_ = RenamedInstance(instance_base_, ++instance_suffix_);
    absl::StatusOr<DnsName> instance = service_.Prepend(instance_label_);
    if (instance.ok()) instance_ = *instance;
  } else {
    std::vector<std::string> labels = host_.labels();
    labels.front() =
        absl::StrCat(host_base_.substr(0, kMaxDnsLabelLength - 6), "-", ++host_suffix_);
    absl::StatusOr<DnsName> host = DnsName::FromLabels(std::move(labels));
    if (host.ok()) host_ = *host;
  }
  state_ = ResponderState::kProbing;
  probes_sent_ = 0;
  next_probe_ = recent_conflicts_.size() >= 15 ? now + seconds(5) : now;
  pending_.clear();
}

void MdnsEngine::CheckConflicts(const std::vector<const DnsRecord*>& records, TimePoint now) {
  if (state_ != ResponderState::kProbing && state_ != ResponderState::kAnnouncing &&
      state_ != ResponderState::kAnnounced) {
    return;
  }
  for (const DnsRecord* record : records) {
    if (record->ttl == 0) continue;  // a goodbye is no claim
    const bool for_instance = record->name == instance_ &&
                              (record->type == DnsType::kSrv || record->type == DnsType::kTxt);
    const bool for_host =
        record->name == host_ && (record->type == DnsType::kA || record->type == DnsType::kAaaa);
    if (!for_instance && !for_host) continue;
    // Identical data is no conflict: that is us (multicast loopback) or a copy of our record.
    bool ours = false;
    for (const MdnsInterface& interface : interfaces_) {
      for (const DnsRecord& own : OwnRecords(interface)) {
        if (SameRecordData(own, *record)) ours = true;
      }
    }
    if (ours) continue;
    if (state_ == ResponderState::kProbing) {
      // §8.1: someone already answers for the name: pick another one and probe again.
      OnConflict(now, for_instance);
    } else {
      // §9: a conflicting record after we announced: probe again; the name is renamed only if
      // the other host then defends it.
      ++stats_.conflicts;
      state_ = ResponderState::kProbing;
      probes_sent_ = 0;
      next_probe_ = now;
    }
    return;
  }
}

void MdnsEngine::HandleResponse(const DnsMessage& message, const MdnsInterface& interface,
                                TimePoint now) {
  std::vector<const DnsRecord*> records;
  for (const DnsRecord& record : message.answers) records.push_back(&record);
  for (const DnsRecord& record : message.additionals) records.push_back(&record);
  if (options_.publish) CheckConflicts(records, now);
  if (!browsing_) return;
  // §10.2: a cache-flush record replaces the other records of its name and type received more
  // than a second ago; they expire one second from now.
  for (const DnsRecord* record : records) {
    if (!record->cache_flush || record->ttl == 0 || !IsRelevant(*record) || IsOwnRecord(*record)) {
      continue;
    }
    for (CacheEntry& entry : cache_) {
      if (entry.record.type == record->type && entry.record.name == record->name &&
          !SameRecordData(entry.record, *record) && now - entry.received > seconds(1)) {
        entry.expires = std::min(entry.expires, now + seconds(1));
        entry.goodbye = true;
      }
    }
  }
  for (const DnsRecord* record : records) {
    if (IsRelevant(*record) && !IsOwnRecord(*record)) CacheRecord(*record, interface.index, now);
  }
  Resolve(now);
}

void MdnsEngine::CacheRecord(const DnsRecord& record, uint32_t interface_index, TimePoint now) {
  for (CacheEntry& entry : cache_) {
    if (!SameRecordData(entry.record, record)) continue;
    entry.interface_index = interface_index;
    if (record.ttl == 0) {
      // §10.1 goodbye: keep it one more second (a correction may follow), peer removed now.
      if (!entry.goodbye) {
        entry.goodbye = true;
        entry.expires = now + options_.timings.goodbye_grace;
      }
      return;
    }
    entry.record = record;
    entry.received = now;
    entry.expires = now + seconds(record.ttl);
    entry.refreshes_sent = 0;
    entry.goodbye = false;
    return;
  }
  if (record.ttl == 0) return;
  if (cache_.size() >= options_.max_cache_entries) {
    ++stats_.cache_full_drops;
    return;
  }
  CacheEntry entry;
  entry.record = record;
  entry.interface_index = interface_index;
  entry.received = now;
  entry.expires = now + seconds(record.ttl);
  entry.refresh_jitter =
      seconds(record.ttl) * std::uniform_int_distribution<int>(0, 200)(random_) / 10000;
  cache_.push_back(std::move(entry));
  stats_.cache_entries = cache_.size();
}

void MdnsEngine::ExpireAndRefresh(TimePoint now) {
  std::erase_if(cache_, [&](const CacheEntry& entry) { return entry.expires <= now; });
  stats_.cache_entries = cache_.size();
  if (!browsing_) return;
  // Names of hosts that some live SRV points to: only their addresses are worth refreshing.
  std::vector<DnsName> targets;
  for (const CacheEntry& entry : cache_) {
    if (entry.record.type == DnsType::kSrv && !entry.goodbye) {
      targets.push_back(std::get<SrvRdata>(entry.record.rdata).target);
    }
  }
  std::map<uint32_t, std::vector<DnsQuestion>> questions;
  for (CacheEntry& entry : cache_) {
    std::optional<TimePoint> refresh = NextRefresh(entry);
    if (!refresh || *refresh > now) continue;
    // Skip the refresh points already passed, send one query for this record.
    while (entry.refreshes_sent < 4 && NextRefresh(entry) && *NextRefresh(entry) <= now) {
      ++entry.refreshes_sent;
    }
    const bool address = entry.record.type == DnsType::kA || entry.record.type == DnsType::kAaaa;
    if (address && std::find(targets.begin(), targets.end(), entry.record.name) == targets.end()) {
      continue;
    }
    std::vector<DnsQuestion>& list = questions[entry.interface_index];
    DnsQuestion question{entry.record.name, entry.record.type, kDnsClassIn, false};
    if (std::find(list.begin(), list.end(), question) == list.end()) list.push_back(question);
  }
  for (auto& [index, list] : questions) {
    const MdnsInterface* interface = FindInterface(index);
    if (interface == nullptr) continue;
    DnsMessage query;
    query.questions = std::move(list);
    EmitOnAllFamilies(*interface, query);
  }
}

void MdnsEngine::Resolve(TimePoint now) {
  std::map<std::string, PeerInfo> current;
  std::map<std::string, ResolveState> still_resolving;
  auto live = [](const CacheEntry& e) { return !e.goodbye; };
  for (const CacheEntry& ptr_entry : cache_) {
    const DnsRecord& ptr = ptr_entry.record;
    if (!live(ptr_entry) || ptr.type != DnsType::kPtr || !(ptr.name == service_)) continue;
    const DnsName& instance = std::get<PtrRdata>(ptr.rdata).target;
    if (IsOwnRecord(ptr)) continue;
    const std::string key = instance.CanonicalKey();
    if (current.count(key) != 0) continue;
    const CacheEntry* srv = nullptr;
    const CacheEntry* txt = nullptr;
    for (const CacheEntry& entry : cache_) {
      if (!live(entry) || !(entry.record.name == instance)) continue;
      if (entry.record.type == DnsType::kSrv &&
          (srv == nullptr || entry.received > srv->received)) {
        srv = &entry;
      }
      if (entry.record.type == DnsType::kTxt &&
          (txt == nullptr || entry.received > txt->received)) {
        txt = &entry;
      }
    }
    std::vector<std::string> v4;
    std::vector<std::string> v6;
    std::string interface_name;
    if (srv != nullptr) {
      const DnsName& target = std::get<SrvRdata>(srv->record.rdata).target;
      const MdnsInterface* interface = FindInterface(srv->interface_index);
      interface_name = interface != nullptr ? interface->name : "";
      for (const CacheEntry& entry : cache_) {
        if (!live(entry) || !(entry.record.name == target)) continue;
        if (const auto* a = std::get_if<ARdata>(&entry.record.rdata)) {
          std::array<uint8_t, 16> bytes{};
          std::copy(a->address.begin(), a->address.end(), bytes.begin());
          std::string text = AddressToString(false, bytes);
          if (std::find(v4.begin(), v4.end(), text) == v4.end()) v4.push_back(text);
        } else if (const auto* aaaa = std::get_if<AaaaRdata>(&entry.record.rdata)) {
          std::string text = AddressToString(true, aaaa->address);
          if (IsLinkLocal(aaaa->address)) {
            const MdnsInterface* on = FindInterface(entry.interface_index);
            if (on != nullptr) text = absl::StrCat(text, "%", on->name);
          }
          if (std::find(v6.begin(), v6.end(), text) == v6.end()) v6.push_back(text);
        }
      }
    }
    if (srv == nullptr || txt == nullptr || (v4.empty() && v6.empty())) {
      // Not resolved yet: ask for what is missing, 1 s apart doubling to the query maximum.
      auto it = resolving_.find(key);
      ResolveState state = it != resolving_.end()
                               ? it->second
                               : ResolveState{now, options_.timings.query_initial_interval,
                                              ptr_entry.interface_index};
      if (browsing_ && now >= state.next) {
        DnsMessage query;
        if (srv == nullptr) query.questions.push_back({instance, DnsType::kSrv, kDnsClassIn});
        if (txt == nullptr) query.questions.push_back({instance, DnsType::kTxt, kDnsClassIn});
        if (srv != nullptr) {
          const DnsName& target = std::get<SrvRdata>(srv->record.rdata).target;
          if (options_.ipv4) query.questions.push_back({target, DnsType::kA, kDnsClassIn});
          if (options_.ipv6) query.questions.push_back({target, DnsType::kAaaa, kDnsClassIn});
        }
        if (const MdnsInterface* interface = FindInterface(state.interface_index)) {
          EmitOnAllFamilies(*interface, query);
        }
        state.next = now + state.interval;
        state.interval =
            std::min<Duration>(state.interval * 2, options_.timings.query_max_interval);
      }
      still_resolving[key] = state;
      continue;
    }
    PeerInfo peer;
    peer.source = PeerSource::kMdns;
    peer.instance_name = instance.labels().front();
    peer.host_name = absl::AsciiStrToLower(std::get<SrvRdata>(srv->record.rdata).target.ToString());
    peer.grpc_port = std::get<SrvRdata>(srv->record.rdata).port;
    peer.addresses = v4;
    peer.addresses.insert(peer.addresses.end(), v6.begin(), v6.end());
    peer.host = peer.addresses.front();
    peer.interface_name = interface_name;
    for (const TxtEntry& entry : ParseTxtEntries(std::get<TxtRdata>(txt->record.rdata))) {
      peer.txt[absl::AsciiStrToLower(entry.key)] = entry.value.value_or("");
    }
    if (auto it = peer.txt.find("id"); it != peer.txt.end()) peer.node_id = it->second;
    if (auto it = peer.txt.find("ckf"); it != peer.txt.end()) peer.cluster_fingerprint = it->second;
    current[key] = std::move(peer);
  }
  resolving_ = std::move(still_resolving);
  for (const auto& [key, peer] : peers_) {
    if (current.count(key) == 0) events_.push_back(PeerEvent{PeerEventKind::kRemoved, peer});
  }
  for (const auto& [key, peer] : current) {
    auto it = peers_.find(key);
    if (it == peers_.end()) {
      events_.push_back(PeerEvent{PeerEventKind::kAdded, peer});
    } else if (!(it->second == peer)) {
      events_.push_back(PeerEvent{PeerEventKind::kUpdated, peer});
    }
  }
  peers_ = std::move(current);
}

std::vector<OutgoingPacket> MdnsEngine::TakeOutgoing() {
  stats_.packets_sent += outgoing_.size();
  return std::exchange(outgoing_, {});
}

std::vector<PeerEvent> MdnsEngine::TakeEvents() { return std::exchange(events_, {}); }

std::vector<PeerInfo> MdnsEngine::Peers() const {
  std::vector<PeerInfo> peers;
  for (const auto& [key, peer] : peers_) peers.push_back(peer);
  std::sort(peers.begin(), peers.end(),
            [](const PeerInfo& a, const PeerInfo& b) { return a.instance_name < b.instance_name; });
  return peers;
}

}  // namespace exo::discovery::mdns_internal
