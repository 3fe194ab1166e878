"""`exo-node serve --draft_model`: the node with the API loads the draft model once, drafts for
every request and the pipeline's last stage verifies. Greedy answers through a 2-node split (and
through the coordinator's own stage when the model fits there alone) equal single-node
`generate` without speculation, and /metrics counts accepted drafts. A draft model with another
vocabulary is refused with a clear error, without a crash.

The SmolLM2 test model drafts for itself here (the vocabulary trivially matches, nearly every
draft is accepted), which checks the mechanics, not a speed-up (docs/speculative.md)."""
import json
import re
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from test_cluster_serve import ServeNode, get, wait_healthy

PROMPT = "The capital of France is"
N_TOKENS = 16
MODEL_ID = "SmolLM2-135M-Instruct.Q4_1"


def post(base, path, body):
    request = urllib.request.Request(f"{base}{path}", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def complete(base, temperature=0, seed=None):
    body = {"model": MODEL_ID, "prompt": PROMPT, "max_tokens": N_TOKENS,
            "temperature": temperature}
    if seed is not None:
        body["seed"] = seed
    status, answer = post(base, "/v1/completions", body)
    assert status == 200, answer
    return answer["choices"][0]["text"]


def metric(base, name):
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        text = response.read().decode()
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    assert match, f"no {name} in /metrics"
    return float(match.group(1))


def single_node(exo_node_bin, model):
    result = subprocess.run([exo_node_bin, "generate", "--model", model, "--prompt", PROMPT,
                             "-n", str(N_TOKENS), "--temp", "0", "--threads", "1",
                             "--ctx", "512"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def start(exo_node_bin, tmp_path, model, draft, peer_limits, coordinator_limit):
    """Capacity-only peers (no model file), then the API node with the draft model."""
    peers = [ServeNode(exo_node_bin, tmp_path, f"peer{i}", "--noapi", "--memory_limit", limit,
                       home=tmp_path / f"home{i}") for i, limit in enumerate(peer_limits)]
    # A fixed draft length and no confidence cut-off: the model drafting for itself costs as much
    # as the target, so the adaptive length would (rightly) stop drafting after a few passes.
    args = ["--model", model, "--draft_model", draft, "--draft_min", "4", "--draft_max", "4",
            "--draft_p_min", "0", "--http_port", "0", "--http_bind", "127.0.0.1", "--ctx", "512",
            "--max_sequences", "2", "--plan_wait_ms", "1000"]
    if coordinator_limit:
        args += ["--memory_limit", coordinator_limit]
    if peers:
        args += ["--peers", ",".join(p.grpc for p in peers)]
    coordinator = ServeNode(exo_node_bin, tmp_path, "coordinator", *args)
    base = "http://" + coordinator.wait_http().split("//")[1]
    return coordinator, peers, base


@pytest.mark.parametrize("peer_limits,coordinator_limit", [(["90MiB"], "90MiB"), ([], None)],
                         ids=["two_nodes", "one_node"])
def test_draft_model_keeps_greedy_output_and_counts_accepted_drafts(
        exo_node_bin, smol_model, tmp_path, peer_limits, coordinator_limit):
    expected = single_node(exo_node_bin, smol_model)
    coordinator, peers, base = start(exo_node_bin, tmp_path, smol_model, smol_model, peer_limits,
                                     coordinator_limit)
    try:
        wait_healthy(base)
        status, view = get(f"{base}/v1/cluster")
        assert status == 200
        assert len(view["plan"]["stages"]) == len(peer_limits) + 1, view
        assert complete(base).strip() == expected
        accepted = metric(base, "exo_speculative_accepted_tokens_total")
        drafted = metric(base, "exo_speculative_drafted_tokens_total")
        passes = metric(base, "exo_speculative_passes_total")
        print(f"{len(peer_limits) + 1} node(s): {passes:.0f} passes, drafted {drafted:.0f}, "
              f"accepted {accepted:.0f}")
        assert accepted > 0 and passes > 0
        assert accepted >= 0.9 * drafted  # the model drafting for itself
        assert passes < N_TOKENS / 2  # several tokens per pass
        # Sampling goes through rejection sampling on the last stage; it completes as usual.
        assert isinstance(complete(base, temperature=0.8, seed=7), str)
        log = coordinator.err.read_text()
        assert "draft model" in log and "verify its drafts" in log, log
        if not peers:
            assert "its own stage over loopback" in log, log
    finally:
        coordinator.stop()
        for peer in peers:
            peer.stop()
    assert coordinator.proc.returncode == 0, coordinator.err.read_text()


def test_draft_model_with_another_vocabulary_is_refused(exo_node_bin, smol_model, default_model,
                                                        tmp_path):
    # Gemma's SentencePiece vocabulary cannot draft for SmolLM2's BPE one.
    coordinator, peers, base = start(exo_node_bin, tmp_path, smol_model, default_model, [], None)
    try:
        status, body = get(f"{base}/health")
        end = time.monotonic() + 60
        while body.get("status") != "error" and time.monotonic() < end:
            time.sleep(0.2)
            status, body = get(f"{base}/health")
        assert status == 503, body
        assert "cannot draft for this model" in body["error"], body
        assert "tokenizer" in body["error"], body
        status, answer = post(base, "/v1/completions", {"model": MODEL_ID, "prompt": PROMPT,
                                                        "max_tokens": 2})
        assert status == 503, answer
        assert "cannot draft for this model" in json.dumps(answer), answer
        assert coordinator.proc.poll() is None, "the node must keep running"
        assert "error: cannot serve" in coordinator.err.read_text()
    finally:
        coordinator.stop()
