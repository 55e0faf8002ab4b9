"""Output folders gptx cannot write in: a read-only mount, and a disk already full as the command starts
(issue 32, item 7).

`gptx.reproduce`, `gptx.export`, a sweep relaunched into its folder and a single run each say so in one
line and exit non-zero, with no traceback and every existing file byte-identical. A disk already full
as a run starts is the run's one `gptx: error:` line (and one line saying the log file stopped), never
Python's logging traceback for every record. Mounting needs root: skipped with the reason where it is
not permitted.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import faultkit
import pytest
from faultkit import CALLBACK, LOCAL, result, run_gptx, tree_digest

pytestmark = pytest.mark.slow

RUN = faultkit.SHORT


def error_lines(proc) -> list[str]:
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text and "Logging error" not in text, text[-3000:]
    return [line for line in proc.stderr.splitlines() if ": error:" in line]


def mount(*args: str) -> None:
    proc = subprocess.run(["mount", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount here: {proc.stderr.strip() or 'mount failed'}")


@pytest.fixture
def read_only(tmp_path):
    """(src, ro): tmp_path/ro is a read-only bind mount of tmp_path/src."""
    src, ro = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    mount("--bind", "-o", "ro", str(src), str(ro))
    yield src, ro
    subprocess.run(["umount", str(ro)], check=False)


@pytest.fixture
def full_disk(tmp_path):
    """A 64 MiB tmpfs at tmp_path/disk (room for the TINY run once the filler is gone), filled to its last byte."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mount("-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk))
    yield disk
    subprocess.run(["umount", str(disk)], check=False)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 16))
                f.flush()
        except OSError:
            pass
    return filler


completed = faultkit.completed  # a finished run of SHORT (a pytest fixture)


def test_reproduce_on_a_read_only_run_folder_is_one_line(completed, read_only, tmp_path):
    src, ro = read_only
    shutil.copytree(completed, src / "run")
    before = tree_digest(src)
    proc = run_gptx(str(ro / "run"), module="gptx.reproduce", cwd=tmp_path)
    [line] = error_lines(proc)
    assert proc.returncode == 2 and line.startswith("gptx: error: "), proc.stderr[-3000:]
    assert str(ro / "run" / "reproductions") in line and "Read-only file system" in line, line
    assert tree_digest(src) == before
    # --out on the read-only mount: the same
    proc = run_gptx(str(completed), "--out", str(ro / "again"), module="gptx.reproduce", cwd=tmp_path)
    [line] = error_lines(proc)
    assert proc.returncode == 2 and str(ro / "again") in line and "Read-only file system" in line, line
    assert tree_digest(src) == before and not (completed / "reproductions").exists()


def test_export_into_a_read_only_folder_is_one_line(completed, read_only, tmp_path):
    src, ro = read_only
    (src / "old").mkdir()
    (src / "old" / "config.json").write_text("an earlier export")
    before = tree_digest(src)
    for out in ("new", "old"):
        proc = run_gptx(str(completed), str(ro / out), "--overwrite", module="gptx.export", cwd=tmp_path)
        [line] = error_lines(proc)
        assert proc.returncode != 0 and "Read-only file system" in line and str(ro / out) in line, line
    assert tree_digest(src) == before
    # reading from a read-only run folder is fine
    shutil.copytree(completed, tmp_path / "copy")
    subprocess.run(["mount", "-o", "remount,bind,rw", str(ro)], check=True)
    shutil.copytree(completed, src / "run")
    subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
    proc = run_gptx(str(ro / "run"), str(tmp_path / "hf"), module="gptx.export", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_a_sweep_relaunched_on_a_read_only_mount_is_one_line(read_only):
    src, ro = read_only
    args = ["-m", *RUN, *LOCAL, "sweep=s", "init_seed=1,2", CALLBACK]
    assert run_gptx(*args, cwd=src).returncode == 0
    before = tree_digest(src)
    proc = run_gptx(*args, cwd=ro)
    [line] = error_lines(proc)
    assert proc.returncode != 0 and "Read-only file system" in line and "multirun_outputs/s" in line, line
    assert tree_digest(src) == before


@pytest.mark.parametrize("state", ["completed", "interrupted"])
def test_a_single_run_relaunched_on_a_read_only_mount_is_one_line(completed, read_only, tmp_path, state):
    src, ro = read_only
    shutil.copytree(completed, src / "run")
    if state == "interrupted":
        (src / "run" / "result.json").write_text((src / "run" / "result.json").read_text()
                                                  .replace('"completed"', '"running"'))
    before = tree_digest(src)
    proc = run_gptx(*RUN, f"hydra.run.dir={ro / 'run'}", cwd=tmp_path)
    [line] = error_lines(proc)
    assert proc.returncode != 0 and "read-only file system" in line.lower() and str(ro / "run") in line, line
    assert tree_digest(src) == before


def test_a_disk_full_as_the_run_starts_is_one_line(full_disk, tmp_path):
    run_dir = full_disk / "run"
    filler = fill(full_disk)
    proc = run_gptx(*RUN, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    [line] = error_lines(proc)
    assert proc.returncode == 1 and "the disk is full" in line, proc.stderr[-3000:]
    others = [ln for ln in proc.stderr.splitlines() if ln != line]
    assert len(others) <= 1 and all("gptx: warning: cannot write the log" in ln for ln in others), proc.stderr
    filler.unlink()
    again = run_gptx(*RUN, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert again.returncode == 0 and result(run_dir)["status"] == "completed", again.stderr[-3000:]


def test_reproduce_onto_a_full_disk_is_one_line_and_leaves_nothing(completed, full_disk, tmp_path):
    run_dir = Path(shutil.copytree(completed, full_disk / "run"))
    fill(full_disk)
    before = tree_digest(run_dir)
    proc = run_gptx(str(run_dir), module="gptx.reproduce", cwd=tmp_path)
    [line] = error_lines(proc)
    assert proc.returncode == 2 and "the disk is full" in line, proc.stderr[-3000:]
    assert tree_digest(run_dir) == before


def test_a_sweep_launched_onto_a_full_disk_is_one_line(full_disk):
    """Hydra writes multirun.yaml before any job: a full disk stops the launch at the sweep lock, in one
    line, and once space is freed the same command runs (one job: the 64 MiB disk holds one TINY run with
    its checkpoint, not two side by side)."""
    args = ["-m", *RUN, *LOCAL, "sweep=s", "init_seed=1", CALLBACK]
    filler = fill(full_disk)
    proc = run_gptx(*args, cwd=full_disk)
    [line] = error_lines(proc)
    assert proc.returncode == 2 and "No space left on device" in line and "nothing was run" in line, line
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    filler.unlink()
    again = run_gptx(*args, cwd=full_disk)
    assert again.returncode == 0, again.stderr[-3000:]
