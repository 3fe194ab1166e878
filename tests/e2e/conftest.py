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


@pytest.fixture(scope="session")
def default_model():
    home = pathlib.Path(os.environ.get("EXO_HOME", pathlib.Path.home() / ".cache" / "exo-node"))
    path = home / "models" / "gemma-3-270m-q4_k_m.gguf"
    if not path.exists():
        pytest.skip(f"default model not installed at {path}: run scripts/setup.sh")
    return str(path)
