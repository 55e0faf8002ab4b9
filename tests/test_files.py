"""Files gptx writes get the modes a plain open or mkdir would give them under the user's umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from gptx.checkpoint import LoopPosition, TrainingState, save_checkpoint
from gptx.files import umask, write_atomic
from gptx.model import build_model
from gptx.train import train

from conftest import typed_config


@pytest.fixture(params=[0o022, 0o077, 0o002])
def user_umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_umask_is_read_without_changing_it(user_umask):
    assert umask() == user_umask and umask() == user_umask


def test_atomic_writes_respect_the_umask(tmp_path, user_umask):
    write_atomic(tmp_path / "a.json", b"{}")
    (tmp_path / "plain.json").write_bytes(b"{}")
    assert mode(tmp_path / "a.json") == mode(tmp_path / "plain.json") == 0o666 & ~user_umask


def test_every_file_and_folder_of_a_run_is_as_readable_as_the_umask_allows(tmp_path):
    old = os.umask(0o022)
    try:
        train(typed_config("train.max_steps=2"), tmp_path / "run")
        cfg = typed_config()
        model = build_model(cfg.model, cfg.init_seed)
        save_checkpoint(tmp_path / "run", model, torch.optim.AdamW(model.parameters()), {},
                        TrainingState(LoopPosition(step=1), config_sha256="x", init_weights_sha256="y"))
    finally:
        os.umask(old)
    paths = [p for p in (tmp_path / "run").rglob("*")]
    assert {"result.json", "model.safetensors", "metrics.jsonl", "checkpoints", "meta.json"} <= {p.name for p in paths}
    for path in paths:
        assert mode(path) == (0o755 if path.is_dir() else 0o644), path
