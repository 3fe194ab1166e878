"""exo-node against llama.cpp (llama-cpp-python) on the default model, greedy decoding.

For each fixed raw prompt, `exo-node generate` must give llama.cpp's prompt token ids,
llama.cpp's 32 greedy tokens, and first-step logits close to llama.cpp's (tolerances
below; how they were chosen is in README.md next to this file).

    python3 -m pytest -v tests/e2e/reference/test_llamacpp_reference.py

Skips (with the reason) when llama_cpp is not importable, the model file is missing
($EXO_HOME/models/ or ~/.cache/exo-node/models/), or the exo-node binary is missing
($EXO_NODE_BIN, default <repo>/build/exo-node). The self-consistency tests of the
reference run without the binary.
"""

import dataclasses
import json
import os
import pathlib
import subprocess
from typing import Dict, List

import numpy as np
import pytest

import dump_llamacpp as ref_lib

try:
    import llama_cpp  # noqa: F401  pylint: disable=unused-import

    LLAMA_CPP_IMPORT_ERROR = None
except ImportError as error:  # pragma: no cover - depends on the machine
    LLAMA_CPP_IMPORT_ERROR = error

# Tolerances on the first-step logits (float32[vocab]) of exo-node against llama.cpp.
# llama.cpp disagrees with itself by up to max|diff| 1.63, relative RMS 6.9e-2 and
# 1 - cosine 2.3e-3 on these prompts when only the arithmetic changes (F32 instead of
# F16 KV cache, flash attention, prompt token by token); thread count changes nothing.
# An independent runtime rounds differently again, so the limits are about twice
# llama.cpp's own worst spread. A real bug (wrong RoPE, norm, scale, tensor) moves the
# logits far more: cosine well below 0.99.
LOGITS_MAX_ABS_DIFF = 3.0
LOGITS_MAX_RELATIVE_RMS = 0.15  # ||exo - ref||_2 / ||ref||_2
LOGITS_MIN_COSINE = 0.995
TOP_K_SET = 10
# The top-10 sets must be equal, except that ids whose llama.cpp logit is within this
# much of llama.cpp's 10th-largest logit may swap in or out: llama.cpp's own variants
# move the leading logits by up to ~0.5, so a set boundary inside that band is noise.
TOP_K_BOUNDARY_SLACK = 0.5

# The reference's own arithmetic variants must stay well inside the limits above.
SPREAD_SAFETY_FACTOR = 1.5

N_PREDICT = ref_lib.N_PREDICT
EXO_NODE_TIMEOUT_S = 600


@dataclasses.dataclass
class ExoRun:
    prompt_tokens: List[int]
    tokens: List[int]
    text: str
    first_logits: np.ndarray


def _prompt_id(prompt: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in prompt[:24]).strip("_")


PROMPT_PARAMS = [pytest.param(p, id=_prompt_id(p)) for p in ref_lib.PROMPTS]


@pytest.fixture(scope="module")
def model_path() -> pathlib.Path:
    if LLAMA_CPP_IMPORT_ERROR is not None:
        pytest.skip("llama_cpp (llama-cpp-python) is not importable: %s; "
                    "install it with `pip install llama-cpp-python`" % LLAMA_CPP_IMPORT_ERROR)
    path = ref_lib.default_model_path()
    if not path.is_file():
        pytest.skip("model file %s is missing; run the set-up script or set EXO_HOME" % path)
    return path


@pytest.fixture(scope="module")
def reference(model_path):
    return ref_lib.GreedyReference(model_path)


@pytest.fixture(scope="module")
def reference_runs(reference) -> Dict[str, ref_lib.ReferenceRun]:
    cache: Dict[str, ref_lib.ReferenceRun] = {}

    def get(prompt: str) -> ref_lib.ReferenceRun:
        if prompt not in cache:
            cache[prompt] = reference.run(prompt, N_PREDICT)
        return cache[prompt]

    return get


@pytest.fixture(scope="module")
def exo_node_binary(model_path) -> pathlib.Path:
    del model_path  # only for its skips
    path = ref_lib.default_binary_path()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.skip("exo-node binary %s is missing or not executable; build it "
                    "(ninja -C build exo-node) or set EXO_NODE_BIN" % path)
    return path


