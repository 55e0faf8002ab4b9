"""Scenario 5: NaN/Inf loss at step s: stop before the update, status says non-finite loss at step s;
other sweep jobs continue. With fp16 + GradScaler, inf gradients alone must not abort.

tests/test_train.py::test_nan_loss_stops_before_the_update checks one run in-process (no weights
written, status diverged) and tests/test_cli.py::test_divergence_exits_non_zero_with_the_step the
single-run exit status. Here: a 4-job sweep in which two jobs hit the NaN hook (`GPTX_FAULT=nan@2`,
in the environment, not the config) at step 2 and the two after them still run; diverged is a
finished experiment, so the sweep exits 0. The fp16 case needs CUDA: gptx computes in float32
without a GradScaler on CPU.
"""

from __future__ import annotations

import pytest
import torch
from faultkit import CALLBACK, TINY, per_step, result, run_gptx, runs_csv, saved_config, typed_config

import gptx.run
from gptx.result import find_run_dirs

pytestmark = pytest.mark.slow


def test_scenario_05_nan_at_step_2_stops_those_jobs_and_the_sweep_goes_on(tmp_path):
    assert not hasattr(typed_config().train, "fail_at_step")  # the hook is no config key
    # GPTX_FAULT reaches every job, so the NaN is aimed by run length: the 1-step jobs end before step 2.
    # Diverging jobs first: the completed ones run after them.
    proc = run_gptx("-m", "sweep=nan", *TINY, "train.max_steps=4,1", "init_seed=1,2", CALLBACK, cwd=tmp_path,
                    env={"GPTX_FAULT": "nan@2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "4 runs (2 completed, 2 diverged)" in proc.stdout
    sweep = tmp_path / "multirun_outputs" / "nan"
    rows = runs_csv(sweep)
    assert len(rows) == 4 == len(find_run_dirs(sweep))
    for name, row in rows.items():
        run_dir = sweep / name
        if saved_config(run_dir)["train"]["max_steps"] == 4:
            assert (row["status"], row["error"]) == ("diverged", "non-finite loss nan at step 2")
            assert result(run_dir)["diverged_at_step"] == 2
            assert [s for s, *_ in per_step(run_dir)] == [1]  # step 2's update never happened
            assert not (run_dir / "model.safetensors").exists()
        else:
            assert row["status"] == "completed" and float(row["test_loss"]) > 0
            assert [s for s, *_ in per_step(run_dir)] == [1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 + GradScaler runs only on CUDA in gptx")
def test_scenario_05_fp16_inf_gradients_are_skipped_not_fatal(tmp_path, monkeypatch):
    runs = []
    real_build_training = gptx.run.build_training

    def build_training_with_an_overflow(*args, **kwargs):
        run = real_build_training(*args, **kwargs)
        calls = []

        def overflow_once(grad):  # the 3rd backward = step 2's first micro-batch
            calls.append(1)
            if len(calls) != 3:
                return grad
            grad = grad.clone()
            grad.view(-1)[0] = float("inf")
            return grad

        run.model.tok_emb.weight.register_hook(overflow_once)
        runs.append(run)
        return run

    monkeypatch.setattr(gptx.run, "build_training", build_training_with_an_overflow)
    cfg = typed_config("train.device=cuda", "train.amp_dtype=fp16")
    out = gptx.run.train(cfg, tmp_path)
    assert out["status"] == "completed" and out["steps"] == 4, out.get("error")
    assert out["precision"].startswith("amp_fp16")
    [run] = runs
    assert run.scaler.is_enabled()
    # Starting from 2**16, every skipped step halves the scale (the tiny model may overflow by itself too).
    assert run.scaler.get_scale() <= 2.0**15
    assert all(torch.isfinite(p).all() for p in run.model.parameters())
