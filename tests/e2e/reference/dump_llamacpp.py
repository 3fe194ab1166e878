#!/usr/bin/env python3
"""llama.cpp (llama-cpp-python) reference runs for the exo-node correctness tests.

Two uses:

  * As a script, it prints what llama.cpp does with a prompt: the prompt token ids,
    the top-k logits of the first step and the greedy continuation token by token.
    With --json-out / --logits-out it writes the same files as
    `exo-node generate --json-out ... --logits-out ...`, so the two can be diffed.

        python3 tests/e2e/reference/dump_llamacpp.py                 # the 4 test prompts
        python3 tests/e2e/reference/dump_llamacpp.py "Hello there"   # any raw prompt
        python3 tests/e2e/reference/dump_llamacpp.py --tokenize "<start_of_turn>user"
        python3 tests/e2e/reference/dump_llamacpp.py --tricky        # tokenizer corner cases

  * As a module, imported by test_llamacpp_reference.py and measure_spread.py:
    `GreedyReference(...)` holds one llama.cpp context and `run(prompt)` returns a
    `ReferenceRun`.

The decoding loop is deliberately plain: evaluate the whole prompt, copy the logits of
the last position (these are the "first-step logits"), then repeatedly take the argmax
(lowest id wins a tie, like numpy.argmax) and evaluate that one token. llama.cpp's
sampler chain is not used.
"""

import argparse
import dataclasses
import json
import os
import pathlib
import sys
from typing import List, Optional, Sequence

import numpy as np

MODEL_FILE_NAME = "gemma-3-270m-q4_k_m.gguf"

# The fixed raw prompts of the end-to-end reference test. Raw text, no chat template.
# Chosen (README.md) from ~35 candidates as those whose 32 greedy tokens llama.cpp itself
# reproduces under every arithmetic variant tried: with this 270M model most prose
# prompts hit near-ties (top1 - top2 < 0.05) that flip under mere rounding changes.
PROMPTS = (
    "Water boils at 100 degrees",
    "def factorial(n):",
    "#include <stdio.h>\n\nint main() {",
    "What is 12 + 30? The answer is",
)

N_PREDICT = 32

# Strings whose tokenization (special=True) is recorded in README.md for the tokenizer work.
TRICKY_STRINGS = (
    "<start_of_turn>user\nHi<end_of_turn>\n",
    "  leading spaces",
    "emoji 🤖 and ünïcödé",
    "line1\n\nline2\ttab",
    "Hello world",
    " Hello",
    "trailing space ",
    "3.14159 and 1234567",
    "<bos>literal special? <eos>",
)

# Settings of the reference context, as given in the test's contract.
N_CTX = 512
N_THREADS = 2
SEED = 0


def repo_root() -> pathlib.Path:
    """The repository root: this file lives in <repo>/tests/e2e/reference/."""
    return pathlib.Path(__file__).resolve().parents[3]


def default_model_path() -> pathlib.Path:
    """$EXO_HOME/models/<file> when EXO_HOME is set, else ~/.cache/exo-node/models/<file>."""
    exo_home = os.environ.get("EXO_HOME")
    if exo_home:
        return pathlib.Path(exo_home) / "models" / MODEL_FILE_NAME
    return pathlib.Path.home() / ".cache" / "exo-node" / "models" / MODEL_FILE_NAME


def default_binary_path() -> pathlib.Path:
    """$EXO_NODE_BIN when set, else <repo>/build/exo-node."""
    override = os.environ.get("EXO_NODE_BIN")
    if override:
        return pathlib.Path(override)
    return repo_root() / "build" / "exo-node"


def llama_cpp_version() -> str:
    import llama_cpp  # pylint: disable=import-outside-toplevel

    return "llama-cpp-python %s" % llama_cpp.__version__


@dataclasses.dataclass
class ReferenceRun:
    prompt: str
    prompt_tokens: List[int]
    first_logits: np.ndarray  # float32[n_vocab], logits that chose tokens[0]
    tokens: List[int]  # greedy continuation, exactly n_predict ids (EOG is not special-cased)
    margins: List[float]  # top1 - top2 logit at each greedy step
    text: str  # llama.cpp detokenize(tokens), special tokens not rendered


class GreedyReference:
    """One llama.cpp context used for plain greedy decoding."""

    def __init__(self, model_path, n_threads: int = N_THREADS, **llama_overrides):
        import llama_cpp  # pylint: disable=import-outside-toplevel

        self._llama_cpp = llama_cpp
        settings = dict(
            n_ctx=N_CTX,
            n_threads=n_threads,
            logits_all=False,
            seed=SEED,
            verbose=False,
        )
        settings.update(llama_overrides)
        self.llm = llama_cpp.Llama(str(model_path), **settings)
        self.n_vocab = self.llm.n_vocab()

    def tokenize(self, text: str, add_bos: bool = True, special: bool = False) -> List[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special))

    def piece(self, token: int) -> bytes:
        """The bytes of one token, special tokens rendered as their text."""
        return self.llm.detokenize([token], special=True)

    def is_end_of_generation(self, token: int) -> bool:
        return bool(self._llama_cpp.llama_vocab_is_eog(self.llm._model.vocab, token))  # pylint: disable=protected-access

    def _last_logits(self) -> np.ndarray:
        pointer = self._llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).astype(np.float32, copy=True)

    def first_step_logits(self, prompt_tokens: Sequence[int]) -> np.ndarray:
        self.llm.reset()
        self.llm.eval(list(prompt_tokens))
        return self._last_logits()

    def run(self, prompt: str, n_predict: int = N_PREDICT) -> ReferenceRun:
        prompt_tokens = self.tokenize(prompt, add_bos=True, special=False)
        if len(prompt_tokens) + n_predict > N_CTX:
            raise ValueError("prompt of %d tokens + %d new tokens exceeds n_ctx=%d"
                             % (len(prompt_tokens), n_predict, N_CTX))
        logits = self.first_step_logits(prompt_tokens)
        first_logits = logits
        tokens: List[int] = []
        margins: List[float] = []
        for step in range(n_predict):
            token = int(np.argmax(logits))
            top2 = np.partition(logits, -2)[-2:]
            margins.append(float(top2[1] - top2[0]))
            tokens.append(token)
            if step + 1 < n_predict:
                self.llm.eval([token])
                logits = self._last_logits()
        text = self.llm.detokenize(tokens, special=False).decode("utf-8", errors="replace")
        return ReferenceRun(prompt, prompt_tokens, first_logits, tokens, margins, text)


