"""What a run leaves in its folder: result.json, metrics.jsonl, model.safetensors, sample.txt.

Files that readers rely on are written atomically (temporary file, fsync, rename), so a crash
leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

import gptx
from gptx.files import METRICS_FILE, MODEL_FILE, RESULT_FILE, SAMPLE_FILE, write_atomic  # noqa: F401


def write_json(path: Path, obj: Any) -> None:
    """Atomically write pretty JSON (NaN and inf written as null: strict JSON readers choke on them)."""
    write_atomic(path, (json.dumps(_finite(obj), indent=2, sort_keys=False) + "\n").encode())


def read_result(run_dir: Path) -> dict[str, Any] | None:
    """The run's result.json, or None when there is none or it cannot be parsed."""
    try:
        return json.loads((run_dir / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return None


class MetricsLog:
    """Appends one JSON object a line to metrics.jsonl, flushed so a crash keeps what was logged.

    With path None (ranks other than 0) it writes nothing.
    """

    def __init__(self, path: Path | None, keep_up_to_step: int | None = None):
        self.path = path
        self._file = None
        if path is None:
            return
        if keep_up_to_step is not None and path.exists():
            # A resumed run re-logs the steps after its checkpoint; drop the first attempt's copies.
            # A torn last line (crash or full disk mid-append) is dropped with the rest after the checkpoint.
            kept = [ln for ln in path.read_text().splitlines() if _step_of(ln) <= keep_up_to_step]
            write_atomic(path, "".join(f"{ln}\n" for ln in kept).encode())
        elif keep_up_to_step is None:
            path.unlink(missing_ok=True)
        self._file = path.open("a")

    def write(self, record: dict[str, Any]) -> None:
        """Append one record."""
        if self._file is None:
            return
        self._file.write(json.dumps(_finite(record)) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()


def _step_of(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return float("inf")


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str]) -> None:
    """Atomically save the weights as safetensors (tied tensors stored once) with string metadata."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_model(model, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_weights(model: nn.Module, path: Path) -> None:
    """Load safetensors weights into a model built with the same config (strict)."""
    missing, unexpected = load_model(model, str(path), strict=True)
    if missing or unexpected:
        raise ValueError(f"{path}: missing {missing}, unexpected {unexpected}")


def environment(device: torch.device) -> dict[str, Any]:
    """Versions, host and device: what must match for a bitwise reproduction."""
    versions = {
        "gptx": gptx.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "git_commit": _git_commit(),
    }
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return {"versions": versions, "hostname": socket.gethostname(), "device": device_name,
            "platform": sys.platform}


def _git_commit() -> str | None:
    """The commit of the gptx source tree (with -dirty when modified), if it is a git checkout."""
    source = Path(gptx.__file__).resolve().parent.parent
    if not (source / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(source), "describe", "--always", "--dirty", "--abbrev=40"],
            capture_output=True, text=True, timeout=10, check=True,
        )
        # describe --dirty ignores untracked files (e.g. a new module not yet added).
        untracked = subprocess.run(
            ["git", "-C", str(source), "ls-files", "--others", "--exclude-standard", "--", "gptx", "hydra_plugins"],
            capture_output=True, text=True, timeout=10, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    if commit and untracked.stdout.strip() and not commit.endswith("-dirty"):
        commit += "-dirty"
    return commit or None


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
