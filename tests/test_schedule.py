"""Learning-rate schedules and run length."""

from __future__ import annotations

import pytest

from gptx.config import TrainConfig
from gptx.schedule import lr_at, total_steps


def test_constant():
    cfg = TrainConfig(lr=4e-4)
    assert [lr_at(s, 100, cfg) for s in (0, 50, 99)] == [4e-4] * 3


def test_cosine_warmup_then_decay_to_a_tenth():
    cfg = TrainConfig(lr=0.0014, lr_schedule="cosine", tokens=None, max_steps=1000)
    assert lr_at(0, 1000, cfg) == pytest.approx(0.0014e-5)
    assert lr_at(25, 1000, cfg) == pytest.approx(0.0014e-5 + (0.0014 - 0.0014e-5) * 0.5)
    assert lr_at(50, 1000, cfg) == pytest.approx(0.0014)  # warm-up ends after 5% of 1000 steps
    mid = 50 + (999 - 50) / 2
    assert lr_at(int(mid), 1000, cfg) == pytest.approx(0.00077, rel=2e-3)
    assert lr_at(999, 1000, cfg) == pytest.approx(0.00014)
    lrs = [lr_at(s, 1000, cfg) for s in range(50, 1000)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_steps_from_tokens_rounds_up_and_max_steps_caps():
    study = TrainConfig(batch_size=96, tokens=3_260_190_720)
    assert total_steps(study, 96 * 1024) == 33_165
    assert total_steps(TrainConfig(tokens=3_260_190_720, max_steps=10), 96 * 1024) == 10
    assert total_steps(TrainConfig(tokens=None, max_steps=7), 1024) == 7
