"""The names of a run's and a sweep's files and folders that several modules share, and torch-free ways to
write and read them (a checkpoint's inside is gptx.checkpoint's own).

Atomic replacement, exclusive new folders, JSON with non-finite numbers as null, the result and the
metrics log. Free of torch, so light processes (data-preparation workers, the sweep callback, the
analysis) can use them.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

# A run's folder.
RESULT_FILE = "result.json"  # its presence and status say what became of a run; written by gptx.run only
METRICS_FILE = "metrics.jsonl"  # one JSON record per logged step
MODEL_FILE = "model.safetensors"  # the final weights
SAMPLE_FILE = "sample.txt"  # the greedy continuation of the smoke prompt
TEST_LOSSES_FILE = "test_losses.npy"  # float32, one mean loss per test sequence, in test-set order
TRAIN_LOG = "train.log"  # the log (Hydra names it after hydra.job.name, "train")
CONSOLE_LOG = "console.log"  # a launched job's stdout and stderr
HYDRA_DIR = ".hydra"  # the composed config, Hydra's settings, the overrides
CONFIG_FILE = Path(HYDRA_DIR) / "config.yaml"
HYDRA_FILE = Path(HYDRA_DIR) / "hydra.yaml"
OVERRIDES_FILE = Path(HYDRA_DIR) / "overrides.yaml"
INTERVENTIONS_FILE = Path(HYDRA_DIR) / "interventions.yaml"  # each applied intervention's file, source, settings
CHECKPOINT_DIR = "checkpoints"  # resumable checkpoints (their inside is gptx.checkpoint's)
REPRODUCTIONS_DIR = "reproductions"  # re-runs of a run, inside its folder
REPRODUCTION_FILE = "reproduction.json"  # a reproduction's verdict, in its folder
RUN_MARKER = ".gptx"  # says gptx made the folder: gptx writes (and deletes) only in folders holding it
RUN_LOCK_FILE = ".gptx.lock"  # flocked by the process working in the run folder (gptx.folders)

# Where sweeps go, relative to the working directory (single runs: outputs/; both set in gptx/conf/config.yaml).
SWEEP_ROOT = "multirun_outputs"  # multirun_outputs/NAME or multirun_outputs/YYYY-MM-DD/HH-MM-SS

def sweep_label(sweep_dir: Path) -> str:
    """A sweep's name as `sweep=` takes it: NAME, or DATE/TIME for a sweep named by the clock."""
    sweep_dir = Path(sweep_dir)
    parent = sweep_dir.parent.name
    dated = len(parent) == 10 and parent[4] == "-" and parent[7] == "-" and parent.replace("-", "").isdigit()
    return f"{parent}/{sweep_dir.name}" if dated else sweep_dir.name


# A sweep's folder.
RUNS_CSV = "runs.csv"  # a sweep's table of runs
LOCK_FILE = ".sweep.lock"  # held by the launch that owns the sweep
STUDY_FILE = "study.json"  # the sweep's base config (its baseline arm), written by its first launch
ADAPTIVE_FILE = "adaptive.json"  # an adaptive sweep's plan and where it stands; written by its sweeper only

# Token files (nanoGPT's raw uint16 .bin, or llm.c's with a header of 256 int32: magic, version, n_tokens).
LLMC_MAGIC = 20240520
LLMC_VERSION = 1
LLMC_HEADER_INTS = 256
LLMC_HEADER_BYTES = LLMC_HEADER_INTS * 4


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


