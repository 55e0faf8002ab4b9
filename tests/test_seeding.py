"""RNG state round trips through weights_only loading, and a missing entry is loud."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch

from gptx.seeding import capture_rng_state, restore_rng_state, seed_everything


def draws():
    return random.random(), random.gauss(0, 1), np.random.rand(), np.random.randn(), torch.rand(2).tolist()


def test_round_trip_through_weights_only_load():
    seed_everything(3)
    random.gauss(0, 1)  # leave a cached gaussian in Python's RNG state
    np.random.randn()
    buffer = io.BytesIO()
    torch.save(capture_rng_state(), buffer)
    expected = draws()
    buffer.seek(0)
    restore_rng_state(torch.load(buffer, weights_only=True))
    assert draws() == expected


def test_seed_everything_seeds_all_three():
    seed_everything(11)
    first = draws()
    seed_everything(11)
    assert draws() == first


def test_missing_entry_raises():
    state = capture_rng_state()
    del state["numpy.keys"]
    with pytest.raises(RuntimeError, match="numpy.keys"):
        restore_rng_state(state)
