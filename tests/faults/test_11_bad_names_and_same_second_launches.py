"""Scenario 11: bad names (`../x`, `a/b`, `/abs`, empty, very long) stay inside the sweep root or are
rejected; two same-second launches never share a folder.

tests/test_sweep.py checks sweep_name() itself and the names through a stand-in app. Here the real
`python -m gptx.train -m sweep=…` refuses each bad name in one line and writes nothing outside
multirun_outputs/; and two launches whose clocks read the very same second (frozen, so the test
does not depend on timing) get two folders: sweeps, and single runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from faultkit import CALLBACK, TINY, per_step, python_script, result, run_gptx

pytestmark = pytest.mark.slow

# `python -m gptx.train …` with Hydra's clock stopped at 2025-01-02 03:04:05.
FROZEN_CLOCK = '''
import datetime, runpy
import hydra.core.utils

class Frozen(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return cls(2025, 1, 2, 3, 4, 5)

hydra.core.utils.datetime = Frozen  # Hydra's ${now:} resolver, which names run and sweep folders
sys.argv = ["gptx.train", *sys.argv[1:]]
runpy.run_module("gptx.train", run_name="__main__", alter_sys=True)
'''


def inside(path: Path, root: Path) -> bool:
    real, real_root = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([real, real_root]) == real_root


@pytest.mark.parametrize("name", ["../x", "a/b", "ABS", "''", "x" * 300],
                         ids=["dotdot", "slash", "abs", "empty", "300_chars"])
def test_scenario_11_a_bad_sweep_name_is_refused_in_one_line(tmp_path, name):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    name = str(tmp_path / "abs") if name == "ABS" else name  # an absolute path we can check stays absent
    proc = run_gptx("-m", f"sweep={name}", *TINY, "train.max_steps=1", CALLBACK, cwd=cwd)
    assert proc.returncode != 0
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("gptx: error: sweep=") and "is not a valid sweep name" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd"]  # no ../x, no /abs
    assert all(inside(p, cwd / "multirun_outputs") for p in cwd.rglob("*"))
    assert not list(cwd.rglob("result.json"))


def launch_together(script: Path, cwd: Path, *args: str) -> list[subprocess.CompletedProcess]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    procs = [subprocess.Popen([sys.executable, str(script), *args], cwd=cwd, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=600), *p.communicate()) for p in procs]


def test_scenario_11_two_sweeps_started_in_the_same_second_get_two_folders(tmp_path):
    script = python_script(tmp_path / "frozen_clock.py", FROZEN_CLOCK)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for proc in launch_together(script, cwd, "-m", *TINY, "train.max_steps=2", "init_seed=7", CALLBACK):
        assert proc.returncode == 0, proc.stderr[-3000:]
    day = cwd / "multirun_outputs" / "2025-01-02"
    assert sorted(p.name for p in day.iterdir()) == ["03-04-05", "03-04-05_1"]
    for sweep in day.iterdir():
        [run_dir] = [p.parent for p in sweep.glob("*/result.json")]
        assert result(run_dir)["status"] == "completed"
        assert [s for s, *_ in per_step(run_dir)] == [1, 2]  # its own metrics, not a mix


def test_scenario_11_two_single_runs_started_in_the_same_second_get_two_folders(tmp_path):
    script = python_script(tmp_path / "frozen_clock.py", FROZEN_CLOCK)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    procs = launch_together(script, cwd, *TINY, "train.max_steps=2")
    for proc in procs:
        assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(p.parent for p in cwd.glob("outputs/2025-01-02/*/result.json"))
    assert len(runs) == 2, f"both runs trained into {runs}"
    for run_dir in runs:
        assert [s for s, *_ in per_step(run_dir)] == [1, 2]
