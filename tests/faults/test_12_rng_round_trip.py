"""Scenario 12: RNG round trip: all states, data position and scaler saved and restored without pickle;
a missing entry raises; tied embedding/head survive save and load.

tests/test_seeding.py round-trips capture_rng_state() through `torch.load(weights_only=True)` and
checks that restore_rng_state() refuses a dict without `numpy.keys`. Here the same facts end to end,
in-process: a run stopped by SIGTERM (GPTX_FAULT) leaves a checkpoint whose state.safetensors holds
every RNG stream of rank 0; taking out any one of them makes the resume raise; the resume reads
nothing through pickle; and with `intervention=weight_tying` the head is still the embedding matrix
after a restore and the resumed run ends bit-identical. Repeated on CUDA (bf16, and fp16 with its
GradScaler) when a GPU is present.
"""

from __future__ import annotations

import json
import pickle
import signal
from pathlib import Path

import pytest
import torch
from faultkit import per_step, typed_config
from safetensors import safe_open
from safetensors.torch import load_file

import gptx.checkpoint as ckpt
import gptx.loop
from gptx.config import config_sha256, to_plain_dict
from gptx.loop import build_training, resume_from
from gptx.run import train
from gptx.seeding import capture_rng_state
from gptx.weights import load_weights

RUN = ("train.max_steps=6", "train.checkpoint_every=2", "train.eval_every=3")
RNG_KEYS = ["python.version", "python.state", "python.gauss", "numpy.keys", "numpy.pos_has_gauss", "numpy.gauss",
            "torch.cpu"]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
PRECISIONS = [
    pytest.param(("train.device=cpu",), id="cpu"),
    pytest.param(("train.device=cuda",), id="cuda_bf16", marks=CUDA),
    pytest.param(("train.device=cuda", "train.amp_dtype=fp16"), id="cuda_fp16", marks=CUDA),
]


def expected_rng_keys(precision: tuple[str, ...] = ()) -> set[str]:
    """The run's own GPU only (not every visible one), and none for a CPU run."""
    cuda = ["torch.cuda"] if "train.device=cuda" in precision else []
    return {f"rank0.{k}" for k in RNG_KEYS + cuda}


def stop_before_step_4(cfg, run_dir: Path, monkeypatch) -> Path:
    """Train until SIGTERM arrives before step 4; return the stop checkpoint (step 3)."""
    monkeypatch.setenv("GPTX_FAULT", "step@4=TERM")
    with pytest.raises(SystemExit) as stopped:
        train(cfg, run_dir)
    monkeypatch.delenv("GPTX_FAULT")
    assert stopped.value.code == 128 + signal.SIGTERM
    assert [p.name for p in ckpt.list_checkpoints(run_dir)] == ["step_00000002", "step_00000003"]
    return ckpt.list_checkpoints(run_dir)[-1]


def forbid_pickle(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint was read through pickle")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_scenario_12_a_checkpoint_holds_every_rng_stream_the_data_position_and_the_scaler(
        tmp_path, monkeypatch, precision):
    cfg = typed_config(*RUN, *precision)
    newest = stop_before_step_4(cfg, tmp_path, monkeypatch)
    forbid_pickle(monkeypatch)
    device = torch.device("cuda" if "train.device=cuda" in precision else "cpu")
    assert expected_rng_keys(precision) == {f"rank0.{k}" for k in capture_rng_state(device)}  # the list is complete
    with safe_open(str(newest / "state.safetensors"), framework="pt") as f:
        rng_keys = {key.removeprefix("rng.") for key in f.keys() if key.startswith("rng.")}
    assert rng_keys == expected_rng_keys(precision)
    meta = json.loads((newest / "meta.json").read_text())
    # The data position is the step: each step's batch is a pure function of (data_seed, step).
    assert (meta["step"], meta["world_size"]) == (3, 1)
    if "train.amp_dtype=fp16" in precision:
        assert meta["scaler"]["scale"] > 0 and "_growth_tracker" in meta["scaler"]
    else:
        assert meta["scaler"] is None  # no GradScaler in this precision
    assert all(isinstance(t, torch.Tensor) for t in load_file(str(newest / "state.safetensors")).values())


def test_scenario_12_a_missing_rng_entry_makes_the_resume_raise(tmp_path, monkeypatch):
    cfg = typed_config(*RUN)
    stop_before_step_4(cfg, tmp_path, monkeypatch)
    cfg_sha = config_sha256(to_plain_dict(cfg))
    run = build_training(cfg, tmp_path)
    for key in sorted(expected_rng_keys()):
        checkpoint = ckpt.load_latest(tmp_path, cfg_sha)
        del checkpoint.tensors[f"rng.{key}"]
        with pytest.raises(RuntimeError, match=f"lacks \\['{key.removeprefix('rank0.')}'\\]"):
            resume_from(run, checkpoint)  # ckpt.restore, then seeding.restore_rng_state

    # The same from disk: checkpoints saved without the torch CPU stream (by a gptx that forgot it).
    def capture_all_but_torch_cpu(device=None):
        return {k: v for k, v in capture_rng_state(device).items() if k != "torch.cpu"}

    monkeypatch.setattr(gptx.loop, "capture_rng_state", capture_all_but_torch_cpu)
    stop_before_step_4(cfg, tmp_path / "forgetful", monkeypatch)
    monkeypatch.undo()
    metrics = (tmp_path / "forgetful" / "metrics.jsonl").read_text()
    with pytest.raises(RuntimeError, match=r"lacks \['torch.cpu'\]: cannot resume bit-exactly"):
        train(cfg, tmp_path / "forgetful")
    assert (tmp_path / "forgetful" / "metrics.jsonl").read_text() == metrics  # nothing retrained


@pytest.mark.parametrize("precision", PRECISIONS)
def test_scenario_12_tied_weights_survive_save_and_resume_without_pickle(tmp_path, monkeypatch, precision):
    cfg = typed_config("intervention=weight_tying", *RUN, *precision)
    reference = train(cfg, tmp_path / "reference")
    run_dir = tmp_path / "run"
    newest = stop_before_step_4(cfg, run_dir, monkeypatch)
    forbid_pickle(monkeypatch)
    with safe_open(str(newest / "state.safetensors"), framework="pt") as f:
        model_keys = {k for k in f.keys() if k.startswith("model.")}
    assert "model.tok_emb.weight" in model_keys and "model.out_head.weight" not in model_keys  # stored once

    run = build_training(cfg, run_dir)
    checkpoint = ckpt.load_latest(run_dir, config_sha256(to_plain_dict(cfg)))
    ckpt.restore(checkpoint, run.model, run.optimizer)
    assert run.model.out_head.weight is run.model.tok_emb.weight
    assert torch.equal(run.model.out_head.weight.detach().cpu(), checkpoint.tensors["model.tok_emb.weight"])

    resumed = train(cfg, run_dir)
    assert resumed["status"] == "completed"
    assert resumed["final_weights_sha256"] == reference["final_weights_sha256"]
    assert resumed["test_loss"] == reference["test_loss"]
    assert per_step(run_dir) == per_step(tmp_path / "reference")
    final = build_training(cfg, tmp_path / "reload").model
    load_weights(final, run_dir / "model.safetensors")
    assert final.out_head.weight is final.tok_emb.weight
