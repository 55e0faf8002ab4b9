"""A checkpoint manifest is checked against the data it describes and the run's plan, not only against itself.

Each case forges the newest checkpoint of a killed run *consistently* (values changed, then every hash in
meta.json recomputed, as a careful tamperer or a buggy tool would): a step past the plan, a string step,
bad optimizer groups, missing RNG streams, out-of-range counters. The forged checkpoint is skipped for
the one before, as a corrupt file is, and the run ends identical to one never interrupted.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import faultkit
import pytest
from faultkit import assert_identical, cli_run
from safetensors.torch import load_file, save_file

from gptx import checkpoint as ckpt

pytestmark = pytest.mark.slow

reference = faultkit.reference  # the shared uninterrupted run (a pytest fixture)


killed = faultkit.killed  # a run killed after its step-4 checkpoint (a pytest fixture)


def forge(checkpoint: Path, drop_tensors: str | None = None, rename: str | None = None, **changes) -> None:
    """Change meta.json values (and optionally drop tensors), then recompute every hash it holds."""
    meta = json.loads((checkpoint / "meta.json").read_text())
    if drop_tensors is not None:
        state = checkpoint / "state.safetensors"
        tensors = {k: v for k, v in load_file(str(state)).items() if not k.startswith(drop_tensors)}
        save_file(tensors, str(state))
        meta["state_sha256"] = hashlib.sha256(state.read_bytes()).hexdigest()
    meta.update(changes)
    meta["meta_sha256"] = ckpt._meta_sha256(meta)
    (checkpoint / "meta.json").write_text(json.dumps(meta))
    if rename is not None:
        checkpoint.rename(checkpoint.parent / rename)


CASES = {
    "step_past_the_plan": dict(step=999),
    "step_past_the_plan_renamed": dict(step=999, rename="step_00000999"),
    "string_step": dict(step="4"),
    "optimizer_groups": dict(optimizer_param_groups=[{"params": [[0]]}]),
    "optimizer_group_settings": dict(optimizer_param_groups="lr=1"),
    "missing_rng": dict(drop_tensors="rng."),
    "missing_weights": dict(drop_tensors="model.pos_emb"),
    "counter_out_of_range": dict(interval_steps=99),
    "negative_wall_time": dict(wall_seconds=-5.0),
    "null_config": dict(config_sha256=None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_forged_manifest_falls_back_to_the_previous_checkpoint(reference, killed, tmp_path, case):
    run_dir = Path(shutil.copytree(killed, tmp_path / "run"))
    forge(ckpt.list_checkpoints(run_dir)[-1], **CASES[case])
    proc = cli_run(run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "resuming from step_00000002 (step 2 of 6)" in (run_dir / "train.log").read_text()
    assert_identical(run_dir, reference)


def test_a_lone_forged_checkpoint_is_one_line_and_changes_nothing(killed, tmp_path):
    run_dir = Path(shutil.copytree(killed, tmp_path / "run"))
    older, newest = ckpt.list_checkpoints(run_dir)
    forge(newest, step="4")
    forge(older, drop_tensors="rng.")
    metrics, result = (run_dir / "metrics.jsonl").read_bytes(), (run_dir / "result.json").read_bytes()
    proc = cli_run(run_dir)
    assert proc.returncode == 2, proc.stderr[-3000:]
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("gptx: error: no valid checkpoint in ") and "lacks" in line and "step='4'" in line
    assert (run_dir / "metrics.jsonl").read_bytes() == metrics and (run_dir / "result.json").read_bytes() == result
