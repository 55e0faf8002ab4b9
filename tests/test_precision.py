"""What precision a run asks for, and what is recorded as having run."""

from __future__ import annotations

import torch

from gptx.precision import resolve_precision

from conftest import typed_config

CUDA = torch.device("cuda", 0)  # resolve_precision only reads the type; no GPU is touched


def teardown_function():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = True


def test_baseline_on_cuda_is_bf16_autocast_with_tf32():
    p = resolve_precision(typed_config().train, CUDA)
    assert (p.label, p.autocast_dtype, p.grad_scaler) == ("amp_bf16+tf32", torch.bfloat16, False)
    assert torch.backends.cuda.matmul.allow_tf32


def test_fp32_intervention_is_full_float32():
    p = resolve_precision(typed_config("intervention=fp32").train, CUDA)
    assert (p.label, p.autocast_dtype, p.grad_scaler) == ("fp32", None, False)
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32


def test_fp16_uses_a_grad_scaler():
    p = resolve_precision(typed_config("train.amp_dtype=fp16").train, CUDA)
    assert (p.label, p.autocast_dtype, p.grad_scaler) == ("amp_fp16+tf32", torch.float16, True)


def test_cpu_records_that_amp_was_not_applied():
    p = resolve_precision(typed_config().train, torch.device("cpu"))
    assert (p.label, p.autocast_dtype) == ("fp32 (cpu; amp_bf16 requested)", None)
    assert resolve_precision(typed_config("intervention=fp32").train, torch.device("cpu")).label == "fp32"
