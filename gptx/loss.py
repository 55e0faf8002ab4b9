"""Next-token cross-entropy through the output head, a slice of rows at a time.

The plain way, `cross_entropy(hidden @ W.T, targets)`, materialises the [tokens, vocab] logits and, for
the backward pass, their gradient: 206 MB each for 8 x 128 tokens of GPT-2's 50,257-token vocabulary
(1.2 GB of bf16 logits plus a float32 copy for the study's 12 x 1,024-token micro-batch). Here the head
and the loss run over `rows` tokens at a time; the forward pass also computes the gradients with
respect to the hidden states and the head (softmax minus one-hot, two matmuls), so nothing of vocabulary
size outlives its slice. The result equals the plain loss up to float32 summation order, on any device
and under autocast (the head's matmul runs in the autocast dtype, the softmax in float32, as before).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Logits computed at once: 2^24 float32 values (64 MiB), i.e. 333 tokens of GPT-2's vocabulary.
CHUNK_ELEMENTS = 1 << 24


def chunk_rows(vocab_size: int) -> int:
    """Tokens per slice so that a slice's logits stay near CHUNK_ELEMENTS values."""
    return max(1, CHUNK_ELEMENTS // vocab_size)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         reduction: str = "mean", rows: int | None = None) -> torch.Tensor:
    """cross_entropy(hidden @ weight.T, targets) over [..., d] hidden states, without the full logits.

    `reduction`: "mean" or "sum" over all tokens (differentiable), or "none" for each token's loss in
    `targets`' shape (evaluation only: no gradient).
    """
    h, y = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)
    rows = rows or chunk_rows(weight.shape[0])
    if reduction == "none":
        if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
            raise ValueError("linear_cross_entropy(reduction='none') is for evaluation: run it under no_grad")
        losses = torch.cat([_token_losses(h[i : i + rows] @ weight.t(), y[i : i + rows])
                            for i in range(0, len(y), rows)])
        return losses.view(targets.shape)
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction={reduction!r}: use 'mean', 'sum' or 'none'")
    total = _LinearCrossEntropySum.apply(h, weight, y, rows)
    return total / len(y) if reduction == "mean" else total


def _token_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each row's cross-entropy in float32, whatever dtype the head computed in."""
    return F.cross_entropy(logits.float(), targets, reduction="none")


class _LinearCrossEntropySum(torch.autograd.Function):
    """Sum of token losses; the backward pass only scales gradients the forward pass computed."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, y: torch.Tensor, rows: int) -> torch.Tensor:
        grads = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        grad_h = torch.empty_like(h) if grads else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if grads else None
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        for i in range(0, len(y), rows):
            hi, yi = h[i : i + rows], y[i : i + rows]
            logits = (hi @ weight.t()).float()
            total += _token_losses(logits, yi).sum()
            if grads:
                # d(sum of losses)/d(logits) = softmax - one-hot, computed in place over the slice's logits.
                dlogits = torch.softmax(logits, dim=-1)
                dlogits[torch.arange(len(yi), device=yi.device), yi] -= 1.0
                dlogits = dlogits.to(hi.dtype)
                grad_h[i : i + rows] = dlogits @ weight.to(hi.dtype)
                grad_w += (dlogits.t() @ hi).float()
        ctx.save_for_backward(grad_h, grad_w)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_total: torch.Tensor):
        grad_h, grad_w = ctx.saved_tensors
        return (grad_h * grad_total.to(grad_h.dtype) if ctx.needs_input_grad[0] else None,
                (grad_w * grad_total).to(ctx.weight_dtype) if ctx.needs_input_grad[1] else None, None, None)
