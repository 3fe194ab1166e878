"""DNS codec interop with python-zeroconf, without any network traffic.

- The exo_*.bin packets in tests/discovery/data/ are what SerializeDnsMessage writes
  (dns_message_test.cc fails if its output drifts from them); here zeroconf's DNSIncoming must
  read from them the names, types, TTLs, SRV port, TXT entries and addresses we meant.
- The zeroconf_*.bin packets, which dns_message_test.cc parses, must still be what
  tests/discovery/capture_packets.py makes with the installed zeroconf.

Skipped when zeroconf is not importable (Debian: apt-get install python3-zeroconf, then run with
/usr/bin/python3 -m pytest tests/e2e/test_dns_interop.py).
"""
import importlib.util
import ipaddress
import pathlib

import pytest

zeroconf = pytest.importorskip("zeroconf")
from zeroconf import DNSIncoming  # noqa: E402
from zeroconf.const import (_CLASS_IN, _TYPE_A, _TYPE_AAAA, _TYPE_NSEC, _TYPE_PTR,  # noqa: E402
                            _TYPE_SRV, _TYPE_TXT)

REPO = pathlib.Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "discovery" / "data"
SERVICE = "_exo-node._tcp.local."
INSTANCE = "Exo Node \u00c4 1." + SERVICE
HOST = "exo-node-a.local."
TXT = {b"id": b"node-a-7f3e", b"v": b"1", b"bus": b"5555", b"fp": b"3f2a9c01",
       b"mem": b"17179869184", b"kind": b"cpu", b"gpu": None}


def incoming(name: str) -> DNSIncoming:
    message = DNSIncoming((DATA / name).read_bytes())
    assert message.valid, f"zeroconf could not parse {name}"
    return message


def by_type(message: DNSIncoming):
    records = {}
    for record in message.answers:
        records.setdefault(record.type, []).append(record)
    return records


def txt_properties(text: bytes) -> dict:
    props = {}
    i = 0
    while i < len(text):
        length = text[i]
        entry = text[i + 1:i + 1 + length]
        i += 1 + length
        key, sep, value = entry.partition(b"=")
        props[key] = value if sep else None
    return props


def check_announcement(message: DNSIncoming, host_ttl: int, other_ttl: int) -> None:
    assert message.is_response()
    assert message.flags & 0x0400  # authoritative
    assert message.questions == []
    records = by_type(message)
    (ptr,) = records[_TYPE_PTR]
    assert (ptr.name, ptr.alias, ptr.ttl, ptr.class_, ptr.unique) == (SERVICE, INSTANCE,
                                                                       other_ttl, _CLASS_IN, False)
    (srv,) = records[_TYPE_SRV]
    assert (srv.name, srv.server, srv.port, srv.priority, srv.weight, srv.ttl, srv.unique) == (
        INSTANCE, HOST, 50051, 0, 0, host_ttl, True)
    (txt,) = records[_TYPE_TXT]
    assert (txt.name, txt.ttl, txt.unique) == (INSTANCE, other_ttl, True)
    assert txt_properties(txt.text) == TXT
    (a,) = records[_TYPE_A]
    assert (a.name, a.ttl, a.unique) == (HOST, host_ttl, True)
    assert ipaddress.ip_address(a.address) == ipaddress.ip_address("192.168.1.20")
    (aaaa,) = records[_TYPE_AAAA]
    assert (aaaa.name, aaaa.ttl) == (HOST, host_ttl)
    assert ipaddress.ip_address(aaaa.address) == ipaddress.ip_address("fe80::1c2:3ff:fe04:506")


def test_zeroconf_reads_our_announcement():
    message = incoming("exo_announcement.bin")
    check_announcement(message, 120, 4500)
    (nsec,) = by_type(message)[_TYPE_NSEC]
    assert (nsec.name, nsec.next_name, sorted(nsec.rdtypes)) == (HOST, HOST, [_TYPE_A, _TYPE_AAAA])


def test_zeroconf_reads_our_goodbye():
    message = incoming("exo_goodbye.bin")
    check_announcement(message, 0, 0)


def test_zeroconf_reads_our_query_with_known_answer():
    message = incoming("exo_query_known_answer.bin")
    assert message.is_query()
    browse, host = message.questions
    assert (browse.name, browse.type, browse.unicast) == (SERVICE, _TYPE_PTR, False)
    assert (host.name, host.type, host.unicast) == (HOST, _TYPE_AAAA, True)
    (known,) = message.answers
    assert (known.name, known.alias, known.ttl) == (SERVICE, INSTANCE, 3000)


def test_captured_packets_match_the_installed_zeroconf():
    spec = importlib.util.spec_from_file_location(
        "capture_packets", REPO / "tests" / "discovery" / "capture_packets.py")
    capture = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(capture)
    made = {
        "zeroconf_announcement.bin": capture.announcement(),
        "zeroconf_goodbye.bin": capture.announcement(ttl_override=0),
        "zeroconf_query_known_answer.bin": capture.query_with_known_answer(),
        "zeroconf_nsec.bin": capture.nsec_response(),
    }
    for name, data in made.items():
        if name == "zeroconf_nsec.bin" and data != (DATA / name).read_bytes():
            # zeroconf >= 0.128 fixed its NSEC encoding; the committed file keeps the old one.
            continue
        assert data == (DATA / name).read_bytes(), f"{name} differs from zeroconf " \
            f"{zeroconf.__version__}'s encoding; rerun tests/discovery/capture_packets.py"
