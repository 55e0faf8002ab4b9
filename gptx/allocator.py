"""Keep freed CPU memory in the process, so a training step does not re-fault its large buffers.

glibc hands every allocation above its mmap threshold (128 KiB to 32 MiB, adapting) to `mmap` and
returns it with `munmap` when freed. A CPU training step allocates and frees the same large tensors
(logits, their gradient, activations) every step, so each step pays the kernel to zero and map those
pages again: on a 2-core machine ~40% of a gpt2_tiny step was system time (docs/performance.md).
`mallopt` can make glibc serve them from its heap and keep freed memory for the next step instead.
The process's resident size then stays at its peak, which is what a training process reaches anyway.

Only glibc is tuned; other C libraries are left alone, and so is a process whose user set glibc's own
`MALLOC_*` variables (their choice wins). The settings change no arithmetic: results stay bit-identical.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# mallopt parameter numbers from glibc's <malloc.h>.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
# The values that measured fastest here (docs/performance.md): never mmap, never trim, grow 1 GiB at a time.
SETTINGS = {"M_MMAP_THRESHOLD": (M_MMAP_THRESHOLD, 2**31 - 1), "M_TRIM_THRESHOLD": (M_TRIM_THRESHOLD, 2**31 - 1),
            "M_TOP_PAD": (M_TOP_PAD, 1 << 30)}
USER_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")

_applied: dict | None = None  # what the first call did; the settings are per process, so once is enough


def keep_freed_memory() -> dict:
    """Tune glibc's malloc to keep freed memory (once per process); returns what was applied, for result.json."""
    global _applied
    if _applied is None:
        _applied = _apply()
    return _applied


def _apply() -> dict:
    user_set = [v for v in USER_VARIABLES if v in os.environ]
    if user_set:
        return {"applied": False, "why": f"left to the environment ({', '.join(user_set)} set)"}
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return {"applied": False, "why": "not glibc"}
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError) as err:
        return {"applied": False, "why": f"mallopt unavailable: {err}"}
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    refused = [name for name, (param, value) in SETTINGS.items() if mallopt(param, value) != 1]
    return {"applied": not refused, "mallopt": {name: value for name, (_, value) in SETTINGS.items()
                                                if name not in refused},
            **({"why": f"glibc refused {', '.join(refused)}"} if refused else {})}