def disk_full(error: BaseException) -> bool:
    """Whether a write failed because the disk is full (an OSError, or safetensors' own error saying so)."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    return "No space left on device" in str(error) or "Disk quota exceeded" in str(error)


class LogFile(logging.FileHandler):
    """A log file that a full or read-only disk stops quietly: one line on stderr, the first time a record
    cannot be written (or the file cannot be opened), instead of Python's traceback for every record.

    Hydra's job log (`train.log`, set in gptx/conf/config.yaml) and gptx.reproduce's use it; the console
    keeps every line, and the command's own error says what the disk did to the run.
    """

    def __init__(self, filename: str | Path, mode: str = "a", encoding: str | None = None, delay: bool = False,
                 errors: str | None = None) -> None:
        self.failed = False
        super().__init__(filename, mode, encoding, delay=True, errors=errors)
        if not delay:
            try:
                self.stream = self._open()
            except OSError as err:
                self._give_up(err)

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

    def flush(self) -> None:
        try:
            super().flush()
        except OSError as err:
            self._give_up(err)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        err = sys.exc_info()[1]
        if isinstance(err, OSError):
            self._give_up(err)
        else:
            super().handleError(record)

    def _give_up(self, err: OSError) -> None:
        if self.failed:
            return
        self.failed = True
        stream, self.stream = self.stream, None
        try:
            if stream is not None:
                stream.close()
        except OSError:
            pass  # its buffer cannot reach the disk either
        try:
            print(f"gptx: warning: cannot write the log {self.baseFilename} ({err.strerror or err}); it stops "
                  "here, the console keeps every line", file=sys.stderr, flush=True)
        except OSError:
            pass  # stderr on the same disk (a launcher's console.log)


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


def file_sha256(path: Path, block: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read a block at a time (memory stays at one block whatever the size)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(block), b""):
            h.update(chunk)
    return h.hexdigest()


# The largest safetensors header (tensor index and metadata) gptx reads. gptx writes a config of at most
# 1 MiB there (gptx.saved_config.MAX_YAML_BYTES) beside an index of about 100 bytes a tensor; safetensors
# itself would parse up to 100 MB of JSON.
SAFETENSORS_HEADER_LIMIT = 4 << 20


def safetensors_header_length(path: Path) -> int:
    """A safetensors file's header length, its first 8 bytes (a little-endian u64), read alone.

    ValueError for a file too short to hold them; OSError when it cannot be read."""
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8:
        raise ValueError(f"{path} is {len(head)} bytes long: not a safetensors file")
    return int.from_bytes(head, "little")


def check_safetensors_header(path: Path, limit: int = SAFETENSORS_HEADER_LIMIT) -> None:
    """ValueError (one line) for a safetensors file whose header is over `limit` bytes, before any of it is read."""
    n = safetensors_header_length(path)
    if n > limit:
        raise ValueError(f"{path} has a safetensors header of {n} bytes (tensor index and metadata), over gptx's "
                         f"limit of {limit >> 20} MiB: not a file gptx wrote; it was not read")


def safetensors_complete(path: Path) -> bool:
    """Whether a safetensors file is whole: its header parses and its tensors end exactly at the file's end.

    Catches truncation and a damaged header without reading the data (a flipped data bit needs a hash).
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            n = int.from_bytes(f.read(8), "little")
            if n <= 0 or 8 + n > size or n > SAFETENSORS_HEADER_LIMIT:
                return False
            header = json.loads(f.read(n))
        ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
        return 8 + n + max(ends, default=0) == size
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError, RecursionError):
        return False


def write_json(path: Path, obj: Any) -> None:
    """Atomically write pretty JSON (NaN and inf written as null: strict JSON readers choke on them)."""
    write_atomic(path, (json.dumps(_null_for_non_finite(obj), indent=2, sort_keys=False) + "\n").encode())


# Larger than any JSON file gptx writes (result.json is a few KB; adaptive.json grows with its waves).
JSON_LIMIT = 64 << 20


def read_json(path: Path, limit: int = JSON_LIMIT) -> Any:
    """A JSON file gptx wrote, read totally: OSError when it cannot be opened, and ValueError (one line) for
    everything its content can be — too large, not UTF-8, not JSON, or nested too deeply for the parser."""
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit >> 20} MiB")
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ValueError("nested too deeply") from None


def read_json_object(path: Path, limit: int = JSON_LIMIT) -> dict[str, Any]:
    """read_json for a file that must hold a JSON object (ValueError when it holds anything else)."""
    value = read_json(path, limit)
    if not isinstance(value, dict):
        raise ValueError(f"not a JSON object (a {type(value).__name__})")
    return value


class MetricsLog:
    """Appends one JSON object a line to metrics.jsonl, flushed so a crash keeps what was logged.

    With path None (ranks other than 0) it writes nothing. `mirror`, when given, also receives every
    record written (an experiment tracker: gptx.trackers), after the file has it.
    """

    def __init__(self, path: Path | None, keep_up_to_step: int | None = None,
                 mirror: Callable[[dict[str, Any]], None] | None = None):
        self.path, self.mirror = path, mirror
        self._file = None
        if path is None:
            return
        if keep_up_to_step is not None and path.exists():
            # A resumed run re-logs the steps after its checkpoint; drop the first attempt's copies.
            # A torn last line (crash or full disk mid-append) is dropped with the rest after the checkpoint.
            # gptx writes ASCII JSON: a line with other bytes is damaged, and dropped like a torn one.
            lines = path.read_bytes().decode("ascii", errors="replace").splitlines()
            kept = [ln for ln in lines if "\ufffd" not in ln and _step_of(ln) <= keep_up_to_step]
            write_atomic(path, "".join(f"{ln}\n" for ln in kept).encode())
        elif keep_up_to_step is None:
            path.unlink(missing_ok=True)
        self._file = path.open("a")

    def write(self, record: dict[str, Any]) -> None:
        """Append one record."""
        if self._file is None:
            return
        self._file.write(json.dumps(_null_for_non_finite(record)) + "\n")
        self._file.flush()
        if self.mirror is not None:
            self.mirror(record)

    def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()


def _step_of(line: str) -> float:
    try:
        step = json.loads(line)["step"]
    except (ValueError, KeyError, TypeError, IndexError, RecursionError):
        return float("inf")
    return step if isinstance(step, (int, float)) and not isinstance(step, bool) else float("inf")


def _null_for_non_finite(obj: Any) -> Any:
    """A copy of a JSON-ready tree with NaN and ±inf floats replaced by None."""
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    if isinstance(obj, dict):
        return {k: _null_for_non_finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_null_for_non_finite(v) for v in obj]
    return obj
