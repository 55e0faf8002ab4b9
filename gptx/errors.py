"""Errors a user can act on, and the one way every `python -m gptx.X` command reports them.

An entry point prints such an error as one line on stderr, `gptx: error: MESSAGE`, and exits with the
error's status: 2 for a usage error (a bad flag, path or config value: nothing was done), or the status
its command documents for an operation that was refused or failed (e.g. 1 for a full disk). No traceback:
the message names the setting and what to do instead.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from typing import NoReturn

PREFIX = "gptx: error: "
USAGE_STATUS = 2


class GptxError(Exception):
    """An error a user can act on: printed as one line, exit status `exit_status` (1: the operation failed)."""

    exit_status = 1


class UsageError(GptxError):
    """Bad input (a flag, a path, a config value): one line, exit status 2, nothing done."""

    exit_status = USAGE_STATUS


def one_line(message: object) -> str:
    """`gptx: error: MESSAGE` with the message's lines joined, so a multi-line message still reads as one."""
    text = " ".join(part.strip() for part in str(message).strip().splitlines() if part.strip())
    return PREFIX + (text or "unknown error")


def report(error: BaseException | str) -> int:
    """Print an error (or a message) as one line on stderr; return its exit status (2 unless it says)."""
    print(one_line(error), file=sys.stderr, flush=True)
    return int(getattr(error, "exit_status", USAGE_STATUS))


def exit_with(error: BaseException | str, status: int | None = None) -> NoReturn:
    """Print one error line and end the process (for callbacks and plugins, where Hydra would turn an
    exception into a warning or a traceback)."""
    code = report(error)
    raise SystemExit(code if status is None else status) from None


def entry_point(*also: type[BaseException]) -> Callable:
    """Decorate a command's `main(argv) -> int | None`: a GptxError (or one of `also`) is one line and its
    exit status instead of a traceback; Ctrl-C is one line and 130, as a shell reports it."""
    caught = (GptxError, *also)

    def wrap(main: Callable[..., int | None]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(argv: list[str] | None = None) -> int:
            try:
                return main(argv) or 0
            except caught as err:
                return report(err)
            except KeyboardInterrupt:  # Ctrl-C in a command (a long generate, a big analysis): no traceback
                print("gptx: interrupted", file=sys.stderr, flush=True)
                return 130

        return run

    return wrap


class ArgumentParser(argparse.ArgumentParser):
    """argparse with gptx's error line: `gptx: error: MESSAGE (see python -m gptx.X --help)`, exit 2,
    instead of the usage block and argparse's own prefix."""

    def error(self, message: str) -> NoReturn:
        """argparse's hook for a bad command line."""
        self.exit(USAGE_STATUS, one_line(f"{message} (see {self.prog} --help)") + "\n")

