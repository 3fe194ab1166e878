// libFuzzer target for the DNS message codec: parses the input as one packet; whatever parses
// must serialize, parse back to the same message, and serialize to the same bytes again.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "discovery/dns_message.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace exo::discovery;
  absl::StatusOr<DnsMessage> message = ParseDnsMessage(absl::Span<const uint8_t>(data, size));
  if (!message.ok()) {
    // Errors must carry a message; touch it so that a dangling message would be noticed.
    volatile size_t length = message.status().message().size();
    (void)length;
    if (length == 0) __builtin_trap();
    return 0;
  }
  // Touch everything the parse produced.
  volatile size_t text = DnsMessageToString(*message).size();
  (void)text;
  for (const DnsRecord& record : message->answers) {
    if (const auto* txt = std::get_if<TxtRdata>(&record.rdata)) {
      for (const TxtEntry& entry : ParseTxtEntries(*txt)) {
        if (FindTxtEntry(ParseTxtEntries(*txt), entry.key) == nullptr) __builtin_trap();
      }
    }
    // Presentation form must give the name back.
    absl::StatusOr<DnsName> reparsed_name = DnsName::Parse(record.name.ToString());
    if (!reparsed_name.ok() || !reparsed_name->IdenticalTo(record.name)) __builtin_trap();
  }

  DnsSerializeOptions options;
  options.max_size = kMaxDnsMessageSize;
  absl::StatusOr<std::vector<uint8_t>> bytes = SerializeDnsMessage(*message, options);
  // The input may compress names against bytes that are not names (inside other rdata), which
  // our serializer cannot reuse, so the output may outgrow 65535 bytes: the only error allowed.
  if (!bytes.ok()) {
    if (bytes.status().code() != absl::StatusCode::kOutOfRange) __builtin_trap();
    return 0;
  }
  absl::StatusOr<DnsMessage> again = ParseDnsMessage(*bytes);
  if (!again.ok() || !(*again == *message)) __builtin_trap();
  absl::StatusOr<std::vector<uint8_t>> bytes_again = SerializeDnsMessage(*again, options);
  if (!bytes_again.ok() || *bytes_again != *bytes) __builtin_trap();
  return 0;
}
