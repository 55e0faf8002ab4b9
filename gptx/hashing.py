"""Content hashes of weights, so "these runs started from the same weights" is a checked fact."""

from __future__ import annotations

import hashlib

import torch
from torch import nn


def tensor_sha256(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and raw bytes."""
    h = hashlib.sha256()
    _update(h, tensor)
    return h.hexdigest()


def named_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and persistent buffers by name, a tied tensor under its first name only."""
    tensors = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    return tensors


def weights_sha256(model: nn.Module) -> str:
    """One hash of every tensor, in sorted-name order, names included."""
    h = hashlib.sha256()
    for name, tensor in sorted(named_tensors(model).items()):
        h.update(name.encode() + b"\0")
        _update(h, tensor)
    return h.hexdigest()


def parameter_sha256s(model: nn.Module) -> dict[str, str]:
    """Per-tensor hashes, so an analysis can say which parameters started identical."""
    return {name: tensor_sha256(t) for name, t in sorted(named_tensors(model).items())}


def _update(h: hashlib._Hash, tensor: torch.Tensor) -> None:
    t = tensor.detach().cpu().contiguous()
    h.update(f"{t.dtype}:{tuple(t.shape)}\0".encode())
    h.update(t.view(torch.uint8).numpy().data if t.numel() else b"")  # the buffer itself: no copy
