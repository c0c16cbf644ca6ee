"""Training history and callbacks (early stopping, stopping on a non-finite loss)."""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Iterator, KeysView, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .model import Sequential

__all__ = ["Callback", "EarlyStopping", "History", "TerminateOnNaN"]


class History:
    """Per-epoch metrics of :meth:`fastnn.Sequential.fit`.

    Attributes
    ----------
    history : dict of str -> list of float
        "loss", "accuracy", "lr", "time" (seconds), "samples_per_sec", and
        "val_loss", "val_accuracy" when validation data is used. Index ``i`` is
        epoch ``epoch[i]``.
    epoch : list of int
        0-based epoch numbers.
    first_step_time : float or None
        Seconds spent in the first training step of this fit (includes JIT
        compilation of the compiled backends).
    """

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []
        self.first_step_time: float | None = None

    def append(self, epoch: int, logs: Mapping[str, float]) -> None:
        """Record the metrics of one finished epoch."""
        self.epoch.append(int(epoch))
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]

    def __contains__(self, key: object) -> bool:
        # without it ``"val_loss" in history`` iterated with __getitem__(0): KeyError
        return key in self.history

    def __iter__(self) -> Iterator[str]:
        """The metric names, as ``history[name]`` takes them."""
        return iter(self.history)

    def keys(self) -> KeysView[str]:
        """The metric names (``history.history.keys()``)."""
        return self.history.keys()

    def __len__(self) -> int:
        return len(self.epoch)

    def __repr__(self) -> str:
        last = {k: v[-1] for k, v in self.history.items()} if self.epoch else {}
        return f"History(epochs={len(self.epoch)}, last={last})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form (checkpoints, ``fastnn train --json``)."""
        return {
            "epoch": list(self.epoch),
            "history": {k: list(v) for k, v in self.history.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> History:
        """Inverse of :meth:`to_dict`."""
        h = cls()
        h.epoch = [int(e) for e in data.get("epoch", [])]
        h.history = {
            str(k): [float(x) for x in v] for k, v in data.get("history", {}).items()
        }
        return h


class Callback:
    """Base class: hooks called by :meth:`fastnn.Sequential.fit`.

    Set ``model.stop_training = True`` in :meth:`on_epoch_end` to stop. Callbacks
    with state that must survive a checkpointed resume implement
    :meth:`get_state` / :meth:`set_state`.
    """

    def on_train_begin(self, model: Sequential) -> None:
        """Called once before the first epoch (not again on resume)."""

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float], model: Sequential):
        """Called after each epoch with its metrics."""

    def on_train_end(self, model: Sequential) -> None:
        """Called once when training finishes or stops early."""

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-compatible scalars, arrays) for checkpoints."""
        return {}, {}

    def check_state(
        self,
        meta: Mapping[str, Any],
        arrays: Mapping[str, np.ndarray],
        model: Sequential,
    ) -> None:
        """Raise ValueError if a saved state does not fit this callback and model."""

    def set_state(self, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]):
        """Restore :meth:`get_state` (already checked)."""


class EarlyStopping(Callback):
    """Stop training when a monitored metric stops improving.

    Parameters
    ----------
    monitor : str, default="val_loss"
        A History key. Monitoring a "val_" metric needs validation data.
    patience : int >= 0, default=5
        Epochs without improvement to wait before stopping.
    min_delta : float >= 0, default=0.0
        Smallest change that counts as an improvement.
    mode : {"auto", "min", "max"}, default="auto"
        "auto" maximises metrics whose name contains "accuracy".
    restore_best_weights : bool, default=False
        When training ends, put back the weights of the best epoch.

    Attributes
    ----------
    best : float or None
    best_epoch : int or None
    stopped_epoch : int or None
        The epoch after which training stopped (None if it ran to the end).
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 5,
        min_delta: float = 0.0,
        mode: str = "auto",
        restore_best_weights: bool = False,
    ) -> None:
        if not isinstance(monitor, str):
            raise ValueError(f"monitor must be a str, got {monitor!r}")
        if isinstance(patience, bool) or not isinstance(patience, (int, np.integer)):
            raise ValueError(f"patience must be an int, got {patience!r}")
        if patience < 0:
            raise ValueError(f"patience must be >= 0, got {patience}")
        if (
            not isinstance(min_delta, (int, float))
            or not math.isfinite(min_delta)
            or (min_delta < 0)
        ):
            raise ValueError(
                f"min_delta must be a finite number >= 0, got {min_delta!r}"
            )
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.monitor = monitor
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.mode = mode
        self.restore_best_weights = bool(restore_best_weights)
        self._reset()

    def _reset(self) -> None:
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None
        self.wait = 0
        self._best_params: np.ndarray | None = None

    def _maximize(self) -> bool:
        return self.mode == "max" or (self.mode == "auto" and "acc" in self.monitor)

    def on_train_begin(self, model):
        self._reset()

    def on_epoch_end(self, epoch, logs, model):
        if self.monitor not in logs:
            hint = (
                " (pass validation_data or validation_split)"
                if (self.monitor.startswith("val_"))
                else ""
            )
            raise ValueError(
                f"EarlyStopping monitors {self.monitor!r}, which is not among the "
                f"epoch metrics {sorted(logs)}{hint}"
            )
        value = float(logs[self.monitor])
        sign = -1.0 if self._maximize() else 1.0
        if self.best is None or sign * (value - self.best) < -self.min_delta:
            self.best, self.best_epoch, self.wait = value, int(epoch), 0
            if self.restore_best_weights:
                self._best_params = model.get_flat_parameters()
            return
        self.wait += 1
        if self.wait > self.patience:
            self.stopped_epoch = int(epoch)
            model.stop_training = True

    def on_train_end(self, model):
        if self.restore_best_weights and self._best_params is not None:
            model.set_flat_parameters(self._best_params)

    def get_state(self):
        meta = {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "stopped_epoch": self.stopped_epoch,
            "wait": self.wait,
        }
        arrays = {} if self._best_params is None else {"best_params": self._best_params}
        return meta, arrays

    def check_state(self, meta, arrays, model):
        best = arrays.get("best_params")
        if best is not None:
            expected = model.get_flat_parameters()
            if best.shape != expected.shape or best.dtype != expected.dtype:
                raise ValueError(
                    f"EarlyStopping best_params has shape {best.shape} and dtype "
                    f"{best.dtype}, expected {expected.shape} {expected.dtype}"
                )

    def set_state(self, meta, arrays):
        self.best = None if meta.get("best") is None else float(meta["best"])
        self.best_epoch = meta.get("best_epoch")
        self.stopped_epoch = meta.get("stopped_epoch")
        self.wait = int(meta.get("wait", 0))
        best = arrays.get("best_params")
        self._best_params = None if best is None else np.array(best)


