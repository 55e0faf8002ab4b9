"""Folders gptx does not own are refused untouched, and every run and sweep folder is locked, failing closed.

Real processes: a user's folder (even `hydra.run.dir=.` in a project holding `checkpoints/`), a run
pointed into a sweep folder, two runs started into one folder at once, a lock held by another process,
a lock file gptx cannot open and a read-only bind mount (skipped where mounting is not permitted).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from faultkit import CALLBACK, TINY, cli_start, result, run_gptx, tree_digest

from gptx.checkpoint import remove_checkpoints

pytestmark = pytest.mark.slow

RUN = [*TINY, "train.max_steps=2"]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("gptx: error:")]


def users_project(folder: Path) -> Path:
    """A folder of the user's own that happens to use gptx's names."""
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "my_model.pt").write_bytes(b"the user's weights")
    (folder / "metrics.jsonl").write_text('{"mine": 1}\n')
    (folder / "sample.txt").write_text("the user's notes\n")
    return folder


def test_a_folder_gptx_did_not_make_is_refused_before_anything_is_written(tmp_path):
    project = users_project(tmp_path / "project")
    before = tree_digest(project)
    for run_dir in (str(project), "."):
        proc = run_gptx(*RUN, f"hydra.run.dir={run_dir}", cwd=project)
        assert proc.returncode == 2, proc.stderr[-3000:]
        [line] = error_lines(proc.stderr)
        assert "is not a gptx run folder" in line and "Traceback" not in proc.stderr
        assert tree_digest(project) == before  # not even Hydra's train.log


def test_a_single_run_inside_a_sweep_folder_is_refused(tmp_path):
    sweep = tmp_path / "multirun_outputs" / "study"
    proc = run_gptx("-m", *RUN, "sweep=study", "init_seed=1", CALLBACK, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    before = tree_digest(sweep)
    for inside in (sweep / "other", sweep):
        proc = run_gptx(*RUN, f"hydra.run.dir={inside}", cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr[-3000:]
        [line] = error_lines(proc.stderr)
        assert str(sweep) in line
    assert tree_digest(sweep) == before and not (sweep / "other").exists()


def test_only_checkpoint_folders_gptx_named_are_deleted(tmp_path):
    root = tmp_path / "checkpoints"
    for name in ("step_00000002", ".tmp-step_00000004-ab_c1", "keep_me"):
        (root / name).mkdir(parents=True)
        (root / name / "f").write_text("x")
    (root / "notes.txt").write_text("mine")
    remove_checkpoints(tmp_path)
    assert sorted(p.name for p in root.iterdir()) == ["keep_me", "notes.txt"]
    (root / "notes.txt").unlink()
    (root / "keep_me" / "f").unlink()
    (root / "keep_me").rmdir()
    remove_checkpoints(tmp_path)
    assert not root.exists()  # an empty checkpoints/ goes with the last checkpoint


@pytest.mark.parametrize("same_config", [False, True], ids=["different", "same"])
def test_two_runs_into_one_folder_at_once_one_is_refused(tmp_path, same_config):
    run_dir = tmp_path / "run"
    # the first run holds itself (SIGSTOP) at step 5 with the folder locked, however fast the machine is
    first = cli_start(run_dir, "train.max_steps=30", "init_seed=1", env={"GPTX_FAULT": "step@5=STOP"})
    try:
        deadline = time.monotonic() + 120
        while Path(f"/proc/{first.pid}/stat").read_text().split(")")[-1].split()[0] != "T":
            assert first.poll() is None and time.monotonic() < deadline, first.stderr and first.stderr.read()
            time.sleep(0.05)
        second = run_gptx(*TINY, "train.max_steps=30", f"init_seed={1 if same_config else 2}",
                          f"hydra.run.dir={run_dir}", cwd=tmp_path)
        assert second.returncode == 2, second.stderr[-3000:]
        [line] = error_lines(second.stderr)
        assert "in use by another gptx process" in line
    finally:
        os.kill(first.pid, signal.SIGCONT)
        _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr[-3000:]
    done = result(run_dir)
    saved = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert done["status"] == "completed" and done["init_seed"] == 1 and saved["init_seed"] == 1
    assert [json.loads(ln)["step"] for ln in (run_dir / "metrics.jsonl").read_text().splitlines()][-1] == 30


def hold_lock(lock_file: Path) -> subprocess.Popen:
    """Another process holding an flock on lock_file until it is killed."""
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; "
                               f"fd = os.open({str(lock_file)!r}, os.O_RDWR | os.O_CREAT); "
                               "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(600)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_held_run_lock_refuses_and_runs_nothing(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = hold_lock(run_dir / ".gptx.lock")
    try:
        proc = run_gptx(*RUN, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 2 and len(error_lines(proc.stderr)) == 1, proc.stderr[-3000:]
    assert sorted(p.name for p in run_dir.iterdir()) == [".gptx.lock", "train.log"]


@pytest.mark.parametrize("what", ["run", "sweep"])
def test_a_lock_that_cannot_be_opened_fails_closed(tmp_path, what):
    if what == "run":
        target, args = tmp_path / "run", [*RUN, f"hydra.run.dir={tmp_path / 'run'}"]
        lock = target / ".gptx.lock"
    else:
        target, args = tmp_path / "multirun_outputs" / "s", ["-m", *RUN, "sweep=s", CALLBACK]
        lock = target / ".sweep.lock"
    lock.mkdir(parents=True)  # a lock path gptx cannot open as a file (as EACCES or EROFS would)
    proc = run_gptx(*args, cwd=tmp_path)
    assert proc.returncode != 0, proc.stderr[-3000:]
    [line] = error_lines(proc.stderr)
    assert "cannot lock" in line and "Traceback" not in proc.stderr
    assert sorted(p.name for p in target.iterdir()) == [lock.name] + (["train.log"] if what == "run" else [])


@pytest.fixture
def read_only(tmp_path):
    """tmp_path/ro: a read-only bind mount of tmp_path/src; skipped where mounting is not permitted."""
    src, ro = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    proc = subprocess.run(["mount", "--bind", "-o", "ro", str(src), str(ro)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {proc.stderr.strip() or 'mount failed'}")
    yield src, ro
    subprocess.run(["umount", str(ro)], check=False)


def test_a_read_only_run_folder_is_one_line(tmp_path, read_only):
    src, ro = read_only
    (src / "run").mkdir()
    proc = run_gptx(*RUN, f"hydra.run.dir={ro / 'run'}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    [line] = error_lines(proc.stderr)
    assert "read-only file system" in line and "Traceback" not in proc.stderr + proc.stdout
    assert list((src / "run").iterdir()) == []


def test_a_read_only_sweep_folder_fails_closed(tmp_path, read_only):
    src, ro = read_only
    (src / "multirun_outputs" / "s").mkdir(parents=True)
    before = tree_digest(src)
    proc = run_gptx("-m", *RUN, "sweep=s", "init_seed=1,2", CALLBACK, cwd=ro)
    assert proc.returncode != 0
    [line] = error_lines(proc.stderr)
    assert "cannot lock sweep folder" in line and "Read-only" in line, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and tree_digest(src) == before

