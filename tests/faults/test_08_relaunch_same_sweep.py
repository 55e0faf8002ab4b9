"""Scenario 8: same sweep relaunched: completed runs skipped and untouched byte for byte; failed and
incomplete ones rerun.

First launch: one job completes, one is hard-killed (incomplete) and the jobs on a damaged corpus
fail. Then the corpus is repaired and the very same command is launched again: every file of the
completed run (.hydra/, train.log, console.log, weights, metrics, result.json) keeps its bytes and its
mtime; the others run to completion. On the local process-pool launcher and on Hydra's basic one.
tests/test_launcher.py and tests/test_sweep.py cover relaunching sweeps in which every run completed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from faultkit import (
    CALLBACK,
    LOCAL,
    TINY,
    result,
    run_gptx,
    runs_csv,
    saved_config,
    tree_digest,
    write_corpus,
    write_corrupt_corpus,
)

from gptx.result import find_run_dirs

pytestmark = pytest.mark.slow


def by_key(sweep: Path) -> dict[tuple[str, int], Path]:
    """Run folders by (data.path, train.max_steps)."""
    runs = {}
    for run_dir in find_run_dirs(sweep):
        cfg = saved_config(run_dir)
        runs[(cfg["data"]["path"], cfg["train"]["max_steps"])] = run_dir
    return runs


def test_scenario_08_relaunch_on_local_launcher_skips_completed_and_reruns_the_rest(tmp_path):
    write_corpus(tmp_path / "a.txt")
    write_corrupt_corpus(tmp_path / "bad.txt")
    args = ("-m", *LOCAL, "sweep=again", *TINY, "data.path=a.txt,bad.txt", "train.max_steps=2,4", CALLBACK)
    first = run_gptx(*args, cwd=tmp_path, env={"GPTX_FAULT": "step@3=KILL"})
    assert first.returncode != 0
    sweep = tmp_path / "multirun_outputs" / "again"
    runs = by_key(sweep)
    rows = runs_csv(sweep)
    statuses = {key: rows[run_dir.name]["status"] for key, run_dir in runs.items()}
    assert statuses == {("a.txt", 2): "completed", ("a.txt", 4): "incomplete",
                        ("bad.txt", 2): "failed", ("bad.txt", 4): "failed"}
    done = runs[("a.txt", 2)]
    assert {".hydra/config.yaml", "train.log", "console.log", "model.safetensors"} <= tree_digest(done).keys()
    before = tree_digest(done)

    write_corpus(tmp_path / "bad.txt", part=1)  # the corpus repaired; the command unchanged
    again = run_gptx(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert tree_digest(done) == before  # bytes and mtimes of every file
    assert "local_gpus: 4 jobs: 4 completed; 1 skipped (completed with the same config)" in again.stdout
    assert "3 ran in this launch, 1 left as they were" in again.stdout
    assert by_key(sweep) == runs  # the reruns reused their folders
    assert [row["status"] for row in runs_csv(sweep).values()] == ["completed"] * 4
    assert all(result(r)["steps"] == steps for (_, steps), r in runs.items())


def test_scenario_08_relaunch_on_basic_launcher_skips_completed_and_reruns_the_failed(tmp_path):
    write_corpus(tmp_path / "a.txt")
    write_corrupt_corpus(tmp_path / "bad.txt")
    args = ("-m", "sweep=again", *TINY, "data.path=a.txt,bad.txt", "train.max_steps=2", CALLBACK)
    first = run_gptx(*args, cwd=tmp_path)
    assert first.returncode != 0
    sweep = tmp_path / "multirun_outputs" / "again"
    runs = by_key(sweep)
    assert result(runs[("a.txt", 2)])["status"] == "completed"
    assert result(runs[("bad.txt", 2)])["status"] == "failed"
    before = tree_digest(runs[("a.txt", 2)])

    write_corpus(tmp_path / "bad.txt", part=1)
    again = run_gptx(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert tree_digest(runs[("a.txt", 2)]) == before
    assert "1 ran in this launch, 1 left as they were" in again.stdout
    assert result(runs[("bad.txt", 2)])["status"] == "completed"
