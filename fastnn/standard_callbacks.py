"""Keras-style callbacks: ModelCheckpoint, CSVLogger, LambdaCallback.

A plain callable passed to ``fit(callbacks=...)`` becomes a LambdaCallback called
after every epoch as ``f(epoch, logs)``.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .callbacks import Callback, _warn_caller

if TYPE_CHECKING:
    from .model import Sequential

__all__ = ["CSVLogger", "LambdaCallback", "ModelCheckpoint", "as_callback"]


def as_callback(cb: Any) -> Callback:
    """``cb`` itself if it is a Callback; a plain callable ``f(epoch, logs)`` as a
    :class:`LambdaCallback`; anything else is a TypeError."""
    if isinstance(cb, Callback):
        return cb
    if callable(cb):
        return LambdaCallback(on_epoch_end=cb)
    raise TypeError(f"{cb!r} is not a fastnn.Callback or a callable f(epoch, logs)")


def _maximize(monitor: str, mode: str) -> bool:
    """Whether larger is better ("auto": metrics named like accuracy)."""
    return mode == "max" or (mode == "auto" and "acc" in monitor)


def _check_monitor(owner: str, monitor: str, logs: Mapping[str, float]) -> float:
    if monitor not in logs:
        hint = (
            " (pass validation_data or validation_split)"
            if monitor.startswith("val_")
            else ""
        )
        raise ValueError(
            f"{owner} monitors {monitor!r}, which is not among the epoch metrics "
            f"{sorted(logs)}{hint}"
        )
    return float(logs[monitor])


class LambdaCallback(Callback):
    """A callback from plain functions.

    Parameters
    ----------
    on_epoch_end : callable, optional
        ``f(epoch, logs)`` after every epoch (0-based epoch, the epoch's metrics).
    on_train_begin, on_train_end : callable, optional
        ``f()`` before the first and after the last epoch.
    """

    def __init__(
        self,
        on_epoch_end: Callable[[int, Mapping[str, float]], Any] | None = None,
        on_train_begin: Callable[[], Any] | None = None,
        on_train_end: Callable[[], Any] | None = None,
    ) -> None:
        for name, fn in (
            ("on_epoch_end", on_epoch_end),
            ("on_train_begin", on_train_begin),
            ("on_train_end", on_train_end),
        ):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable, got {fn!r}")
        self._epoch_end = on_epoch_end
        self._train_begin = on_train_begin
        self._train_end = on_train_end

    def on_train_begin(self, model: Sequential) -> None:
        if self._train_begin is not None:
            self._train_begin()

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float], model: Sequential):
        if self._epoch_end is not None:
            self._epoch_end(epoch, logs)

    def on_train_end(self, model: Sequential) -> None:
        if self._train_end is not None:
            self._train_end()

    def __repr__(self) -> str:
        return f"LambdaCallback(on_epoch_end={self._epoch_end!r})"


class ModelCheckpoint(Callback):
    """Save the model (``model.save``: atomic .npz) during training.

    Parameters
    ----------
    filepath : str or path-like
        Where to save; may hold ``{epoch}`` (1-based) and metric fields, formatted
        with the epoch's metrics, e.g. ``"m-{epoch:03d}-{val_loss:.3f}.npz"``.
    monitor : str, default="val_loss"
        The metric that decides "best" (with ``save_best_only``).
    mode : {"auto", "min", "max"}, default="auto"
        "auto" maximises metrics whose name contains "acc".
    save_best_only : bool, default=False
        Save only when ``monitor`` improved on the best so far.
    every : int >= 1, default=1
        Without ``save_best_only``: save after every ``every``-th epoch.

    Attributes
    ----------
    best : float or None
    saved : list of str
        Paths written by this callback, in order.

    Notes
    -----
    The folder of ``filepath`` must exist and be writable: that is checked when
    training begins or resumes (when the folder's name holds no format field), so
    that a typo does not cost the training. After an epoch whose weights are not
    finite (a fit that diverged) nothing is saved: the files saved before are kept
    and a RuntimeWarning says so once per fit when the fit goes on or ends
    regardless (``TerminateOnNaN`` stops such a fit, in either order of the
    callbacks, and then no warning is given). Under :func:`fastnn.distributed.fit`
    only rank 0 runs it (every rank holds the same weights).
    """

    root_only = True  # distributed.fit: one writer

    def __init__(
        self,
        filepath: str | os.PathLike,
        monitor: str = "val_loss",
        mode: str = "auto",
        save_best_only: bool = False,
        every: int = 1,
    ) -> None:
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an int >= 1, got {every!r}")
        self.filepath = os.fspath(filepath)
        self.monitor = monitor
        self.mode = mode
        self.save_best_only = bool(save_best_only)
        self.every = every
        self.best: float | None = None
        self.saved: list[str] = []
        self._warned = False  # about a diverged fit, in this fit
        self._diverged: int | None = None  # a diverged epoch not yet reported

    def on_train_begin(self, model: Sequential) -> None:
        self.best = None
        self.saved = []
        self._warned = False
        self._diverged = None
        self._check_folder()

    def _check_folder(self) -> None:
        """Raise ValueError when the files cannot be written (a missing or read-only
        folder, or a filepath that is a folder), before any epoch runs."""
        folder = os.path.dirname(self.filepath) or "."
        if "{" in folder:  # named per epoch: checked by the save itself
            return
        where = f"ModelCheckpoint filepath {self.filepath!r}"
        if "{" not in self.filepath and os.path.isdir(self.filepath):
            raise ValueError(f"{where} is a folder, not a file")
        if not os.path.isdir(folder):
            raise ValueError(f"{where}: folder {folder!r} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ValueError(f"{where}: folder {folder!r} is not writable")

    def _report_divergence(self, model: Sequential) -> None:
        """Warn (once per fit) about the diverged epoch whose save was skipped,
        unless the fit stopped at it: then a callback such as TerminateOnNaN, which
        may come before or after this one, stopped it, and the advice to pass it
        is wrong (fit's own checkpoint is skipped silently then too)."""
        epoch, self._diverged = self._diverged, None
        if epoch is None or model.stop_training or self._warned:
            return
        self._warned = True
        _warn_caller(
            f"ModelCheckpoint: the weights after epoch {epoch + 1} are not "
            "finite (training diverged): not saved, the files saved before "
            "are kept; pass callbacks=[fastnn.TerminateOnNaN()] to stop at "
            "the first non-finite epoch loss"
        )

    def on_train_end(self, model: Sequential) -> None:
        self._report_divergence(model)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float], model: Sequential):
        self._report_divergence(model)  # the fit went on after a diverged epoch
        if not np.isfinite(model._params).all():
            # a diverged fit: keep the files saved before (model.save would refuse);
            # reported when the fit goes on or ends without being stopped here
            if not self._warned and self._diverged is None:
                self._diverged = epoch
            return
        if self.save_best_only:
            value = _check_monitor("ModelCheckpoint", self.monitor, logs)
            maximize = _maximize(self.monitor, self.mode)
            improved = self.best is None or (
                value > self.best if maximize else value < self.best
            )
            if math.isnan(value) or not improved:
                return
            self.best = value
        elif (epoch + 1) % self.every:
            return
        try:
            path = self.filepath.format(epoch=epoch + 1, **logs)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"ModelCheckpoint filepath {self.filepath!r} cannot be formatted with "
                f"epoch and the metrics {sorted(logs)}: {exc}"
            ) from None
        model.save(path)
        self.saved.append(path)

    def get_state(self):
        return {"best": self.best, "saved": list(self.saved)}, {}

    def check_state(self, meta, arrays, model):
        # a resumed fit runs no on_train_begin: its folder is checked here, before
        # the model changes and any epoch runs
        self._check_folder()

    def set_state(self, meta, arrays):
        self.best = None if meta.get("best") is None else float(meta["best"])
        self.saved = [str(p) for p in meta.get("saved", [])]
        self._warned, self._diverged = False, None  # a resumed fit reports its own


