"""Shared fixtures: a tiny, fast GPT config composed exactly as the command line would."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from gptx.config import CONF_DIR, GptxConfig, from_dictconfig, normalize_overrides, register_schema
from gptx.naming import register_resolvers

REPO = Path(__file__).resolve().parent.parent

# A model and run small enough for a few CPU steps a second, with dropout so RNG streams matter.
TINY = [
    "model.d_model=32", "model.n_heads=2", "model.n_layers=1", "model.context_length=32",
    "train.batch_size=4", "train.micro_batch_size=2", "train.max_steps=4", "train.eval_every=2",
    "train.eval_batches=1", "train.log_every=1", "train.sample_tokens=3", "data.test_sequences=8",
]

torch.set_num_threads(1)
# The suite never reads the developer's own ~/.config/gptx (tests that want a local config set their own).
os.environ["GPTX_CONFIG_DIR"] = str(REPO / "tests" / "no-local-config")
# Corpus digests (gptx.data.data_sha256) are cached in a folder of the suite's own, not ~/.cache.
os.environ["GPTX_CACHE_DIR"] = tempfile.mkdtemp(prefix="gptx-test-cache-")
register_schema()
register_resolvers()


def compose_config(*overrides: str, tiny: bool = True) -> DictConfig:
    """Compose gptx's config with command-line-style overrides (TINY first unless tiny=False)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=normalize_overrides([*(TINY if tiny else []), *overrides]))


def typed_config(*overrides: str, tiny: bool = True) -> GptxConfig:
    """compose_config, validated into the dataclass schema."""
    return from_dictconfig(compose_config(*overrides, tiny=tiny))


def run_gptx(*args: str, cwd: Path, module: str = "gptx.train", timeout: float = 600,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `python -m <module> ARGS` in a subprocess the way a user would."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


@pytest.fixture
def tiny():
    """Factory for tiny typed configs."""
    return typed_config


@pytest.fixture
def no_unpickling(monkeypatch):
    """Fail the test if anything unpickles (pickle or torch.load) while it runs."""
    def refuse(*args, **kwargs):
        pytest.fail("something tried to unpickle a file from the run folder")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)


class Bomb:
    """Unpickling this creates the marker file: proof that something unpickled it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))
