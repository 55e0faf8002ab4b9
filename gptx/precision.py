"""Numeric precision: what was asked for, and what actually runs on the device."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from gptx.config import AmpDtype, TrainConfig


@dataclass(frozen=True)
class Precision:
    """How the forward pass computes, and the label recorded in result.json."""

    label: str
    autocast_dtype: torch.dtype | None
    grad_scaler: bool

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The autocast context for a forward pass (a no-op in float32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast_dtype)


def resolve_precision(cfg: TrainConfig, device: torch.device) -> Precision:
    """Apply the TF32 setting and pick autocast. CPUs compute in float32: bf16 autocast there is another
    arithmetic, 0.71x a step on one CPU and 1.1x on another (docs/performance.md)."""
    if device.type != "cuda":
        note = f" (cpu; amp_{cfg.amp_dtype.value} requested)" if cfg.amp else ""
        return Precision(f"fp32{note}", None, False)
    torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
    torch.backends.cudnn.allow_tf32 = cfg.tf32
    tf32 = "+tf32" if cfg.tf32 else ""
    if not cfg.amp:
        return Precision(f"fp32{tf32}", None, False)
    dtype = torch.bfloat16 if cfg.amp_dtype is AmpDtype.bf16 else torch.float16
    return Precision(f"amp_{cfg.amp_dtype.value}{tf32}", dtype, cfg.amp_dtype is AmpDtype.fp16)
