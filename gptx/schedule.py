"""Learning-rate schedules as pure functions of the step, chosen by name (`train.lr_schedule`, gptx.components)."""

from __future__ import annotations

import math

from gptx import components
from gptx.config import TrainConfig


def total_steps(cfg: TrainConfig, tokens_per_step: int) -> int:
    """Optimizer steps of a run: the token budget rounded up, capped by train.max_steps."""
    steps = math.ceil(cfg.tokens / tokens_per_step) if cfg.tokens is not None else cfg.max_steps
    if cfg.max_steps is not None:
        steps = min(steps, cfg.max_steps)
    return max(1, int(steps))


def lr_at(step: int, n_steps: int, cfg: TrainConfig) -> float:
    """Learning rate of 0-based optimizer step `step` in a run of `n_steps` steps, by train.lr_schedule."""
    return components.load("lr_schedule", cfg.lr_schedule)(step, n_steps, cfg)


def constant(step: int, n_steps: int, cfg: TrainConfig) -> float:
    """train.lr at every step."""
    return cfg.lr


def cosine(step: int, n_steps: int, cfg: TrainConfig) -> float:
    """Linear warm-up from lr * warmup_start_factor to lr over the first warmup_fraction of the steps,
    then cosine decay reaching lr * min_lr_factor exactly at the last step."""
    peak, start, floor = cfg.lr, cfg.lr * cfg.warmup_start_factor, cfg.lr * cfg.min_lr_factor
    warmup = int(n_steps * cfg.warmup_fraction)
    if step < warmup:
        return start + (peak - start) * step / warmup
    decay_steps = n_steps - 1 - warmup
    progress = 1.0 if decay_steps <= 0 else (step - warmup) / decay_steps
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
