#!/usr/bin/env python3
"""Plain vs speculative decoding through a 3-stage `exo-node` pipeline across network namespaces.

The script builds its own little network and removes it at the end: a "switch" namespace holding a
bridge, and one namespace per node (the coordinator and three stages), each joined to the bridge
by a veth pair (10.231.X.1-4/24). Traffic stays inside these namespaces; the machine's own
interfaces are never touched (nothing is created in the root namespace).

Link latency: `tc qdisc add dev eth0 root netem delay <d>ms` on every node's link, so each hop
costs d one way. Kernels built without sch_netem (this project's development VM has only the
fifo, htb and tbf qdiscs) get the same latency from a user-space relay instead: each stage listens
on 127.0.0.1 inside its namespace and a relay on its namespace address forwards every chunk of
bytes after d, in both directions (threads and time.sleep, about 0.1 ms precise). Either way a
plain token crosses 3 links down (hidden states) and 3 back (tokens): 6 d of latency.
The script prints which one it used and the round trip it measured through one link.

Each round runs every mode once (off, ngram, and draft with --draft_model), greedy, on a
copy-heavy prompt (bench/speculative.py's "repeat" workload); it prints medians. "e2e" is from
the start of the sequence to its last token (prompt processing included, the same work for every
mode); "decode" is from the first generated token to the last (generate_seconds). CPU seconds are
those of all four exo-node processes during the run. With --temp 0 it checks that every mode
generated the same tokens.

Needs root (ip netns). Usage:
  bench/speculative_pipeline.py [--bin build/exo-node] [--model PATH] [-n 128] [--reps 5]
      [--delay_ms 1] [--threads 1] [--draft_model PATH] [--workload repeat|free] [--loopback]
--loopback runs everything on 127.0.0.1 without namespaces or added latency.
"""
import argparse
import atexit
import collections
import json
import os
import pathlib
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
MODELS = pathlib.Path(os.environ.get("EXO_HOME", pathlib.Path.home() / ".cache/exo-node")) / "models"
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from speculative import WORKLOADS  # noqa: E402  (the same prompts as the single-node bench)

STAGE_PORT = 7000
ECHO_PORT = 7100


# ---- Relay, echo and probe modes (run inside a namespace by the main script) -------------------

def _pump(source, sink, delay):
    """Forwards bytes from source to sink, each chunk `delay` seconds after it arrived."""
    queue = collections.deque()
    ready = threading.Condition()

    def reader():
        while True:
            try:
                data = source.recv(1 << 16)
            except OSError:
                data = b""
            with ready:
                queue.append((time.monotonic() + delay, data))
                ready.notify()
            if not data:
                return

    threading.Thread(target=reader, daemon=True).start()
    while True:
        with ready:
            while not queue:
                ready.wait()
            due, data = queue.popleft()
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        if not data:
            try:
                sink.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            return
        try:
            sink.sendall(data)
        except OSError:
            return


def run_relay(listen, target, delay_ms):
    host, port = listen.rsplit(":", 1)
    server = socket.create_server((host, int(port)), reuse_port=False)
    print("relay ready", flush=True)
    while True:
        client, _ = server.accept()
        upstream = socket.create_connection(target.rsplit(":", 1))
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        delay = delay_ms / 1000.0
        threading.Thread(target=_pump, args=(client, upstream, delay), daemon=True).start()
        threading.Thread(target=_pump, args=(upstream, client, delay), daemon=True).start()


def run_echo(listen):
    host, port = listen.rsplit(":", 1)
    server = socket.create_server((host, int(port)))
    print("echo ready", flush=True)

    def serve(conn):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            data = conn.recv(1 << 16)
            if not data:
                return
            conn.sendall(data)

    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def run_probe(address, count=200):
    conn = socket.create_connection(address.rsplit(":", 1))
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    times = []
    for _ in range(count):
        start = time.perf_counter()
        conn.sendall(b"x" * 64)
        got = 0
        while got < 64:
            got += len(conn.recv(64 - got))
        times.append(time.perf_counter() - start)
    print(f"{1000 * statistics.median(times):.3f}")


# ---- The network -----------------------------------------------------------------------------

def sh(*argv, check=True):
    return subprocess.run(argv, capture_output=True, text=True, check=check)


