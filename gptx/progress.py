"""Progress for people: a tqdm bar on a terminal, plain log lines with elapsed time and ETA elsewhere.

Times read h:mm:ss (`1:02:03 elapsed, eta 3:24:31`), so a line in console.log or a SLURM log says how long
the run has gone and how long it has left without arithmetic.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from tqdm import tqdm

log = logging.getLogger("gptx.train")


def clock(seconds: float) -> str:
    """Seconds as h:mm:ss (or m:ss under an hour); '?' when not known yet."""
    if not seconds == seconds or seconds in (float("inf"), float("-inf")) or seconds < 0:  # NaN, inf
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Shows step, loss and speed; on a terminal as a tqdm bar, elsewhere as log lines with elapsed and ETA."""

    def __init__(self, n_steps: int, start_step: int, stream=None, enabled: bool = True):
        self.n_steps = n_steps
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.live = enabled and self.stream.isatty()
        self.start_time = time.perf_counter()
        self.start_step = start_step
        self.bar = tqdm(total=n_steps, initial=start_step, file=self.stream, unit="step", dynamic_ncols=True,
                        leave=True, smoothing=0.1) if self.live else None

    def eta(self, step: int) -> tuple[float, float]:
        """Seconds since this process started training, and the estimate of the seconds left."""
        elapsed = time.perf_counter() - self.start_time
        rate = (step - self.start_step) / max(elapsed, 1e-9)
        return elapsed, (self.n_steps - step) / rate if rate > 0 else float("inf")

    def update(self, step: int, loss: float) -> None:
        """Move the bar after an optimizer step (terminal only)."""
        if self.bar is None:
            return
        self.bar.set_postfix_str(f"loss {loss:.4f}", refresh=False)
        self.bar.update(step - self.bar.n)

    def log(self, record: dict[str, Any]) -> None:
        """A plain log line for a metrics record (on a terminal only when it carries a val loss)."""
        if not self.enabled or (self.live and "val_loss" not in record):
            return
        elapsed, left = self.eta(record["step"])
        val = f" val {record['val_loss']:.4f}" if record.get("val_loss") is not None else ""
        line = (f"step {record['step']}/{self.n_steps}  train {record['train_loss']:.4f}{val}  lr {record['lr']:.2e}"
                f"  {record['tokens_per_second']:.0f} tok/s  {clock(elapsed)} elapsed, eta {clock(left)}")
        if self.bar is not None:
            self.bar.write(line, file=self.stream)  # above the bar, which is redrawn below it
        else:
            log.info("%s", line)

    def close(self) -> None:
        """End the bar."""
        if self.bar is not None:
            self.bar.close()
