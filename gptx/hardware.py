"""Peak FLOP/s of the device a run uses, and model FLOPs utilisation (MFU) against it.

Peaks are NVIDIA's dense (no 2:4 sparsity) datasheet figures, as torchtitan's `get_peak_flops`:
bf16/fp16 tensor cores, TF32 tensor cores for float32 matmuls when TF32 is allowed, and the plain
FP32 CUDA-core rate otherwise. A CPU or an unlisted GPU has no peak (None), so no MFU is claimed.
"""

from __future__ import annotations

import torch

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
