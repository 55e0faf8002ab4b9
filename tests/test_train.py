"""Whole tiny runs: bitwise reproducibility, seed semantics, what a run writes, divergence."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from gptx.config import ConfigError
from gptx.loop import build_training
from gptx.result import RunResult, load_result
from gptx.run import train

from conftest import typed_config

RESULT_KEYS = {
    "status", "intervention", "init_seed", "train_seed", "data_seed", "test_loss", "val_loss", "train_loss",
    "init_weights_sha256", "final_weights_sha256", "n_params", "steps", "tokens", "wall_seconds",
    "tokens_per_second", "device", "precision", "versions", "hostname", "config_sha256",
}


@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("baseline")
    return run_dir, train(typed_config(), run_dir)


def test_a_run_writes_exactly_the_declared_fields(baseline_run):
    run_dir, result = baseline_run
    written = json.loads((run_dir / "result.json").read_text())
    assert list(written) == list(RunResult().to_json()) == list(result)
    assert load_result(run_dir).to_json() == written


def test_run_writes_everything(baseline_run):
    run_dir, result = baseline_run
    assert result["status"] == "completed"
    assert RESULT_KEYS <= result.keys()
    assert json.loads((run_dir / "result.json").read_text())["final_weights_sha256"] == result["final_weights_sha256"]
    assert (result["steps"], result["tokens"]) == (4, 4 * 4 * 32)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4]
    assert {"step", "tokens", "train_loss", "lr", "grad_norm", "tokens_per_second"} <= lines[0].keys()
    assert "val_loss" in lines[1] and "val_loss" not in lines[0]
    assert (run_dir / "sample.txt").read_text().startswith("Every effort moves you")
    with safe_open(run_dir / "model.safetensors", "pt") as f:
        assert "gptx_config" in f.metadata() and "tok_emb.weight" in f.keys()
    assert not (run_dir / "checkpoints").exists()
    assert result["precision"].startswith("fp32") and result["device"].startswith("cpu")


def test_same_config_gives_bitwise_identical_weights(baseline_run, tmp_path):
    _, first = baseline_run
    second = train(typed_config(), tmp_path)
    assert second["final_weights_sha256"] == first["final_weights_sha256"]
    assert second["test_loss"] == first["test_loss"]


def test_init_seed_fixes_initial_weights_whatever_train_seed(baseline_run, tmp_path):
    _, base = baseline_run
    runs = [train(typed_config(f"train_seed={s}"), tmp_path / str(s)) for s in (23, 67)]
    assert {r["init_weights_sha256"] for r in runs} == {base["init_weights_sha256"]}
    # Dropout streams differ, so training ends elsewhere.
    assert len({r["final_weights_sha256"] for r in runs} | {base["final_weights_sha256"]}) == 3


def test_other_init_seed_and_qkv_bias_change_initial_weights(baseline_run, tmp_path):
    _, base = baseline_run
    other_seed = train(typed_config("init_seed=43", "train.max_steps=1"), tmp_path / "seed")
    qkv = train(typed_config("intervention=qkv_bias", "train.max_steps=1"), tmp_path / "qkv")
    assert other_seed["init_weights_sha256"] != base["init_weights_sha256"]
    assert qkv["init_weights_sha256"] != base["init_weights_sha256"]
    shared = base["init_param_sha256"].keys() & qkv["init_param_sha256"].keys()
    assert all(base["init_param_sha256"][k] == qkv["init_param_sha256"][k] for k in shared)


def test_train_seed_null_continues_the_init_stream(tmp_path):
    # Under the sequential scheme with train_seed null, the dropout stream follows the init draws, so
    # re-seeding with the init seed right after the build is not the same run.
    cont = train(typed_config("model.init_scheme=sequential", "train.max_steps=2"), tmp_path / "a")
    reseeded = train(typed_config("model.init_scheme=sequential", "train.max_steps=2", "train_seed=42"),
                     tmp_path / "b")
    assert cont["init_weights_sha256"] == reseeded["init_weights_sha256"]
    assert cont["final_weights_sha256"] != reseeded["final_weights_sha256"]


@pytest.mark.parametrize(("intervention", "check"), [
    ("weight_decay", lambda run: run.optimizer.param_groups[0]["weight_decay"] == 0.01),
    ("weight_decay_cerebras", lambda run: run.optimizer.param_groups[0]["weight_decay"] == 0.33724),
    ("baseline", lambda run: run.optimizer.param_groups[0]["weight_decay"] == 0.1),
    ("no_dropout", lambda run: all(m.p == 0.0 for m in run.model.modules() if isinstance(m, torch.nn.Dropout))
     and run.model.trf_blocks[0].att.dropout == 0.0),
    ("qkv_bias", lambda run: run.model.trf_blocks[0].att.W_query.bias is not None),
    ("weight_tying", lambda run: run.model.out_head.weight is run.model.tok_emb.weight),
])
def test_intervention_reaches_the_model_and_optimizer(intervention, check, tmp_path):
    assert check(build_training(typed_config(f"intervention={intervention}"), tmp_path))


def test_grad_clip_changes_the_update_and_counts_the_steps_it_was_active(tmp_path):
    clipped = train(typed_config("train.grad_clip=0.001", "train.max_steps=2"), tmp_path / "clip")
    free = train(typed_config("train.max_steps=2"), tmp_path / "free")
    # The logged norm is the pre-clip norm: above the threshold, so clipping was active.
    records = [json.loads(x) for x in (tmp_path / "clip" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["grad_norm"] > 0.001 for r in records)
    assert [r["grad_clip_active_steps"] for r in records] == [1, 2]
    assert clipped["grad_clip_active_steps"] == 2
    assert clipped["grad_norm_max"] == pytest.approx(max(r["grad_norm"] for r in records), rel=1e-6)
    assert clipped["final_weights_sha256"] != free["final_weights_sha256"]
    assert free["grad_clip_active_steps"] is None and free["grad_norm_max"] is None
    assert "grad_clip_active_steps" not in json.loads((tmp_path / "free" / "metrics.jsonl").read_text().splitlines()[0])


def test_a_resumed_run_counts_clipping_as_an_uninterrupted_one(tmp_path, monkeypatch):
    # A threshold between the steps' norms, so some steps clip and some do not.
    cfg = typed_config("train.grad_clip=0.6", "train.max_steps=6", "train.checkpoint_every=2")
    whole = train(cfg, tmp_path / "whole")
    monkeypatch.setenv("GPTX_FAULT", "step@4=TERM")
    with pytest.raises(SystemExit):
        train(cfg, tmp_path / "cut")
    monkeypatch.delenv("GPTX_FAULT")
    resumed = train(cfg, tmp_path / "cut")
    assert 0 < whole["grad_clip_active_steps"] < 6
    for key in ("grad_clip_active_steps", "grad_norm_max", "final_weights_sha256", "test_loss"):
        assert resumed[key] == whole[key], key
    per_step = [[(r["step"], r.get("train_loss"), r.get("grad_clip_active_steps"))
                 for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())]
                for d in (tmp_path / "whole", tmp_path / "cut")]
    assert per_step[0] == per_step[1]


def test_per_sequence_test_losses_average_to_the_test_loss(baseline_run):
    run_dir, result = baseline_run
    losses = np.load(run_dir / "test_losses.npy", allow_pickle=False)
    assert losses.dtype == np.float32 and losses.shape == (8,)  # data.test_sequences=8, in test-set order
    assert float(losses.astype(np.float64).mean()) == pytest.approx(result["test_loss"], rel=1e-6)
    assert result["test_tokens"] == 8 * 32


def test_a_non_finite_test_loss_makes_the_run_diverged(tmp_path, monkeypatch):
    import gptx.run

    def nan_losses(*args, **kwargs):
        return float("nan"), np.full(8, np.nan, dtype=np.float32)

    monkeypatch.setattr(gptx.run, "split_losses", nan_losses)
    result = train(typed_config("train.max_steps=1"), tmp_path)
    assert (result["status"], result["error"]) == ("diverged", "non-finite test loss")
    saved = json.loads((tmp_path / "result.json").read_text())
    assert (saved["status"], saved["test_loss"]) == ("diverged", None)


def test_nan_loss_stops_before_the_update(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTX_FAULT", "nan@3")
    result = train(typed_config(), tmp_path)
    assert result["status"] == "diverged" and result["diverged_at_step"] == 3
    assert "non-finite loss" in result["error"]
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "diverged"


def test_completed_run_is_skipped_not_overwritten(baseline_run):
    run_dir, first = baseline_run
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    again = train(typed_config(), run_dir)
    assert again["skipped"] and again["final_weights_sha256"] == first["final_weights_sha256"]
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before
    with pytest.raises(ConfigError, match="completed run of another config"):
        train(typed_config("init_seed=1"), run_dir)


@pytest.mark.slow
def test_compiled_run_completes_and_is_reproducible(tmp_path):
    first = train(typed_config("train.compile=true", "train.max_steps=2"), tmp_path / "a")
    second = train(typed_config("train.compile=true", "train.max_steps=2"), tmp_path / "b")
    assert first["status"] == second["status"] == "completed"
    assert first["final_weights_sha256"] == second["final_weights_sha256"]