class CSVLogger(Callback):
    """Write each epoch's metrics as a CSV row (``epoch`` first, 0-based).

    Parameters
    ----------
    filename : str or path-like
    separator : str, default=","
    append : bool, default=False
        Keep an existing file and add rows (the header is written only to an empty
        file). Otherwise a fresh fit starts the file anew; a resumed fit always
        appends.

    Notes
    -----
    Under :func:`fastnn.distributed.fit` only rank 0 runs it (the metrics are the
    same on every rank).
    """

    root_only = True  # distributed.fit: one writer

    def __init__(
        self, filename: str | os.PathLike, separator: str = ",", append: bool = False
    ) -> None:
        self.filename = Path(filename)
        self.separator = separator
        self.append = bool(append)
        self._keys: list[str] | None = None

    def on_train_begin(self, model: Sequential) -> None:
        self._keys = None
        if not self.append:
            with open(self.filename, "w", newline=""):
                pass  # a fresh file: the header comes with the first row

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float], model: Sequential):
        # opened per epoch: every row is on disk when the epoch ends, and a resumed
        # fit (no on_train_begin) simply appends
        with open(self.filename, "a", newline="") as f:
            new = f.tell() == 0
            if self._keys is None:
                self._keys = list(logs)
            writer = csv.writer(f, delimiter=self.separator)
            if new:
                writer.writerow(["epoch", *self._keys])
            writer.writerow([epoch, *(logs.get(k, "") for k in self._keys)])