class Network:
    """The switch namespace and one namespace per node; removed by close()."""

    def __init__(self, names, delay_ms, use_namespaces):
        self.names = names
        self.created = []
        self.processes = []
        self.mode = "loopback"
        self.addresses = {}
        if not use_namespaces:
            return
        tag = f"exosp{os.getpid()}"
        subnet = os.getpid() % 250 + 1
        self.switch = f"{tag}-sw"
        made = sh("ip", "netns", "add", self.switch, check=False)
        if made.returncode != 0:
            sys.exit(f"cannot create a network namespace ({made.stderr.strip()}): run as root, or "
                     "pass --loopback to run on 127.0.0.1 without added latency")
        self.created.append(self.switch)
        sh("ip", "-n", self.switch, "link", "set", "lo", "up")
        sh("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.switch, "link", "set", "br0", "up")
        self.namespace = {}
        netem = True
        for i, name in enumerate(names):
            ns = f"{tag}-{name}"
            sh("ip", "netns", "add", ns)
            self.created.append(ns)
            self.namespace[name] = ns
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            # The pair is made inside the node's namespace, its peer moved straight to the switch.
            sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"p{i}",
               "netns", self.switch)
            sh("ip", "-n", self.switch, "link", "set", f"p{i}", "master", "br0")
            sh("ip", "-n", self.switch, "link", "set", f"p{i}", "up")
            ip = f"10.231.{subnet}.{i + 1}"
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            self.addresses[name] = ip
            if delay_ms > 0 and netem:
                q = sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "eth0", "root",
                       "netem", "delay", f"{delay_ms}ms", check=False)
                if q.returncode != 0:
                    netem = False
                    self.netem_error = q.stderr.strip()
        if delay_ms <= 0:
            self.mode = "namespaces, no added latency"
        elif netem:
            self.mode = f"netem delay {delay_ms} ms on every node's link"
        else:
            # Undo any netem that did get added, so every link has the relay's latency only.
            for ns in self.namespace.values():
                sh("ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", "eth0", "root",
                   check=False)
            self.mode = (f"user-space relays, {delay_ms} ms each way per link (netem unavailable: "
                         f"{self.netem_error})")
        self.relays = delay_ms > 0 and not netem
        self.delay_ms = delay_ms

    def exec_prefix(self, name):
        return ["ip", "netns", "exec", self.namespace[name]] if self.created else []

    def start(self, name, argv, ready_pattern):
        proc = subprocess.Popen(self.exec_prefix(name) + argv, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        self.processes.append(proc)
        line = proc.stdout.readline()
        if not re.search(ready_pattern, line):
            raise RuntimeError(f"{argv[:3]} in {name} did not start: {line!r}")
        return proc, line

    def probe(self, source, target):
        """Median round trip in ms from node `source` to an echo server on node `target`."""
        me = [sys.executable, __file__]
        host = self.addresses[target]
        if self.relays:
            self.start(target, me + ["--echo", f"127.0.0.1:{ECHO_PORT}"], "echo ready")
            self.start(target, me + ["--relay", f"{host}:{ECHO_PORT}", f"127.0.0.1:{ECHO_PORT}",
                                     str(self.delay_ms)], "relay ready")
        else:
            self.start(target, me + ["--echo", f"{host}:{ECHO_PORT}"], "echo ready")
        out = subprocess.run(self.exec_prefix(source) + me + ["--probe", f"{host}:{ECHO_PORT}"],
                             capture_output=True, text=True, check=True)
        return float(out.stdout.strip())

    def close(self):
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.processes = []
        for ns in reversed(self.created):
            sh("ip", "netns", "del", ns, check=False)
        self.created = []


def cpu_seconds(pid):
    try:
        fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin", default=str(REPO / "build" / "exo-node"))
    parser.add_argument("--model", default=str(MODELS / "gemma-3-270m-q4_k_m.gguf"))
    parser.add_argument("--draft_model", default="")
    parser.add_argument("--workload", default="repeat", choices=sorted(WORKLOADS))
    parser.add_argument("-n", type=int, default=128)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="compute threads per process")
    parser.add_argument("--delay_ms", type=float, default=1.0)
    parser.add_argument("--draft_max", type=int, default=8)
    parser.add_argument("--temp", type=float, default=0.0)
    parser.add_argument("--loopback", action="store_true")
    parser.add_argument("--relay", nargs=3, metavar=("LISTEN", "TARGET", "DELAY_MS"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--echo", metavar="LISTEN", help=argparse.SUPPRESS)
    parser.add_argument("--probe", metavar="ADDRESS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.relay:
        return run_relay(args.relay[0], args.relay[1], float(args.relay[2]))
    if args.echo:
        return run_echo(args.echo)
    if args.probe:
        return run_probe(args.probe)

    names = ["c", "s0", "s1", "s2"]
    net = Network(names, args.delay_ms, use_namespaces=not args.loopback)
    atexit.register(net.close)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(1))
    print(f"exo-node speculative pipeline bench: model={args.model} "
          f"draft={args.draft_model or '-'} n={args.n} reps={args.reps} temp={args.temp} "
          f"threads={args.threads} workload={args.workload}")
    print(f"network: {net.mode}")
    if net.created:
        print(f"measured round trip coordinator -> stage 0 -> coordinator (64 B over TCP): "
              f"{net.probe('c', 's0'):.2f} ms")

    # The stages.
    stage_pids, pipeline = [], []
    for i, name in enumerate(names[1:]):
        if args.loopback:
            host, port = "127.0.0.1", 0
        elif net.relays:
            host, port = "127.0.0.1", STAGE_PORT
        else:
            host, port = net.addresses[name], STAGE_PORT
        proc, line = net.start(name, [args.bin, "stage", "--model", args.model, "--grpc_host", host,
                                      "--grpc_port", str(port), "--threads", str(args.threads)],
                               r"listening on (\S+?),")
        stage_pids.append(proc.pid)
        address = re.search(r"listening on (\S+?),", line).group(1)
        if net.relays:
            public = f"{net.addresses[name]}:{STAGE_PORT}"
            net.start(name, [sys.executable, __file__, "--relay", public, address,
                             str(args.delay_ms)], "relay ready")
            address = public
        pipeline.append(address)

    modes = ["off", "ngram"] + (["draft"] if args.draft_model else [])
    prompt = WORKLOADS[args.workload]

    def run(mode):
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            json_path = f.name
        cmd = [args.bin, "generate", "--model", args.model, "--pipeline", ",".join(pipeline),
               "--prompt", prompt, "-n", str(args.n), "--temp", str(args.temp), "--seed", "1",
               "--threads", str(args.threads), "--speculative", mode,
               "--draft_max", str(args.draft_max), "--json_out", json_path]
        if mode == "draft":
            cmd += ["--draft_model", args.draft_model]
        cpu_before = sum(cpu_seconds(pid) for pid in stage_pids)
        before = os.times()
        proc = subprocess.run((net.exec_prefix("c") if net.created else []) + cmd,
                              capture_output=True, text=True)
        after = os.times()
        if proc.returncode != 0:
            sys.exit(f"generate --speculative {mode} failed:\n{proc.stderr}")
        with open(json_path) as f:
            result = json.load(f)
        os.unlink(json_path)
        result["cpu_seconds"] = (sum(cpu_seconds(pid) for pid in stage_pids) - cpu_before +
                                 (after.children_user - before.children_user) +
                                 (after.children_system - before.children_system))
        return result

    run("off")  # warm-up: the stages load their layers (LoadShard) and fault in their weights
    results = {mode: [] for mode in modes}
    for _ in range(args.reps):
        for mode in modes:  # interleaved: each round runs every mode once
            results[mode].append(run(mode))

    def med(mode, key):
        return statistics.median(key(r) for r in results[mode])

    e2e = lambda r: r["prompt_seconds"] + r["generate_seconds"]  # noqa: E731
    base_e2e = med("off", lambda r: len(r["tokens"]) / e2e(r))
    base_decode = med("off", lambda r: (len(r["tokens"]) - 1) / r["generate_seconds"])
    reference = results["off"][0]["tokens"]
    print(f"\n{'mode':6} {'tokens':>6} {'e2e s':>7} {'e2e tok/s':>9} {'x':>6} "
          f"{'decode tok/s':>12} {'x':>6} {'accept':>7} {'tok/pass':>8} {'ms/pass':>8} "
          f"{'cpu s':>6}  identical")
    for mode in modes:
        runs = results[mode]
        tokens = len(runs[0]["tokens"])
        e2e_rate = med(mode, lambda r: len(r["tokens"]) / e2e(r))
        decode_rate = med(mode, lambda r: (len(r["tokens"]) - 1) / r["generate_seconds"])
        if mode == "off":
            accept, per_pass = "-", "1.00"
            ms_pass = 1000 / decode_rate
        else:
            accept = f"{100 * med(mode, lambda r: r['speculative']['acceptance_rate']):.1f}%"
            per_pass = f"{med(mode, lambda r: r['speculative']['tokens_per_pass']):.2f}"
            ms_pass = 1000 * med(mode, lambda r: r["speculative"]["verify_seconds"] /
                                 max(r["speculative"]["passes"] - 1, 1))
        identical = all(r["tokens"] == reference for r in runs) if args.temp == 0 else "n/a"
        print(f"{mode:6} {tokens:6d} {med(mode, e2e):7.3f} {e2e_rate:9.1f} "
              f"{e2e_rate / base_e2e:5.2f}x {decode_rate:12.1f} {decode_rate / base_decode:5.2f}x "
              f"{accept:>7} {per_pass:>8} {ms_pass:8.1f} {med(mode, lambda r: r['cpu_seconds']):6.2f}"
              f"  {identical}")
    print("\nper round (decode tok/s): " + "; ".join(
        f"{mode} " + " ".join(f"{(len(r['tokens']) - 1) / r['generate_seconds']:.1f}"
                              for r in results[mode]) for mode in modes))


if __name__ == "__main__":
    main()
