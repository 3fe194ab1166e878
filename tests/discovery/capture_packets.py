#!/usr/bin/env python3
"""Writes mDNS packets encoded by python-zeroconf into tests/discovery/data/ (zeroconf_*.bin).

The packets are BUILT with zeroconf's own classes (ServiceInfo, DNSOutgoing) and written to
files: nothing is sent, no socket is opened. dns_message_test.cc checks that ParseDnsMessage
reads exactly what zeroconf encoded; tests/e2e/test_dns_interop.py checks the other direction
(zeroconf's DNSIncoming parsing the packets our serializer wrote, exo_*.bin).

Usage (Debian: apt-get install python3-zeroconf; the system interpreter has it):
    /usr/bin/python3 tests/discovery/capture_packets.py [--out DIR]
The output is deterministic (fixed TTLs, no clock), so rerunning it changes no file unless
zeroconf's encoder changes.
"""
import argparse
import pathlib
import sys

from zeroconf import DNSNsec, DNSOutgoing, DNSPointer, DNSQuestion, ServiceInfo
from zeroconf import __version__ as zeroconf_version
from zeroconf.const import (_CLASS_IN, _CLASS_UNIQUE, _FLAGS_AA, _FLAGS_QR_QUERY,
                            _FLAGS_QR_RESPONSE, _TYPE_A, _TYPE_AAAA, _TYPE_NSEC, _TYPE_PTR,
                            _TYPE_SRV, _TYPE_TXT)

HERE = pathlib.Path(__file__).resolve().parent

SERVICE = "_exo-node._tcp.local."
# Spaces and non-ASCII UTF-8 in the instance label, as DNS-SD allows.
INSTANCE = "Exo Node \u00c4 1." + SERVICE
HOST = "exo-node-a.local."
PROPERTIES = {
    "id": "node-a-7f3e",
    "v": "1",
    "bus": "5555",
    "fp": "3f2a9c01",
    "mem": "17179869184",
    "kind": "cpu",
    "gpu": None,  # a key alone: boolean attribute without a value (RFC 6763 §6.4)
}


def service_info() -> ServiceInfo:
    return ServiceInfo(
        SERVICE,
        INSTANCE,
        port=50051,
        properties=PROPERTIES,
        server=HOST,
        host_ttl=120,
        other_ttl=4500,
        parsed_addresses=["192.168.1.20", "fe80::1c2:3ff:fe04:506"],
    )


def single_packet(out: DNSOutgoing) -> bytes:
    packets = out.packets()
    assert len(packets) == 1, f"expected one packet, zeroconf made {len(packets)}"
    return packets[0]


def announcement(ttl_override=None) -> bytes:
    """A response announcing the service: PTR, SRV, TXT, A and AAAA, as zeroconf registers."""
    info = service_info()
    out = DNSOutgoing(_FLAGS_QR_RESPONSE | _FLAGS_AA)
    out.add_answer_at_time(info.dns_pointer(override_ttl=ttl_override), 0)
    out.add_answer_at_time(info.dns_service(override_ttl=ttl_override), 0)
    out.add_answer_at_time(info.dns_text(override_ttl=ttl_override), 0)
    for record in info.dns_addresses(override_ttl=ttl_override):
        out.add_answer_at_time(record, 0)
    return single_packet(out)


def query_with_known_answer() -> bytes:
    """A browse query for the service (QM) plus a QU question for the host, with a known answer."""
    out = DNSOutgoing(_FLAGS_QR_QUERY)
    out.add_question(DNSQuestion(SERVICE, _TYPE_PTR, _CLASS_IN))
    qu = DNSQuestion(HOST, _TYPE_A, _CLASS_IN)
    qu.unicast = True
    out.add_question(qu)
    out.add_answer_at_time(DNSPointer(SERVICE, _TYPE_PTR, _CLASS_IN, 3000, INSTANCE), 0)
    return single_packet(out)


def nsec_response() -> bytes:
    """An address answer with NSEC negative responses in the additional section."""
    info = service_info()
    out = DNSOutgoing(_FLAGS_QR_RESPONSE | _FLAGS_AA)
    out.add_answer_at_time(info.dns_addresses()[0], 0)
    out.add_additional_answer(
        DNSNsec(HOST, _TYPE_NSEC, _CLASS_IN | _CLASS_UNIQUE, 120, HOST, [_TYPE_A, _TYPE_AAAA]))
    out.add_additional_answer(
        DNSNsec(INSTANCE, _TYPE_NSEC, _CLASS_IN | _CLASS_UNIQUE, 4500, INSTANCE,
                [_TYPE_TXT, _TYPE_SRV]))
    return single_packet(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=HERE / "data")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    packets = {
        "zeroconf_announcement.bin": announcement(),
        "zeroconf_goodbye.bin": announcement(ttl_override=0),
        "zeroconf_query_known_answer.bin": query_with_known_answer(),
        "zeroconf_nsec.bin": nsec_response(),
    }
    for name, data in packets.items():
        (args.out / name).write_bytes(data)
        print(f"{name}: {len(data)} bytes (zeroconf {zeroconf_version})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
