"""gptx.attention_backend: cuDNN attention is off whenever dropout > 0, and the kernel a run gets is recorded."""

from __future__ import annotations

import json

import pytest
import torch

from gptx.attention_backend import pin_attention_backends, sdpa_backend, sdpa_kernels_run
from gptx.run import train

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def restore_cudnn_sdp():
    before = torch.backends.cuda.cudnn_sdp_enabled()
    yield
    torch.backends.cuda.enable_cudnn_sdp(before)


@pytest.mark.parametrize("dropout, cudnn", [(0.1, False), (0.5, False), (0.0, True)])
def test_cudnn_attention_is_allowed_only_without_dropout(dropout, cudnn):
    pin_attention_backends(dropout)
    assert torch.backends.cuda.cudnn_sdp_enabled() is cudnn


def test_the_cpu_dispatcher_picks_math_with_dropout_and_flash_without():
    assert sdpa_backend(CPU, torch.float32, 2, 16, 32, dropout=0.1) == "math"
    assert sdpa_backend(CPU, torch.float32, 2, 16, 32, dropout=0.0) == "flash_attention"


def test_the_probe_runs_what_the_dispatcher_picks_and_leaves_the_rng_alone():
    state = torch.get_rng_state()
    assert sdpa_kernels_run(CPU, torch.float32, 2, 16, 32, dropout=0.1) == "math"
    assert sdpa_kernels_run(CPU, torch.float32, 2, 16, 32, dropout=0.0) == "flash_attention_cpu"
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("deterministic", [False, True])
def test_no_cudnn_attention_on_cuda_with_dropout(deterministic):
    torch.use_deterministic_algorithms(deterministic)
    try:
        pin_attention_backends(0.1)
        for dtype in (torch.bfloat16, torch.float16):
            cuda = torch.device("cuda")
            assert "cudnn" not in sdpa_backend(cuda, dtype, 12, 64, 1024, dropout=0.1)
            assert "cudnn" not in sdpa_kernels_run(cuda, dtype, 12, 64, 1024, dropout=0.1)
    finally:
        torch.use_deterministic_algorithms(False)


def test_result_json_records_the_sdpa_backend(tiny, tmp_path):
    result = train(tiny("train.device=cpu", "train.max_steps=1"), tmp_path / "run")
    assert result["sdpa_backend"] == "math"  # the tiny model has dropout 0.1
    assert json.loads((tmp_path / "run" / "result.json").read_text())["sdpa_backend"] == "math"