def top_k(logits: np.ndarray, k: int) -> List[int]:
    """Ids of the k largest logits, largest first (ties: lower id first)."""
    order = np.lexsort((np.arange(logits.size), -logits.astype(np.float64)))
    return [int(i) for i in order[:k]]


def compare_logits(actual: np.ndarray, expected: np.ndarray) -> dict:
    """Distance measures used by the test (float64 arithmetic)."""
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    diff = a - e
    return {
        "max_abs": float(np.max(np.abs(diff))),
        "rel_rms": float(np.sqrt(np.mean(diff * diff)) / np.sqrt(np.mean(e * e))),
        "cosine": float(np.dot(a, e) / (np.linalg.norm(a) * np.linalg.norm(e))),
    }


def _show(piece: bytes) -> str:
    try:
        return json.dumps(piece.decode("utf-8"), ensure_ascii=False)
    except UnicodeDecodeError:
        return "bytes" + repr(piece)[1:]


def print_run(ref: GreedyReference, run: ReferenceRun, top: int, out=sys.stdout) -> None:
    print("prompt: %s" % json.dumps(run.prompt, ensure_ascii=False), file=out)
    print("prompt_tokens (%d): %s" % (len(run.prompt_tokens), run.prompt_tokens), file=out)
    print("first-step top-%d logits:" % top, file=out)
    for token in top_k(run.first_logits, top):
        print("  %7d %10.4f  %s" % (token, run.first_logits[token], _show(ref.piece(token))), file=out)
    print("greedy tokens (%d): %s" % (len(run.tokens), run.tokens), file=out)
    print("step      id   margin  piece", file=out)
    for step, (token, margin) in enumerate(zip(run.tokens, run.margins)):
        eog = "  [end of generation]" if ref.is_end_of_generation(token) else ""
        print("%4d %7d %8.4f  %s%s" % (step, token, margin, _show(ref.piece(token)), eog), file=out)
    print("min margin: %.4f" % min(run.margins), file=out)
    print("text: %s" % json.dumps(run.text, ensure_ascii=False), file=out)


def print_tokenization(ref: GreedyReference, text: str, special: bool, out=sys.stdout) -> None:
    ids = ref.tokenize(text, add_bos=False, special=special)
    print("%s special=%s -> %s" % (json.dumps(text, ensure_ascii=False), special, ids), file=out)
    print("    pieces: %s" % " | ".join(_show(ref.piece(t)) for t in ids), file=out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prompts", nargs="*", help="raw prompts (default: the 4 test prompts)")
    parser.add_argument("--model", default=None, help="GGUF file (default: %s)" % default_model_path())
    parser.add_argument("--threads", type=int, default=N_THREADS, help="llama.cpp n_threads")
    parser.add_argument("-n", "--n-predict", type=int, default=N_PREDICT, help="greedy tokens to generate")
    parser.add_argument("--top", type=int, default=5, help="how many first-step logits to list")
    parser.add_argument("--tokenize", action="append", default=[], metavar="TEXT",
                        help="print the ids of TEXT (no BOS, special=True and special=False); repeatable")
    parser.add_argument("--tricky", action="store_true", help="print tokenization of the recorded tricky strings")
    parser.add_argument("--json-out", help="write {prompt_tokens, tokens, text} of the (single) prompt here")
    parser.add_argument("--logits-out", help="write the first-step logits of the (single) prompt as raw float32 LE")
    args = parser.parse_args(argv)

    model = pathlib.Path(args.model) if args.model else default_model_path()
    if not model.is_file():
        print("model file not found: %s (set EXO_HOME or pass --model)" % model, file=sys.stderr)
        return 2
    ref = GreedyReference(model, n_threads=args.threads)
    print("# %s, model %s, n_ctx=%d, n_threads=%d" % (llama_cpp_version(), model, N_CTX, args.threads))

    if args.tokenize or args.tricky:
        for text in list(args.tokenize) + (list(TRICKY_STRINGS) if args.tricky else []):
            print_tokenization(ref, text, special=True)
            print_tokenization(ref, text, special=False)
        if not args.prompts:
            return 0

    prompts = args.prompts or list(PROMPTS)
    if (args.json_out or args.logits_out) and len(prompts) != 1:
        print("--json-out/--logits-out need exactly one prompt", file=sys.stderr)
        return 2
    for index, prompt in enumerate(prompts):
        if index:
            print()
        run = ref.run(prompt, args.n_predict)
        print_run(ref, run, args.top)
        if args.json_out:
            with open(args.json_out, "w", encoding="utf-8") as f:
                json.dump({"prompt_tokens": run.prompt_tokens, "tokens": run.tokens, "text": run.text},
                          f, ensure_ascii=False)
        if args.logits_out:
            run.first_logits.astype("<f4").tofile(args.logits_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
