"""Shared fixtures for the end-to-end tests: the exo-node binary and the default model."""
import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def exo_node_bin():
    path = pathlib.Path(os.environ.get("EXO_NODE_BIN", REPO / "build" / "exo-node"))
    if not path.exists():
        pytest.skip(f"exo-node binary not found at {path}: build it (ninja -C build exo-node) "
                    "or set EXO_NODE_BIN")
    return str(path)


def installed_model(file_name):
    """The path of a model scripts/setup.sh installs; skips the test when it is absent."""
    home = pathlib.Path(os.environ.get("EXO_HOME", pathlib.Path.home() / ".cache" / "exo-node"))
    path = home / "models" / file_name
    if not path.exists():
        pytest.skip(f"model not installed at {path}: run scripts/setup.sh")
    return str(path)


@pytest.fixture(scope="session")
def default_model():
    return installed_model("gemma-3-270m-q4_k_m.gguf")


@pytest.fixture(scope="session")
def smol_model():
    """SmolLM2 135M Instruct (llama architecture, byte-level BPE), the second test model."""
    return installed_model("SmolLM2-135M-Instruct.Q4_1.gguf")
