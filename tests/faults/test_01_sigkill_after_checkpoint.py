"""Scenario 1: SIGKILL after a checkpoint, rerun the same command: per-step losses, final weight hash
and test loss equal to an uninterrupted run.

tests/test_resume.py::test_sigkill_after_a_checkpoint_then_rerun kills right after a checkpoint is
complete. Here the kill lands between checkpoints, after a step whose work is not in any checkpoint
and whose metrics line was already written: the rerun must go back to the last checkpoint, redo that
step bit-identically and log it once. Repeated on CUDA when a GPU is present. A run with the default
checkpoint settings (by wall time, no checkpoint_every) is killed at a moment chosen at random.
"""

from __future__ import annotations

import random
import signal
import time

import pytest
import torch
from faultkit import TINY, assert_identical, cli_run, cli_start, per_step, result, run_gptx

from gptx.checkpoint import list_checkpoints

pytestmark = pytest.mark.slow

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="needs a CUDA device"))]


@pytest.fixture(scope="module", params=DEVICES)
def device_and_reference(request, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp(f"reference_{request.param}") / "run"
    proc = cli_run(run_dir, f"train.device={request.param}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return request.param, run_dir


def test_scenario_01_sigkill_between_checkpoints_reruns_from_the_last_one(device_and_reference, tmp_path):
    device, reference = device_and_reference
    run_dir = tmp_path / "run"
    # step@4 fires before step 4's forward: steps 1-3 are done, the newest checkpoint is step 2.
    first = cli_run(run_dir, f"train.device={device}", env={"GPTX_FAULT": "step@4=KILL"})
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    assert result(run_dir)["status"] == "running"  # died without a word: no result claims otherwise
    assert [p.name for p in list_checkpoints(run_dir)] == ["step_00000002"]
    assert [s for s, *_ in per_step(run_dir)] == [1, 2, 3]  # step 3 was logged, then lost

    second = cli_run(run_dir, f"train.device={device}")  # the same command again
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from step_00000002 (step 2 of 6)" in (run_dir / "train.log").read_text()
    assert_identical(run_dir, reference)


# The defaults but for length: no train.checkpoint_every, so only the wall-time interval checkpoints.
DEFAULTS = ["train.max_steps=20", "train.eval_every=10"]
# Non-semantic (same config_sha256 as the defaults): a checkpoint at nearly every step boundary.
OFTEN = "train.checkpoint_minutes=0.0001"


def test_scenario_01_default_config_killed_at_a_random_moment_resumes_identical(tmp_path):
    reference = tmp_path / "reference"  # the plain defaults: one checkpoint, before the final outputs
    proc = run_gptx(*TINY, *DEFAULTS, f"hydra.run.dir={reference}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    run_dir = tmp_path / "run"
    job = cli_start(run_dir, *DEFAULTS, OFTEN)
    deadline = time.monotonic() + 300
    while not list_checkpoints(run_dir):
        assert job.poll() is None, job.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.002)
    delay = random.uniform(0.0, 0.3)  # any step, mid-step or mid-save: the test does not choose
    time.sleep(delay)
    job.kill()
    job.communicate()
    assert job.returncode == -signal.SIGKILL, f"the run ended before the kill {delay:.3f} s after its first checkpoint"
    assert result(run_dir)["status"] == "running"

    second = run_gptx(*TINY, *DEFAULTS, OFTEN, f"hydra.run.dir={run_dir}", cwd=tmp_path)  # the same command
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from step_" in (run_dir / "train.log").read_text()
    assert_identical(run_dir, reference)
