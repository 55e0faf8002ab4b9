"""Which scaled_dot_product_attention kernel a run's attention uses: pinned from the config, and read back.

On CUDA, PyTorch picks the SDPA kernel per call, in a priority order that changes between releases: on
torch >= 2.10 with a recent cuDNN, cuDNN attention comes first on sm90 when deterministic algorithms are
off, and a torch without the guard of pytorch#174245 lets cuDNN round a dropout probability of 0.1 to a
multiple of 1/16, silently training another model. So cuDNN attention is switched off whenever the model
uses dropout (`pin_attention_backends`), and the kernel a run gets is recorded in result.json
(`sdpa_backend`). A CPU has no cuDNN attention: the switch changes nothing there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend

# The aten op each SDPA kernel dispatches to (what the profiler names), and gptx's short name for it.
SDPA_OPS = {
    "aten::_scaled_dot_product_cudnn_attention": "cudnn_attention",
    "aten::_scaled_dot_product_flash_attention": "flash_attention",
    "aten::_scaled_dot_product_efficient_attention": "efficient_attention",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "flash_attention_cpu",
    "aten::_scaled_dot_product_fused_attention_overrideable": "overrideable",
    "aten::_scaled_dot_product_attention_math": "math",
}


def pin_attention_backends(dropout: float) -> None:
    """Allow cuDNN attention only for a model without dropout (process-wide, like the determinism flags)."""
    torch.backends.cuda.enable_cudnn_sdp(dropout == 0.0)


def sdpa_backend(device: torch.device, dtype: torch.dtype, n_heads: int, head_dim: int, seq_len: int,
                 dropout: float) -> str:
    """The kernel PyTorch's dispatcher picks for a training-shaped causal SDPA call here and now, by the
    backend flags and determinism setting in force (`math`, `flash_attention`, `efficient_attention`,
    `cudnn_attention`, ...). Computes nothing and draws no random numbers."""
    q = torch.empty(1, n_heads, seq_len, head_dim, device=device, dtype=dtype, requires_grad=True)
    try:
        return SDPBackend(torch._fused_sdp_choice(q, q, q, None, dropout, True)).name.lower()
    except (AttributeError, RuntimeError, ValueError) as err:  # a private API: never fail a run over it
        return f"unknown ({type(err).__name__})"


def sdpa_kernels_run(device: torch.device, dtype: torch.dtype, n_heads: int, head_dim: int, seq_len: int,
                     dropout: float) -> str:
    """The kernels one such call actually runs, forward and backward, as the profiler names them.

    Every RNG is forked, so the probe's dropout draws leave the caller's streams untouched. Several
    kernels are joined by '+'; 'unknown' when the profiler names none of SDPA_OPS.
    """
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        q = torch.zeros(1, n_heads, seq_len, head_dim, device=device, dtype=dtype, requires_grad=True)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            F.scaled_dot_product_attention(q, q, q, dropout_p=dropout, is_causal=True).sum().backward()
    seen = {event.key for event in prof.key_averages()}
    names = [short for op, short in SDPA_OPS.items() if op in seen]
    return "+".join(names) or "unknown"
