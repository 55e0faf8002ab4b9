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


def capture_rng_state() -> dict[str, torch.Tensor]:
    """Every RNG's state as tensors: python, numpy, torch CPU and each CUDA device."""
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
    if torch.cuda.is_available():
        for device, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            state[f"torch.cuda.{device}"] = cuda_state
    return state


def required_rng_keys() -> list[str]:
    """The RNG states restore_rng_state needs on this machine (capture_rng_state's names)."""
    required = ["python.version", "python.state", "python.gauss", "numpy.keys", "numpy.pos_has_gauss",
                "numpy.gauss", "torch.cpu"]
    n_cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return required + [f"torch.cuda.{d}" for d in range(n_cuda)]


def restore_rng_state(state: dict[str, torch.Tensor]) -> None:
    """Restore what capture_rng_state saved; a missing entry is an error, never a silent reseed."""
    n_cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    missing = [key for key in required_rng_keys() if key not in state]
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
    for device in range(n_cuda):
        torch.cuda.set_rng_state(state[f"torch.cuda.{device}"], device)
