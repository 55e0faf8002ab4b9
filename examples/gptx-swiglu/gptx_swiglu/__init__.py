"""A SwiGLU MLP (Shazeer 2020, as in LLaMA) and RMSNorm as gptx components.

Installed, they are `model.mlp=swiglu` and `model.norm=rms_norm`; the interventions in conf/intervention/
(`intervention=swiglu`, `rms_norm`, `swiglu_rms_norm`) select them against gptx's baseline.
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

CONF_DIR = str(Path(__file__).resolve().parent / "conf")


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)), hidden width 8/3 d (a multiple of 8): about the baseline's parameters."""

    def __init__(self, cfg):
        super().__init__()
        hidden = 8 * ((8 * cfg.d_model // 3 + 7) // 8)
        self.gate = nn.Linear(cfg.d_model, hidden, bias=False)
        self.up = nn.Linear(cfg.d_model, hidden, bias=False)
        self.down = nn.Linear(hidden, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class RMSNorm(nn.Module):
    """x / rms(x) * weight (Zhang and Sennrich 2019): LayerNorm without the mean and the bias."""

    def __init__(self, cfg, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(cfg.d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight

    def init_parameter(self, name: str, param: torch.Tensor, generator: torch.Generator) -> None:
        """gptx's per-parameter init asks each module how its parameters start: the weight at one."""
        with torch.no_grad():
            param.fill_(1.0)
