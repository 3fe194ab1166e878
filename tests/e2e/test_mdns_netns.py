"""exo's mDNS responder/browser against itself, inside test-made network namespaces.

Two namespaces joined by a veth pair (mdns_netns.py); mdns_tool is told to use only its veth end.
Covers: mutual discovery, renaming after a conflict, goodbye promptness, TXT updates, legacy
unicast queries, hostile packets, and the doctor checks. Nothing leaves the namespaces.
"""
import socket
import struct
import time

import pytest

from mdns_netns import mdns_tool_path, netns_pair, start  # noqa: F401


def exo(pair, ns, dev, *args):
    return start(pair, ns, [mdns_tool_path(), f"--interface={dev}", *args])


def is_event(name, instance=None):
    def predicate(line):
        if line.get("event") != name:
            return False
        return instance is None or line.get("peer", {}).get("instance") == instance
    return predicate


def test_two_nodes_find_each_other_and_goodbye_is_prompt(netns_pair):
    pair = netns_pair
    started = time.monotonic()
    a = exo(pair, pair.a, pair.dev_a, "--publish=node-a", "--host=node-a", "--port=50051",
            "--txt=id=aaa", "--txt=ckf=f1", "--browse")
    b = exo(pair, pair.b, pair.dev_b, "--publish=node-b", "--host=node-b", "--port=50052",
            "--txt=id=bbb", "--txt=ckf=f1", "--browse")
    a_saw, seen_b = a.wait_for(is_event("added", "node-b"), 5)
    b_saw, seen_a = b.wait_for(is_event("added", "node-a"), 5)
    assert max(a_saw, b_saw) - started < 3.0, "discovery took longer than 3 s"
    assert seen_b["peer"]["node_id"] == "bbb" and seen_b["peer"]["port"] == 50052
    assert seen_b["peer"]["host"] == pair.ip_b
    assert seen_a["peer"]["node_id"] == "aaa" and seen_a["peer"]["fingerprint"] == "f1"
    assert seen_a["peer"]["host"] == pair.ip_a
    # Neither reports itself.
    assert not a.events("added")[1:] and not any(
        e["peer"]["instance"] == "node-a" for e in a.events("added"))

    stopped_at = time.monotonic()
    assert b.stop() == 0
    removed_at, _ = a.wait_for(is_event("removed", "node-b"), 3)
    assert removed_at - stopped_at < 1.0, f"goodbye seen after {removed_at - stopped_at:.2f} s"
    stats = b.events("stopped")[0]["stats"]
    assert stats["send_errors"] == 0 and stats["packets_malformed"] == 0, stats


def test_same_instance_name_is_renamed_after_probing(netns_pair):
    pair = netns_pair
    first = exo(pair, pair.a, pair.dev_a, "--publish=dup", "--host=dup-1", "--port=50051")
    first.wait_for(lambda l: l.get("event") == "announced", 5)
    second = exo(pair, pair.a, pair.dev_a, "--publish=dup", "--host=dup-2", "--port=50052")
    _, announced = second.wait_for(lambda l: l.get("event") == "announced", 6)
    assert announced["instance"] == "dup (2)"
    assert second.events("renamed"), "the second node should say it renamed itself"
    # A browser elsewhere sees both, the original untouched.
    watcher = exo(pair, pair.b, pair.dev_b, "--browse")
    watcher.wait_for(is_event("added", "dup"), 5)
    _, renamed = watcher.wait_for(is_event("added", "dup (2)"), 5)
    assert renamed["peer"]["port"] == 50052
    assert first.events("renamed") == []


def test_txt_update_reaches_browser(netns_pair):
    pair = netns_pair
    exo(pair, pair.a, pair.dev_a, "--publish=node-a", "--host=node-a", "--port=50051",
        "--txt=id=aaa", "--txt=mem=1", "--update-txt-after=1500", "--update-txt=id=aaa",
        "--update-txt=mem=2")
    b = exo(pair, pair.b, pair.dev_b, "--browse")
    _, added = b.wait_for(is_event("added", "node-a"), 5)
    assert added["peer"]["txt"]["mem"] == "1"
    _, updated = b.wait_for(is_event("updated", "node-a"), 5)
    assert updated["peer"]["txt"] == {"id": "aaa", "mem": "2"}


def build_query(query_id, name, qtype):
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", query_id, 0, 1, 0, 0, 0) + labels + struct.pack("!HH", qtype, 1)


