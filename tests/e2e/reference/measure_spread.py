#!/usr/bin/env python3
"""How much does llama.cpp disagree with itself? Input for the tolerances of the test.

Runs the test prompts through llama.cpp under several settings that change only the
arithmetic (thread count, prompt batched or token by token, flash attention, F32 instead
of F16 KV cache) and compares each against the reference setting (the one the test
uses) with the same measures as the test: max |diff|, relative RMS error and cosine
similarity of the first-step logits, top-10 set, and whether the 32 greedy tokens agree.
It also prints the smallest top1-top2 margin along each greedy path: a prompt whose
margin is below the expected logit error would make an exact-token test flaky.

    python3 tests/e2e/reference/measure_spread.py [--prompts-from-args PROMPT ...]
"""

import argparse
import sys

import dump_llamacpp as ref_lib

GGML_TYPE_F32 = 0

# name -> (n_threads, extra llama_cpp.Llama settings)
VARIANTS = (
    ("threads=1", 1, {}),
    ("threads=2 (reference)", 2, {}),
    ("threads=3", 3, {}),
    ("prompt token by token (n_batch=1)", 2, {"n_batch": 1, "n_ubatch": 1}),
    ("flash_attn", 2, {"flash_attn": True}),
    ("KV cache F32", 2, {"type_k": GGML_TYPE_F32, "type_v": GGML_TYPE_F32}),
    ("flash_attn + KV F32 + n_batch=1", 1,
     {"flash_attn": True, "type_k": GGML_TYPE_F32, "type_v": GGML_TYPE_F32, "n_batch": 1, "n_ubatch": 1}),
)
REFERENCE_VARIANT = "threads=2 (reference)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prompts", nargs="*", help="raw prompts (default: the test prompts)")
    args = parser.parse_args()
    prompts = args.prompts or list(ref_lib.PROMPTS)
    model = ref_lib.default_model_path()

    runs = {}
    for name, threads, overrides in VARIANTS:
        engine = ref_lib.GreedyReference(model, n_threads=threads, **overrides)
        runs[name] = [engine.run(p) for p in prompts]
        del engine

    print("# %s, model %s" % (ref_lib.llama_cpp_version(), model))
    print("# every variant compared with '%s'" % REFERENCE_VARIANT)
    worst = {"max_abs": 0.0, "rel_rms": 0.0, "cosine": 1.0}
    for index, prompt in enumerate(prompts):
        base = runs[REFERENCE_VARIANT][index]
        print()
        print("prompt %d: %r  (min greedy margin %.4f at step %d)" % (
            index, prompt, min(base.margins), base.margins.index(min(base.margins))))
        print("  %-36s %10s %10s %12s %6s %s" % ("variant", "max_abs", "rel_rms", "1-cosine", "top10", "greedy"))
        for name, _, _ in VARIANTS:
            if name == REFERENCE_VARIANT:
                continue
            run = runs[name][index]
            stats = ref_lib.compare_logits(run.first_logits, base.first_logits)
            worst["max_abs"] = max(worst["max_abs"], stats["max_abs"])
            worst["rel_rms"] = max(worst["rel_rms"], stats["rel_rms"])
            worst["cosine"] = min(worst["cosine"], stats["cosine"])
            same_top10 = set(ref_lib.top_k(run.first_logits, 10)) == set(ref_lib.top_k(base.first_logits, 10))
            first_diff = next((i for i, (a, b) in enumerate(zip(run.tokens, base.tokens)) if a != b), None)
            greedy = "same 32" if first_diff is None else "differs at step %d" % first_diff
            print("  %-36s %10.6f %10.3e %12.3e %6s %s" % (
                name, stats["max_abs"], stats["rel_rms"], 1.0 - stats["cosine"],
                "same" if same_top10 else "DIFF", greedy))
    print()
    print("worst over variants and prompts: max_abs %.6f  rel_rms %.3e  1-cosine %.3e" % (
        worst["max_abs"], worst["rel_rms"], 1.0 - worst["cosine"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
