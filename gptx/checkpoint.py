"""Resumable checkpoints: all state a run needs to continue bit-exactly, and nothing that can run code.

A checkpoint is a folder `checkpoints/step_NNNNNNNN/` with `state.safetensors` (weights, optimizer
moments, every RNG state, as tensors) and `meta.json` (step, counters, scaler, optimizer
hyper-parameters, and the sha256 of the state file). It is written in a temporary folder and renamed
into place; the newest valid one is used, a corrupt one is skipped in favour of the one before, and
the previous one is deleted only after the new one is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gptx.errors import UsageError
from gptx.faults import maybe_fire
from gptx.files import CHECKPOINT_DIR, dir_mode, file_mode
from gptx.hashing import named_tensors

# A checkpoint's inside is private to this module: nothing else reads these files.
STATE_FILE = "state.safetensors"
META_FILE = "meta.json"
# Which arithmetic wrote a checkpoint. Bumped whenever gptx changes how a step computes (and so the
# bits a config gives): 1 = through the full-logits loss, foreach AdamW on the CPU and three Q/K/V
# matmuls; 2 = the sliced head + cross-entropy (gptx.loss), fused AdamW and one Q/K/V matmul. A run is
# never resumed across versions: its steps would come from two different computations.
NUMERICS_VERSION = 2
KEEP = 2  # the newest and the one before it, as a fallback
_OWN_NAME = re.compile(r"(\.tmp-)?step_\d{8,}(-\w+)?")  # the names gptx gives checkpoint folders


class CheckpointError(UsageError, RuntimeError):
    """Checkpoints exist but none can be trusted: resuming would silently restart from step 0."""


@dataclass(frozen=True)
class LoopPosition:
    """Where the training loop stands: what it carries from one step to the next, saved in every checkpoint."""

    step: int = 0
    wall_seconds: float = 0.0
    interval_loss: float = 0.0
    """Sum of train losses since the last metrics line (so the next line averages the same steps)."""
    interval_steps: int = 0
    grad_clip_active_steps: int = 0
    """Steps so far whose pre-clip gradient norm exceeded train.grad_clip (0 without clipping)."""
    grad_norm_max: float = 0.0
    """Largest pre-clip gradient norm so far (0 without clipping)."""
    train_loss: float | None = None
    """The last metrics line's train loss (what result.json reports when the loop resumes at its end)."""
    val_loss: float | None = None
    """The last validation loss."""


@dataclass(frozen=True)
class TrainingState:
    """A checkpoint's manifest besides the tensors: where the loop stood, and what it must resume into
    (the same config, initial weights and number of processes; the GradScaler's state)."""

    position: LoopPosition
    config_sha256: str
    init_weights_sha256: str
    scaler: dict[str, Any] | None = None
    world_size: int = 1

    @property
    def step(self) -> int:
        """The optimizer steps taken (the checkpoint's folder is named by it)."""
        return self.position.step


@dataclass
class Checkpoint:
    """A verified checkpoint read back from disk."""

    path: Path
    state: TrainingState
    tensors: dict[str, torch.Tensor]
    optimizer_param_groups: list[dict[str, Any]]


