"""Cluster membership end to end: several `exo-node serve` processes find each other, notice a
graceful stop within 1 s and a crash within the heartbeat timeout, and never admit a node with
another cluster key.

Variants:
- netns: three nodes in three network namespaces joined by a bridge (in a fourth namespace),
  with veth pairs; everything is created here, named with this process's id, and deleted in
  `finally`. Needs root and `ip netns`; skipped with the reason otherwise.
  - "mdns": no static configuration at all (needs mDNS discovery built in; skipped until then).
  - "static": only nodes 2 and 3 are told node 1's address (--peers); the rest is learned.
- loopback: the same story on 127.0.0.1 with ephemeral ports and static peers; runs anywhere.

Traffic stays on loopback or inside the namespaces this test creates.
"""
import json
import os
import pathlib
import re
import signal
import subprocess
import time

import pytest

HEARTBEAT_TIMEOUT_MS = 2000
PID = os.getpid()


def sh(*args, check=True):
    return subprocess.run(list(args), capture_output=True, text=True, check=check)


class Node:
    def __init__(self, name, argv, state_dir, log_dir):
        self.name = name
        self.state_dir = state_dir
        self.stdout_path = log_dir / f"{name}.out"
        self.stderr_path = log_dir / f"{name}.err"
        self.proc = subprocess.Popen(argv, stdout=open(self.stdout_path, "w"),
                                     stderr=open(self.stderr_path, "w"))
        self.node_id = None
        self.grpc_port = None

    def wait_ready(self, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.stdout_path.read_text()
            node_id = re.search(r"^exo-node: node id ([0-9a-f]{32})$", text, re.M)
            grpc = re.search(r"^exo-node: grpc listening on .*:(\d+)$", text, re.M)
            bus = re.search(r"^exo-node: bus listening on .*:(\d+)$", text, re.M)
            if node_id and grpc and bus:
                self.node_id = node_id.group(1)
                self.grpc_port = int(grpc.group(1))
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"{self.name} did not get ready: {self.stderr_path.read_text()}")

    def stderr(self):
        return self.stderr_path.read_text()

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def view(exo_node_bin, node):
    """The peers `node` sees up, read with `exo-node peers --json`."""
    result = sh(exo_node_bin, "peers", "--json", "--state_dir", str(node.state_dir), check=False)
    if result.returncode != 0:
        return None
    status = json.loads(result.stdout)
    return {p["node_id"] for p in status["peers"] if p["state"] == "up"}


def wait_until(condition, timeout, step=0.02):
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(step)
    return None


