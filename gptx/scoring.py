"""Scoring a model: next-token loss on a data split (also per sequence) and the greedy smoke-test sample.

Shared by training and the command-line tools.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from gptx.data import Split
from gptx.distributed import ALONE, World, gather_objects
from gptx.model import GPTModel, generate_greedy
from gptx.precision import Precision
from gptx.tokenizer import TextTokenizer

SMOKE_PROMPT = "Every effort moves you"


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Next-token cross-entropy, computed in float32 whatever the autocast dtype."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction=reduction)


@torch.no_grad()
def split_loss(model: GPTModel, split: Split, n_sequences: int | None, batch_size: int,
               device: torch.device, precision: Precision, world: World = ALONE) -> float:
    """Mean token loss over the split's first n_sequences (None = all), in order; no RNG is drawn."""
    return _split_losses(model, split, n_sequences, batch_size, device, precision, False, world)[0]


@torch.no_grad()
def split_losses(model: GPTModel, split: Split, n_sequences: int | None, batch_size: int,
                 device: torch.device, precision: Precision, world: World = ALONE) -> tuple[float, np.ndarray]:
    """split_loss, and each sequence's mean token loss (float32, in split order) for paired statistics.

    The mean of the per-sequence losses equals the first value up to summation order.
    """
    return _split_losses(model, split, n_sequences, batch_size, device, precision, True, world)


def _split_losses(model: GPTModel, split: Split, n_sequences: int | None, batch_size: int,
                  device: torch.device, precision: Precision, per_sequence: bool,
                  world: World) -> tuple[float, np.ndarray]:
    """Evaluated by every rank of the run at once, batch k on rank k mod size (one run's ranks would otherwise
    wait for rank 0 alone), and added up in batch order: the same batches and the same float64 additions
    as one process, so the value is bitwise the one-process value whatever the world size. The ranks must
    call this together (each sends its batches' sums to all); the model is the bare one, not its DDP
    wrapper, since ranks run different numbers of batches."""
    was_training = model.training
    model.eval()
    n = split.n_sequences if n_sequences is None else min(n_sequences, split.n_sequences)
    starts = list(range(0, n, batch_size))
    mine = starts[world.rank::world.size]
    sums, sequence_losses = [], []
    for start in mine:
        x, y = split.sequences(torch.arange(start, min(start + batch_size, n)).numpy())
        x, y = x.to(device), y.to(device)
        with precision.autocast(device):
            token_losses = model(x, y, reduction="none")  # float32, through the sliced head
        sums.append(token_losses.sum(dtype=torch.float64))
        if per_sequence:
            sequence_losses.append(token_losses.mean(dim=1))
    model.train(was_training)
    part = (mine, torch.stack(sums).tolist() if sums else [],  # one host sync for the whole split
            [t.cpu().numpy() for t in sequence_losses])
    batch_sum, batch_losses = {}, {}
    for starts_of, sums_of, losses_of in gather_objects(world, part):
        batch_sum.update(zip(starts_of, sums_of, strict=True))
        batch_losses.update(zip(starts_of, losses_of, strict=False))
    total = 0.0
    for start in starts:
        total += batch_sum[start]
    losses = np.concatenate([batch_losses[s] for s in starts]) if per_sequence and starts \
        else np.zeros(0, dtype=np.float32)
    return total / (n * split.seq_len), losses


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
