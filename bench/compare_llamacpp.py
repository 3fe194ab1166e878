#!/usr/bin/env python3
"""exo-node bench beside llama.cpp (llama-cpp-python) on the same GGUF, threads and sizes.

Prints pp (prompt processing) and tg (decode) tokens/s for both, measured in one run on this
machine. llama.cpp is a benchmark peer only: install it with
  pip install --no-binary llama-cpp-python llama-cpp-python
Usage: bench/compare_llamacpp.py [--model PATH] [--threads N] [--pp 512] [--tg 128] [--reps 3]
"""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]


def llamacpp_bench(model, threads, pp, tg, reps):
    import llama_cpp  # noqa: imported here so --help works without it
    llm = llama_cpp.Llama(model_path=model, n_ctx=max(pp, tg) + 8, n_batch=pp, n_ubatch=pp,
                          n_threads=threads, n_threads_batch=threads, verbose=False)
    prompt = [(i * 7919) % llm.n_vocab() for i in range(pp)]
    llm.reset()
    llm.eval(prompt[:8])  # warm-up
    pp_rates, tg_rates = [], []
    for _ in range(reps):
        llm.reset()
        start = time.perf_counter()
        llm.eval(prompt)
        pp_rates.append(pp / (time.perf_counter() - start))
        llm.reset()
        start = time.perf_counter()
        for i in range(tg):
            llm.eval([prompt[i]])
        tg_rates.append(tg / (time.perf_counter() - start))
    return pp_rates, tg_rates


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    home = pathlib.Path(os.environ.get("EXO_HOME", pathlib.Path.home() / ".cache" / "exo-node"))
    parser.add_argument("--model", default=str(home / "models" / "gemma-3-270m-q4_k_m.gguf"))
    parser.add_argument("--exo-node", default=os.environ.get("EXO_NODE_BIN", str(REPO / "build" / "exo-node")))
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--pp", type=int, default=512)
    parser.add_argument("--tg", type=int, default=128)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

    result = subprocess.run([args.exo_node, "bench", "--model", args.model, "--threads",
                             str(args.threads), "--pp", str(args.pp), "--tg", str(args.tg),
                             "--reps", str(args.reps), "--json"], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"exo-node bench failed: {result.stderr.strip()}")
    exo = json.loads(result.stdout)
    pp_rates, tg_rates = llamacpp_bench(args.model, args.threads, args.pp, args.tg, args.reps)

    def fmt(rates):
        return f"{statistics.mean(rates):8.1f} ± {statistics.stdev(rates) if len(rates) > 1 else 0:.1f}"

    print(f"model {args.model}, {args.threads} threads, {args.reps} repetitions")
    print(f"{'':10s} {'exo-node':>18s} {'llama.cpp':>18s}")
    for name, rates in ((f"pp{args.pp}", pp_rates), (f"tg{args.tg}", tg_rates)):
        e = exo[name]
        print(f"{name:10s} {e['tokens_per_second']:8.1f} ± {e['stddev']:.1f} tok/s  {fmt(rates)} tok/s")
    print(f"exo-node: {exo['bytes_per_token'] / 2**20:.1f} MiB per token, bandwidth "
          f"{exo['memory_bandwidth_bytes_per_second'] / 1e9:.2f} GB/s, roofline "
          f"{exo['roofline_tokens_per_second']:.1f} tok/s ({100 * exo['roofline_fraction']:.0f}% reached), "
          f"peak RSS {exo['peak_rss_mib']:.0f} MiB, cold start {exo['cold_start_seconds']:.3f} s")


if __name__ == "__main__":
    main()
