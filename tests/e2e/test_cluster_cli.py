"""`exo-node generate` and `exo-node plan` against a running cluster: two `serve` processes on
loopback (static peers, own state directories, ports 0), the coordinator's memory limit forcing a
split. generate goes through the coordinator's API and prints what plain in-process generate
prints; plan lists both nodes with each stage's memory and time per token."""
import json
import re
import subprocess
import time

from test_cluster_serve import ServeNode, wait_healthy

PROMPT = "The capital of France is"
N_TOKENS = "16"


def run(exo_node_bin, *args, timeout=300):
    return subprocess.run([exo_node_bin, *args], capture_output=True, text=True, timeout=timeout)


def node_id(node):
    return node._wait_for(r"^exo-node: node id (\S+)$")


def wait_status_has_api(state_dir, timeout=30):
    """The status file is rewritten every 250 ms; the API's port appears once it listens."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            caps = json.loads((state_dir / "cluster.json").read_text())["capabilities"]
            if caps.get("http_port", 0) > 0 and caps.get("served_model"):
                return caps
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"{state_dir}/cluster.json never showed the HTTP API")


def test_generate_and_plan_use_the_running_cluster(exo_node_bin, default_model, tmp_path):
    peer = ServeNode(exo_node_bin, tmp_path, "peer", "--noapi", "--memory_limit", "250MiB",
                     home=tmp_path / "peer-home")
    coordinator = ServeNode(exo_node_bin, tmp_path, "coordinator", "--model", default_model,
                            "--http_port", "0", "--http_bind", "127.0.0.1", "--memory_limit",
                            "250MiB", "--ctx", "512", "--max_sequences", "2",
                            "--plan_wait_ms", "1500", "--peers", peer.grpc)
    try:
        base = "http://" + coordinator.wait_http().split("//")[1]
        wait_healthy(base)
        state = coordinator.dir / "state"
        wait_status_has_api(state)
        ids = {node_id(coordinator), node_id(peer)}

        json_out = tmp_path / "cluster.json"
        through = run(exo_node_bin, "generate", "--state_dir", str(state), "--prompt", PROMPT,
                      "--temp", "0", "-n", N_TOKENS, "--json_out", str(json_out))
        assert through.returncode == 0, through.stderr
        assert "generating through the cluster node" in through.stderr, through.stderr
        # The plan in force names both nodes: the model is split.
        plan_line = next(l for l in through.stderr.splitlines() if "through the cluster" in l)
        assert "2 stages" in plan_line, plan_line
        assert re.search(r"generation: \d+ tokens in .* tok/s", through.stderr), through.stderr
        assert "time to first token" in through.stderr

        local = run(exo_node_bin, "generate", "--local", "--state_dir", str(state), "--model",
                    default_model, "--prompt", PROMPT, "--temp", "0", "-n", N_TOKENS, "--ctx",
                    "512", "--threads", "1")
        assert local.returncode == 0, local.stderr
        assert "generating in-process (--local)" in local.stderr
        assert through.stdout == local.stdout
        assert json.loads(json_out.read_text())["text"] == through.stdout[:-1]

        plan = run(exo_node_bin, "plan", "--state_dir", str(state), "--ctx", "512",
                   "--max_sequences", "2")
        assert plan.returncode == 0, plan.stderr
        for nid in ids:
            assert nid in plan.stdout, plan.stdout
        assert "the live cluster of node" in plan.stdout
        assert "memory / available" in plan.stdout and "per token" in plan.stdout
        assert "in force on the node: model gemma-3-270m-q4_k_m, 2 stages" in plan.stdout, \
            plan.stdout
    finally:
        coordinator.stop()
        peer.stop()


def test_plan_and_generate_without_a_running_node(exo_node_bin, tmp_path):
    empty = tmp_path / "state"
    empty.mkdir()
    plan = run(exo_node_bin, "plan", "--state_dir", str(empty))
    assert plan.returncode == 1
    assert f"no running node in {empty}" in plan.stderr
    assert "start `exo-node serve` or pass --fleet FILE" in plan.stderr
    # A status file left by a node that stopped: generate runs in-process (here: fails to find
    # the model, with the usual one-line error and nothing about the cluster).
    (empty / "cluster.json").write_text(json.dumps({"running": False, "pid": 1}))
    gen = run(exo_node_bin, "generate", "--state_dir", str(empty), "--model",
              str(tmp_path / "missing.gguf"), "--prompt", "hi")
    assert gen.returncode == 1
    lines = gen.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("exo-node: error: "), gen.stderr