def in_netns(ns, code):
    """Runs a small Python snippet inside the namespace; returns its stdout."""
    import subprocess
    import sys
    result = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code],
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_legacy_unicast_query_gets_reply_with_id(netns_pair):
    zeroconf = pytest.importorskip("zeroconf")
    pair = netns_pair
    a = exo(pair, pair.a, pair.dev_a, "--publish=node-a", "--host=node-a", "--port=50051",
            "--txt=id=aaa")
    a.wait_for(lambda l: l.get("event") == "announced", 5)
    query = build_query(0x4242, "_exo-node._tcp.local", 12)
    # An ordinary DNS client (port != 5353) asks node-a directly, like `dig -p 5353 @node-a`.
    reply_hex = in_netns(pair.b, f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.sendto(bytes.fromhex("{query.hex()}"), ("{pair.ip_a}", 5353))
data, source = s.recvfrom(9000)
assert source == ("{pair.ip_a}", 5353), source
print(data.hex())
""").strip()
    reply = zeroconf.DNSIncoming(bytes.fromhex(reply_hex))
    assert reply.valid
    assert reply.id == 0x4242
    assert reply.is_response()
    assert [q.name for q in reply.questions] == ["_exo-node._tcp.local."]
    ptrs = [r for r in reply.answers if r.type == 12]
    assert ptrs and ptrs[0].alias == "node-a._exo-node._tcp.local."
    assert all(r.ttl <= 10 for r in reply.answers)
    assert any(r.type == 33 and r.port == 50051 for r in reply.answers)


def test_hostile_packets_are_dropped_and_counted(netns_pair):
    pair = netns_pair
    a = exo(pair, pair.a, pair.dev_a, "--publish=node-a", "--host=node-a", "--port=50051",
            "--browse")
    a.wait_for(lambda l: l.get("event") == "announced", 5)
    garbage = [b"", b"\x00" * 5, bytes.fromhex("000084000000000100000000"),
               bytes.fromhex("0000000000010000000000000c0c000c0001") + b"\xc0\x0c",
               bytes(range(256)) * 8]
    in_netns(pair.b, f"""
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("{pair.ip_b}"))
s.bind(("{pair.ip_b}", 5353))
for hex_packet in {[g.hex() for g in garbage]!r}:
    s.sendto(bytes.fromhex(hex_packet), ("224.0.0.251", 5353))
""")
    time.sleep(0.5)
    a.stop()
    _, stopped = a.wait_for(lambda l: l.get("event") == "stopped", 3)
    # The empty datagram and the others are all refused by the codec; the process lived on.
    assert stopped["stats"]["packets_malformed"] >= len(garbage)


def test_doctor_checks_inside_namespace(netns_pair):
    pair = netns_pair
    doctor = exo(pair, pair.a, pair.dev_a, "--doctor")
    _, interfaces = doctor.wait_for(lambda l: l.get("event") == "interfaces", 5)
    by_name = {i["name"]: i for i in interfaces["interfaces"]}
    assert by_name[pair.dev_a]["default"] and by_name[pair.dev_a]["multicast"]
    assert pair.ip_a in by_name[pair.dev_a]["ipv4"]
    assert by_name["lo"]["loopback"] and not by_name["lo"]["default"]
    assert interfaces["check"]["ok"]
    _, port = doctor.wait_for(lambda l: l.get("event") == "port", 5)
    assert port["ipv4"]["ok"], port
    _, multicast = doctor.wait_for(lambda l: l.get("event") == "multicast", 5)
    assert multicast["ipv4"]["ok"], multicast
    # An interface that is down: the multicast check fails and says what to do.
    pair.exec_quiet(pair.b, "ip", "link", "set", pair.dev_b, "down")
    down = exo(pair, pair.b, pair.dev_b, "--doctor")
    _, interfaces = down.wait_for(lambda l: l.get("event") == "interfaces", 5)
    assert not interfaces["check"]["ok"]
    assert interfaces["check"]["advice"]
    _, multicast = down.wait_for(lambda l: l.get("event") == "multicast", 5)
    assert not multicast["ipv4"]["ok"] and multicast["ipv4"]["advice"], multicast


def test_ipv6_only_nodes_find_each_other_by_link_local_address(netns_pair):
    pair = netns_pair
    a = exo(pair, pair.a, pair.dev_a, "--ipv6-only", "--publish=node-a", "--host=node-a",
            "--port=50051", "--browse")
    b = exo(pair, pair.b, pair.dev_b, "--ipv6-only", "--publish=node-b", "--host=node-b",
            "--port=50052", "--browse")
    _, seen_b = a.wait_for(is_event("added", "node-b"), 5)
    b.wait_for(is_event("added", "node-a"), 5)
    host = seen_b["peer"]["host"]
    assert host.startswith("fe80:") and host.endswith(f"%{pair.dev_a}"), host
    assert all(":" in address for address in seen_b["peer"]["addresses"])
    a.stop()
    _, stopped = a.wait_for(lambda l: l.get("event") == "stopped", 3)
    assert stopped["stats"]["send_errors"] == 0, stopped
