"""A real full disk: a small tmpfs (mounting needs root) filled while the run checkpoints, and while it
saves its weights. The run says so in one line and exits 1; after space is freed the same command
finishes identical to an uninterrupted run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
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
    assert "Traceback" not in full.stderr
    assert not (run_dir / "model.safetensors").exists()
    filler.unlink()
    again = run_gptx(*RUN, *extra, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert_identical(run_dir, reference)
    shutil.rmtree(run_dir)
