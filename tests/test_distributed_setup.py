"""gptx.distributed's set-up in one process: the GPU each process binds, determinism before the group."""

from __future__ import annotations

import pytest
import torch

import gptx.run
from gptx.distributed import World, local_device_index


@pytest.mark.parametrize("local_rank, visible, index", [(0, 1, 0), (3, 1, 0), (3, 8, 3), (0, 8, 0)])
def test_each_process_finds_its_gpu_bound_by_slurm_or_not(local_rank, visible, index):
    assert local_device_index(local_rank, visible) == index


@pytest.mark.parametrize("local_rank, visible", [(4, 2), (0, 0)])
def test_more_processes_than_visible_gpus_is_one_clear_error(local_rank, visible):
    with pytest.raises(RuntimeError, match=f"local rank {local_rank} but {visible} GPUs visible"):
        local_device_index(local_rank, visible)


def test_determinism_is_on_before_the_process_group_starts(tiny, tmp_path, monkeypatch):
    seen = []

    def init_world(use_cuda):
        seen.append(torch.are_deterministic_algorithms_enabled())
        raise RuntimeError("stop here")

    monkeypatch.setattr(gptx.run, "init_world", init_world)
    torch.use_deterministic_algorithms(False)
    try:
        with pytest.raises(RuntimeError, match="stop here"):
            gptx.run.train(tiny("train.device=cpu", "train.deterministic=true"), tmp_path / "run")
    finally:
        torch.use_deterministic_algorithms(False)
    assert seen == [True] and World().size == 1
