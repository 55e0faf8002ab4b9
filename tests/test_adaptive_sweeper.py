"""hydra/sweeper=adaptive on real tiny runs: waves, stopping, resuming, budgets and refusals."""

import json
from pathlib import Path

import pytest

from gptx.files import LOCK_FILE

from conftest import TINY, run_gptx

pytestmark = pytest.mark.slow

ARMS = "intervention=baseline,grad_clip,no_dropout,qkv_bias"
# min_effect so small that no arm stops as "too small": the sweep must go through its waves
WAVES = [ARMS, "init_seed=1,2", "hydra/sweeper=adaptive", "hydra.sweeper.max_seeds=4",
         "hydra.sweeper.wave_size=1", "hydra.sweeper.min_effect=1e-6"]


def tree(folder: Path) -> dict[str, bytes]:
    """Every file's bytes, but the lock's (it holds the pid of the launch that last held it)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK_FILE}


def results(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/result.json")}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One adaptive sweep run to its end (module-wide: the tests below read it, and copy it to change it)."""
    cwd = tmp_path_factory.mktemp("adaptive")
    proc = run_gptx("-m", *WAVES, "sweep=ad", *TINY, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd, cwd / "multirun_outputs" / "ad", proc


def test_waves_run_until_every_arm_is_decided_and_only_open_arms_get_new_seeds(finished):
    _, sweep, proc = finished
    state = json.loads((sweep / "adaptive.json").read_text())
    arms = state["arms"]
    # grad_clip never clips in 4 tiny steps: the baseline's weights at every seed, stopped at wave 1
    assert arms["grad_clip"]["status"] == "identical to the baseline" and arms["grad_clip"]["wave"] == 1
    assert all(a["status"] != "open" for a in arms.values()) and state["next_cells"] is None
    runs = results(sweep)
    assert len(runs) == state["runs_used"]
    for arm, a in arms.items():
        seeds = sorted(r["init_seed"] for r in runs.values() if r["arm"] == arm)
        assert seeds == state["plan"]["seeds"][:a["seeds"]], arm  # the plan's seeds, in order, no gaps
    baseline_seeds = sorted(r["init_seed"] for r in runs.values() if r["arm"] == "baseline")
    assert baseline_seeds == state["plan"]["seeds"][:max(a["seeds"] for a in arms.values())]
    assert state["plan"]["seeds"] == [1, 2, 3, 4] and state["waves_done"] >= 2  # later waves did run
    assert sorted(runs) == sorted(f"intervention={r['arm']},init_seed={r['init_seed']}" for r in runs.values())
    assert "adaptive sweep: wave 2" in proc.stderr + proc.stdout


def test_the_report_prints_the_sequential_verdicts(finished):
    _, sweep, _ = finished
    report = (sweep / "report.md").read_text()
    assert "## Adaptive sweep" in report
    summary = json.loads((sweep / "summary.json").read_text())
    state = json.loads((sweep / "adaptive.json").read_text())
    for arm, a in state["arms"].items():
        assert summary["arms"][arm]["verdict"] == a["status"]


def test_relaunching_a_finished_sweep_runs_nothing_and_changes_no_run(finished, tmp_path):
    cwd, sweep, _ = finished
    before = {k: v for k, v in tree(sweep).items() if "/" in k}  # the run folders' files
    proc = run_gptx("-m", *WAVES, "sweep=ad", *TINY, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {k: v for k, v in tree(sweep).items() if "/" in k} == before
    assert "Launching" not in proc.stderr + proc.stdout


def test_a_relaunch_with_another_plan_is_refused_and_touches_nothing(finished):
    cwd, sweep, _ = finished
    before = tree(sweep)
    proc = run_gptx("-m", *WAVES, "hydra.sweeper.alpha=0.1", "sweep=ad", *TINY, cwd=cwd)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("gptx: error: adaptive sweeper:")
    assert "another plan (differs in alpha)" in proc.stderr
    assert tree(sweep) == before


@pytest.mark.parametrize("args, message", [
    (["train.lr=0.001,0.002"], "it sweeps only intervention and init_seed; train.lr has several values"),
    (["hydra.sweeper.baseline=fp32"], "the baseline arm `fp32` is not among the intervention values"),
    (["hydra.sweeper.spending=linear"], "spending must be one of obrien_fleming, pocock"),
    (["hydra.sweeper.max_seeds=1"], "2 init seeds given for the first wave, more than max_seeds=1"),
])
def test_bad_plans_are_one_line_before_any_folder_exists(args, message, tmp_path):
    proc = run_gptx("-m", *WAVES, *args, "sweep=bad", *TINY, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "multirun_outputs" / "bad").exists()


def test_max_runs_stops_before_the_wave_that_would_pass_it(tmp_path):
    proc = run_gptx("-m", *WAVES, "hydra.sweeper.max_runs=10", "sweep=budget", *TINY, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = tmp_path / "multirun_outputs" / "budget"
    state = json.loads((sweep / "adaptive.json").read_text())
    assert len(results(sweep)) == state["runs_used"] <= 10
    assert state["stopped"].startswith("budget: max_runs 10")
    assert "undecided (budget)" in {a["status"] for a in state["arms"].values()}
