"""A model's weights on disk: safetensors only (tied tensors stored once), so loading runs no code.

`weights_path` says which file a path names (a run folder's model.safetensors, or the file itself);
`save_weights` writes atomically with the config in the metadata; `load_weights` loads strictly.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

import torch
from safetensors.torch import load_model, save_file
from torch import nn

from gptx.errors import UsageError
from gptx.files import MODEL_FILE, check_safetensors_header, file_mode
from gptx.hashing import weights_sha256
from gptx.result import read_result


class WeightsNotFound(UsageError, ValueError):
    """A path that names no weights file; the message says what is wrong with it."""


class WeightsRefused(WeightsNotFound):
    """A file gptx will not read as weights (its header is larger than any gptx writes)."""


class WeightsDamaged(UsageError, ValueError):
    """A weights file whose tensors no longer hash to what the run recorded."""


# The metadata key holding the final_weights_sha256 of the weights a file holds.
RECORDED_SHA_KEY = "gptx_result_sha256"


def recorded_sha256(path: Path, metadata: dict[str, str] | None) -> str | None:
    """The final_weights_sha256 recorded for a weights file: its run's result.json (when the file is a run
    folder's model.safetensors), else its own metadata; None for files gptx did not write (HF GPT-2)."""
    if path.name == MODEL_FILE:
        result = read_result(path.parent)
        if result is not None and isinstance(result.final_weights_sha256, str):
            return result.final_weights_sha256
    value = (metadata or {}).get(RECORDED_SHA_KEY)
    return value if isinstance(value, str) else None


def check_loaded(model: nn.Module, path: Path, metadata: dict[str, str] | None) -> None:
    """Raise WeightsDamaged when a model just loaded from `path` does not hash to the recorded sha256."""
    expected = recorded_sha256(path, metadata)
    if expected is not None and weights_sha256(model) != expected:
        raise WeightsDamaged(f"{path} does not match its recorded final_weights_sha256 ({expected[:12]}…): the file "
                             "was damaged or changed after the run wrote it; restore it, or rerun the run "
                             "(the same command trains it again)")


def weights_path(path: str | Path) -> Path:
    """The .safetensors file a path names: the file itself, or a folder's model.safetensors."""
    path = Path(path)
    if path.is_dir():
        weights = path / MODEL_FILE
        if not weights.is_file():
            raise WeightsNotFound(f"{path} has no {MODEL_FILE}: not a completed run or exported model "
                                  "(a run writes its weights when it completes)")
        check_header(weights)
        return weights
    if not path.is_file():
        raise WeightsNotFound(f"{path}: no such file or folder")
    if path.suffix != ".safetensors":
        raise WeightsNotFound(f"{path} is not a .safetensors file or a run folder (no other format is loaded)")
    check_header(path)
    return path


def check_header(path: Path) -> None:
    """Raise WeightsRefused for a weights file whose header is too large to be gptx's (read: its first 8 bytes)."""
    try:
        check_safetensors_header(path)
    except OSError as err:
        raise WeightsNotFound(f"{path}: unreadable ({err.strerror or err})") from None
    except ValueError as err:
        raise WeightsRefused(str(err)) from None


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str]) -> None:
    """Atomically save the weights as safetensors, a tied matrix once under its first name.

    A tied matrix is stored under the name that comes first in the model's state dict (`tok_emb.weight`
    before `out_head.weight`), so readers that look for the embedding find it; every other name of it is
    recorded in the metadata as `alias -> stored name`, the convention safetensors' `save_model` uses.
    """
    state, aliases = {}, {}
    for name, tensor in model.state_dict().items():
        kept = next((k for k, t in state.items() if _same_storage(t, tensor)), None)
        if kept is None:
            state[name] = tensor.contiguous()
        else:
            aliases[name] = kept
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(state, tmp, metadata={**metadata, **aliases})
        with open(tmp, "r+b") as f:
            _sort_metadata(f)
            os.fchmod(f.fileno(), file_mode())  # safetensors creates its files 0600
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sort_metadata(f: BinaryIO) -> None:
    """Rewrite a just-saved file's header with its metadata in sorted order, in place.

    safetensors writes metadata in hash-map order, which changes from process to process: without this,
    identical runs give files with different bytes, and file checksums (rsync -c, DVC) disagree. Only the
    order changes, so the header keeps its length and the tensor data is never touched.
    """
    n = int.from_bytes(f.read(8), "little")
    raw = f.read(n)
    header = json.loads(raw)
    if "__metadata__" not in header:
        return
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) > n:  # another escaping than serde_json's: leave the file as safetensors wrote it
        return
    f.seek(8)
    f.write(text + b" " * (n - len(text)))  # safetensors pads its header with spaces too


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.dtype == b.dtype


def tie_aliases(names: set[str] | dict, metadata: dict[str, str] | None) -> dict[str, str]:
    """The other names of tied tensors a weights file records: {alias: stored name}.

    Files of either naming (the head's name kept, as older gptx files have it, or the embedding's) carry
    the tie in their metadata, so every reader sees all names, whichever one was stored.
    """
    return {k: v for k, v in (metadata or {}).items() if v in names and k not in names}


def load_weights(model: nn.Module, path: Path) -> None:
    """Load safetensors weights into a model built with the same config (strict; tied names resolved)."""
    check_header(path)
    missing, unexpected = load_model(model, str(path), strict=True)
    if missing or unexpected:
        raise ValueError(f"{path}: missing {missing}, unexpected {unexpected}")
