#!/usr/bin/env python3
"""Speed-up of speculative decoding over plain decoding with `exo-node generate`, on one node.

Runs the same prompt with --speculative=off, ngram and (with --draft_model) draft, interleaved
round by round so that load from other processes hits every mode alike, and prints the median
decode time, tokens/s, speed-up, acceptance rate and tokens per pass. With --temp 0 (default) it
also checks that every mode generated exactly the same tokens.

"cpu s" is the CPU time of the whole exo-node process (load, prompt and decode; the draft model's
load too) and "cpu x" the ratio to plain decoding: on a machine shared with other jobs it moves
far less than wall time. Decode time is generate_seconds from the JSON summary: from the end of prompt processing to the
last token, so it includes drafting and every verification pass (and, for the speculative modes,
the recomputation of the prompt's last token).

Usage: bench/speculative.py [--bin build/exo-node] [--model PATH] [--draft_model PATH]
                            [--workload repeat|free|both] [-n 96] [--reps 5] [--threads N]
"""
import argparse
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
MODELS = pathlib.Path(os.environ.get("EXO_HOME", pathlib.Path.home() / ".cache/exo-node")) / "models"

PASSAGE = ("The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. "
           "How vexingly quick daft zebras jump. The five boxing wizards jump quickly. Sphinx of "
           "black quartz, judge my vow. Jackdaws love my big sphinx of quartz.")
WORKLOADS = {
    # Text the answer reuses (quoting, editing, summarising with quotes): prompt lookup's case.
    "repeat": f"Text: {PASSAGE}\nCopy the text exactly.\nText: {PASSAGE}\nText:",
    # Open-ended continuation: little to copy from the context.
    "free": "Once upon a time, in a small village at the edge of a great forest, there lived",
}


def run(args, mode, prompt):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        json_path = f.name
    cmd = [args.bin, "generate", "--prompt", prompt, "-n", str(args.n), "--temp", str(args.temp),
           "--seed", "1", "--speculative", mode, "--draft_max", str(args.draft_max),
           "--draft_p_min", str(args.draft_p_min),
           "--json_out", json_path]
    if args.model:
        cmd += ["--model", args.model]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if mode == "draft":
        cmd += ["--draft_model", args.draft_model]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"exo-node failed ({' '.join(cmd[:3])} ... --speculative {mode}):\n{proc.stderr}")
    with open(json_path) as f:
        result = json.load(f)
    os.unlink(json_path)
    # CPU seconds of the whole process (load, prompt, decode): less sensitive than wall time to
    # other processes on a shared machine, as long as they leave the cores' caches alone.
    result["cpu_seconds"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin", default=str(REPO / "build" / "exo-node"))
    parser.add_argument("--model", default="", help="target GGUF (default: exo-node's default)")
    parser.add_argument("--draft_model", default="", help="draft GGUF with the same vocabulary")
    parser.add_argument("--workload", default="both", choices=["repeat", "free", "both"])
    parser.add_argument("-n", type=int, default=96)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--temp", type=float, default=0.0)
    parser.add_argument("--draft_max", type=int, default=8)
    parser.add_argument("--draft_p_min", type=float, default=0.5)
    args = parser.parse_args()
    modes = ["off", "ngram"] + (["draft"] if args.draft_model else [])
    workloads = ["repeat", "free"] if args.workload == "both" else [args.workload]
    print(f"exo-node speculative bench: model={args.model or 'default'} "
          f"draft={args.draft_model or '-'} n={args.n} reps={args.reps} temp={args.temp} "
          f"threads={args.threads or 'auto'}")
    for workload in workloads:
        prompt = WORKLOADS[workload]
        results = {mode: [] for mode in modes}
        for _ in range(args.reps):
            for mode in modes:  # interleaved: each round runs every mode once
                results[mode].append(run(args, mode, prompt))
        base = statistics.median(r["generate_seconds"] for r in results["off"])
        base_cpu = statistics.median(r["cpu_seconds"] for r in results["off"])
        print(f"\nworkload '{workload}'")
        print(f"{'mode':6} {'tokens':>6} {'decode s':>9} {'tok/s':>7} {'speed-up':>8} "
              f"{'accept':>7} {'tok/pass':>8} {'ms/verify':>9} {'cpu s':>7} {'cpu x':>6}  identical")
        reference = results["off"][0]["tokens"]
        for mode in modes:
            runs = results[mode]
            seconds = statistics.median(r["generate_seconds"] for r in runs)
            cpu = statistics.median(r["cpu_seconds"] for r in runs)
            tokens = len(runs[0]["tokens"])
            spec = runs[0].get("speculative", {})
            identical = all(r["tokens"] == reference for r in runs) if args.temp == 0 else "n/a"
            accept = f"{100 * spec['acceptance_rate']:.1f}%" if mode != "off" else "-"
            per_pass = f"{spec['tokens_per_pass']:.2f}" if mode != "off" else "1.00"
            # Median time of one target pass: verification (with its k + 1 rows) or plain decode.
            if mode == "off":
                verify_ms = 1000 * seconds / max(tokens - 1, 1)
            else:
                verify_ms = 1000 * statistics.median(
                    r["speculative"]["verify_seconds"] / max(r["speculative"]["passes"], 1)
                    for r in runs)
            print(f"{mode:6} {tokens:6d} {seconds:9.3f} {tokens / seconds:7.1f} "
                  f"{base / seconds:7.2f}x {accept:>7} {per_pass:>8} {verify_ms:9.1f} {cpu:7.2f} {base_cpu / cpu:5.2f}x  {identical}")


if __name__ == "__main__":
    main()
