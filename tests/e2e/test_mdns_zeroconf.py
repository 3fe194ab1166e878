"""mDNS / DNS-SD interop with python-zeroconf, a responder and browser nobody here wrote.

Each test makes two network namespaces joined by a veth pair (mdns_netns.py): zeroconf runs in
one, exo's mdns_tool in the other, each told to use only its veth end. Nothing is sent on the
machine's own interfaces. Skipped, saying why, where namespaces cannot be made.
"""
import time

import pytest

from mdns_netns import mdns_tool_path, netns_pair, start, zeroconf_peer  # noqa: F401

pytest.importorskip("zeroconf")

SERVICE = "_exo-node._tcp.local."


def test_exo_browser_finds_and_resolves_zeroconf_service(netns_pair):
    pair = netns_pair
    tool = mdns_tool_path()
    zc = zeroconf_peer(pair, pair.a, "publish", "--ip", pair.ip_a, "--name", "zc node",
                       "--host", "zc-host", "--port", "6000", "--txt", "id=zc1",
                       "--txt", "ckf=c0ffee", "--txt", "proto=1")
    zc.wait_for(lambda l: l.get("event") == "ready", 10)
    exo = start(pair, pair.b, [tool, f"--interface={pair.dev_b}", "--browse"])
    _, added = exo.wait_for(lambda l: l.get("event") == "added", 5)
    peer = added["peer"]
    assert peer["instance"] == "zc node"
    assert peer["port"] == 6000
    assert peer["host"] == pair.ip_a
    assert peer["host_name"] == "zc-host.local"
    assert peer["node_id"] == "zc1"
    assert peer["fingerprint"] == "c0ffee"
    assert peer["txt"]["proto"] == "1"
    assert peer["interface"] == pair.dev_b

    # zeroconf's unregister sends a goodbye: exo drops the peer at once.
    stopped_at = time.monotonic()
    zc.stop()
    removed_at, removed = exo.wait_for(lambda l: l.get("event") == "removed", 3)
    assert removed["peer"]["instance"] == "zc node"
    # zeroconf's unregister itself takes a moment; count from when we asked it to stop.
    assert removed_at - stopped_at < 1.5, f"goodbye seen after {removed_at - stopped_at:.2f} s"


def test_zeroconf_browser_finds_and_resolves_exo_service(netns_pair):
    pair = netns_pair
    tool = mdns_tool_path()
    zc = zeroconf_peer(pair, pair.b, "browse", "--ip", pair.ip_b)
    zc.wait_for(lambda l: l.get("event") == "ready", 10)
    exo = start(pair, pair.a, [tool, f"--interface={pair.dev_a}", "--publish=exo node a",
                               "--host=exo-a", "--port=50051", "--txt=id=node-a-1",
                               "--txt=proto=1", "--txt=bus=5555", "--txt=ckf=3f2a",
                               "--txt=mem=17179869184", "--txt=dev=cpu",
                               "--update-txt-after=2500", "--update-txt=id=node-a-1",
                               "--update-txt=proto=1", "--update-txt=mem=42"])
    exo.wait_for(lambda l: l.get("event") == "announced", 5)
    _, added = zc.wait_for(lambda l: l.get("event") == "added", 5)
    assert added["name"] == f"exo node a.{SERVICE}"
    assert added["resolved"], "zeroconf could not resolve SRV/TXT/A of exo's instance"
    assert added["port"] == 50051
    assert added["server"] == "exo-a.local."
    assert pair.ip_a in added["addresses"]
    assert added["properties"] == {"id": "node-a-1", "proto": "1", "bus": "5555",
                                   "ckf": "3f2a", "mem": "17179869184", "dev": "cpu"}

    # A TXT change at run time is re-announced and zeroconf sees the new entries.
    _, updated = zc.wait_for(lambda l: l.get("event") == "updated" and l.get("properties", {})
                             .get("mem") == "42", 6)
    assert updated["properties"] == {"id": "node-a-1", "proto": "1", "mem": "42"}

    # Stop sends a goodbye; zeroconf removes the service promptly.
    stopped_at = time.monotonic()
    exo.stop()
    removed_at, removed = zc.wait_for(lambda l: l.get("event") == "removed", 3)
    assert removed["name"] == f"exo node a.{SERVICE}"
    assert removed_at - stopped_at < 1.0, f"goodbye seen after {removed_at - stopped_at:.2f} s"