class TerminateOnNaN(Callback):
    """Stop training when an epoch's loss (or validation loss) is NaN or infinite.

    A learning rate that is too large makes training diverge: the loss becomes
    NaN or infinite and so do the weights, after which ``predict`` has no
    meaningful answer. Like Keras, ``fit`` keeps going by default; with this
    callback it stops after the first epoch whose loss is not finite (fit's
    callbacks run once per epoch), and :attr:`stopped_epoch` tells which. A
    checkpointed fit never writes the non-finite state: its checkpoint keeps the
    last finite one. ``fastnn train`` uses this callback and exits with status 1.

    Attributes
    ----------
    stopped_epoch : int or None
        The epoch whose loss was not finite (None while training is sound).
    """

    def __init__(self) -> None:
        self.stopped_epoch: int | None = None

    def on_train_begin(self, model):
        self.stopped_epoch = None

    def on_epoch_end(self, epoch, logs, model):
        if any(
            key in logs and not math.isfinite(logs[key]) for key in ("loss", "val_loss")
        ):
            self.stopped_epoch = int(epoch)
            model.stop_training = True

    def get_state(self):
        return {"stopped_epoch": self.stopped_epoch}, {}

    def set_state(self, meta, arrays):
        self.stopped_epoch = meta.get("stopped_epoch")


def _warn_caller(message: str) -> None:
    """A RuntimeWarning attributed to the first frame outside fastnn (the call of
    fit in the user's code), however deep in the loop it is raised."""
    # the folder with its separator: a user's fastnn_train.py beside it is outside
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    level, frame = 2, sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(package):
        level += 1
        frame = frame.f_back
    warnings.warn(message, RuntimeWarning, stacklevel=level)