def check_cluster_story(exo_node_bin, nodes, start_node, stranger_argv_maker, doctor):
    """nodes: three started nodes. start_node(name, extra_args) starts another node;
    doctor(node) runs `exo-node doctor` where that node runs and returns the CompletedProcess."""
    a, b, c = nodes
    for n in nodes:
        n.wait_ready()
    ids = {n.node_id for n in nodes}
    assert len(ids) == 3

    def everyone_sees_everyone():
        return all(view(exo_node_bin, n) == ids - {n.node_id} for n in nodes)

    joined = wait_until(everyone_sees_everyone, timeout=3.0)
    assert joined is not None, {n.name: view(exo_node_bin, n) for n in nodes}
    print(f"three nodes see each other {joined:.2f} s after all were ready")

    # `exo-node peers` lists the others with their capabilities and heartbeat age.
    table = sh(exo_node_bin, "peers", "--state_dir", str(a.state_dir)).stdout
    assert a.node_id in table and "self" in table
    for n in (b, c):
        line = next(l for l in table.splitlines() if l.startswith(n.node_id))
        assert " up " in line and re.search(r"\d+\.\ds$", line), line
    assert "2 peers up" in table

    # A node with another cluster key is never admitted, and the node it calls says why.
    stranger = start_node("stranger", stranger_argv_maker())
    stranger.wait_ready()
    time.sleep(2.0)
    for n in nodes:
        seen = view(exo_node_bin, n)
        assert stranger.node_id not in seen, n.name
    refusals = [n.stderr().count("cluster key mismatch") for n in nodes]
    assert max(refusals) == 1 and sum(refusals) >= 1, refusals  # one line per node, not a flood
    assert "cluster key mismatch" in stranger.stderr()
    # doctor, where a refused the stranger, explains the mismatch and what to do.
    refused_at = next(n for n, count in zip(nodes, refusals) if count == 1)
    report = doctor(refused_at)
    assert report.returncode == 1, report.stdout
    assert "cluster key mismatch" in report.stdout and "--cluster_key" in report.stdout
    assert f"node {refused_at.node_id} is running" in report.stdout
    stranger.stop()

    # SIGTERM: the others drop it within 1 s (goodbye on the bus).
    c.stop(signal.SIGTERM)
    gone = wait_until(lambda: all(c.node_id not in view(exo_node_bin, n) for n in (a, b)), 1.0)
    assert gone is not None, "SIGTERM'd node still listed after 1 s"
    print(f"SIGTERM: peers dropped the node after {gone:.2f} s")
    assert "left: received SIGTERM" in a.stderr()

    # SIGKILL: no goodbye; dropped within the heartbeat timeout (+ tick and status slack).
    b.proc.kill()
    b.proc.wait()
    limit = HEARTBEAT_TIMEOUT_MS / 1000 + 0.6
    gone = wait_until(lambda: b.node_id not in view(exo_node_bin, a), limit)
    assert gone is not None, f"SIGKILL'd node still listed after {limit} s"
    assert gone > HEARTBEAT_TIMEOUT_MS / 1000 - 0.7, "dropped before its heartbeats could lapse"
    print(f"SIGKILL: peer dropped the node after {gone:.2f} s (timeout {HEARTBEAT_TIMEOUT_MS} ms)")
    assert "no heartbeat" in a.stderr()


# ---- loopback ----------------------------------------------------------------------------------

def test_cluster_loopback_static(exo_node_bin, tmp_path):
    nodes = []

    def start(name, extra):
        n = Node(name, [exo_node_bin, "serve", "--noapi", "--bind", "127.0.0.1", "--grpc_port", "0",
                        "--bus_port", "0", "--discovery", "static",
                        "--heartbeat_timeout_ms", str(HEARTBEAT_TIMEOUT_MS),
                        "--state_dir", str(tmp_path / name), *extra],
                 tmp_path / name, tmp_path)
        nodes.append(n)
        return n

    try:
        a = start("a", [])
        a.wait_ready()
        first = f"127.0.0.1:{a.grpc_port}"
        b = start("b", ["--peers", first])
        c = start("c", ["--peers", first])
        check_cluster_story(exo_node_bin, [a, b, c], start,
                            lambda: ["--peers", first, "--cluster_key", "not-our-cluster"],
                            lambda n: sh(exo_node_bin, "doctor", "--state_dir", str(n.state_dir),
                                         check=False))
    finally:
        for n in nodes:
            n.stop(signal.SIGKILL)
    # With no node running, peers says so and what to do.
    result = sh(exo_node_bin, "peers", "--state_dir", str(tmp_path / "a"), check=False)
    assert result.returncode == 1
    assert "no longer running" in result.stderr or "has stopped" in result.stderr
    assert "exo-node serve" in result.stderr


# ---- network namespaces ------------------------------------------------------------------------

def netns_unavailable():
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"exoprobe{PID}"
    result = sh("ip", "netns", "add", probe, check=False)
    if result.returncode != 0:
        return f"`ip netns add` is not permitted here: {result.stderr.strip()}"
    sh("ip", "netns", "del", probe, check=False)
    return None


