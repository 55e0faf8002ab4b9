"""A real full disk: a small tmpfs (mounting needs root) filled while the run checkpoints, while it
saves its weights, and as it writes its final result.json. The run says so in one line and exits 1;
after space is freed the same command finishes identical to an uninterrupted run.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from faultkit import TINY, assert_identical, run_gptx

pytestmark = pytest.mark.slow

RUN = [*TINY, "train.max_steps=4"]
# The TINY model: about 13 MB of weights, about 40 MB for a checkpoint (weights and two AdamW moments).
CASES = {
    "checkpoint": ([], 24 << 20),  # the checkpoint before the final outputs does not fit
    "weights": (["train.checkpoint_minutes=null"], 6 << 20),  # no checkpoints: model.safetensors does not fit
}


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MiB tmpfs at tmp_path/disk, unmounted afterwards; skipped where mounting is not permitted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or 'mount failed'}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """A filler file leaving about `leave` bytes free on the disk."""
    stat = os.statvfs(disk)
    filler = disk / "filler"
    filler.write_bytes(b"\0" * max(stat.f_bavail * stat.f_frsize - leave, 0))
    return filler


@pytest.mark.parametrize("where", sorted(CASES))
def test_a_full_disk_is_one_line_and_the_rerun_finishes_identical(small_disk, tmp_path, where):
    extra, leave = CASES[where]
    reference = tmp_path / "reference"
    assert run_gptx(*RUN, *extra, f"hydra.run.dir={reference}", cwd=tmp_path).returncode == 0
    run_dir = small_disk / "run"
    filler = fill(small_disk, leave)
    full = run_gptx(*RUN, *extra, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert full.returncode == 1, full.stderr[-3000:]
    [line] = [line for line in full.stderr.splitlines() if line.startswith("gptx: error:")]
    assert "the disk is full" in line and "rerun the same command" in line
    assert "no checkpoint was written, so it starts over" in line  # the one it tried to write did not fit
    assert "Traceback" not in full.stderr
    assert not (run_dir / "model.safetensors").exists()
    filler.unlink()
    again = run_gptx(*RUN, *extra, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert_identical(run_dir, reference)
    shutil.rmtree(run_dir)


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


def test_a_disk_that_fills_as_result_json_is_written_loses_nothing(small_disk, tmp_path):
    """Default checkpoints: the run is held (SIGSTOP) after every other output, the disk is filled to the
    last page, and the completed result.json cannot be written. The rerun finishes from the checkpoint
    taken before the final outputs, identical."""
    reference = tmp_path / "reference"
    assert run_gptx(*RUN, f"hydra.run.dir={reference}", cwd=tmp_path).returncode == 0
    run_dir = small_disk / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0", "GPTX_FAULT": "result@4=STOP"}
    proc = subprocess.Popen([sys.executable, "-m", "gptx.train", *RUN, f"hydra.run.dir={run_dir}"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not _stopped(proc.pid):
        assert proc.poll() is None and time.monotonic() < deadline, "the run never reached its result.json"
        time.sleep(0.05)
    assert (run_dir / "model.safetensors").exists()  # every other output is in place
    filler = fill(small_disk, 0)
    proc.send_signal(signal.SIGCONT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stderr[-3000:]
    [line] = [line for line in stderr.splitlines() if line.startswith("gptx: error:")]
    assert "the disk is full" in line and "rerun the same command" in line
    assert "it resumes from the newest checkpoint that verifies (step_00000004" in line
    assert "Traceback" not in stderr
    assert '"completed"' not in (run_dir / "result.json").read_text()
    filler.unlink()
    again = run_gptx(*RUN, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resum" in (again.stdout + again.stderr).lower()
    assert_identical(run_dir, reference)
    shutil.rmtree(run_dir)


def test_an_export_onto_a_full_disk_is_one_line_and_changes_nothing(small_disk, tmp_path):
    run_dir = tmp_path / "run"
    assert run_gptx(*RUN, "train.checkpoint_minutes=null", f"hydra.run.dir={run_dir}", cwd=tmp_path).returncode == 0
    filler = fill(small_disk, 1 << 20)  # room for config.json, not for 13 MB of weights
    for out in (small_disk / "new", small_disk / "old"):
        if out.name == "old":
            out.mkdir()
            (out / "config.json").write_text("an earlier export")
        before = sorted(p.name for p in small_disk.iterdir())
        proc = run_gptx(str(run_dir), str(out), "--overwrite", module="gptx.export", cwd=tmp_path)
        assert proc.returncode == 1, proc.stderr[-3000:]
        [line] = [ln for ln in proc.stderr.splitlines() if ln.startswith("gptx: error:")]
        assert "the disk is full" in line and "Traceback" not in proc.stderr
        assert sorted(p.name for p in small_disk.iterdir()) == before  # no temporary folder left
    assert not (small_disk / "new").exists() and (small_disk / "old" / "config.json").read_text() == "an earlier export"
    filler.unlink()
    proc = run_gptx(str(run_dir), str(small_disk / "new"), module="gptx.export", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {"config.json", "model.safetensors", "vocab.json"} <= {p.name for p in (small_disk / "new").iterdir()}
