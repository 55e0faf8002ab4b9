"""Stop signals (SLURM's time limit and preemption warnings) turned into a flag the loop checks.

A handler that checkpoints or exits inside the signal could interrupt an optimizer step half way;
this one only records the signal. The loop checkpoints at the next step boundary (in a multi-process run,
the boundary after the step whose loss carries the flag to every rank) and then hands the signal to
whatever handler was installed before (submitit's requeues the job), or exits.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

log = logging.getLogger("gptx.train")
# SLURM's and submitit's time-limit and preemption warnings, and Ctrl-C at a terminal.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)


class StopRequest:
    """Installs flag-only handlers for STOP_SIGNALS; use as a context manager."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}
        self._finishing = False

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    @property
    def requested(self) -> bool:
        """True once a stop signal arrived."""
        return self.signum is not None

    def finishing(self) -> None:
        """The run is writing its final outputs: from now on every signal waits for them, a second Ctrl-C too."""
        self._finishing = True

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self._finishing:
            log.warning("signal %s: writing the run's final outputs first (seconds to minutes); its last "
                        "checkpoint is on disk", signal.Signals(signum).name)
            self.signum = signum
            return
        if signum == signal.SIGINT and self.signum is not None:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without waiting for the checkpoint
        self.signum = signum
        if signum == signal.SIGINT:
            log.warning("Ctrl-C: checkpointing at the end of this step or the next (press again to stop at once)")

    def hand_over(self) -> None:
        """After checkpointing: let the previous handler act (e.g. requeue), else exit 128 + signal."""
        # In a multi-process run a rank may stop because another rank got the signal.
        signum = self.signum if self.signum is not None else signal.SIGTERM
        previous = self._previous.get(signum)
        self.__exit__()
        if callable(previous) and previous is not signal.default_int_handler:
            try:
                previous(signum, None)
            except Exception as err:  # noqa: BLE001 - e.g. submitit refusing a requeue past max_num_timeout
                log.warning("the previous %s handler refused: %s", signal.Signals(signum).name, err)
        raise SystemExit(128 + signum)
