"""Progress: a redrawn bar on a terminal, plain log lines otherwise."""

from __future__ import annotations

import io
import logging

from gptx.progress import Progress


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


RECORD = {"step": 10, "train_loss": 5.0, "lr": 4e-4, "tokens_per_second": 1000.0}


def test_terminal_gets_a_redrawn_bar(caplog):
    term = FakeTerminal()
    progress = Progress(20, 0, stream=term)
    progress.update(10, 5.0)
    with caplog.at_level(logging.INFO, logger="gptx.train"):
        progress.log(RECORD)  # no val loss: the bar already shows it
    assert "\r[" in term.getvalue() and "10/20" in term.getvalue()
    assert caplog.records == []


def test_non_terminal_gets_plain_lines(caplog):
    stream = io.StringIO()
    progress = Progress(20, 0, stream=stream)
    progress.update(10, 5.0)
    with caplog.at_level(logging.INFO, logger="gptx.train"):
        progress.log({**RECORD, "val_loss": 4.5})
    assert stream.getvalue() == ""
    assert "step 10/20  train 5.0000 val 4.5000" in caplog.records[0].getMessage()
