"""Any node answers the API: the node with the lowest id among those serving a model coordinates
it, and every other node proxies requests there (streams included). When the coordinator leaves,
the next node in line takes the model over."""
import json
import re
import time
import urllib.request

from test_cluster_serve import PROMPT, N_TOKENS, ServeNode, complete, get, single_node, \
    wait_healthy

MODEL = "gemma-3-270m-q4_k_m"


def wait_for(predicate, what, timeout=60):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        ok, last = predicate()
        if ok:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what} not in {timeout} s: {last}")


def stream_complete(base, prompt=PROMPT, n=N_TOKENS):
    body = json.dumps({"model": MODEL, "prompt": prompt, "max_tokens": n, "temperature": 0,
                       "stream": True}).encode()
    request = urllib.request.Request(f"{base}/v1/completions", body,
                                     {"Content-Type": "application/json"})
    text, done = "", False
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        for line in response:
            line = line.decode().strip()
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                text += json.loads(line[6:])["choices"][0]["text"]
    assert done, "the stream did not end with [DONE]"
    return text


def test_any_node_answers_through_the_models_coordinator(exo_node_bin, default_model, tmp_path):
    expected = single_node(exo_node_bin, default_model)
    common = ["--model", default_model, "--http_port", "0", "--http_bind", "127.0.0.1", "--ctx",
              "1024", "--max_sequences", "2", "--plan_wait_ms", "1500"]
    a = ServeNode(exo_node_bin, tmp_path, "a", *common)
    b = ServeNode(exo_node_bin, tmp_path, "b", *common, "--peers", a.grpc)
    nodes = [a, b]
    try:
        base = {n.dir.name: "http://" + n.wait_http().split("//")[1] for n in nodes}
        ids = {n.dir.name: n._wait_for(r"^exo-node: node id (\S+)$") for n in nodes}
        leader, follower = sorted(nodes, key=lambda n: ids[n.dir.name])
        lead, follow = base[leader.dir.name], base[follower.dir.name]
        wait_healthy(lead)
        health = wait_for(lambda: (lambda r: (r[0] == 200 and r[1].get("role") == "proxy", r[1]))(
            get(f"{follow}/health")), "the follower proxying")
        assert ids[leader.dir.name][:12] in health["detail"], health

        assert complete(follow).strip() == expected
        assert stream_complete(follow).strip() == expected
        status, view = get(f"{follow}/v1/cluster")
        assert status == 200 and view["coordinator"] == ids[leader.dir.name], view
        status, models = get(f"{follow}/v1/models")
        assert [m["id"] for m in models["data"]] == [MODEL], models
        with urllib.request.urlopen(f"{follow}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        assert re.search(r'exo_proxied_requests_total\{node="%s"\} [1-9]' % ids[leader.dir.name],
                         metrics), metrics
        assert "is coordinated by node" in follower.err.read_text()

        # The coordinator leaves: the follower coordinates the model itself from then on.
        leader.stop()
        wait_for(lambda: (lambda r: (r[0] == 200 and "role" not in r[1], r))(
            get(f"{follow}/health")), "the follower taking over", timeout=120)
        assert complete(follow).strip() == expected
    finally:
        for n in nodes:
            n.stop()
