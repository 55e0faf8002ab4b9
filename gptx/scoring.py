"""Scoring a model: next-token loss on a data split (also per sequence) and the greedy smoke-test sample.

Shared by training and the command-line tools.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from gptx.data import Split
from gptx.model import GPTModel, generate_greedy
from gptx.precision import Precision
from gptx.tokenizer import TextTokenizer

SMOKE_PROMPT = "Every effort moves you"


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Next-token cross-entropy, computed in float32 whatever the autocast dtype."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction=reduction)


@torch.no_grad()
def split_loss(model: GPTModel, split: Split, n_sequences: int | None, batch_size: int,
               device: torch.device, precision: Precision) -> float:
    """Mean token loss over the split's first n_sequences (None = all), in order; no RNG is drawn."""
    return _split_losses(model, split, n_sequences, batch_size, device, precision, per_sequence=False)[0]


@torch.no_grad()
def split_losses(model: GPTModel, split: Split, n_sequences: int | None, batch_size: int,
                device: torch.device, precision: Precision) -> tuple[float, np.ndarray]:
    """split_loss, and each sequence's mean token loss (float32, in split order) for paired statistics.

    The mean of the per-sequence losses equals the first value up to summation order.
    """
    return _split_losses(model, split, n_sequences, batch_size, device, precision, per_sequence=True)


def _split_losses(model: GPTModel, split: Split, n_sequences: int | None, batch_size: int,
                  device: torch.device, precision: Precision, per_sequence: bool) -> tuple[float, np.ndarray]:
    was_training = model.training
    model.eval()
    n = split.n_sequences if n_sequences is None else min(n_sequences, split.n_sequences)
    total = torch.zeros((), dtype=torch.float64, device=device)
    sequence_losses = []
    for start in range(0, n, batch_size):
        x, y = split.sequences(torch.arange(start, min(start + batch_size, n)).numpy())
        x, y = x.to(device), y.to(device)
        with precision.autocast(device):
            token_losses = model(x, y, reduction="none")  # float32, through the sliced head
        total += token_losses.sum(dtype=torch.float64)
        if per_sequence:
            sequence_losses.append(token_losses.mean(dim=1))
    model.train(was_training)
    losses = torch.cat(sequence_losses).cpu().numpy() if sequence_losses else np.zeros(0, dtype=np.float32)
    return float(total) / (n * split.seq_len), losses


@torch.no_grad()
def greedy_sample(model: GPTModel, device: torch.device, n_tokens: int, tok: TextTokenizer,
                  prompt: str = SMOKE_PROMPT, stop: Callable[[], bool] | None = None) -> str:
    """The prompt followed by n_tokens greedy tokens (fewer once `stop()` says so, asked before each token),
    encoded and decoded by the run's tokenizer."""
    was_training = model.training
    model.eval()
    idx = torch.tensor([tok.encode(prompt)], device=device)
    out = generate_greedy(model, idx, n_tokens, stop)[0].tolist()
    model.train(was_training)
    return tok.decode(out)
