"""gptx.sweep: the runs table and the sweep lock; folder names through a stand-in app (names: test_naming.py)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from gptx.analysis.runs import scan_runs
from gptx.naming import LEGACY_SUBDIR
from gptx.sweep import SweepCallback, lock_sweep, unlock_sweep

from conftest import REPO, TINY, run_gptx

APP = REPO / "tests" / "launcher_app" / "app.py"
SEARCHPATH = f"hydra.searchpath=[file://{REPO}/gptx/conf]"  # the launcher presets, for the stand-in app
# Until gptx/conf/config.yaml registers the callback itself (`++` adds or replaces).
CALLBACK = "++hydra.callbacks.sweep._target_=gptx.sweep.SweepCallback"


def _run(folder: Path, result: dict | str | None) -> Path:
    (folder / ".hydra").mkdir(parents=True)
    if isinstance(result, dict):
        (folder / "result.json").write_text(json.dumps(result))
    elif isinstance(result, str):
        (folder / "result.json").write_text(result)
    return folder


def test_scanning_lists_every_run_folder_and_calls_unfinished_ones_incomplete(tmp_path):
    _run(tmp_path / "a", {"status": "completed", "intervention": ["grad_clip", "qkv_bias"], "init_seed": 22,
                          "test_loss": 3.5, "final_weights_sha256": "ab" * 32})
    _run(tmp_path / "b", {"status": "failed", "error": "Traceback ...\nRuntimeError: boom"})
    _run(tmp_path / "c", {"status": "running"})
    _run(tmp_path / "d", None)
    _run(tmp_path / "e", '{"status": "compl')  # torn write
    _run(tmp_path / "f", {"status": "diverged", "error": "non-finite loss nan at step 3"})
    _run(tmp_path / ".submitit" / "123", {"status": "completed"})  # launcher state, not a run
    rows = {r["run"]: r for r in scan_runs(tmp_path)}
    assert sorted(rows) == ["a", "b", "c", "d", "e", "f"]
    assert {k: r["status"] for k, r in rows.items()} == {
        "a": "completed", "b": "failed", "c": "incomplete", "d": "incomplete", "e": "incomplete",
        "f": "diverged"}
    assert rows["a"]["intervention"] == "grad_clip+qkv_bias" and rows["a"]["test_loss"] == 3.5
    assert rows["b"]["error"] == "RuntimeError: boom"
    assert rows["d"]["error"] == "no result.json"


def test_callback_writes_runs_csv_and_fails_the_launch_for_a_run_that_failed_now(tmp_path, capsys):
    _run(tmp_path / "old_failure", {"status": "failed", "error": "earlier"})  # not part of this launch
    _run(tmp_path / "done_before", {"status": "completed", "test_loss": 1.0})
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    callback = SweepCallback()
    callback.on_multirun_start(config)
    _run(tmp_path / "new_ok", {"status": "completed", "test_loss": 2.0})
    _run(tmp_path / "new_dead", {"status": "running"})
    with pytest.raises(SystemExit, match=r"1 run\(s\) of this launch did not complete: new_dead"):
        callback.on_multirun_end(config)
    with (tmp_path / "runs.csv").open() as f:
        rows = {r["run"]: r["status"] for r in csv.DictReader(f)}
    assert rows == {"done_before": "completed", "new_dead": "incomplete", "new_ok": "completed",
                    "old_failure": "failed"}
    out = capsys.readouterr().out
    assert "4 runs (2 completed, 1 failed, 1 incomplete); 2 ran in this launch, 2 left as they were" in out


def test_a_failing_report_never_hides_the_runs_table(tmp_path, monkeypatch, capsys):
    from gptx.analysis import outputs

    def broken(**kwargs):
        raise RuntimeError("plot backend exploded")

    monkeypatch.setattr(outputs, "write_report", broken)
    _run(tmp_path / "r", {"status": "completed", "test_loss": 2.0})
    callback = SweepCallback()
    callback.on_multirun_start(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert callback.finish() == []
    assert (tmp_path / "runs.csv").read_text().splitlines()[1].startswith("r,baseline,,completed,True,")
    assert "report not written (RuntimeError: plot backend exploded)" in capsys.readouterr().err


def test_a_sweep_folder_in_use_by_another_launch_is_refused(tmp_path, capsys):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from gptx.sweep import lock_sweep; "
                               f"lock_sweep({str(tmp_path)!r}); print('locked', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(SystemExit) as refused:
            lock_sweep(tmp_path)
        assert refused.value.code == 2 and "in use by another launch" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    lock_sweep(tmp_path)  # the lock dies with its process: no stale lock to clean up
    unlock_sweep(tmp_path)


def run_app(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The stand-in app's multirun (see tests/launcher_app), on Hydra's basic launcher unless told."""
    return subprocess.run([sys.executable, str(APP), "-m", SEARCHPATH, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "HYDRA_FULL_ERROR": "0"})


