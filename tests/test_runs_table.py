"""runs.csv has one writer: the sweep's end, `gptx.analyze` and a relaunch all leave the same file."""

from __future__ import annotations

import csv

import pytest

from gptx import analyze
from gptx.analysis.runs import CSV_FIELDS

from conftest import TINY, run_gptx


@pytest.mark.slow
def test_the_sweep_analyze_and_a_relaunch_write_the_same_runs_csv(tmp_path):
    args = ("-m", "sweep=table", "init_seed=1,2", *TINY, "train.max_steps=1")
    assert run_gptx(*args, cwd=tmp_path).returncode == 0
    table = tmp_path / "multirun_outputs" / "table" / "runs.csv"
    after_sweep = table.read_bytes()
    rows = list(csv.DictReader(after_sweep.decode().splitlines()))
    assert tuple(rows[0]) == CSV_FIELDS and len(rows) == 2
    assert {r["status"] for r in rows} == {"completed"} and all(not r["run"].startswith("/") for r in rows)
    assert analyze.main([str(tmp_path / "multirun_outputs" / "table"), "--no-plots"]) == 0
    assert table.read_bytes() == after_sweep
    relaunch = run_gptx(*args, cwd=tmp_path)
    assert relaunch.returncode == 0 and "2 left as they were" in relaunch.stdout
    assert table.read_bytes() == after_sweep
