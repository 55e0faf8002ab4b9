"""Peak FLOP/s per device and MFU, against published figures."""

from __future__ import annotations

import pytest
import torch

from gptx.hardware import mfu, peak_flops, peak_flops_for
from gptx.model import GPTModel, flops_per_token

from conftest import typed_config


@pytest.mark.parametrize(("name", "dtype", "tf32", "expected"), [
    ("NVIDIA A100-SXM4-80GB", torch.bfloat16, False, 312e12),
    ("NVIDIA A100-PCIE-40GB", torch.float16, False, 312e12),
    ("NVIDIA A100-SXM4-40GB", torch.float32, True, 156e12),
    ("NVIDIA A100-SXM4-40GB", torch.float32, False, 19.5e12),
    ("NVIDIA H100 80GB HBM3", torch.bfloat16, False, 989e12),
    ("NVIDIA H100 80GB HBM3", torch.float32, True, 494.5e12),
    ("NVIDIA H100 PCIe", torch.bfloat16, False, 756e12),
    ("NVIDIA H100 NVL", torch.bfloat16, False, 835e12),
    ("NVIDIA H200", torch.bfloat16, False, 989e12),
    ("NVIDIA H200", torch.float32, False, 67e12),
    ("NVIDIA GeForce RTX 3090", torch.bfloat16, False, None),
    ("NVIDIA H100 80GB HBM3", torch.float64, False, None),
])
def test_peak_flops_by_device_name(name, dtype, tf32, expected):
    assert peak_flops_for(name, dtype, tf32) == expected


def test_cpu_has_no_peak_and_so_no_mfu():
    assert peak_flops(torch.device("cpu"), torch.float32) is None
    assert mfu(1e6, 1e9, None) is None


def test_the_studys_a100_run_is_about_nine_percent_mfu():
    cfg = typed_config("model=gpt2_small", tiny=False).model
    with torch.device("meta"):
        model = GPTModel(cfg)
    per_token = flops_per_token(model, 1024)
    assert per_token == 854_438_400
    assert mfu(33_300, per_token, 312e12) == pytest.approx(0.0912, abs=5e-4)
    # 45% MFU on an H100 SXM (the compiled target) is ~521k tokens/s.
    assert 0.45 * 989e12 / per_token == pytest.approx(520_880, rel=1e-4)
