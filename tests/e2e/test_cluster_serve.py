"""`exo-node serve` runs a model over the cluster by itself: the node with the API plans over
itself and its peers (static peers on loopback here), peers without the file fetch their tensors,
and the API's greedy answers equal single-node `generate` token for token. A stage that leaves
makes the coordinator re-plan over the survivors."""
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request

PROMPT = "The capital of France is"
N_TOKENS = 24


class ServeNode:
    def __init__(self, exo_node_bin, tmp_path, name, *args, home=None):
        self.dir = tmp_path / name
        self.dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        if home is not None:
            env["EXO_HOME"] = str(home)
        self.out = self.dir / "out"
        self.err = self.dir / "err"
        argv = [exo_node_bin, "serve", "--bind", "127.0.0.1", "--grpc_port", "0", "--bus_port",
                "0", "--discovery", "static", "--state_dir", str(self.dir / "state"),
                "--heartbeat_timeout_ms", "1500", "--threads", "1", *args]
        self.proc = subprocess.Popen(argv, stdout=open(self.out, "w"), stderr=open(self.err, "w"),
                                     env=env)
        self.grpc = self._wait_for(r"^exo-node: grpc listening on (\S+)$")
        self.http = None

    def _wait_for(self, pattern, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.out.read_text(), re.M)
            if match:
                return match.group(1)
            assert self.proc.poll() is None, f"node exited: {self.err.read_text()}"
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in time: {self.err.read_text()}")

    def wait_http(self):
        self.http = self._wait_for(r"^exo-node: http listening on (\S+)$")
        return self.http

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_for_text(path, text, timeout=10):
    deadline = time.monotonic() + timeout
    while text not in path.read_text():
        assert time.monotonic() < deadline, f"no {text!r} in {path}: {path.read_text()}"
        time.sleep(0.1)


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def wait_healthy(base, timeout=120):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = get(f"{base}/health")
        if last[0] == 200:
            return last[1]
        time.sleep(0.2)
    raise AssertionError(f"not healthy in {timeout} s: {last}")


def complete(base, prompt=PROMPT, n=N_TOKENS):
    body = json.dumps({"model": "gemma-3-270m-q4_k_m", "prompt": prompt, "max_tokens": n,
                       "temperature": 0}).encode()
    request = urllib.request.Request(f"{base}/v1/completions", body,
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())["choices"][0]["text"]


def single_node(exo_node_bin, default_model, prompt=PROMPT, n=N_TOKENS):
    result = subprocess.run([exo_node_bin, "generate", "--model", default_model, "--prompt", prompt,
                             "-n", str(n), "--temp", "0", "--threads", "1"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def start_cluster(exo_node_bin, tmp_path, default_model, limits):
    """Capacity-only peers (no model file: their EXO_HOME is empty), then the API node."""
    peers = []
    for i, limit in enumerate(limits[1:]):
        peers.append(ServeNode(exo_node_bin, tmp_path, f"peer{i}", "--noapi", "--memory_limit",
                               limit, home=tmp_path / f"home{i}"))
    coordinator = ServeNode(exo_node_bin, tmp_path, "coordinator", "--model", default_model,
                            "--http_port", "0", "--http_bind", "127.0.0.1", "--memory_limit",
                            limits[0], "--ctx", "1024", "--max_sequences", "4",
                            "--plan_wait_ms", "1500", "--peers",
                            ",".join(p.grpc for p in peers))
    base = "http://" + coordinator.wait_http().split("//")[1]
    return coordinator, peers, base


def test_serve_splits_the_model_when_no_node_holds_it(exo_node_bin, default_model, tmp_path):
    expected = single_node(exo_node_bin, default_model)
    for limits in (["250MiB", "250MiB"], ["200MiB", "200MiB", "200MiB"]):
        coordinator, peers, base = start_cluster(exo_node_bin, tmp_path / str(len(limits)),
                                                 default_model, limits)
        try:
            wait_healthy(base)
            status, view = get(f"{base}/v1/cluster")
            assert status == 200
            stages = view["plan"]["stages"]
            assert len(stages) == len(limits), view
            assert {s["node"] for s in stages} == {n["id"] for n in view["nodes"]}
            assert stages[0]["layer_begin"] == 0 and stages[-1]["layer_end"] == 18
            assert complete(base).strip() == expected
            # Peers had no model file: each fetched exactly its own tensors from the coordinator.
            for peer in peers:
                assert "fetched" in peer.err.read_text(), peer.err.read_text()
                # Every node hears the plan in force on the bus and records it.
                wait_for_text(peer.err, "for gemma-3-270m-q4_k_m from coordinator")
                deadline = time.monotonic() + 5
                while True:
                    status = json.loads((peer.dir / "state" / "cluster.json").read_text())
                    if status["plans"] or time.monotonic() > deadline:
                        break
                    time.sleep(0.1)
                assert [len(p["stages"]) for p in status["plans"]] == [len(limits)], status
            for node in [coordinator, *peers]:
                rss = int(re.search(r"VmRSS:\s+(\d+)",
                                    open(f"/proc/{node.proc.pid}/status").read()).group(1))
                print(f"{len(limits)} nodes: {node.dir.name} RSS {rss / 1024:.0f} MiB")
        finally:
            coordinator.stop()
            for peer in peers:
                peer.stop()


def test_coordinator_replans_when_a_stage_leaves(exo_node_bin, default_model, tmp_path):
    expected = single_node(exo_node_bin, default_model, n=8)
    coordinator, peers, base = start_cluster(exo_node_bin, tmp_path, default_model,
                                             ["250MiB", "250MiB", "250MiB"])
    try:
        wait_healthy(base)
        assert complete(base, n=8).strip() == expected
        view = get(f"{base}/v1/cluster")[1]
        epoch = view["plan"]["epoch"]
        used = {s["node"] for s in view["plan"]["stages"]} - {view["coordinator"]}
        assert used, view  # the model does not fit on the coordinator alone
        victim = next(p for p in peers if p.grpc in {s["address"] for s in view["plan"]["stages"]})
        victim.stop(signal.SIGKILL)
        # Noticed within the heartbeat timeout; then a new plan over the two survivors.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            view = get(f"{base}/v1/cluster")[1]
            if view["plan"].get("epoch", epoch) != epoch and view["status"] == "ready":
                break
            time.sleep(0.2)
        assert view["plan"]["epoch"] != epoch, view
        assert victim.grpc not in {s["address"] for s in view["plan"]["stages"]}
        wait_healthy(base)
        assert complete(base, n=8).strip() == expected
        assert "re-planning" in coordinator.err.read_text()
    finally:
        coordinator.stop()
        for peer in peers:
            peer.stop()


def test_serve_says_what_is_missing_when_nothing_fits(exo_node_bin, default_model, tmp_path):
    coordinator, peers, base = start_cluster(exo_node_bin, tmp_path, default_model,
                                             ["100MiB", "100MiB"])
    try:
        deadline = time.monotonic() + 30
        status, body = get(f"{base}/health")
        while "capacity" not in body.get("detail", "") and time.monotonic() < deadline:
            time.sleep(0.2)
            status, body = get(f"{base}/health")
        assert status == 503
        assert "missing" in body["detail"] and "--memory_limit" in body["detail"], body
    finally:
        coordinator.stop()
        for peer in peers:
            peer.stop()
