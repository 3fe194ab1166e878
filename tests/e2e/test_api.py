"""The HTTP API of `exo-node serve` on one node: OpenAI's client, curl, Ollama's endpoints over
plain HTTP, every error case, client disconnects and 32 concurrent streams."""
import concurrent.futures
import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

import pytest

MODEL_ID = "gemma-3-270m-q4_k_m"


class Server:
    """An `exo-node serve` on 127.0.0.1 and a free port, stopped with SIGTERM."""

    def __init__(self, binary, *args, env=None):
        self.proc = subprocess.Popen(
            [binary, "serve", "--nocluster", "--http_port", "0", "--http_bind", "127.0.0.1", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline()
        match = re.match(r"exo-node: http listening on (http://[\d.]+:\d+)", line)
        if not match:
            self.proc.kill()
            raise RuntimeError(f"no listening line: {line!r} {self.proc.stderr.read()}")
        self.url = match.group(1)
        self.stderr_lines = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.proc.stderr:
            self.stderr_lines.append(line)

    def wait_ready(self, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            status, _, _ = self.request("GET", "/health")
            if status == 200:
                return
            time.sleep(0.1)
        raise TimeoutError("the model did not load: " + "".join(self.stderr_lines))

    def request(self, method, path, body=None, headers=None, raw=None, timeout=300):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as res:
                return res.status, dict(res.headers), res.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode()

    def metric(self, name, headers=None):
        _, _, text = self.request("GET", "/metrics", headers=headers)
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def server(exo_node_bin, default_model):
    s = Server(exo_node_bin, "--model", default_model, "--max_sequences", "32", "--ctx", "512",
               "--max_queue", "64")
    s.wait_ready()
    yield s
    s.stop()
    assert s.proc.returncode == 0, "".join(s.stderr_lines)


@pytest.fixture(scope="module")
def client(server):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def chat(text):
    return [{"role": "user", "content": text}]


def sse_events(text):
    events = [block[len("data: "):] for block in text.split("\n\n") if block.startswith("data: ")]
    return events


# ---- Metadata endpoints -------------------------------------------------------------------------

def test_health_models_version_tags_show(server):
    status, _, body = server.request("GET", "/health")
    assert status == 200 and json.loads(body) == {"status": "ok", "model": MODEL_ID}
    status, _, body = server.request("GET", "/v1/models")
    assert status == 200 and [m["id"] for m in json.loads(body)["data"]] == [MODEL_ID]
    status, _, body = server.request("GET", "/v1/models/" + MODEL_ID)
    assert status == 200 and json.loads(body)["object"] == "model"
    status, _, body = server.request("GET", "/api/version")
    assert status == 200 and re.match(r"\d+\.\d+\.\d+", json.loads(body)["version"])
    status, _, body = server.request("GET", "/api/tags")
    tag = json.loads(body)["models"][0]
    assert tag["name"] == MODEL_ID and tag["details"]["family"] == "gemma3" and tag["size"] > 1e8
    status, _, body = server.request("POST", "/api/show", {"model": MODEL_ID})
    show = json.loads(body)
    assert status == 200 and show["model_info"]["layers"] == 18 and "start_of_turn" in show["template"]
    status, _, body = server.request("POST", "/api/show", {"model": "nope"})
    assert status == 404 and "error" in json.loads(body)


def test_help_lists_serve_and_its_flags(exo_node_bin):
    out = subprocess.run([exo_node_bin, "--help"], capture_output=True, text=True).stdout
    for word in ["serve", "--http_port", "--http_bind", "--api_key", "--max_queue",
                 "--max_sequences"]:
        assert word in out, word


def test_cors_preflight_and_header(server):
    req = urllib.request.Request(server.url + "/v1/chat/completions", method="OPTIONS",
                                 headers={"Origin": "http://example.test",
                                          "Access-Control-Request-Method": "POST"})
    with urllib.request.urlopen(req, timeout=30) as res:
        assert res.status == 204
        assert "Authorization" in res.headers["Access-Control-Allow-Headers"]
    _, headers, _ = server.request("GET", "/v1/models")
    assert headers["Access-Control-Allow-Origin"] == "*"


def test_cluster_view_describes_this_node_and_the_whole_model_plan(server):
    status, _, body = server.request("GET", "/v1/cluster")
    view = json.loads(body)
    assert status == 200
    assert len(view["nodes"]) == 1
    node = view["nodes"][0]
    assert node["id"] == view["coordinator"] and node["layers"] == {"begin": 0, "end": 18}
    assert node["memory"]["total_bytes"] >= node["memory"]["model_bytes"] > 1e8
    assert node["address"].endswith(server.url.rsplit(":", 1)[1])
    assert view["plan"]["stages"] == [{"node": node["id"], "layer_begin": 0, "layer_end": 18}]
    assert "tokens_per_second" in view["live"]


def test_metrics_are_prometheus_text(server, client):
    client.chat.completions.create(model=MODEL_ID, messages=chat("Hi"), max_tokens=3)
    status, headers, text = server.request("GET", "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    for name in ["exo_generated_tokens_total", "exo_time_to_first_token_seconds_count",
                 "exo_inter_token_latency_seconds_bucket", "exo_queue_depth",
                 'exo_node_state{state="ready"} 1', "exo_sequence_slots 32"]:
        assert name in text, name
    assert server.metric("exo_generated_tokens_total") >= 3
    assert server.metric("exo_time_to_first_token_seconds_count") >= 1


# ---- OpenAI client ------------------------------------------------------------------------------

def test_greedy_chat_matches_the_cli(server, client, exo_node_bin, default_model, tmp_path):
    prompt = "Write one sentence about the sea."
    answer = client.chat.completions.create(model=MODEL_ID, messages=chat(prompt), max_tokens=16,
                                            temperature=0)
    out = tmp_path / "cli.json"
    cli = subprocess.run([exo_node_bin, "generate", "--model", default_model, "--prompt", prompt,
                          "--chat_template", "-n", "16", "--temp", "0", "--json_out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    expected = json.loads(out.read_text())
    choice = answer.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == expected["text"]
    assert answer.usage.prompt_tokens == len(expected["prompt_tokens"])
    assert answer.usage.completion_tokens == len(expected["tokens"])
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    assert choice.finish_reason == ("length" if len(expected["tokens"]) == 16 else "stop")


def test_stream_gives_the_same_text_and_usage(client):
    kwargs = dict(model=MODEL_ID, messages=chat("Name three colours."), max_tokens=20,
                  temperature=0)
    full = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(**kwargs, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [full.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == full.usage.prompt_tokens


def test_max_completion_tokens_and_length(client):
    answer = client.chat.completions.create(model=MODEL_ID, messages=chat("Count to fifty."),
                                            max_completion_tokens=5, temperature=0)
    assert answer.usage.completion_tokens <= 5
    if answer.usage.completion_tokens == 5:
        assert answer.choices[0].finish_reason == "length"


def test_same_seed_same_answer_other_seed_differs(client):
    kwargs = dict(model=MODEL_ID, messages=chat("Tell me a story."), max_tokens=24,
                  temperature=1.0, top_p=0.95)
    a = client.chat.completions.create(**kwargs, seed=7).choices[0].message.content
    b = client.chat.completions.create(**kwargs, seed=7).choices[0].message.content
    c = [client.chat.completions.create(**kwargs, seed=s).choices[0].message.content
         for s in (8, 9, 10)]
    assert a == b
    assert any(x != a for x in c)


def test_stop_sequence_cuts_the_answer(client):
    kwargs = dict(model=MODEL_ID, messages=chat("Write one sentence about the sea."),
                  max_tokens=24, temperature=0)
    full = client.chat.completions.create(**kwargs).choices[0].message.content
    words = full.split()
    assert len(words) >= 4, full
    stop = words[2]
    cut = client.chat.completions.create(**kwargs, stop=[stop, "zzzz-never"])
    assert cut.choices[0].message.content == full[:full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(**kwargs, stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == full[:full.index(stop)]


def test_logprobs_and_top_logprobs(client):
    answer = client.chat.completions.create(model=MODEL_ID, messages=chat("Hello"), max_tokens=6,
                                            temperature=0, logprobs=True, top_logprobs=3)
    content = answer.choices[0].logprobs.content
    assert len(content) == answer.usage.completion_tokens
    for item in content:
        assert item.logprob <= 0 and len(item.top_logprobs) == 3
        # Greedy: the chosen token is the most likely one.
        assert item.top_logprobs[0].token == item.token
        assert abs(item.top_logprobs[0].logprob - item.logprob) < 1e-5
        assert item.top_logprobs[0].logprob >= item.top_logprobs[1].logprob
    assert "".join(i.token for i in content) == answer.choices[0].message.content


def test_sampling_parameters_are_accepted_and_shape_the_output(client):
    base = dict(model=MODEL_ID, messages=chat("List some fruits."), max_tokens=24)
    greedy = client.chat.completions.create(**base, temperature=0).choices[0].message.content
    # top_k = 1 keeps only the most likely token: the same as greedy at any temperature.
    top1 = client.chat.completions.create(**base, temperature=1.5, seed=3,
                                          extra_body={"top_k": 1}).choices[0].message.content
    assert top1 == greedy
    penalised = client.chat.completions.create(**base, temperature=0, presence_penalty=2.0,
                                               frequency_penalty=2.0)
    assert penalised.usage.completion_tokens > 0
    filtered = client.chat.completions.create(**base, temperature=0.9, top_p=0.5, seed=1,
                                              extra_body={"min_p": 0.1})
    assert filtered.choices[0].message.content


def test_completions_endpoint(client):
    answer = client.completions.create(model=MODEL_ID, prompt="The capital of France is",
                                       max_tokens=8, temperature=0, logprobs=2)
    choice = answer.choices[0]
    assert choice.text and answer.usage.completion_tokens == len(choice.logprobs.tokens)
    assert all(len(top) == 2 for top in choice.logprobs.top_logprobs)
    streamed = client.completions.create(model=MODEL_ID, prompt="The capital of France is",
                                         max_tokens=8, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == choice.text


# ---- curl ---------------------------------------------------------------------------------------

def test_curl_stream_ends_with_done(server):
    body = json.dumps({"model": MODEL_ID, "messages": chat("Hi"), "max_tokens": 8, "stream": True,
                       "stream_options": {"include_usage": True}})
    out = subprocess.run(["curl", "-sN", "-H", "Content-Type: application/json", "-d", body,
                          server.url + "/v1/chat/completions"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    events = sse_events(out.stdout)
    assert events[-1] == "[DONE]"
    usage = json.loads(events[-2])["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    deltas = [json.loads(e) for e in events[:-2]]
    assert all(d["object"] == "chat.completion.chunk" for d in deltas)


def test_curl_non_stream(server):
    body = json.dumps({"model": MODEL_ID, "messages": chat("Hi"), "max_tokens": 4})
    out = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", "-d", body,
                          server.url + "/v1/chat/completions"],
                         capture_output=True, text=True, timeout=120)
    payload, code = out.stdout.rsplit("\n", 1)
    assert code == "200" and json.loads(payload)["object"] == "chat.completion"


# ---- Ollama -------------------------------------------------------------------------------------

def test_ollama_chat_and_generate(server):
    status, _, body = server.request("POST", "/api/chat", {
        "model": MODEL_ID, "messages": chat("Hi"), "stream": False,
        "options": {"temperature": 0, "num_predict": 6}})
    answer = json.loads(body)
    assert status == 200 and answer["done"] and answer["message"]["role"] == "assistant"
    assert answer["eval_count"] <= 6 and answer["prompt_eval_count"] > 0
    # Streaming is the default: NDJSON lines, the last one done with statistics.
    status, headers, body = server.request("POST", "/api/chat", {
        "model": MODEL_ID, "messages": chat("Hi"), "options": {"temperature": 0, "num_predict": 6}})
    lines = [json.loads(line) for line in body.strip().split("\n")]
    assert status == 200 and headers["Content-Type"].startswith("application/x-ndjson")
    assert [l["done"] for l in lines] == [False] * (len(lines) - 1) + [True]
    assert "".join(l["message"]["content"] for l in lines) == answer["message"]["content"]
    assert lines[-1]["done_reason"] in ("stop", "length") and lines[-1]["eval_count"] == answer["eval_count"]

    status, _, body = server.request("POST", "/api/generate", {
        "model": MODEL_ID + ":latest", "prompt": "Once upon a time", "raw": True,
        # Ollama's default repeat_penalty is 1.1; 1.0 makes it plain greedy, like the request below.
        "options": {"temperature": 0, "num_predict": 5, "repeat_penalty": 1.0}})
    lines = [json.loads(line) for line in body.strip().split("\n")]
    assert status == 200 and lines[-1]["done"] and lines[-1]["eval_count"] == 5
    text = "".join(l["response"] for l in lines)
    status, _, body = server.request("POST", "/v1/completions", {
        "model": MODEL_ID, "prompt": "Once upon a time", "max_tokens": 5, "temperature": 0})
    assert json.loads(body)["choices"][0]["text"] == text


# ---- Errors -------------------------------------------------------------------------------------

def assert_openai_error(status, body, want_status, want_words):
    assert status == want_status, body
    error = json.loads(body)["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert want_words.lower() in error["message"].lower(), error["message"]


def test_errors_have_openai_shape_and_status(server):
    s, _, b = server.request("POST", "/v1/chat/completions", raw=b'{"model": "x", "messages": [')
    assert_openai_error(s, b, 400, "not valid JSON")
    s, _, b = server.request("POST", "/v1/chat/completions",
                             {"model": MODEL_ID, "messages": chat("hi"), "temperature": "hot"})
    assert_openai_error(s, b, 400, "'temperature' must be a number")
    s, _, b = server.request("POST", "/v1/chat/completions",
                             {"model": MODEL_ID, "messages": "hi"})
    assert_openai_error(s, b, 400, "'messages' must be an array")
    s, _, b = server.request("POST", "/v1/chat/completions",
                             {"model": MODEL_ID, "messages": chat("hi"), "max_tokens": 0})
    assert_openai_error(s, b, 400, "max_tokens")
    s, _, b = server.request("POST", "/v1/chat/completions",
                             {"model": "gpt-4", "messages": chat("hi")})
    assert_openai_error(s, b, 400, "does not exist")
    assert json.loads(b)["error"]["code"] == "model_not_found"
    long_prompt = "word " * 2000  # far more than --ctx 512
    s, _, b = server.request("POST", "/v1/chat/completions",
                             {"model": MODEL_ID, "messages": chat(long_prompt)})
    assert_openai_error(s, b, 400, "context")
    s, _, b = server.request("POST", "/v1/chat/completions", raw=b"[" * 100 + b"]" * 100)
    assert_openai_error(s, b, 400, "deeper")
    s, _, b = server.request("POST", "/v1/chat/completions", raw=b"x" * (5 << 20))
    assert_openai_error(s, b, 413, "too large")
    s, _, b = server.request("GET", "/v1/nothing")
    assert s == 404
    # Ollama errors are {"error": "..."}.
    s, _, b = server.request("POST", "/api/chat", {"model": MODEL_ID, "messages": 3})
    assert s == 400 and isinstance(json.loads(b)["error"], str)


def test_errors_through_the_openai_client(client):
    openai = pytest.importorskip("openai")
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="missing-model", messages=chat("hi"))
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL_ID, messages=chat("hi"), n=2)


def test_api_key_is_required_when_set(exo_node_bin, default_model):
    s = Server(exo_node_bin, "--model", default_model, "--api_key", "sekrit", "--ctx", "256",
               "--max_sequences", "2")
    try:
        s.wait_ready()
        body = {"model": MODEL_ID, "messages": chat("hi"), "max_tokens": 2}
        status, headers, b = s.request("POST", "/v1/chat/completions", body)
        assert_openai_error(status, b, 401, "API key")
        status, _, b = s.request("POST", "/v1/chat/completions", body,
                                 headers={"Authorization": "Bearer wrong"})
        assert status == 401
        status, _, b = s.request("GET", "/api/tags", headers={"Authorization": "Bearer wrong"})
        assert status == 401
        status, _, b = s.request("POST", "/v1/chat/completions", body,
                                 headers={"Authorization": "Bearer sekrit"})
        assert status == 200
        openai = pytest.importorskip("openai")
        good = openai.OpenAI(base_url=s.url + "/v1", api_key="sekrit", max_retries=0)
        assert good.models.list().data[0].id == MODEL_ID
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=s.url + "/v1", api_key="bad", max_retries=0).models.list()
        # Health and the web UI stay open for probes and browsers.
        assert s.request("GET", "/health")[0] == 200
        assert s.request("GET", "/")[0] == 200
    finally:
        s.stop()


def test_overload_is_429_with_retry_after(exo_node_bin, default_model):
    s = Server(exo_node_bin, "--model", default_model, "--ctx", "512", "--max_sequences", "1",
               "--max_queue", "0")
    try:
        s.wait_ready()
        long = {"model": MODEL_ID, "messages": chat("Tell me a long story."), "max_tokens": 400,
                "temperature": 0, "stream": True}
        req = urllib.request.Request(s.url + "/v1/chat/completions", data=json.dumps(long).encode(),
                                     headers={"Content-Type": "application/json"})
        holder = urllib.request.urlopen(req, timeout=120)
        holder.readline()  # the stream has started: the only slot is taken
        status, headers, b = s.request("POST", "/v1/chat/completions",
                                       {"model": MODEL_ID, "messages": chat("hi"), "max_tokens": 2})
        assert_openai_error(status, b, 429, "busy")
        assert headers["Retry-After"] == "1"
        holder.close()
    finally:
        s.stop()


def test_without_a_model_generation_is_503_with_retry_after(exo_node_bin):
    with tempfile.TemporaryDirectory() as home:
        s = Server(exo_node_bin, env={**os.environ, "EXO_HOME": home})
        try:
            status, _, body = s.request("GET", "/health")
            assert status == 200 and json.loads(body)["model"] is None
            status, headers, b = s.request("POST", "/v1/chat/completions",
                                           {"model": MODEL_ID, "messages": chat("hi")})
            assert_openai_error(status, b, 503, "no model")
            assert headers["Retry-After"] == "1"
            assert json.loads(s.request("GET", "/v1/models")[2])["data"] == []
        finally:
            s.stop()


def test_client_disconnect_cancels_and_frees_the_slot(server):
    before = server.metric('exo_requests_finished_total{finish_reason="stop"}')
    body = {"model": MODEL_ID, "messages": chat("Tell me a very long story."), "max_tokens": 450,
            "temperature": 0, "stream": True}
    req = urllib.request.Request(server.url + "/v1/chat/completions",
                                 data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    res = urllib.request.urlopen(req, timeout=120)
    res.readline()
    assert server.metric("exo_running_sequences") >= 1
    res.close()  # hang up mid-answer
    deadline = time.time() + 10
    while server.metric("exo_running_sequences") > 0 and time.time() < deadline:
        time.sleep(0.05)
    assert server.metric("exo_running_sequences") == 0
    # It was cancelled, not finished: far fewer than 450 tokens were generated for it.
    generated = server.metric("exo_generated_tokens_total")
    time.sleep(0.5)
    assert server.metric("exo_generated_tokens_total") == generated


# ---- Concurrency --------------------------------------------------------------------------------

def stream_chat(url, prompt, max_tokens):
    body = {"model": MODEL_ID, "messages": chat(prompt), "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    req = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as res:
        events = sse_events(res.read().decode())
    return events


def test_32_concurrent_streams_complete_with_done_and_usage(server):
    prompts = [f"Question {i}: what is {i} plus {i}?" for i in range(32)]
    max_tokens = 24
    # Each prompt alone first, as the reference for the batched answers.
    expected = {}
    for p in prompts[:4]:
        events = stream_chat(server.url, p, max_tokens)
        expected[p] = "".join(json.loads(e)["choices"][0]["delta"].get("content", "")
                              for e in events[:-2] if json.loads(e)["choices"])
    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(lambda p: stream_chat(server.url, p, max_tokens), prompts))
    for prompt, events in zip(prompts, results):
        assert events[-1] == "[DONE]", prompt
        usage = json.loads(events[-2])["usage"]
        chunks = [json.loads(e) for e in events[:-2]]
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        finish = [c["choices"][0]["finish_reason"] for c in chunks
                  if c["choices"] and c["choices"][0]["finish_reason"]]
        assert finish in (["length"], ["stop"])
        assert 0 < usage["completion_tokens"] <= max_tokens
        if finish == ["length"]:
            assert usage["completion_tokens"] == max_tokens
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        if prompt in expected:
            # Greedy answers do not depend on what else shares the batch.
            assert text == expected[prompt], prompt
    assert server.metric("exo_running_sequences") == 0