@pytest.mark.parametrize("name", ["../escape", "a/b", "/tmp/abs", "''", "x" * 150])
def test_bad_sweep_names_stop_the_command_before_anything_is_written(tmp_path, name):
    proc = run_app(f"sweep={name}", "init_seed=1", cwd=tmp_path)
    assert proc.returncode != 0
    assert "is not a valid sweep name" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.rglob("*")) in ([], ["multirun_outputs"])


def test_override_values_with_slashes_stay_one_folder_inside_the_sweep(tmp_path):
    proc = run_app("sweep=slashes", "mode=a/../../../escape", "init_seed=1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [p.name for p in (tmp_path / "multirun_outputs" / "slashes").iterdir() if p.is_dir()] == [
        "init_seed=1,mode=a%2F..%2F..%2F..%2Fescape"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["multirun_outputs"]


LONG = "+note=" + "n" * 250  # a long override with one value: it made the old names end in `~<hash>`
WAVES = "hydra.sweeper._target_=hydra_plugins.gptx_test_sweepers.waves.WaveSweeper"


def run_folders(sweep: Path) -> list[str]:
    return sorted(p.parent.name for p in sweep.glob("*/result.json"))


def test_run_folders_are_named_by_the_keys_that_vary(tmp_path):
    proc = run_app("sweep=vary", "mode=ok,fine", "init_seed=1", LONG, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sweep = tmp_path / "multirun_outputs" / "vary"
    assert run_folders(sweep) == ["mode=fine", "mode=ok"]
    with (sweep / "runs.csv").open() as f:
        assert sorted(row["run"] for row in csv.DictReader(f)) == ["mode=fine", "mode=ok"]


def test_a_presets_sweeper_params_vary_and_its_single_values_do_not(tmp_path):
    proc = run_app("+experiment=seeds", LONG, cwd=tmp_path)  # params: init_seed: 1,2 and mode: ok
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert run_folders(tmp_path / "multirun_outputs" / "seeds") == ["init_seed=1", "init_seed=2"]


def test_keys_a_sweeper_adds_name_the_folders_even_one_arm_per_wave(tmp_path):
    # Waves (tests/launcher_app/hydra_plugins/gptx_test_sweepers/waves.py): mode=ok init_seed=4; mode=fine
    # init_seed=4; mode=new init_seed=5 and mode=new init_seed=6.
    proc = run_app(WAVES, "sweep=waves", LONG, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert run_folders(tmp_path / "multirun_outputs" / "waves") == [
        "init_seed=4,mode=fine", "init_seed=4,mode=ok", "init_seed=5,mode=new", "init_seed=6,mode=new"]


def test_a_value_a_sweeper_changes_names_the_folder_on_gptxs_launcher_too(tmp_path):
    # The command line's one init_seed is left out; the seeds the sweeper gives later waves are not.
    proc = run_app(WAVES, "hydra/launcher=local_gpus", "hydra.launcher.gpus=[]", "sweep=seeded", "init_seed=4",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert run_folders(tmp_path / "multirun_outputs" / "seeded") == [
        "init_seed=5,mode=new", "init_seed=6,mode=new", "mode=fine", "mode=ok"]


def test_relaunching_a_sweep_named_the_old_way_finishes_it_in_its_own_folders(tmp_path):
    # The old naming: every override but the excluded keys, as the setting of the time named them.
    old = run_app("sweep=old", "init_seed=1,2", "mode=ok", f"hydra.sweep.subdir='{LEGACY_SUBDIR}'", cwd=tmp_path)
    assert old.returncode == 0, old.stderr[-2000:]
    sweep = tmp_path / "multirun_outputs" / "old"
    done = {p: p.stat().st_mtime_ns for p in sweep.glob("*/result.json")}
    assert sorted(p.parent.name for p in done) == ["init_seed=1,mode=ok", "init_seed=2,mode=ok"]
    # Relaunched on gptx's own launcher, which plans every job's folder before it starts any.
    again = run_app("hydra/launcher=local_gpus", "hydra.launcher.gpus=[]", "sweep=old", "init_seed=1,2,3", "mode=ok",
                    cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "local_gpus: 3 jobs: 3 completed; 2 skipped" in again.stdout
    assert "local_gpus: 3/3 done: init_seed=3 completed" in again.stdout  # one line as each job ends
    assert {p: p.stat().st_mtime_ns for p in done} == done
    assert run_folders(sweep) == ["init_seed=1,mode=ok", "init_seed=2,mode=ok", "init_seed=3"]


def test_launches_that_vary_other_keys_never_share_a_folder_and_find_their_runs_again(tmp_path):
    sweep = tmp_path / "multirun_outputs" / "grow"
    assert run_app("sweep=grow", "mode=ok", "init_seed=1,2", cwd=tmp_path).returncode == 0
    assert run_folders(sweep) == ["init_seed=1", "init_seed=2"]
    # Another value of a key the study shares, on its own, is another study: refused, nothing written.
    refused = run_app("sweep=grow", "mode=fine", "init_seed=1", cwd=tmp_path)
    assert refused.returncode != 0 and "holds another study (mode=ok there, fine in this launch)" in refused.stderr
    assert run_folders(sweep) == ["init_seed=1", "init_seed=2"]
    # Sweeping it is asking for the new arm: its short names hold the first arm's runs, so it is named in
    # full, and each job of the first arm goes back to the folder that holds its run.
    grid = run_app("sweep=grow", "mode=ok,fine", "init_seed=1,2", cwd=tmp_path)
    assert grid.returncode == 0, grid.stderr[-2000:]
    assert grid.stdout.count("\nskipped ") == 2  # the stand-in app's word for a completed run it left alone
    assert run_folders(sweep) == ["init_seed=1", "init_seed=1,mode=fine", "init_seed=2", "init_seed=2,mode=fine"]
    by_folder = {p.parent.name: json.loads(p.read_text())["init_seed"] for p in sweep.glob("*/result.json")}
    assert by_folder["init_seed=2"] == 2


@pytest.mark.slow
def test_the_issues_sweep_gets_readable_distinct_folders_and_runs_csv_rows(tmp_path):
    proc = run_gptx("-m", "sweep=lr", "train.lr=-1,0.001", "train.weight_decay=0.123456789", *TINY,
                    "train.max_steps=2", cwd=tmp_path)
    assert proc.returncode != 0  # train.lr=-1 is refused: a failed run, in a row of its own
    with (tmp_path / "multirun_outputs" / "lr" / "runs.csv").open() as f:
        rows = {row["run"]: row["status"] for row in csv.DictReader(f)}
    assert rows == {"train.lr=-1": "failed", "train.lr=0.001": "completed"}


@pytest.mark.slow
def test_same_second_launches_get_their_own_folders(tmp_path):
    procs = [subprocess.Popen([sys.executable, str(APP), "-m", SEARCHPATH, "init_seed=1,2"], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for _ in range(3)]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    sweeps = sorted({p.parent.parent for p in tmp_path.glob("multirun_outputs/*/*/*/result.json")})
    assert len(sweeps) == 3  # one dated folder each, even when started within one second
    for folder in sweeps:
        assert sorted(p.name for p in folder.glob("*/result.json")) == ["result.json"] * 2


@pytest.mark.slow
def test_a_half_finished_sweep_is_finished_by_the_same_command(tmp_path):
    first = run_app("hydra/launcher=local_gpus", "hydra.launcher.gpus=[]", "sweep=resume", "init_seed=1,2,3",
                    "mode=ok,exit", cwd=tmp_path)
    assert first.returncode != 0  # the mode=exit runs died
    folder = tmp_path / "multirun_outputs" / "resume"
    done = {p: p.stat().st_mtime_ns for p in folder.glob("*mode=ok/result.json")}
    assert len(done) == 3
    time.sleep(0.05)
    # Same sweep, the dying runs now fixed: only they run; the completed ones stay as they were.
    again = run_app("hydra/launcher=local_gpus", "hydra.launcher.gpus=[]", "sweep=resume", "init_seed=1,2,3",
                    "mode=ok", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "3 skipped" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in done} == done


@pytest.mark.slow
def test_real_sweep_writes_runs_csv_and_a_relaunch_says_it_skipped(tmp_path):
    args = ("-m", "sweep=table", "intervention=grad_clip,qkv_bias", "init_seed=22", *TINY,
            "train.max_steps=2", CALLBACK)
    first = run_gptx(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    folder = tmp_path / "multirun_outputs" / "table"
    with (folder / "runs.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["intervention"] for r in rows) == ["grad_clip", "qkv_bias"]
    for row in rows:
        assert row["status"] == "completed" and row["init_seed"] == "22"
        assert float(row["test_loss"]) > 0 and len(row["final_weights_sha256"]) == 64
    again = run_gptx(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 ran in this launch, 2 left as they were" in again.stdout


def test_several_gpus_with_the_basic_launcher_are_named_at_launch():
    """`-m experiment=noise` on an 8-GPU machine without a launcher would train every run on GPU 0."""
    from gptx.sweep import idle_gpus_warning

    basic = OmegaConf.create({"hydra": {"launcher": {"_target_": "hydra._internal.core_plugins.basic_launcher."
                                                                  "BasicLauncher"}}})
    local = OmegaConf.create({"hydra": {"launcher": {"_target_": "hydra_plugins.gptx_launchers.local_gpus."
                                                                  "LocalGpusLauncher"}}})
    assert "8 GPUs are visible" in idle_gpus_warning(basic, gpus=8)
    assert "hydra/launcher=local_gpus" in idle_gpus_warning(basic, gpus=8)
    assert idle_gpus_warning(basic, gpus=1) is None and idle_gpus_warning(local, gpus=8) is None
    assert idle_gpus_warning(basic) is None  # this machine: no GPU