def save_checkpoint(run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    rng: dict[str, torch.Tensor], state: TrainingState) -> Path:
    """Write a checkpoint atomically and prune all but the newest KEEP."""
    root = run_dir / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{state.step:08d}"
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in named_tensors(model).items()}
    optim_state = optimizer.state_dict()
    for index, entry in optim_state["state"].items():
        for key, value in entry.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors.update({f"rng.{k}": v.cpu().contiguous() for k, v in rng.items()})
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-{final.name}-"))
    try:
        tmp.chmod(dir_mode())
        save_file(tensors, str(tmp / STATE_FILE))
        position = state.position
        meta = {
            "step": position.step,
            "wall_seconds": position.wall_seconds,
            "config_sha256": state.config_sha256,
            "numerics_version": NUMERICS_VERSION,
            "init_weights_sha256": state.init_weights_sha256,
            "scaler": state.scaler,
            "world_size": state.world_size,
            "interval_loss": position.interval_loss,
            "interval_steps": position.interval_steps,
            "grad_clip_active_steps": position.grad_clip_active_steps,
            "grad_norm_max": position.grad_norm_max,
            "train_loss": position.train_loss,
            "val_loss": position.val_loss,
            "optimizer_param_groups": optim_state["param_groups"],
            "state_sha256": _file_sha256(tmp / STATE_FILE),
        }
        meta["meta_sha256"] = _meta_sha256(meta)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        for name in (STATE_FILE, META_FILE):
            with open(tmp / name, "rb") as f:
                os.fchmod(f.fileno(), file_mode())  # safetensors creates its files 0600
                os.fsync(f.fileno())
        maybe_fire("save", state.step)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(run_dir)[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first (temporary folders of interrupted saves excluded)."""
    root = run_dir / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_"))


def load_latest(run_dir: Path, config_sha256: str,
                fits: Callable[[Checkpoint], None] | None = None) -> Checkpoint | None:
    """The newest checkpoint that verifies; None when there is none.

    A checkpoint verifies when both its files match the hashes in its manifest (meta.json, itself hashed as
    a whole), every manifest value has its type and range, and `fits` (the run's plan: steps, tensors,
    optimizer groups, RNG streams) raises no ValueError; one that does not is skipped for the one before.
    Raises CheckpointError when checkpoints exist but none verifies, or they belong to another config.
    """
    candidates = list_checkpoints(run_dir)
    problems = []
    for path in reversed(candidates):
        try:
            meta = json.loads((path / META_FILE).read_text())
            if not isinstance(meta, dict) or meta.get("meta_sha256") != _meta_sha256(meta):
                raise ValueError("meta.json does not match its own sha256")
            if _file_sha256(path / STATE_FILE) != meta["state_sha256"]:
                raise ValueError("state.safetensors does not match the sha256 in meta.json")
            state = _state_of(meta, path.name)
            tensors = load_file(str(path / STATE_FILE))
        except (OSError, ValueError, KeyError, TypeError, RecursionError, SafetensorError) as err:
            problems.append(f"{path.name}: {err}")
            continue
        if meta["config_sha256"] != config_sha256:
            raise CheckpointError(
                f"{run_dir} holds an interrupted run of another config (config_sha256 "
                f"{meta['config_sha256'][:12]}…, this command's {config_sha256[:12]}…): to resume it, rerun its "
                f"own config (--config-path {run_dir / '.hydra'} --config-name config); for this config, choose "
                "another folder; overwrite=true starts it over, deleting its checkpoints"
            )
        written_by = meta.get("numerics_version", 1)
        if written_by != NUMERICS_VERSION:
            raise CheckpointError(
                f"{path} was written by gptx's arithmetic version {written_by}, this gptx computes version "
                f"{NUMERICS_VERSION} (docs/performance.md): resuming would mix two computations in one run; "
                "finish it with the gptx that started it, or start over with overwrite=true"
            )
        checkpoint = Checkpoint(path, state, tensors, meta["optimizer_param_groups"])
        if fits is not None:
            try:
                fits(checkpoint)
            except ValueError as err:
                problems.append(f"{path.name}: {err}")
                continue
        return checkpoint
    if candidates:
        raise CheckpointError(
            f"no valid checkpoint in {run_dir / CHECKPOINT_DIR} ({'; '.join(problems)}); refusing to "
            "retrain over it: move the folder away or pass overwrite=true"
        )
    return None


def _state_of(meta: dict[str, Any], folder_name: str) -> TrainingState:
    """The manifest's values, each checked for its type and range (ValueError names the first that is not)."""
    def need(key: str, ok: Callable[[Any], bool], what: str, default: Any = ...) -> Any:
        value = meta.get(key, default) if default is not ... else meta[key]
        if not ok(value):
            raise ValueError(f"meta.json {key}={value!r:.60} is not {what}")
        return value

    step = need("step", lambda v: _is_int(v) and v >= 0, "a step number")
    if folder_name != f"step_{step:08d}":
        raise ValueError(f"meta.json says step {step}, its folder is {folder_name}")
    counts = lambda v: _is_int(v) and 0 <= v <= step  # noqa: E731 - a counter of steps so far
    need("numerics_version", _is_int, "an integer", 1)
    need("optimizer_param_groups", lambda v: isinstance(v, list) and all(isinstance(g, dict) for g in v),
         "a list of parameter groups")
    need("state_sha256", lambda v: isinstance(v, str), "a sha256")
    position = LoopPosition(
        step,
        need("wall_seconds", lambda v: _is_real(v) and v >= 0, "a duration"),
        need("interval_loss", _is_real, "a loss sum", 0.0),
        need("interval_steps", counts, "a number of steps so far", 0),
        need("grad_clip_active_steps", counts, "a number of steps so far", 0),
        need("grad_norm_max", lambda v: _is_real(v) and not v < 0, "a gradient norm", 0.0),
        need("train_loss", lambda v: v is None or _is_real(v), "a loss", None),
        need("val_loss", lambda v: v is None or _is_real(v), "a loss", None),
    )
    return TrainingState(
        position,
        need("config_sha256", lambda v: isinstance(v, str), "a sha256"),
        need("init_weights_sha256", lambda v: isinstance(v, str), "a sha256"),
        need("scaler", lambda v: v is None or isinstance(v, dict), "a GradScaler state", None),
        need("world_size", lambda v: _is_int(v) and v >= 1, "a number of processes", 1),
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    """A JSON number (NaN and inf included: json writes them, and a loss can overflow)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def restore(checkpoint: Checkpoint, model: torch.nn.Module,
            optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Load weights and optimizer state from a checkpoint; returns the RNG states to restore."""
    tensors = checkpoint.tensors
    params = named_tensors(model)
    with torch.no_grad():
        for name, tensor in params.items():
            tensor.copy_(tensors[f"model.{name}"])
    optim_state: dict[int, dict[str, torch.Tensor]] = {}
    rng = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, field = key.split(".", 2)
            optim_state.setdefault(int(index), {})[field] = value
        elif key.startswith("rng."):
            rng[key[len("rng."):]] = value
    optimizer.load_state_dict({"state": optim_state, "param_groups": checkpoint.optimizer_param_groups})
    return rng


def remove_checkpoints(run_dir: Path) -> None:
    """Delete every checkpoint of the run (after it completed, or when overwriting).

    Only what gptx wrote goes, by name: `step_NNNNNNNN` folders and interrupted saves' `.tmp-step_…`;
    `checkpoints/` itself only once nothing else is left in it.
    """
    root = run_dir / CHECKPOINT_DIR
    if root.is_symlink() or not root.is_dir():
        return
    for path in root.iterdir():
        if _OWN_NAME.fullmatch(path.name) and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
    try:
        root.rmdir()
    except OSError:
        pass  # something gptx did not write is still there: it stays


def _meta_sha256(meta: dict[str, Any]) -> str:
    """Hash of the manifest itself, so a flipped step number is caught like a flipped weight."""
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
