"""Scenario 6: one job fails in a 4-job sweep: 3 complete, the failure has its status and error in its
folder, the summary names it, exit non-zero.

The failure is a real one, not an injected one: the job's corpus file is not UTF-8 (a damaged
download). Its config is valid, so the error surfaces only as the job loads its data, as the one line
a user error gets (a crash also records its traceback: scenario 4). The jobs run on the local
process-pool launcher, two at a time.
tests/test_launcher.py covers the launcher itself with a stand-in app.
"""

from __future__ import annotations

import pytest
from faultkit import CALLBACK, LOCAL, TINY, result, run_gptx, runs_csv, write_corpus, write_corrupt_corpus

pytestmark = pytest.mark.slow


def test_scenario_06_one_job_raises_three_complete_and_the_sweep_fails(tmp_path):
    for part, name in enumerate(["a.txt", "b.txt", "c.txt"]):
        write_corpus(tmp_path / name, part)
    write_corrupt_corpus(tmp_path / "bad.txt")
    # The failing job second: jobs queued after it still run.
    proc = run_gptx("-m", *LOCAL, "sweep=raises", "data.path=a.txt,bad.txt,b.txt,c.txt", *TINY,
                    "train.max_steps=2", CALLBACK, cwd=tmp_path)
    assert proc.returncode != 0
    sweep = tmp_path / "multirun_outputs" / "raises"
    rows = runs_csv(sweep)
    statuses = {name.split("data.path=")[1].split(",")[0]: row["status"] for name, row in rows.items()}
    assert statuses == {"a.txt": "completed", "b.txt": "completed", "c.txt": "completed", "bad.txt": "failed"}
    [(bad_name, bad_row)] = [(n, r) for n, r in rows.items() if r["status"] == "failed"]
    assert bad_row["error"].startswith("data.path=bad.txt is not UTF-8 text (byte 0)")
    failed = result(sweep / bad_name)
    assert failed["status"] == "failed" and failed["error"] == bad_row["error"]
    assert failed["traceback"] is None  # a user error is its one line (a crash's traceback: scenario 4)
    assert "is not UTF-8 text" in (sweep / bad_name / "console.log").read_text()
    # Both summaries name it: the launcher's table and the runs table's count line.
    assert "4 runs (3 completed, 1 failed)" in proc.stdout
    assert any(bad_name in line and "failed" in line for line in proc.stdout.splitlines())
