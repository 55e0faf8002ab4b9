"""Progress for people: a live bar on a terminal, plain periodic log lines when output is a file."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

log = logging.getLogger("gptx.train")


class Progress:
    """Shows step, loss and speed; on a terminal as one redrawn line, elsewhere as log lines."""

    def __init__(self, n_steps: int, start_step: int, stream=None, enabled: bool = True):
        self.n_steps = n_steps
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.live = enabled and self.stream.isatty()
        self.start_time = time.perf_counter()
        self.start_step = start_step

    def update(self, step: int, loss: float) -> None:
        """Redraw the bar after an optimizer step (terminal only)."""
        if not self.live:
            return
        done = step / self.n_steps
        rate = (step - self.start_step) / max(time.perf_counter() - self.start_time, 1e-9)
        eta = (self.n_steps - step) / rate if rate > 0 else float("inf")
        bar = "#" * int(30 * done)
        self.stream.write(f"\r[{bar:<30}] {step}/{self.n_steps} loss {loss:.4f} {rate:.2f} it/s eta {eta:.0f}s ")
        self.stream.flush()

    def log(self, record: dict[str, Any]) -> None:
        """A plain log line for a metrics record (on a terminal only when it carries a val loss)."""
        if not self.enabled or (self.live and "val_loss" not in record):
            return
        if self.live:
            self.stream.write("\n")
        val = f" val {record['val_loss']:.4f}" if record.get("val_loss") is not None else ""
        log.info("step %d/%d  train %.4f%s  lr %.2e  %.0f tok/s", record["step"], self.n_steps,
                 record["train_loss"], val, record["lr"], record["tokens_per_second"])

    def close(self) -> None:
        """End the bar's line."""
        if self.live:
            self.stream.write("\n")
            self.stream.flush()
