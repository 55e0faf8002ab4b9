"""The machine a run uses: which device, its peak FLOP/s and the MFU against it, and the versions,
host and device recorded in result.json (what must match for a bitwise reproduction).

Peaks are NVIDIA's dense (no 2:4 sparsity) datasheet figures, as torchtitan's `get_peak_flops`:
bf16/fp16 tensor cores, TF32 tensor cores for float32 matmuls when TF32 is allowed, and the plain
FP32 CUDA-core rate otherwise. A CPU or an unlisted GPU has no peak (None), so no MFU is claimed.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

import gptx
from gptx.config import ConfigError, DeviceKind

# (name fragment, variant fragment or None) -> (16-bit tensor core, TF32 tensor core, FP32) FLOP/s.
# Checked in order: the variant rows of a GPU come before its default (SXM) row.
PEAKS: list[tuple[str, str | None, tuple[float, float, float]]] = [
    ("A100", None, (312e12, 156e12, 19.5e12)),
    ("H100", "NVL", (835e12, 417.5e12, 60e12)),
    ("H100", "PCIe", (756e12, 378e12, 51e12)),
    ("H100", None, (989e12, 494.5e12, 67e12)),  # SXM
    ("H200", "NVL", (835e12, 417.5e12, 60e12)),
    ("H200", None, (989e12, 494.5e12, 67e12)),  # SXM (and GH200): the H100 SXM's compute
]


def peak_flops_for(device_name: str, dtype: torch.dtype, tf32: bool = False) -> float | None:
    """Dense peak FLOP/s of the GPU named `device_name` computing matmuls in `dtype` (None if unknown)."""
    for fragment, variant, (half, tf32_peak, fp32) in PEAKS:
        if fragment in device_name and (variant is None or variant in device_name):
            if dtype in (torch.bfloat16, torch.float16):
                return half
            if dtype == torch.float32:
                return tf32_peak if tf32 else fp32
            return None
    return None


def peak_flops(device: torch.device, dtype: torch.dtype, tf32: bool = False) -> float | None:
    """Dense peak FLOP/s of `device` for matmuls in `dtype` (None on CPU or an unlisted GPU)."""
    if device.type != "cuda":
        return None
    return peak_flops_for(torch.cuda.get_device_name(device), dtype, tf32)


def mfu(tokens_per_second: float, flops_per_token: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: achieved model FLOP/s over the peak (None when the peak is unknown)."""
    if peak is None or peak <= 0:
        return None
    return tokens_per_second * flops_per_token / peak


def device_memory(device: torch.device) -> int | None:
    """Bytes of memory on a device (the machine's RAM for the CPU); None when it cannot be told."""
    try:
        if device.type == "cuda":
            return torch.cuda.get_device_properties(device).total_memory
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError, RuntimeError, AttributeError):
        return None


def resolve_device(kind: DeviceKind) -> torch.device:
    """CUDA when asked for (or available under auto), else CPU."""
    if kind is DeviceKind.cuda and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is visible")
    if kind is DeviceKind.cpu or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


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
