"""Everything random: seeding, determinism flags, and capturing/restoring every RNG's state.

Nothing else in gptx seeds a global RNG: the only other `manual_seed` calls seed private
`torch.Generator`s that nothing else draws from (each parameter's own init stream in model.py, the
benchmark's inputs). RNG states are stored as tensors and plain numbers so a
checkpoint loads with `weights_only=True` or from safetensors, never through pickle.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

# Must be in the environment before CUDA creates its first cuBLAS handle.
CUBLAS_WORKSPACE = ":4096:8"
# The RNG state of the GPU a run uses (one per rank under DDP).
CUDA_KEY = "torch.cuda"


def seed_everything(seed: int) -> None:
    """Seed Python's `random`, NumPy's global RNG and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def configure_determinism(deterministic: bool) -> None:
    """Ask for bitwise-reproducible kernels, or allow the fastest ones."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(deterministic)
    # Filling fresh memory with NaNs costs ~15% and is not needed for bit-exactness.
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = deterministic


def capture_rng_state(device: torch.device | None = None) -> dict[str, torch.Tensor]:
    """Every RNG the run uses, as tensors: python, numpy, torch CPU and, on CUDA, the run's own GPU
    (`torch.cuda`): not every visible GPU, so a run can resume where another number of GPUs is visible."""
    version, py_state, gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    if np_kind != "MT19937":
        raise RuntimeError(f"unexpected NumPy RNG {np_kind}")
    state = {
        "python.version": torch.tensor([version], dtype=torch.int64),
        "python.state": torch.tensor(py_state, dtype=torch.int64),
        "python.gauss": torch.tensor([float("nan") if gauss is None else gauss], dtype=torch.float64),
        "numpy.keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
        "numpy.pos_has_gauss": torch.tensor([np_pos, np_has_gauss], dtype=torch.int64),
        "numpy.gauss": torch.tensor([np_gauss], dtype=torch.float64),
        "torch.cpu": torch.get_rng_state(),
    }
    if device is not None and device.type == "cuda":
        state[CUDA_KEY] = torch.cuda.get_rng_state(device)
    return state


BASE_RNG_KEYS = ("python.version", "python.state", "python.gauss", "numpy.keys", "numpy.pos_has_gauss",
                 "numpy.gauss", "torch.cpu")


def required_rng_keys(state: dict | None = None, device: torch.device | None = None) -> list[str]:
    """The RNG states restore_rng_state needs for a run on `device` (capture_rng_state's names); with a
    checkpoint's `state`, an older gptx's per-GPU name (`torch.cuda.N`) stands for the run's own."""
    cuda = device is not None and device.type == "cuda"
    if cuda and state is not None and CUDA_KEY not in state:
        legacy = f"torch.cuda.{device.index if device.index is not None else torch.cuda.current_device()}"
        if legacy in state:
            return [*BASE_RNG_KEYS, legacy]
    return [*BASE_RNG_KEYS] + [CUDA_KEY] * cuda


def restore_rng_state(state: dict[str, torch.Tensor], device: torch.device | None = None) -> None:
    """Restore what capture_rng_state saved for `device`; a missing entry is an error, never a silent reseed.

    A checkpoint of an older gptx holds every visible GPU's state (`torch.cuda.N`): the run's own is used.
    """
    state = dict(state)
    cuda = device is not None and device.type == "cuda"
    if cuda and CUDA_KEY not in state:
        legacy = f"torch.cuda.{device.index if device.index is not None else torch.cuda.current_device()}"
        if legacy in state:
            state[CUDA_KEY] = state[legacy]
    missing = [key for key in required_rng_keys(device=device) if key not in state]
    if missing:
        raise RuntimeError(f"checkpoint RNG state lacks {missing}: cannot resume bit-exactly")
    gauss = float(state["python.gauss"][0])
    random.setstate((
        int(state["python.version"][0]),
        tuple(int(x) for x in state["python.state"].tolist()),
        None if gauss != gauss else gauss,
    ))
    pos, has_gauss = (int(x) for x in state["numpy.pos_has_gauss"].tolist())
    np.random.set_state((
        "MT19937", state["numpy.keys"].numpy().astype(np.uint32), pos, has_gauss,
        float(state["numpy.gauss"][0]),
    ))
    torch.set_rng_state(state["torch.cpu"])
    if cuda:
        torch.cuda.set_rng_state(state[CUDA_KEY], device)
