"""A run is never resumed across a change of gptx's arithmetic: the checkpoint says which one wrote it."""

from __future__ import annotations

import json

import pytest
import torch

from gptx import checkpoint as ckpt
from gptx.model import build_model
from gptx.train import train

from conftest import typed_config


def written_by(tmp_path, version: int | None):
    """A checkpoint in tmp_path whose meta.json says `version` (None: no field, as before versions existed)."""
    cfg = typed_config()
    model = build_model(cfg.model, cfg.init_seed)
    path = ckpt.save_checkpoint(tmp_path, model, torch.optim.AdamW(model.parameters()), {},
                                ckpt.TrainingState(ckpt.LoopPosition(step=1), config_sha256="c",
                                                   init_weights_sha256="w"))
    meta = json.loads((path / ckpt.META_FILE).read_text())
    if version is None:
        del meta["numerics_version"]
    else:
        meta["numerics_version"] = version
    meta["meta_sha256"] = ckpt._meta_sha256(meta)
    (path / ckpt.META_FILE).write_text(json.dumps(meta))
    return path


def test_a_checkpoint_of_this_arithmetic_loads(tmp_path):
    written_by(tmp_path, ckpt.NUMERICS_VERSION)
    assert ckpt.load_latest(tmp_path, "c").state.step == 1


@pytest.mark.parametrize("version", [None, 1])
def test_an_older_arithmetics_checkpoint_is_refused_with_the_reason(tmp_path, version):
    written_by(tmp_path, version)
    with pytest.raises(ckpt.CheckpointError, match="arithmetic version 1, this gptx computes version 2"):
        ckpt.load_latest(tmp_path, "c")


def test_results_record_the_arithmetic_and_the_allocator(tmp_path):
    result = train(typed_config("train.max_steps=1"), tmp_path)
    assert result["numerics_version"] == ckpt.NUMERICS_VERSION
    assert set(result["allocator"]) >= {"applied"}
