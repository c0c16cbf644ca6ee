"""Where the ``fastnn`` command's messages go: per-epoch lines (stdout, or stderr
when stdout carries --json), notes and warnings (stderr, ``fastnn: note: ...``), and
a closed pipe on stdout (``fastnn info | head -1``) taken as a normal end."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

__all__ = ["cli_logging", "quiet_broken_pipe", "warn"]


def warn(message: str) -> None:
    """One ``fastnn: warning: ...`` line on stderr."""
    sys.stderr.write(f"fastnn: warning: {message}\n")


@contextlib.contextmanager
def cli_logging(lines_to_stderr: bool) -> Iterator[None]:
    """Handlers for fastnn's loggers for the duration of one command (restored
    after, so that ``main()`` can run many times in one process)."""
    train = logging.getLogger("fastnn.train")
    notes = logging.getLogger("fastnn.data")
    line_handler = logging.StreamHandler(sys.stderr if lines_to_stderr else sys.stdout)
    line_handler.setFormatter(logging.Formatter("%(message)s"))
    note_handler = logging.StreamHandler(sys.stderr)
    note_handler.setFormatter(logging.Formatter("fastnn: note: %(message)s"))
    saved = [(lg, lg.level, lg.propagate) for lg in (train, notes)]
    train.addHandler(line_handler)
    notes.addHandler(note_handler)
    for lg in (train, notes):
        lg.setLevel(logging.INFO)
        lg.propagate = False
    try:
        yield
    finally:
        train.removeHandler(line_handler)
        notes.removeHandler(note_handler)
        for lg, level, propagate in saved:
            lg.setLevel(level)
            lg.propagate = propagate


def quiet_broken_pipe() -> None:
    """After EPIPE on stdout: point stdout at /dev/null so that the interpreter's
    final flush does not fail again (the recipe of Python's signal docs)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout without a file descriptor
        pass
