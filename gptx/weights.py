"""A model's weights on disk: safetensors only (tied tensors stored once), so loading runs no code.

`weights_path` says which file a path names (a run folder's model.safetensors, or the file itself);
`save_weights` writes atomically with the config in the metadata; `load_weights` loads strictly.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from safetensors.torch import load_model, save_model
from torch import nn

from gptx.files import MODEL_FILE


class WeightsNotFound(ValueError):
    """A path that names no weights file; the message says what is wrong with it."""


def weights_path(path: str | Path) -> Path:
    """The .safetensors file a path names: the file itself, or a folder's model.safetensors."""
    path = Path(path)
    if path.is_dir():
        weights = path / MODEL_FILE
        if not weights.is_file():
            raise WeightsNotFound(f"{path} has no {MODEL_FILE}: not a completed run or exported model "
                                  "(a run writes its weights when it completes)")
        return weights
    if not path.is_file():
        raise WeightsNotFound(f"{path}: no such file or folder")
    if path.suffix != ".safetensors":
        raise WeightsNotFound(f"{path} is not a .safetensors file or a run folder (no other format is loaded)")
    return path


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
