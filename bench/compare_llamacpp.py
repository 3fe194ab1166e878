#!/usr/bin/env python3
"""exo-node bench beside llama.cpp (llama-cpp-python) on the same GGUF, threads and sizes.

Prints pp (prompt processing) and tg (decode) tokens/s for both, measured in one run on this
machine. llama.cpp is a benchmark peer only: install it with
  pip install --no-binary llama-cpp-python llama-cpp-python
Usage: bench/compare_llamacpp.py [--model PATH] [--threads N] [--pp 512] [--tg 128] [--depth 0]
                                 [--reps 3]

To compare on the AVX2 level of an AVX-512 machine: build llama-cpp-python with
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF"
into a folder of its own (pip install --target DIR ...), then run this script with
PYTHONPATH=DIR EXO_SIMD=avx2.
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


class LlamaCpp:
    """llama.cpp (llama-cpp-python) with the model loaded once; one repetition per call."""

    def __init__(self, model, threads, pp, tg, depth):
        import llama_cpp  # noqa: imported here so --help works without it
        self.llm = llama_cpp.Llama(model_path=model, n_ctx=depth + max(pp, tg) + 8, n_batch=pp,
                                   n_ubatch=pp, n_threads=threads, n_threads_batch=threads,
                                   verbose=False)
        self.pp, self.tg, self.depth = pp, tg, depth
        self.prompt = [(i * 7919) % self.llm.n_vocab() for i in range(depth + max(pp, tg))]
        self.llm.reset()
        self.llm.eval(self.prompt[:8])  # warm-up

    def fill_depth(self):
        # The context of `depth` tokens both tests start from (untimed), as exo-node bench --depth.
        self.llm.reset()
        if self.depth:
            self.llm.eval(self.prompt[:self.depth])

    def rep(self):
        self.fill_depth()
        start = time.perf_counter()
        self.llm.eval(self.prompt[self.depth:self.depth + self.pp])
        pp_rate = self.pp / (time.perf_counter() - start)
        self.fill_depth()
        start = time.perf_counter()
        for i in range(self.depth, self.depth + self.tg):
            self.llm.eval([self.prompt[i]])
        return pp_rate, self.tg / (time.perf_counter() - start)


# llama.cpp's cold start, in a fresh process: from just before libllama is loaded to the first
# token out of a one-token prompt. The Python interpreter's own start is left out (that favours
# llama.cpp), while exo-node's figure counts from its process start.
LLAMA_COLD_START = r"""
import sys, time
start = time.perf_counter()
import llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=int(sys.argv[2]), n_threads=int(sys.argv[3]),
                      n_threads_batch=int(sys.argv[3]), verbose=False)
llm.eval([llm.token_bos()])
first = int(llm.scores[0].argmax())  # the first token, greedy
print(time.perf_counter() - start)
"""


def llama_cold_start(args, threads):
    result = subprocess.run([sys.executable, "-c", LLAMA_COLD_START, args.model,
                             str(args.pp + args.tg), str(threads)], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"llama.cpp cold start failed: {result.stderr.strip()[-500:]}")
    return float(result.stdout.strip().splitlines()[-1])


def exo_bench(args, threads):
    result = subprocess.run([args.exo_node, "bench", "--model", args.model, "--threads",
                             str(threads), "--pp", str(args.pp), "--tg", str(args.tg),
                             "--depth", str(args.depth), "--reps", "1", "--json"], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"exo-node bench failed: {result.stderr.strip()}")
    return json.loads(result.stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    home = pathlib.Path(os.environ.get("EXO_HOME", pathlib.Path.home() / ".cache" / "exo-node"))
    parser.add_argument("--model", default=str(home / "models" / "gemma-3-270m-q4_k_m.gguf"))
    parser.add_argument("--exo-node", default=os.environ.get("EXO_NODE_BIN", str(REPO / "build" / "exo-node")))
    parser.add_argument("--threads", type=int, default=0,
                        help="0 (default): exo-node's default, one per physical core, for both")
    parser.add_argument("--pp", type=int, default=512)
    parser.add_argument("--tg", type=int, default=128)
    parser.add_argument("--depth", type=int, default=0,
                        help="tokens already in the context when each test starts")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

    # Repetitions alternate between the two engines (A/B interleaved), so that load from other
    # processes on a shared machine falls on both alike.
    first = exo_bench(args, args.threads)
    threads = first["threads"]
    llama = LlamaCpp(args.model, threads, args.pp, args.tg, args.depth)
    exo_runs, pp_rates, tg_rates, llama_starts = [], [], [], []
    for rep in range(args.reps):
        exo_runs.append(first if rep == 0 else exo_bench(args, threads))
        pp_rate, tg_rate = llama.rep()
        pp_rates.append(pp_rate)
        tg_rates.append(tg_rate)
        llama_starts.append(llama_cold_start(args, threads))

    def fmt(values, digits=1):
        spread = statistics.stdev(values) if len(values) > 1 else 0
        return f"{statistics.mean(values):8.{digits}f} ± {spread:.{digits}f}"

    import llama_cpp
    print(f"model {args.model}, {threads} threads, {args.reps} interleaved repetitions, "
          f"exo-node kernels: {first.get('kernels', '?')}"
          + (f", both tests at depth {args.depth}" if args.depth else ""))
    # Which llama.cpp build ran (PYTHONPATH can point at another one, e.g. one built for AVX2
    # only), and the instruction sets it reports.
    print(f"llama.cpp: llama-cpp-python {llama_cpp.__version__} from "
          f"{pathlib.Path(llama_cpp.__file__).parent}; "
          f"{llama_cpp.llama_print_system_info().decode().strip()}")
    print(f"{'':10s} {'exo-node':>18s} {'llama.cpp':>18s}")
    for name, rates in ((f"pp{args.pp}", pp_rates), (f"tg{args.tg}", tg_rates)):
        exo_rates = [run[name]["tokens_per_second"] for run in exo_runs]
        print(f"{name:10s} {fmt(exo_rates)} tok/s  {fmt(rates)} tok/s")
    exo_starts = [run["cold_start_seconds"] for run in exo_runs]
    print(f"{'cold start':10s} {fmt(exo_starts, 3)} s      {fmt(llama_starts, 3)} s   (to the first token)")
    tg_name = f"tg{args.tg}"
    fractions = [run[tg_name]["tokens_per_second"] / run["roofline_tokens_per_second"]
                 for run in exo_runs]
    exo = exo_runs[-1]
    print(f"exo-node: {exo['bytes_per_token'] / 2**20:.1f} MiB per token; read bandwidth "
          f"{exo['memory_bandwidth_bytes_per_second'] / 1e9:.2f} GB/s (512 MiB buffer), "
          f"{exo.get('working_set_bandwidth_bytes_per_second', 0) / 1e9:.2f} GB/s (buffer of the bytes "
          f"a token reads); roofline {exo['roofline_tokens_per_second']:.1f} tok/s; {tg_name} at "
          f"{100 * statistics.mean(fractions):.0f}% of it (runs: "
          f"{', '.join(f'{100 * f:.0f}%' for f in fractions)})")
    rss = [run["peak_rss_mib"] for run in exo_runs]
    print(f"exo-node: peak RSS {max(rss):.0f} MiB, budget {exo.get('rss_budget_mib', 0):.0f} MiB "
          f"(model file {exo.get('model_file_mib', 0):.0f} + KV cache {exo['kv_cache_mib']:.0f} + 64)")


if __name__ == "__main__":
    main()
