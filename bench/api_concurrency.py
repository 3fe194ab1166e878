#!/usr/bin/env python3
"""Aggregate vs single-stream decode throughput of `exo-node serve` (continuous batching).

Starts a server on 127.0.0.1 (or uses --url), runs one streaming chat alone, then N at once, and
prints tokens/s for both, time to first token and the speed-up. Greedy sampling with a fixed
max_tokens and ignore of end-of-generation is not available, so tokens are counted from usage.

  bench/api_concurrency.py --bin build/exo-node [--model PATH] [--streams 32] [--tokens 64]
"""
import argparse
import concurrent.futures
import json
import re
import signal
import subprocess
import time
import urllib.request


def stream(url, model, prompt, tokens):
    body = {"model": model, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": tokens, "temperature": 0.7, "seed": 1, "stream": True,
            "stream_options": {"include_usage": True}}
    req = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    first = None
    usage = None
    with urllib.request.urlopen(req, timeout=3600) as res:
        for raw in res:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            elif first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - start
    return usage["completion_tokens"], first or 0.0, time.perf_counter() - start


def run(url, model, streams, tokens):
    prompts = [f"Tell me a story about the number {i}." for i in range(streams)]
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=streams) as pool:
        results = list(pool.map(lambda p: stream(url, model, p, tokens), prompts))
    wall = time.perf_counter() - start
    total = sum(r[0] for r in results)
    ttft = sorted(r[1] for r in results)
    return total, wall, ttft[len(ttft) // 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin", help="exo-node binary (starts a server)")
    parser.add_argument("--model", default="", help="GGUF file (default model if empty)")
    parser.add_argument("--url", help="an already running server instead of --bin")
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    server = None
    url = args.url
    if url is None:
        cmd = [args.bin, "serve", "--nocluster", "--http_port", "0", "--http_bind", "127.0.0.1", "--ctx", "512",
               "--max_sequences", str(args.streams), "--threads", str(args.threads)]
        if args.model:
            cmd += ["--model", args.model]
        server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        url = re.search(r"(http://[\d.]+:\d+)", server.stdout.readline()).group(1)
    try:
        while True:
            try:
                if urllib.request.urlopen(url + "/health", timeout=5).status == 200:
                    break
            except Exception:
                time.sleep(0.2)
        model = json.load(urllib.request.urlopen(url + "/v1/models"))["data"][0]["id"]
        stream(url, model, "Warm up.", 4)
        single_tokens, single_wall, single_ttft = run(url, model, 1, args.tokens)
        many_tokens, many_wall, many_ttft = run(url, model, args.streams, args.tokens)
        single_rate = single_tokens / single_wall
        many_rate = many_tokens / many_wall
        print(f"model {model}, {args.tokens} max tokens per stream")
        print(f"1 stream:   {single_tokens:5d} tokens in {single_wall:6.2f} s = {single_rate:7.1f} tok/s"
              f" (time to first token {single_ttft * 1000:.0f} ms)")
        print(f"{args.streams} streams: {many_tokens:5d} tokens in {many_wall:6.2f} s = {many_rate:7.1f} tok/s"
              f" aggregate, {many_rate / args.streams:.1f} per stream"
              f" (median time to first token {many_ttft * 1000:.0f} ms)")
        print(f"aggregate / single-stream: {many_rate / single_rate:.2f}x")
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=60)


if __name__ == "__main__":
    main()
