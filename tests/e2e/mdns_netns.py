"""Network namespaces for the mDNS tests: every packet these tests send stays inside namespaces
they create (two namespaces joined by a veth pair), never on the machine's own interfaces.

NetnsPair() makes namespaces exo-mdns-<pid>-<n>-{a,b} with veth ends va<pid><n> (10.<x>.<y>.1/24)
and vb<pid><n> (.2/24), lo up, IPv6 link-local without DAD, and a 224.0.0.0/4 route. Skips the
test (pytest.skip, saying why) when namespaces cannot be made here.
"""
import itertools
import json
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
_counter = itertools.count()


def mdns_tool_path():
    candidates = []
    if os.environ.get("EXO_MDNS_TOOL"):
        candidates.append(pathlib.Path(os.environ["EXO_MDNS_TOOL"]))
    if os.environ.get("EXO_NODE_BIN"):
        candidates.append(pathlib.Path(os.environ["EXO_NODE_BIN"]).parent / "tests" / "mdns_tool")
    candidates.append(REPO / "build" / "tests" / "mdns_tool")
    for path in candidates:
        if path.exists():
            return str(path)
    pytest.skip(f"mdns_tool not built (looked at {', '.join(map(str, candidates))}): "
                "ninja -C build mdns_tool, or set EXO_MDNS_TOOL")


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


class NetnsPair:
    def __init__(self):
        if shutil.which("ip") is None:
            pytest.skip("the `ip` tool (iproute2) is missing, so no network namespace can be made; "
                        "the mDNS multicast tests need one and never use the host's interfaces")
        n = next(_counter)
        pid = os.getpid()
        self.a = f"exo-mdns-{pid}-{n}-a"
        self.b = f"exo-mdns-{pid}-{n}-b"
        self.dev_a = f"va{pid}x{n}"[:15]
        self.dev_b = f"vb{pid}x{n}"[:15]
        subnet = (pid * 7 + n) % 250 + 1
        self.ip_a = f"10.{200 + n % 50}.{subnet}.1"
        self.ip_b = f"10.{200 + n % 50}.{subnet}.2"
        made = _ip("netns", "add", self.a, check=False)
        if made.returncode != 0:
            pytest.skip(f"cannot create a network namespace ({made.stderr.strip()}); the mDNS "
                        "multicast tests run only inside test-made namespaces (need root or "
                        "CAP_SYS_ADMIN), and loopback has no MULTICAST, so there is no variant")
        self.created = [self.a]
        try:
            _ip("netns", "add", self.b)
            self.created.append(self.b)
            for ns in (self.a, self.b):
                self.exec_quiet(ns, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0",
                                "net.ipv6.conf.all.accept_dad=0")
            _ip("link", "add", self.dev_a, "netns", self.a, "type", "veth", "peer", "name",
                self.dev_b, "netns", self.b)
            for ns, dev, ip in ((self.a, self.dev_a, self.ip_a), (self.b, self.dev_b, self.ip_b)):
                _ip("-n", ns, "link", "set", "lo", "up")
                _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
                _ip("-n", ns, "link", "set", dev, "up")
                _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", dev)
            self._wait_link_local()
        except Exception:
            self.close()
            raise

    def exec_quiet(self, ns, *argv):
        subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, check=False)

    def _wait_link_local(self):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            ready = True
            for ns, dev in ((self.a, self.dev_a), (self.b, self.dev_b)):
                shown = _ip("-n", ns, "-6", "addr", "show", "dev", dev, check=False).stdout
                if "fe80" not in shown or "tentative" in shown:
                    ready = False
            if ready:
                return
            time.sleep(0.05)

    def close(self):
        for ns in self.created:
            _ip("netns", "del", ns, check=False)
        self.created = []


class Proc:
    """A process in a namespace whose JSON stdout lines are collected as (monotonic time, dict)."""

    def __init__(self, ns, argv):
        self.argv = argv
        self.popen = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
        self.lines = []
        self.stderr = ""
        self._cv = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._err_reader = threading.Thread(target=self._read_err, daemon=True)
        self._err_reader.start()

    def _read(self):
        for raw in self.popen.stdout:
            try:
                entry = json.loads(raw)
            except ValueError:
                entry = {"event": "text", "text": raw.rstrip()}
            with self._cv:
                self.lines.append((time.monotonic(), entry))
                self._cv.notify_all()

    def _read_err(self):
        self.stderr = self.popen.stderr.read()

    def wait_for(self, predicate, timeout):
        """The first (time, line) matching predicate, waiting up to timeout seconds; else fail."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for entry in self.lines:
                    if predicate(entry[1]):
                        return entry
                left = deadline - time.monotonic()
                if left <= 0 or (self.popen.poll() is not None and not self._reader.is_alive()):
                    break
                self._cv.wait(min(left, 0.05))
        pytest.fail(f"{' '.join(self.argv)}: no matching line within {timeout} s; got "
                    f"{[line for _, line in self.lines]}; stderr: {self.stderr[-2000:]}")

    def events(self, name):
        with self._cv:
            return [line for _, line in self.lines if line.get("event") == name]

    def stop(self, timeout=5):
        if self.popen.poll() is None:
            self.popen.terminate()
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self._reader.join(1)
        return self.popen.returncode


@pytest.fixture
def netns_pair():
    pair = NetnsPair()
    procs = []
    pair.procs = procs
    yield pair
    for proc in procs:
        proc.stop()
    pair.close()


def start(pair, ns, argv):
    proc = Proc(ns, argv)
    pair.procs.append(proc)
    return proc


def zeroconf_peer(pair, ns, *args):
    return start(pair, ns, [sys.executable, str(REPO / "tests" / "e2e" / "mdns_zeroconf_peer.py"),
                            *args])
