"""Fault injection for the fault-test suite: off unless GPTX_FAULT is set in the environment.

GPTX_FAULT="EVENT@STEP=SIGNAL[,…]" sends SIGNAL (TERM, USR1, USR2, KILL, or STOP to hold the process
while a test changes its world) to this process when the run reaches EVENT at optimizer step STEP.
Events: `step` (before step STEP's forward pass), `eval` (as the evaluation after step STEP starts),
`checkpoint` (right after the checkpoint of step STEP is complete), `save` (while that checkpoint is
being written, before it is renamed into place), `final` (as the final evaluation and outputs after the
last step STEP start), `result` (after every final output, as the completed result.json is about to be
written). An event named twice sends both signals, in order (`final@6=INT,final@6=INT`: Ctrl-C twice).
`nan@STEP` (no signal) makes the loss of step STEP NaN, as a diverging run's would be.
Kept in the environment, not the config, so an injected fault never changes a run's config hash
and never shows in a user's --help.
"""

from __future__ import annotations

import os
import signal

ENV = "GPTX_FAULT"
NAN = "nan"  # the event of a NaN loss


def _plan() -> dict[tuple[str, int], list[signal.Signals | None]]:
    plan: dict[tuple[str, int], list[signal.Signals | None]] = {}
    for item in filter(None, os.environ.get(ENV, "").split(",")):
        where, _, name = item.partition("=")
        event, step = where.split("@")
        plan.setdefault((event, int(step)), []).append(signal.Signals[f"SIG{name}"] if name else None)
    return plan


def maybe_fire(event: str, step: int) -> None:
    """Send the planned signals for (event, step) to this process, if any, in the order given."""
    if ENV not in os.environ:
        return
    for sig in _plan().get((event, step), []):
        if sig is not None:
            os.kill(os.getpid(), sig)


def nan_loss_at(step: int) -> bool:
    """Whether the plan makes optimizer step `step`'s loss NaN (`nan@STEP`)."""
    return ENV in os.environ and (NAN, step) in _plan()