class Bridge:
    """A bridge namespace plus one namespace per node, each joined to the bridge by a veth."""

    def __init__(self):
        self.bridge_ns = f"exob{PID}"
        self.namespaces = []
        sh("ip", "netns", "add", self.bridge_ns)
        self._in(self.bridge_ns, "ip", "link", "add", "br0", "type", "bridge")
        self._in(self.bridge_ns, "ip", "link", "set", "br0", "up")

    @staticmethod
    def _in(ns, *args):
        return sh("ip", "netns", "exec", ns, *args)

    def add_node(self, index):
        ns = f"exo{PID}n{index}"
        inner, outer = f"e{PID}n{index}", f"e{PID}b{index}"
        sh("ip", "netns", "add", ns)
        self.namespaces.append(ns)
        sh("ip", "link", "add", inner, "netns", ns, "type", "veth", "peer", "name", outer,
           "netns", self.bridge_ns)
        self._in(self.bridge_ns, "ip", "link", "set", outer, "master", "br0")
        self._in(self.bridge_ns, "ip", "link", "set", outer, "up")
        self._in(ns, "ip", "link", "set", "lo", "up")
        self._in(ns, "ip", "addr", "add", f"10.77.0.{index}/24", "dev", inner)
        self._in(ns, "ip", "link", "set", inner, "up", "multicast", "on")
        self._in(ns, "ip", "route", "add", "224.0.0.0/4", "dev", inner)
        return ns, f"10.77.0.{index}", inner

    def close(self):
        for ns in self.namespaces + [self.bridge_ns]:
            sh("ip", "netns", "del", ns, check=False)


def mdns_built_in(exo_node_bin, tmp_path):
    """Whether this exo-node discovers peers with mDNS (it says so in its status file)."""
    probe = Node("mdnsprobe", [exo_node_bin, "serve", "--noapi", "--bind", "127.0.0.1", "--grpc_port", "0",
                               "--bus_port", "0", "--discovery", "static",
                               "--state_dir", str(tmp_path / "mdnsprobe")],
                 tmp_path / "mdnsprobe", tmp_path)
    try:
        probe.wait_ready()
        status = json.loads((tmp_path / "mdnsprobe" / "cluster.json").read_text())
        return "mdns_supported" in status and status["mdns_supported"]
    finally:
        probe.stop(signal.SIGKILL)


@pytest.mark.parametrize("discovery", ["mdns", "static"])
def test_cluster_netns(exo_node_bin, tmp_path, discovery):
    reason = netns_unavailable()
    if reason:
        print(f"SKIPPED netns variant: {reason}; test_cluster_loopback_static covers loopback")
        pytest.skip(reason)
    if discovery == "mdns" and not mdns_built_in(exo_node_bin, tmp_path):
        pytest.skip("this exo-node has no mDNS discovery yet (branch mdns not merged); the "
                    "static variant runs instead")
    bridge = Bridge()
    nodes = []
    addresses = {}
    namespaces = {}

    def doctor(n):
        ns, interface = namespaces[n.name]
        return sh("ip", "netns", "exec", ns, exo_node_bin, "doctor", "--state_dir",
                  str(n.state_dir), "--interface", interface, check=False)

    def start(name, extra, index=None):
        index = index or len(nodes) + 1
        ns, ip, interface = bridge.add_node(index)
        addresses[name] = ip
        namespaces[name] = (ns, interface)
        args = ["ip", "netns", "exec", ns, exo_node_bin, "serve", "--noapi",
                "--heartbeat_timeout_ms", str(HEARTBEAT_TIMEOUT_MS),
                "--state_dir", str(tmp_path / name), "--discovery", discovery]
        if discovery == "mdns":
            args += ["--interface", interface]
        n = Node(name, args + extra, tmp_path / name, tmp_path)
        nodes.append(n)
        return n

    try:
        first = "10.77.0.1:52416"
        a = start("a", [])
        static = ["--peers", first] if discovery == "static" else []
        b = start("b", static)
        c = start("c", static)
        check_cluster_story(exo_node_bin, [a, b, c], start,
                            lambda: static + ["--cluster_key", "not-our-cluster"], doctor)
    finally:
        for n in nodes:
            n.stop(signal.SIGKILL)
        bridge.close()