@pytest.fixture(scope="module")
def exo_runs(exo_node_binary, model_path, reference, tmp_path_factory):
    cache: Dict[str, ExoRun] = {}
    failures: Dict[str, str] = {}  # run each prompt once, even when it fails

    def get(prompt: str) -> ExoRun:
        if prompt in cache:
            return cache[prompt]
        if prompt in failures:
            pytest.fail(failures[prompt])
        try:
            cache[prompt] = run_exo_node(prompt)
        except pytest.fail.Exception as error:
            failures[prompt] = str(error)
            raise
        return cache[prompt]

    def run_exo_node(prompt: str) -> ExoRun:
        work = tmp_path_factory.mktemp("exo_generate")
        json_out = work / "out.json"
        logits_out = work / "logits.f32"
        command = [str(exo_node_binary), "generate", "--model", str(model_path), "--prompt", prompt,
                   "-n", str(N_PREDICT), "--temp", "0",
                   "--json_out", str(json_out), "--logits_out", str(logits_out)]
        completed = subprocess.run(command, capture_output=True, text=True,
                                   timeout=EXO_NODE_TIMEOUT_S, check=False)
        if completed.returncode != 0:
            pytest.fail("%s exited with %d\nstderr (tail):\n%s" % (
                " ".join(command), completed.returncode, completed.stderr[-4000:]))
        try:
            result = json.loads(json_out.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            pytest.fail("exo-node did not write a readable --json_out file %s: %s" % (json_out, error))
        if not logits_out.is_file():
            pytest.fail("exo-node did not write --logits_out file %s" % logits_out)
        raw = logits_out.read_bytes()
        if len(raw) != 4 * reference.n_vocab:
            pytest.fail("logits file has %d bytes, expected %d (vocab %d x float32)"
                        % (len(raw), 4 * reference.n_vocab, reference.n_vocab))
        run = ExoRun(prompt_tokens=[int(t) for t in result["prompt_tokens"]],
                     tokens=[int(t) for t in result["tokens"]],
                     text=result["text"],
                     first_logits=np.frombuffer(raw, dtype="<f4").astype(np.float32))
        return run

    return get


def top_k_set_mismatch(actual: np.ndarray, expected: np.ndarray) -> List[int]:
    """Ids in exactly one of the two top-k sets whose llama.cpp logit is not within
    TOP_K_BOUNDARY_SLACK of llama.cpp's k-th largest logit (empty: the sets agree)."""
    expected_top = set(ref_lib.top_k(expected, TOP_K_SET))
    actual_top = set(ref_lib.top_k(actual, TOP_K_SET))
    kth = float(np.sort(expected)[-TOP_K_SET])
    return sorted(t for t in expected_top ^ actual_top if abs(float(expected[t]) - kth) > TOP_K_BOUNDARY_SLACK)


def _describe(reference, token: int) -> str:
    return "%d %r" % (token, reference.piece(token))


# --- the reference itself: are the prompts and tolerances sound? ---------------------


@pytest.mark.parametrize("prompt", PROMPT_PARAMS)
def test_reference_has_no_end_of_generation_in_greedy_path(reference, reference_runs, prompt):
    # exo-node may stop at an end-of-generation token; the prompts are chosen so that
    # llama.cpp produces N_PREDICT ordinary tokens and the comparison is exact.
    run = reference_runs(prompt)
    assert len(run.tokens) == N_PREDICT
    eog = [t for t in run.tokens if reference.is_end_of_generation(t)]
    assert not eog, "greedy path contains end-of-generation tokens %s" % eog


def test_reference_arithmetic_variants_agree_within_tolerance(model_path, reference_runs):
    # llama.cpp with other arithmetic (1 thread, F32 KV cache, flash attention, prompt
    # token by token) must stay inside the tolerances with margin and give the same
    # greedy tokens and top-10 set: otherwise the prompts or limits are unfit.
    variants = {
        "n_threads=1": dict(n_threads=1),
        "F32 KV cache": dict(type_k=0, type_v=0),
        "flash attention": dict(flash_attn=True),
        "prompt token by token": dict(n_batch=1, n_ubatch=1),
    }
    problems = []
    for name, settings in variants.items():
        engine = ref_lib.GreedyReference(model_path, **settings)
        for prompt in ref_lib.PROMPTS:
            base = reference_runs(prompt)
            run = engine.run(prompt, N_PREDICT)
            stats = ref_lib.compare_logits(run.first_logits, base.first_logits)
            if stats["max_abs"] * SPREAD_SAFETY_FACTOR > LOGITS_MAX_ABS_DIFF:
                problems.append("%s %r: max_abs %.4f" % (name, prompt, stats["max_abs"]))
            if stats["rel_rms"] * SPREAD_SAFETY_FACTOR > LOGITS_MAX_RELATIVE_RMS:
                problems.append("%s %r: rel_rms %.4g" % (name, prompt, stats["rel_rms"]))
            if (1.0 - stats["cosine"]) * SPREAD_SAFETY_FACTOR > 1.0 - LOGITS_MIN_COSINE:
                problems.append("%s %r: cosine %.6f" % (name, prompt, stats["cosine"]))
            if run.prompt_tokens != base.prompt_tokens or run.tokens != base.tokens:
                problems.append("%s %r: greedy tokens differ" % (name, prompt))
            mismatch = top_k_set_mismatch(run.first_logits, base.first_logits)
            if mismatch:
                problems.append("%s %r: top-%d sets differ beyond the boundary slack: %s"
                                % (name, prompt, TOP_K_SET, mismatch))
        del engine
    assert not problems, "llama.cpp disagrees with itself:\n" + "\n".join(problems)


# --- exo-node against the reference ---------------------------------------------------


@pytest.mark.parametrize("prompt", PROMPT_PARAMS)
def test_prompt_tokens_match(reference_runs, exo_runs, prompt):
    assert exo_runs(prompt).prompt_tokens == reference_runs(prompt).prompt_tokens


@pytest.mark.parametrize("prompt", PROMPT_PARAMS)
def test_greedy_tokens_match(reference, reference_runs, exo_runs, prompt):
    expected = reference_runs(prompt)
    actual = exo_runs(prompt)
    if actual.tokens == expected.tokens:
        return
    step = next((i for i, (a, e) in enumerate(zip(actual.tokens, expected.tokens)) if a != e),
                min(len(actual.tokens), len(expected.tokens)))
    detail = "exo-node gave %d tokens, llama.cpp %d" % (len(actual.tokens), len(expected.tokens))
    if step < min(len(actual.tokens), len(expected.tokens)):
        detail = "first difference at step %d: exo-node %s, llama.cpp %s (llama.cpp top1-top2 margin there %.4f)" % (
            step, _describe(reference, actual.tokens[step]), _describe(reference, expected.tokens[step]),
            expected.margins[step])
    pytest.fail("%s\nexo-node: %s\nllama.cpp: %s" % (detail, actual.tokens, expected.tokens))


@pytest.mark.parametrize("prompt", PROMPT_PARAMS)
def test_text_is_detokenized_tokens(reference_runs, exo_runs, prompt):
    # llama.cpp's detokenize of the same ids, special tokens not rendered.
    expected = reference_runs(prompt)
    actual = exo_runs(prompt)
    if actual.tokens != expected.tokens:
        pytest.skip("token ids differ (see test_greedy_tokens_match); text comparison is moot")
    assert actual.text == expected.text


@pytest.mark.parametrize("prompt", PROMPT_PARAMS)
def test_first_step_logits_close(reference_runs, exo_runs, prompt):
    expected = reference_runs(prompt).first_logits
    actual = exo_runs(prompt).first_logits
    assert actual.shape == expected.shape
    assert np.all(np.isfinite(actual)), "non-finite logits at ids %s" % np.flatnonzero(~np.isfinite(actual))[:10]
    stats = ref_lib.compare_logits(actual, expected)
    worst = int(np.argmax(np.abs(actual.astype(np.float64) - expected)))
    summary = "max_abs %.4f (id %d: exo %.4f, llama.cpp %.4f), rel_rms %.4g, cosine %.6f, mean shift %.4f" % (
        stats["max_abs"], worst, actual[worst], expected[worst], stats["rel_rms"], stats["cosine"],
        float(np.mean(actual.astype(np.float64) - expected)))
    assert stats["max_abs"] <= LOGITS_MAX_ABS_DIFF, summary
    assert stats["rel_rms"] <= LOGITS_MAX_RELATIVE_RMS, summary
    assert stats["cosine"] >= LOGITS_MIN_COSINE, summary


@pytest.mark.parametrize("prompt", PROMPT_PARAMS)
def test_first_step_top10_same_set(reference, reference_runs, exo_runs, prompt):
    expected_logits = reference_runs(prompt).first_logits
    actual_logits = exo_runs(prompt).first_logits
    expected = ref_lib.top_k(expected_logits, TOP_K_SET)
    actual = ref_lib.top_k(actual_logits, TOP_K_SET)
    mismatch = top_k_set_mismatch(actual_logits, expected_logits)
    if not mismatch:
        return
    rows = ["%8d %10.4f %10.4f  %r" % (t, actual_logits[t], expected_logits[t], reference.piece(t))
            for t in sorted(set(actual) | set(expected), key=lambda t: -expected_logits[t])]
    pytest.fail("top-%d sets differ beyond the boundary slack %.2f (ids %s); only exo-node: %s, only llama.cpp: %s\n      id    exo-node  llama.cpp\n%s" % (
        TOP_K_SET, TOP_K_BOUNDARY_SLACK, mismatch, sorted(set(actual) - set(expected)), sorted(set(expected) - set(actual)), "\n".join(rows)))
