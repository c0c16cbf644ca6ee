"""What ``fit(verbose=...)`` shows, by Keras' convention.

* 0: nothing.
* 1: on a terminal, one tqdm progress bar over the whole run (it stays on screen when
  the run ends, with the last epoch's metrics); elsewhere (logs, CI, notebooks'
  captured output, pipes) one line per epoch.
* 2: one line per epoch.

Epoch lines are INFO records of the ``fastnn.train`` logger. When nothing on the way
to the root logger has a handler (logging not configured), a fit shows them on
stdout for its duration; otherwise they go where the application's logging sends them.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Mapping
from typing import Any

__all__ = ["Progress", "epoch_line"]

log = logging.getLogger("fastnn.train")

_lock = threading.Lock()
_users = 0  # fits showing lines through the temporary handler
_handler: logging.Handler | None = None


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def epoch_line(done: int, epochs: int, logs: Mapping[str, float]) -> str:
    """``epoch 3/30  loss=0.1234  accuracy=0.9712  val_loss=...  1.23 s  45,678
    samples/s``."""
    parts = [f"epoch {done}/{epochs}"]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        if key in logs:
            parts.append(f"{key}={logs[key]:.4f}")
    if "time" in logs:
        parts.append(f"{logs['time']:.2f} s")
    if "samples_per_sec" in logs:
        parts.append(f"{logs['samples_per_sec']:,.0f} samples/s")
    return "  ".join(parts)


def _attach() -> None:
    global _users, _handler
    with _lock:
        if _users == 0 and not log.hasHandlers():
            _handler = logging.StreamHandler(sys.stdout)
            _handler.setFormatter(logging.Formatter("%(message)s"))
            _handler.setLevel(logging.INFO)
            log.addHandler(_handler)
            if log.level == logging.NOTSET:
                log.setLevel(logging.INFO)
        _users += 1


def _detach() -> None:
    global _users, _handler
    with _lock:
        _users -= 1
        if _users == 0 and _handler is not None:
            log.removeHandler(_handler)
            _handler = None
            log.setLevel(logging.NOTSET)


class Progress:
    """The bar or the epoch lines of one fit (a context manager).

    Parameters
    ----------
    verbose : int
    epochs : int
        Total epochs of the fit.
    n : int
        Training rows per epoch.
    epoch, seen : int
        Where the fit starts (a resumed fit: epochs done, rows of the current one).
    """

    def __init__(
        self, verbose: int, epochs: int, n: int, epoch: int = 0, seen: int = 0
    ):
        self.epochs = epochs
        on_terminal = _isatty(sys.stdout)
        self.lines = verbose >= 2 or (verbose == 1 and not on_terminal)
        self.bar = None
        if verbose == 1 and on_terminal:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=epochs * n,
                initial=epoch * n + seen,
                desc=f"epoch {min(epoch + 1, epochs)}/{epochs}",
                unit="sample",
                unit_scale=True,
                file=sys.stdout,
                leave=True,
                dynamic_ncols=True,
            )

    def __enter__(self) -> Progress:
        if self.lines:
            _attach()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.lines:
            _detach()

    def step(self, rows: int, loss: float | None = None) -> None:
        """A training step of ``rows`` rows; ``loss``: the epoch's running mean."""
        if self.bar is not None:
            self.bar.update(rows)
            if loss is not None:
                self.bar.set_postfix_str(f"loss={loss:.4f}", refresh=False)

    def epoch_end(self, done: int, logs: Mapping[str, float], extra: str = "") -> None:
        """Epoch ``done`` (1-based) finished with ``logs``."""
        if self.lines:
            log.info(epoch_line(done, self.epochs, logs) + extra)
        if self.bar is not None:
            shown = {k: v for k, v in logs.items() if "loss" in k or "accuracy" in k}
            self.bar.set_description_str(
                f"epoch {min(done + 1, self.epochs)}/{self.epochs}", refresh=False
            )
            self.bar.set_postfix_str(
                "  ".join(f"{k}={v:.4f}" for k, v in shown.items()), refresh=True
            )
