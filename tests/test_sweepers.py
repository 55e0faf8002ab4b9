"""Hydra's optimising sweepers drive gptx (optimized_metric), and experiment presets work with or without `+`."""

from __future__ import annotations

import json

import pytest
import yaml

from gptx.config import normalize_overrides
from gptx.train import optimized_value

from conftest import TINY, run_gptx


def test_the_optimised_value_is_the_metric_of_a_completed_run_else_nan():
    assert optimized_value({"status": "completed", "test_loss": 3.5}, "test_loss") == 3.5
    assert optimized_value({"status": "diverged", "test_loss": 3.5}, "test_loss") != optimized_value(
        {"status": "diverged", "test_loss": 3.5}, "test_loss")  # NaN: optuna records a failed trial
    assert optimized_value({"status": "completed", "test_loss": None}, "test_loss") != 0.0


def test_plus_experiment_and_experiment_are_one_choice():
    assert normalize_overrides(["+experiment=noise", "+experiment/noise_run=init22", "init_seed=1"]) == [
        "experiment=noise", "+experiment/noise_run=init22", "init_seed=1"]


@pytest.mark.slow
def test_experiment_without_plus_composes_like_the_plus_form(tmp_path):
    outs = [run_gptx(f"{plus}experiment=noise_grid_miniature", "--cfg", "job", cwd=tmp_path) for plus in ("+", "")]
    assert [o.returncode for o in outs] == [0, 0], outs[0].stderr + outs[1].stderr
    assert outs[0].stdout == outs[1].stdout and "init_seed" in outs[0].stdout


def test_an_unknown_optimized_metric_is_one_line(tmp_path):
    proc = run_gptx(*TINY, "optimized_metric=accuracy", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == ("gptx: error: optimized_metric=accuracy: choose one of test_loss, "
                                                    "val_loss, train_loss, tokens_per_second, wall_seconds")


@pytest.mark.slow
def test_a_real_optuna_sweep_minimises_the_test_loss(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = tmp_path / "sweep"
    proc = run_gptx("-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=1",
                    "hydra.sweeper.direction=minimize", "hydra.sweeper.sampler.seed=0",
                    "train.lr=interval(0.0001,0.01)", "optimized_metric=test_loss", *TINY, "train.max_steps=2",
                    f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = [json.loads(p.read_text())["test_loss"] for p in sweep.rglob("result.json")]
    assert len(losses) == 3
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == min(losses)
