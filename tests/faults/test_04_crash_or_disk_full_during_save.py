"""Scenario 4: crash or disk full during a save: previous checkpoint intact, no partial file under the
final name.

tests/test_resume.py::test_kill_during_a_save_keeps_the_previous_checkpoint covers SIGKILL in the
middle of a save. Here: the disk fills up while the second checkpoint's state file is half written
(`safetensors.torch.save_file`, as gptx.checkpoint calls it, writes half then raises ENOSPC), and a
stop signal arrives during a save (it must not cut the save short: the save completes, the run stops
at the next step boundary).
"""

from __future__ import annotations

import errno
import json
import os
import signal

import faultkit
import pytest
from faultkit import (
    RUN,
    TINY,
    assert_identical,
    cli_run,
    per_step,
    python_script,
    result,
    run_script,
    typed_config,
)

from gptx.checkpoint import load_latest
from gptx.files import MetricsLog
from gptx.run import train

pytestmark = pytest.mark.slow

reference = faultkit.reference  # the shared uninterrupted run (a pytest fixture)

# `python -m gptx.train …` in an interpreter whose disk "fills up" during the 2nd checkpoint save.
DISK_FULL = '''
import errno, os, runpy
import gptx.checkpoint

real_save_file = gptx.checkpoint.save_file
calls = []

def save_file_on_a_full_disk(tensors, filename, metadata=None):
    calls.append(filename)
    real_save_file(tensors, filename, metadata)
    if len(calls) == 2:
        with open(filename, "r+b") as f:  # what made it to disk before the space ran out
            f.truncate(os.path.getsize(filename) // 2)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)

gptx.checkpoint.save_file = save_file_on_a_full_disk
sys.argv = ["gptx.train", *sys.argv[1:]]
runpy.run_module("gptx.train", run_name="__main__", alter_sys=True)
'''


def test_scenario_04_disk_full_during_a_save_keeps_the_previous_checkpoint(reference, tmp_path):
    script = python_script(tmp_path / "disk_full.py", DISK_FULL)
    run_dir = tmp_path / "run"
    first = run_script(script, *RUN, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert first.returncode == 1  # loud: Hydra reports the exception
    assert "No space left on device" in first.stderr
    failed = result(run_dir)
    assert failed["status"] == "failed" and failed["error"].startswith("OSError: [Errno 28] No space left")
    assert "save_file_on_a_full_disk" in failed["traceback"]
    # Only the complete step-2 checkpoint: no step_00000004, no temporary folder left behind.
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_00000002"]
    intact = load_latest(run_dir, failed["config_sha256"])
    assert intact is not None and intact.state.step == 2
    assert [s for s, *_ in per_step(run_dir)] == [1, 2, 3, 4]

    second = cli_run(run_dir)  # space freed: the same command again
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from step_00000002 (step 2 of 6)" in (run_dir / "train.log").read_text()
    assert_identical(run_dir, reference)


def test_scenario_04_a_stop_signal_during_a_save_lets_the_save_finish(reference, tmp_path):
    run_dir = tmp_path / "run"
    first = cli_run(run_dir, env={"GPTX_FAULT": "save@4=TERM"})  # SIGTERM before the rename into place
    assert first.returncode == 128 + signal.SIGTERM, first.stderr[-3000:]
    assert result(run_dir)["status"] == "interrupted"
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_00000002", "step_00000004"]
    newest = load_latest(run_dir, result(run_dir)["config_sha256"])
    assert newest is not None and newest.state.step == 4
    meta = json.loads((newest.path / "meta.json").read_text())
    assert meta["step"] == 4
    assert f"stop signal {int(signal.SIGTERM)}: checkpointed at step 4" in (run_dir / "train.log").read_text()
    assert [s for s, *_ in per_step(run_dir)] == [1, 2, 3, 4]  # stopped at the boundary, no step 5

    second = cli_run(run_dir)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from step_00000004 (step 4 of 6)" in (run_dir / "train.log").read_text()
    assert_identical(run_dir, reference)


def test_scenario_04_disk_full_while_appending_metrics_does_not_block_the_resume(tmp_path, monkeypatch):
    cfg = typed_config(*RUN[len(TINY):])
    reference = tmp_path / "reference"
    train(cfg, reference)
    real_write = MetricsLog.write

    def write_on_a_full_disk(self, record):
        if record["step"] != 3:
            return real_write(self, record)
        line = json.dumps(record) + "\n"
        self._file.write(line[: len(line) // 2])  # what fitted before the space ran out
        self._file.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))

    monkeypatch.setattr(MetricsLog, "write", write_on_a_full_disk)
    run_dir = tmp_path / "run"
    with pytest.raises(OSError, match="No space left on device"):
        train(cfg, run_dir)
    monkeypatch.undo()
    assert load_latest(run_dir, result(run_dir)["config_sha256"]).state.step == 2
    train(cfg, run_dir)  # space freed: resume from step 2
    assert_identical(run_dir, reference)
