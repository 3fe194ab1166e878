"""The exo-node binary as a user runs it: help, generate, chat, inspect, and bad inputs."""
import json
import os
import subprocess


def run(binary, *args, stdin=None, timeout=300):
    return subprocess.run([binary, *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout)


def test_help_lists_every_command_and_flag(exo_node_bin):
    result = run(exo_node_bin, "--help")
    assert result.returncode == 0
    out = result.stdout + result.stderr
    for word in ["generate", "chat", "inspect", "--model", "--prompt", "--temp", "--seed",
                 "--threads", "--ctx"]:
        assert word in out, word


def test_no_command_and_unknown_command_are_usage_errors(exo_node_bin):
    assert run(exo_node_bin).returncode == 2
    result = run(exo_node_bin, "fly")
    assert result.returncode == 2
    assert "unknown command 'fly'" in result.stderr


def test_generate_greedy_streams_text_and_reports_speed(exo_node_bin, default_model, tmp_path):
    out_json = tmp_path / "out.json"
    result = run(exo_node_bin, "generate", "--model", default_model, "--prompt",
                 "Water boils at 100 degrees", "-n", "12", "--temp", "0", "--json_out",
                 str(out_json))
    assert result.returncode == 0, result.stderr
    data = json.loads(out_json.read_text())
    assert len(data["tokens"]) == 12
    assert data["text"].strip() and data["text"] in result.stdout
    assert "tok/s" in result.stderr and "start to first token" in result.stderr


def test_generate_same_seed_same_output(exo_node_bin, default_model):
    args = ["generate", "--model", default_model, "--prompt", "Tell me about cats.", "-n", "16",
            "--temp", "1.0", "--seed", "1234"]
    first, second = run(exo_node_bin, *args), run(exo_node_bin, *args)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout


def test_chat_keeps_a_conversation_and_exits_cleanly(exo_node_bin, default_model):
    # The default model is a small base model: its chat answers are not worth asserting on, so
    # this checks the mechanics (two turns through the chat template, /reset, /exit).
    result = run(exo_node_bin, "chat", "--model", default_model, "--temp", "0", "-n", "12",
                 stdin="Hello there.\nTell me more.\n/reset\nAgain.\n/exit\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("> ") >= 4
    assert result.stderr.count(" tokens, ") == 3, result.stderr
    assert "error" not in result.stderr


def test_chat_ends_on_end_of_input(exo_node_bin, default_model):
    result = run(exo_node_bin, "chat", "--model", default_model, "-n", "4", stdin="Hi\n")
    assert result.returncode == 0, result.stderr


def test_inspect_prints_metadata_and_tensors(exo_node_bin, default_model):
    result = run(exo_node_bin, "inspect", default_model)
    assert result.returncode == 0, result.stderr
    assert "gemma3.block_count" in result.stdout
    assert "token_embd.weight" in result.stdout and "Q8_0" in result.stdout


def test_bad_inputs_give_one_line_errors(exo_node_bin, tmp_path):
    not_gguf = tmp_path / "notes.txt"
    not_gguf.write_text("just some text\n")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(b"GGUF\x03\x00\x00\x00\x05")
    cases = [
        ("generate", "--model", str(tmp_path / "missing.gguf"), "--prompt", "hi"),
        ("generate", "--model", str(not_gguf), "--prompt", "hi"),
        ("generate", "--model", str(truncated), "--prompt", "hi"),
        ("inspect", str(tmp_path / "missing.gguf")),
        ("inspect", str(not_gguf)),
        ("inspect", str(truncated)),
    ]
    for args in cases:
        result = run(exo_node_bin, *args)
        assert result.returncode == 1, args
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("exo-node: error: "), (args, result.stderr)


def test_bench_reports_every_figure(exo_node_bin, default_model):
    result = run(exo_node_bin, "bench", "--model", default_model, "--pp", "16", "--tg", "8",
                 "--reps", "2", "--json")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    for key in ["pp16", "tg8"]:
        assert figures[key]["tokens_per_second"] > 0
    assert figures["bytes_per_token"] > 100 * 2**20  # Gemma 3 270M reads ~235 MiB a token
    assert figures["memory_bandwidth_bytes_per_second"] > 1e8
    assert figures["working_set_bandwidth_bytes_per_second"] > 1e8
    # The roofline takes the larger of the two bandwidths.
    best = max(figures["memory_bandwidth_bytes_per_second"],
               figures["working_set_bandwidth_bytes_per_second"])
    assert abs(figures["roofline_tokens_per_second"] * figures["bytes_per_token"] - best) < 1e-6 * best
    assert 0 < figures["roofline_fraction"]
    size_mib = os.path.getsize(default_model) / 2**20
    assert abs(figures["model_file_mib"] - size_mib) < 0.01
    assert abs(figures["rss_budget_mib"] - (size_mib + figures["kv_cache_mib"] + 64)) < 0.01
    assert figures["peak_rss_mib"] > 0 and figures["cold_start_seconds"] > 0
    assert "repetition 2/2" in result.stderr  # progress is shown while it runs


def test_bench_at_depth_counts_the_cached_keys_a_token_reads(exo_node_bin, default_model):
    plain = json.loads(run(exo_node_bin, "bench", "--model", default_model, "--pp", "8", "--tg",
                           "4", "--reps", "1", "--json").stdout)
    result = run(exo_node_bin, "bench", "--model", default_model, "--pp", "8", "--tg", "4",
                 "--depth", "40", "--reps", "1", "--json")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["depth"] == 40 and plain["depth"] == 0 and plain["kv_bytes_per_token"] == 0
    assert figures["pp8"]["tokens_per_second"] > 0 and figures["tg4"]["tokens_per_second"] > 0
    # Gemma 3 270M: 18 layers, one kv head of 256 for keys and for values, f16; mid-test the
    # decode step sees 40 + 4/2 + 1 positions, all inside the 512-token window.
    assert figures["kv_bytes_per_token"] == 18 * 43 * (256 + 256) * 2
    assert figures["bytes_per_token"] == plain["bytes_per_token"] + figures["kv_bytes_per_token"]
    assert "filling 40 tokens of context" in result.stderr
    text = run(exo_node_bin, "bench", "--model", default_model, "--pp", "8", "--tg", "4",
               "--depth", "40", "--reps", "1")
    assert "pp8 @ d40" in text.stdout and "tg4 @ d40" in text.stdout, text.stdout
    bad = run(exo_node_bin, "bench", "--model", default_model, "--depth", "-3")
    assert bad.returncode == 1 and "--depth must be 0 or more" in bad.stderr
