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
    progress.close()  # tqdm redraws at most every 0.1 s; closing draws the last state
    assert "\r" in term.getvalue() and "10/20" in term.getvalue() and "loss 5.0000" in term.getvalue()
    assert caplog.records == []


def test_non_terminal_gets_plain_lines(caplog):
    stream = io.StringIO()
    progress = Progress(20, 0, stream=stream)
    progress.update(10, 5.0)
    with caplog.at_level(logging.INFO, logger="gptx.train"):
        progress.log({**RECORD, "val_loss": 4.5})
    assert stream.getvalue() == ""
    assert "step 10/20  train 5.0000 val 4.5000" in caplog.records[0].getMessage()


def test_times_read_as_a_clock():
    from gptx.progress import clock

    assert [clock(s) for s in (0, 59.6, 61, 3600, 12271, float("inf"), float("nan"))] == [
        "0:00", "1:00", "1:01", "1:00:00", "3:24:31", "?", "?"]


def test_log_lines_carry_elapsed_time_and_eta(caplog, monkeypatch):
    import gptx.progress

    now = [100.0]
    monkeypatch.setattr(gptx.progress.time, "perf_counter", lambda: now[0])
    progress = Progress(100, 0, stream=io.StringIO())
    now[0] += 125.0  # 10 of 100 steps in 2:05: 90 steps left take 18:45
    with caplog.at_level(logging.INFO, logger="gptx.train"):
        progress.log(RECORD)
    assert caplog.records[0].getMessage().endswith("2:05 elapsed, eta 18:45")


def test_a_terminal_gets_val_lines_above_the_bar():
    term = FakeTerminal()
    progress = Progress(20, 0, stream=term)
    progress.update(10, 5.0)
    progress.log({**RECORD, "val_loss": 4.5})
    progress.close()
    assert "step 10/20  train 5.0000 val 4.5000" in term.getvalue()
