"""File-system primitives every writer shares: atomic replacement and exclusive new folders.

Free of torch, so light processes (data-preparation workers, the sweep callback) can use them.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

# Every file and folder name of a run and a sweep, named once here for every reader and writer.
RESULT_FILE = "result.json"  # its presence and status say what became of a run
METRICS_FILE = "metrics.jsonl"  # one JSON record per logged step
MODEL_FILE = "model.safetensors"  # the final weights
SAMPLE_FILE = "sample.txt"  # the greedy continuation of the smoke prompt
TEST_LOSSES_FILE = "test_losses.npy"  # float32, one mean loss per test sequence, in test-set order
REPRODUCTIONS_DIR = "reproductions"  # re-runs of a run, inside its folder
RUNS_CSV = "runs.csv"  # a sweep's table of runs


def umask() -> int:
    """The process's umask, read without changing it where Linux shows it, else set and restored at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


def file_mode() -> int:
    """The mode a plain `open` would give a new file: temporary files (mode 0600) get it before the rename,
    so colleagues sharing a project folder can read results as they could any other file."""
    return 0o666 & ~umask()


def dir_mode() -> int:
    """The mode a plain `mkdir` would give a new folder (temporary folders are created 0700)."""
    return 0o777 & ~umask()


def write_atomic(path: Path, data: bytes | Iterable[bytes | memoryview]) -> None:
    """Replace `path` with `data` (bytes, or chunks streamed in order) all at once: temp file, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as f:
            for chunk in [data] if isinstance(data, bytes) else data:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def create_exclusive_dir(parent: Path, stem: str, limit: int = 10_000) -> Path:
    """Create and return `parent/stem`, or `stem_1`, `stem_2`, … when taken: two callers never share one."""
    parent.mkdir(parents=True, exist_ok=True)
    for n in range(limit):
        path = parent / (stem if n == 0 else f"{stem}_{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"{parent} already holds {limit} folders named {stem}*")
