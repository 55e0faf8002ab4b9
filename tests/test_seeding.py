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


def test_a_cpu_run_holds_no_gpu_state_and_ignores_the_gpus_of_an_older_checkpoint():
    state = capture_rng_state(torch.device("cpu"))
    assert not any(key.startswith("torch.cuda") for key in state)
    legacy = {**state, **{f"torch.cuda.{d}": torch.zeros(16, dtype=torch.uint8) for d in range(8)}}
    restore_rng_state(legacy, torch.device("cpu"))  # eight GPUs visible then, none now: resumes
    assert torch.equal(torch.get_rng_state(), state["torch.cpu"])


def test_a_cuda_run_needs_its_own_gpus_state():
    state = capture_rng_state(torch.device("cpu"))
    with pytest.raises(RuntimeError, match=r"lacks \['torch.cuda'\]"):
        restore_rng_state(state, torch.device("cuda", 0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_run_gpus_state_round_trips_and_an_older_checkpoints_key_is_read():
    cuda = torch.device("cuda", 0)
    seed_everything(3)
    state = capture_rng_state(cuda)
    assert "torch.cuda" in state and "torch.cuda.0" not in state
    expected = torch.rand(4, device=cuda)
    restore_rng_state(state, cuda)
    assert torch.equal(torch.rand(4, device=cuda), expected)
    legacy = {k: v for k, v in state.items() if k != "torch.cuda"} | {"torch.cuda.0": state["torch.cuda"]}
    restore_rng_state(legacy, cuda)
    assert torch.equal(torch.rand(4, device=cuda), expected)
