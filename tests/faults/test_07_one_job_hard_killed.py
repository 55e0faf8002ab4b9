"""Scenario 7: one job hard-killed (`os._exit`, OOM): the others are still reported; the dead one is
"incomplete".

GPTX_FAULT reaches every job, so the kill is aimed by run length: with `step@3=KILL` only the job
long enough to reach step 3 dies (SIGKILL, as the OOM killer sends it). On the local process-pool
launcher each job is its own process; on Hydra's basic launcher the whole multirun is one process, so
the kill takes the launch down and only the run folders can tell what happened.
tests/test_launcher.py covers `os._exit` and SIGKILL with a stand-in app.
"""

from __future__ import annotations

import signal

import pytest
from faultkit import CALLBACK, LOCAL, TINY, run_gptx, runs_csv, saved_config

from gptx.analysis.runs import scan_runs
from gptx.result import find_run_dirs

pytestmark = pytest.mark.slow

KILL_AT_STEP_3 = {"GPTX_FAULT": "step@3=KILL"}


def test_scenario_07_a_killed_job_is_incomplete_and_the_others_are_reported(tmp_path):
    # The doomed job first: the jobs queued after it still run.
    proc = run_gptx("-m", *LOCAL, "sweep=killed", *TINY, "train.max_steps=4,1,2", CALLBACK, cwd=tmp_path,
                    env=KILL_AT_STEP_3)
    assert proc.returncode != 0
    sweep = tmp_path / "multirun_outputs" / "killed"
    by_steps = {saved_config(sweep / name)["train"]["max_steps"]: row for name, row in runs_csv(sweep).items()}
    assert {steps: row["status"] for steps, row in by_steps.items()} == {
        1: "completed", 2: "completed", 4: "incomplete"}
    assert by_steps[4]["error"] == "result.json status 'running'"
    assert "crashed (killed by SIGKILL)" in proc.stdout  # the launcher's table
    assert "3 runs (2 completed, 1 incomplete)" in proc.stdout  # the runs table's count line


def test_scenario_07_a_kill_that_takes_the_whole_launch_down_leaves_folders_that_tell(tmp_path):
    proc = run_gptx("-m", "sweep=killed", *TINY, "train.max_steps=1,4,2", CALLBACK, cwd=tmp_path,
                    env=KILL_AT_STEP_3)
    assert proc.returncode == -signal.SIGKILL  # Hydra's basic launcher: one process for every job
    sweep = tmp_path / "multirun_outputs" / "killed"
    assert not (sweep / "runs.csv").exists()  # nothing ran at exit: there was no exit
    rows = {saved_config(run_dir)["train"]["max_steps"]: row
            for run_dir, row in zip(find_run_dirs(sweep), scan_runs(sweep))}
    assert {steps: row["status"] for steps, row in rows.items()} == {1: "completed", 4: "incomplete"}
