"""A model's weights on disk: safetensors only (tied tensors stored once), so loading runs no code.

`weights_path` says which file a path names (a run folder's model.safetensors, or the file itself);
`save_weights` writes atomically with the config in the metadata; `load_weights` loads strictly.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_model, save_file
from torch import nn

from gptx.files import MODEL_FILE, file_mode


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
        with open(tmp, "rb") as f:
            os.fchmod(f.fileno(), file_mode())  # safetensors creates its files 0600
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    missing, unexpected = load_model(model, str(path), strict=True)
    if missing or unexpected:
        raise ValueError(f"{path}: missing {missing}, unexpected {unexpected}")
