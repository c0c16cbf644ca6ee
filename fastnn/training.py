"""The one training loop: every fit of a fastnn model runs through :func:`fit`.

``Sequential.fit``, data-parallel training (:mod:`fastnn.distributed`) and the
scikit-learn estimators all call :func:`fit`; no other module iterates epochs or
batches. The loop owns the validation split, resuming from a checkpoint, the epochs
and batches, callbacks, progress output, Ctrl-C handling, the checkpoint cadence and
the history. What differs between consumers plugs in through three objects:

API (stable)
------------
``fit(model, X, y, *, epochs, batch_size, shuffle, validation_data,
validation_split, callbacks, seed, verbose, checkpoint, checkpoint_every, resume,
sample_weight, classes, compiled_step, strategy=None, batch_order=None,
batch_l2=None) -> History``
    Arguments as :meth:`fastnn.Sequential.fit`, plus:

``strategy`` (default :class:`LocalStrategy`)
    Where the steps run. :class:`LocalStrategy` runs each step in this process (one
    compiled ``train_step`` call for the standard stack). ``fastnn.distributed``'s
    ``MPIStrategy`` runs ``loss_grad`` on this rank's shard of every global batch,
    sums the gradients with one ``Allreduce`` and applies the fused optimizer
    ``update``; it also makes rank 0 the only writer and evaluates sharded. A
    strategy implements the methods of :class:`LocalStrategy`.

``batch_order`` (default: :func:`shuffled_order` when ``shuffle`` else
:func:`data_order`)
    ``batch_order(n, rng) -> ndarray | None``, called at the start of every epoch:
    the order of the ``n`` training rows for that epoch (None: data order). Batches
    are the consecutive slices of ``batch_size`` rows of that order, the last one
    smaller (scikit-learn's ``gen_batches``). ``rng`` is the fit's shuffle generator
    (checkpointed with the fit); an order with a random state of its own (e.g.
    ``sklearn.utils.shuffle`` with the estimator's ``RandomState``) ignores it.

``batch_l2`` (default: the loss's ``l2`` for every batch)
    ``batch_l2(rows) -> float``: the L2 coefficient of a batch of ``rows`` rows
    (the loss is ``mean CE + (l2 / 2) ||W||^2``, ``dW = mean dCE/dW + l2 W``);
    scikit-learn's ``alpha`` is ``batch_l2 = lambda rows: alpha / rows``.

Per-epoch hooks are callbacks (:class:`fastnn.Callback`): ``on_epoch_end(epoch,
logs, model)`` reads ``logs["loss"]`` (the epoch's mean training loss, L2 term
included, as scikit-learn's ``loss_curve_``) and any validation metrics, may compute
a validation score of its own, change ``model.optimizer.current_lr`` (learning-rate
schedules) and stop training (``model.stop_training = True``). One ``fit`` call with
``epochs=1`` and no validation split is a ``partial_fit``; a model whose parameters
are set (``model._initialized``) keeps them (``warm_start``), and its optimizer keeps
its state unless the caller resets it (``model.optimizer.reset()``).
"""

from __future__ import annotations

import contextlib
import hashlib
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import checkpoint as container
from . import serialize
from ._validation import check_int, check_y
from .callbacks import Callback, History
from .progress import Progress
from .standard_callbacks import as_callback
from .threads import num_threads

__all__ = [
    "LocalStrategy",
    "TrainState",
    "data_order",
    "fit",
    "shuffled_order",
    "validation_size",
]

BatchOrder = Callable[[int, np.random.Generator], "np.ndarray | None"]


# ------------------------------------------------------------------ batch order
def shuffled_order(n: int, rng: np.random.Generator) -> np.ndarray:
    """A new random order of the ``n`` training rows (the default with shuffle)."""
    return rng.permutation(n)


def data_order(n: int, rng: np.random.Generator) -> None:
    """The rows in data order (``shuffle=False``)."""
    return None


# ------------------------------------------------------------------ state
@dataclass
class TrainState:
    """Position of a fit in its epochs: what a checkpoint needs to resume exactly."""

    epoch: int = 0  # epochs completed
    batch: int = 0  # batches completed in the current epoch
    step: int = 0  # batches completed in the whole fit
    loss_sum: float = 0.0  # sum of batch mean loss * batch size, this epoch
    correct: int = 0
    seen: int = 0
    elapsed: float = 0.0  # seconds spent in this epoch before a resume
    perm: np.ndarray | None = None
    stopped: bool = False
    finished: bool = False

    def nothing_left(self, epochs: int) -> bool:
        """Whether a (resumed) fit of ``epochs`` epochs has no epoch left to run.

        A fit that finished its epochs is continued when asked for more (the
        checkpoint of its last epoch is the starting point); one stopped by a
        callback (early stopping) stays stopped.
        """
        if self.finished and self.epoch < epochs and not self.stopped:
            self.finished = False
        return self.finished


@dataclass
class FitData:
    """A fit's data and settings, derived alike on every rank before training."""

    classes: np.ndarray
    X_all: np.ndarray
    y_all: np.ndarray
    sw_all: np.ndarray | None
    X_tr: np.ndarray
    x_rows: np.ndarray | None  # training rows of X_tr (a validation split), or all
    y_tr: np.ndarray
    sw_tr: np.ndarray | None
    X_val: np.ndarray | None
    y_val: np.ndarray | None
    seed_seq: np.random.SeedSequence
    init_ss: np.random.SeedSequence  # weight initialisation (first fit only)
    shuffle_ss: np.random.SeedSequence  # the epochs' shuffle order
    settings: dict[str, Any]

    @property
    def n(self) -> int:
        return self.y_tr.shape[0]

    def fingerprint(self) -> str:
        """SHA-256 of the training data (a pass over X)."""
        if self.settings.get("data_sha256"):
            return self.settings["data_sha256"]
        return fingerprint(self.X_all, self.y_all, self.sw_all)


# ------------------------------------------------------------------ strategy
class LocalStrategy:
    """Training in this process: the default strategy of :func:`fit`.

    Each method is a point where data-parallel training differs; here each is the
    plain single-process behaviour.
    """

    #: Ctrl-C is deferred to the next step boundary (checkpoint, then raise).
    defers_sigint = True
    #: This process writes checkpoints and warnings about them.
    writes = True

    def agreed(self, fn: Callable, *args: Any) -> Any:
        """Run ``fn`` (on every process; an error on one is raised on all)."""
        return fn(*args)

    def on_root(self, fn: Callable, *args: Any) -> Any:
        """Run ``fn`` on the writing process and share its result."""
        return fn(*args)

    def seed_entropy(self, entropy: Any) -> Any:
        """The entropy every process seeds from (None: drawn fresh)."""
        return entropy

    def check_same(self, model: Any, data: FitData, arguments: dict) -> None:
        """Raise unless every process fits the same model, data and arguments."""

    def threads(self, model: Any) -> int | None:
        """Threads this process trains with (None: leave the setting)."""
        return model.n_threads

    def resumed(self, train_state: dict[str, Any]) -> None:
        """A fit resumes from a checkpoint whose train state is ``train_state``."""

    def share_state(self, model: Any) -> None:
        """Make every process hold the writer's parameters and optimizer state."""

    def callbacks(self, callbacks: list[Callback]) -> list[Callback]:
        """The callbacks this process runs."""
        return callbacks

    def verbosity(self, verbose: int) -> int:
        """The progress verbosity of this process."""
        return verbose

    def shard(self, i: int, j: int) -> tuple[int, int]:
        """The rows ``[lo, hi)`` of the batch ``[i, j)`` this process trains on."""
        return i, j

    def begin_epoch(self) -> None:
        """An epoch starts (not called when a resume continues one)."""

    def step(self, model, ws, weighted: bool, batch_rows: int, l2) -> tuple[float, int]:
        """One optimizer step on the batch gathered in ``ws``; ``(loss, correct)``.

        ``ws`` is None when this process has no rows of the batch; ``batch_rows``
        counts the rows of the whole batch, ``l2`` its L2 coefficient (None: the
        loss's own).
        """
        sw = ws.sw if weighted else None
        if l2 is None:
            return model._train_step(ws.x, ws.y, sw)
        return model._train_step(ws.x, ws.y, sw, l2)

    def add_batch(self, state: TrainState, loss: float, rows: int, correct: int):
        """Count a step's loss and correct rows into the epoch's metrics."""
        state.loss_sum += loss * rows
        state.correct += correct

    def sync_metrics(self, state: TrainState) -> None:
        """Fold metrics counted since the last sync into ``state`` (all processes)."""

    def evaluate(self, model, X, y_idx, prefix: str) -> dict[str, float]:
        """Validation loss and accuracy (the same numbers on every process)."""
        return model._evaluate_encoded(X, y_idx, None, prefix, False)

    def epoch_logs(self) -> dict[str, float]:
        """Strategy metrics added to every epoch's logs."""
        return {}

    def progress_note(self) -> str:
        """Appended to every epoch line."""
        return ""

    def end_epoch(self, model) -> None:
        """After the callbacks of an epoch (agree on stopping, check the weights)."""

    def end_fit(self, model) -> None:
        """After the last epoch."""

    def train_state_extra(self) -> dict[str, Any]:
        """Strategy facts stored in the checkpoint's train state."""
        return {}


# ------------------------------------------------------------------ the loop
def fit(
    model,
    X: Any,
    y: Any,
    *,
    epochs: int = 10,
    batch_size: int = 32,
    shuffle: bool = True,
    validation_data: tuple[Any, Any] | None = None,
    validation_split: float = 0.0,
    callbacks: Iterable[Callback] = (),
    seed: int | None = None,
    verbose: int = 1,
    checkpoint: str | Path | None = None,
    checkpoint_every: int | str = "epoch",
    resume: bool = False,
    sample_weight: Any = None,
    classes: Any = None,
    compiled_step: bool | None = None,
    strategy: LocalStrategy | None = None,
    batch_order: BatchOrder | None = None,
    batch_l2: Callable[[int], float] | None = None,
) -> History:
    """Train ``model`` on (X, y); see the module docstring and
    :meth:`fastnn.Sequential.fit` for the arguments.

    Returns
    -------
    History
        The metrics of every epoch (including those before a resume).
    """
    strategy = LocalStrategy() if strategy is None else strategy

    # ---- 1. arguments and data, checked on every process
    def prepare():
        args = check_fit_args(
            epochs, batch_size, verbose, validation_split, checkpoint_every,
            callbacks, resume, checkpoint,
        )  # fmt: skip
        if compiled_step is not None and not isinstance(
            compiled_step, (bool, np.bool_)
        ):
            raise ValueError(
                f"compiled_step must be a bool or None, got {compiled_step!r}"
            )
        X_all = model._check_predict_X(X)
        y_raw = check_y(y, X_all.shape[0])
        val = None
        if validation_data is not None:
            if (
                not isinstance(validation_data, (tuple, list))
                or len(validation_data) != 2
            ):
                raise ValueError("validation_data must be a pair (X_val, y_val)")
            X_val = model._check_predict_X(validation_data[0])
            val = (X_val, check_y(validation_data[1], X_val.shape[0]))
        return args, X_all, y_raw, val

    args, X_all, y_raw, val_raw = strategy.agreed(prepare)
    epochs_, batch_size_, verbose_, every, callbacks_ = args
    if checkpoint is not None:  # fail now, not after the epochs
        strategy.on_root(container.check_output_path, checkpoint, "checkpoint")

    # ---- 2. the checkpoint to resume from: read and verified by the writer
    def read_checkpoint():
        if resume and Path(checkpoint).exists():
            return serialize.read(checkpoint)
        return None

    saved = strategy.on_root(read_checkpoint)
    if saved:
        strategy.agreed(serialize.check_state, model, *saved, True)
    entropy = strategy.seed_entropy(
        serialize.saved_seed_entropy(saved) if saved else seed
    )

    # ---- 3. labels, weights, seeds, split: the same on every process
    def derive() -> FitData:
        if saved:
            classes_ = saved[1][serialize.CLASSES]
        elif hasattr(model, "classes_"):
            classes_ = model.classes_
        else:
            classes_ = model._resolve_classes(y_raw, classes)
        y_all = model._encode(y_raw, classes_)
        sw_all = model._combined_weights(y_all, sample_weight, X_all.shape[0], classes_)
        seed_seq = np.random.SeedSequence(entropy)
        init_ss, split_ss, shuffle_ss = seed_seq.spawn(3)
        X_tr, x_rows, y_tr, sw_tr, X_val, y_val = X_all, None, y_all, sw_all, None, None
        if val_raw is not None:
            X_val, y_val = val_raw[0], model._encode(val_raw[1], classes_)
        elif validation_split > 0:
            tr, va = stratified_split(
                y_all, validation_split, np.random.Generator(np.random.PCG64(split_ss))
            )
            # X stays uncopied: training batches gather their rows through x_rows
            x_rows, y_tr = tr, y_all[tr]
            sw_tr = None if sw_all is None else sw_all[tr]
            X_val, y_val = X_all[va], y_all[va]
        settings = {
            "batch_size": min(batch_size_, y_tr.shape[0]),
            "shuffle": bool(shuffle),
            "validation_split": float(validation_split),
            "n_samples": int(X_all.shape[0]),
            # a resume must see the same data; hashing costs a pass over X, so only
            # runs that checkpoint pay for it
            "data_sha256": fingerprint(X_all, y_all, sw_all) if checkpoint else None,
        }
        data = FitData(
            classes_, X_all, y_all, sw_all, X_tr, x_rows, y_tr, sw_tr, X_val, y_val,
            seed_seq, init_ss, shuffle_ss, settings,
        )  # fmt: skip
        if saved:
            serialize.check_resume(model, saved, settings, callbacks_, data.n)
        return data

    data = strategy.agreed(derive)
    strategy.check_same(
        model,
        data,
        {
            "epochs": epochs_,
            "checkpoint": checkpoint is not None,
            "seed": seed,
            "checkpoint_every": every,
            "resume": bool(resume),
            "callbacks": [type(cb).__name__ for cb in callbacks_],
        },
    )
    n_threads = strategy.threads(model)
    if saved:
        strategy.resumed(saved[0]["train_state"])

    # ---- nothing above mutated the model; 4. the starting state
    rng = np.random.Generator(np.random.PCG64(data.shuffle_ss))
    history = History()
    state = TrainState()
    model.classes_ = data.classes
    if saved:
        serialize.set_state(model, *saved)
        history, position = serialize.resume_training_state(saved, rng, callbacks_)
        state = TrainState(**position)
    elif not model._initialized:
        model.initialize(np.random.Generator(np.random.PCG64(data.init_ss)))
    model.optimizer.bind(model._kernels(), model._params, model._grads, model._n_decay)
    strategy.share_state(model)
    model.stop_training = state.stopped
    if state.nothing_left(epochs_):
        return history
    hooks = strategy.callbacks(callbacks_)
    if not saved:
        for cb in hooks:
            cb.on_train_begin(model)

    def save_checkpoint() -> bool:
        """Write the checkpoint (the writer alone); False when skipped (diverged)."""
        if not np.isfinite(model._params).all():
            # diverged: the checkpoint keeps the last finite state
            if not model.stop_training and strategy.writes:
                warnings.warn(
                    "training diverged (non-finite weights): the checkpoint is "
                    "no longer updated; pass callbacks=[fastnn.TerminateOnNaN()]"
                    " to stop at the first non-finite epoch loss",
                    RuntimeWarning,
                    stacklevel=4,
                )
            return False
        meta, arrays = serialize.train_state(
            data.seed_seq, rng, history, state, bool(model.stop_training),
            data.settings, callbacks_, strategy.train_state_extra(),
        )  # fmt: skip
        strategy.on_root(serialize.save, model, checkpoint, meta, arrays)
        return True

    order = batch_order or (shuffled_order if shuffle else data_order)
    n = data.n
    bs = data.settings["batch_size"]
    n_batches = -(-n // bs)
    weighted = data.sw_tr is not None
    guard = _SigintGuard() if strategy.defers_sigint else contextlib.nullcontext()
    with (
        num_threads(n_threads),
        guard,
        model._fit_step_mode(None if compiled_step is None else bool(compiled_step)),
        Progress(
            strategy.verbosity(verbose_), epochs_, n, state.epoch, state.seen
        ) as progress,
    ):
        interrupted = getattr(guard, "is_set", _never)
        t_first = None
        while state.epoch < epochs_ and not model.stop_training:
            t0 = time.perf_counter()
            if state.batch == 0:
                state.perm = order(n, rng)
                state.loss_sum, state.correct, state.seen = 0.0, 0, 0
                state.elapsed = 0.0
                strategy.begin_epoch()
            for b in range(state.batch, n_batches):
                i, j = b * bs, min(n, (b + 1) * bs)
                lo, hi = strategy.shard(i, j)
                ws = None
                if hi > lo:
                    ws = model._workspace(hi - lo, True)
                    gather_batch(
                        ws, data.X_tr, data.x_rows, data.y_tr, data.sw_tr, state.perm,
                        lo, hi,
                    )  # fmt: skip
                if t_first is None:
                    t_first = time.perf_counter()
                l2 = None if batch_l2 is None else float(batch_l2(j - i))
                loss, correct = strategy.step(model, ws, weighted, j - i, l2)
                if history.first_step_time is None:
                    history.first_step_time = time.perf_counter() - t_first
                strategy.add_batch(state, loss, hi - lo, correct)
                state.seen += j - i
                state.batch = b + 1
                state.step += 1
                progress.step(
                    j - i,
                    state.loss_sum / state.seen
                    if b % 16 == 0 or b == n_batches - 1
                    else None,
                )
                if interrupted() or (
                    checkpoint is not None
                    and every != "epoch"
                    and state.step % every == 0
                ):
                    state.elapsed += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    strategy.sync_metrics(state)
                    written = checkpoint is not None and save_checkpoint()
                    if interrupted():
                        raise _interrupted(checkpoint if written else None)
            # ---- end of epoch (every process, same order)
            state.elapsed += time.perf_counter() - t0
            strategy.sync_metrics(state)
            logs = {
                "loss": state.loss_sum / state.seen,
                "accuracy": state.correct / state.seen,
            }
            if data.X_val is not None:
                logs.update(strategy.evaluate(model, data.X_val, data.y_val, "val_"))
            logs["lr"] = model.optimizer.current_lr
            logs["time"] = state.elapsed
            logs["samples_per_sec"] = state.seen / max(state.elapsed, 1e-12)
            logs.update(strategy.epoch_logs())
            history.append(state.epoch, logs)
            model.optimizer.end_epoch(state.epoch + 1, logs)
            for cb in hooks:
                cb.on_epoch_end(state.epoch, logs, model)
            strategy.end_epoch(model)
            state.epoch += 1
            state.batch = 0
            state.perm = None
            progress.epoch_end(state.epoch, logs, strategy.progress_note())
            written = (
                checkpoint is not None
                and (every == "epoch" or interrupted())
                and save_checkpoint()
            )
            if interrupted():
                raise _interrupted(checkpoint if written else None)
        for cb in hooks:
            cb.on_train_end(model)
        state.finished = True
        strategy.end_fit(model)
        if checkpoint is not None:
            save_checkpoint()
    return history


# ------------------------------------------------------------------ helpers
def check_fit_args(epochs, batch_size, verbose, validation_split, checkpoint_every,
                   callbacks, resume, checkpoint):  # fmt: skip
    """fit's plain arguments, checked.

    Returns ``(epochs, batch_size, verbose, checkpoint_every, callbacks)``.
    """
    epochs = check_int("epochs", epochs, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    verbose = check_int("verbose", verbose, 0)
    if not isinstance(validation_split, (int, float)) or not (
        0.0 <= validation_split < 1.0
    ):
        raise ValueError(
            f"validation_split must lie in [0, 1), got {validation_split!r}"
        )
    if checkpoint_every != "epoch":
        checkpoint_every = check_int("checkpoint_every", checkpoint_every, 1)
    callbacks = [as_callback(cb) for cb in callbacks]
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    return epochs, batch_size, verbose, checkpoint_every, callbacks


def gather_batch(ws, X, x_rows, y, sw, perm, i, j) -> None:
    """Copy rows [i, j) of an epoch's order into the workspace's x, y (and sw).

    ``perm``: the epoch's order of the training rows, or None (data order). ``y``
    and ``sw`` hold the training rows only; ``X`` may hold more rows, the training
    rows being ``x_rows`` (a validation split's indices, so X is never copied) or
    all of them (None).
    """
    if perm is not None:
        idx = perm[i:j]
        rows = idx if x_rows is None else x_rows[idx]
        np.take(X, rows, axis=0, out=ws.x, mode="clip")
        np.take(y, idx, out=ws.y, mode="clip")
        if sw is not None:
            np.take(sw, idx, out=ws.sw, mode="clip")
        return
    if x_rows is None:
        np.copyto(ws.x, X[i:j])
    else:
        np.take(X, x_rows[i:j], axis=0, out=ws.x, mode="clip")
    np.copyto(ws.y, y[i:j])
    if sw is not None:
        np.copyto(ws.sw, sw[i:j])


def fingerprint(X: np.ndarray, y: np.ndarray, sw: np.ndarray | None) -> str:
    """SHA-256 over the dtypes, shapes and bytes of the training data."""
    h = hashlib.sha256()
    for a in (X, y, sw):
        if a is not None:
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def _holdout_counts(y: np.ndarray, fraction: float) -> tuple[np.ndarray, list[int]]:
    """(classes, validation rows of each) of a stratified ``fraction`` split."""
    classes, counts = np.unique(y, return_counts=True)
    return classes, [int(round(fraction * int(n))) for n in counts]


def validation_size(y: Any, fraction: float) -> int:
    """Rows that ``fit(validation_split=fraction)`` holds out of labels ``y``."""
    return sum(_holdout_counts(np.asarray(y), fraction)[1]) if fraction > 0 else 0


def stratified_split(
    y: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, validation) indices holding out ``fraction`` of each class."""
    order = rng.permutation(y.shape[0])
    val = []
    for c, k in zip(*_holdout_counts(y, fraction), strict=True):
        val.append(order[y[order] == c][:k])
    val_idx = np.sort(np.concatenate(val))
    if val_idx.shape[0] == 0:
        raise ValueError(
            f"validation_split={fraction} leaves no validation samples; use a larger "
            "fraction or pass validation_data"
        )
    mask = np.ones(y.shape[0], dtype=bool)
    mask[val_idx] = False
    train_idx = np.flatnonzero(mask)
    if train_idx.shape[0] == 0:
        raise ValueError(f"validation_split={fraction} leaves no training samples")
    return train_idx, val_idx


def _never() -> bool:
    return False


def _interrupted(saved_to: str | Path | None) -> KeyboardInterrupt:
    """The KeyboardInterrupt that ends an interrupted fit; its ``checkpoint`` is the
    path just written, or None when no checkpoint was saved."""
    exc = KeyboardInterrupt()
    exc.checkpoint = saved_to
    return exc


class _SigintGuard:
    """Defer Ctrl-C to the next step boundary so state stays consistent.

    The first Ctrl-C sets the flag (fit then saves its checkpoint and raises
    KeyboardInterrupt); a second one interrupts at once. Only installed in the main
    thread, where Python delivers signals; the handler found on entry (default,
    ignored or custom) is restored on exit.
    """

    def __init__(self) -> None:
        self._interrupted = False
        self._previous = None

    def is_set(self) -> bool:
        return self._interrupted

    def _handler(self, signum, frame):
        if self._interrupted:
            raise KeyboardInterrupt
        self._interrupted = True

    def __enter__(self) -> _SigintGuard:
        if threading.current_thread() is threading.main_thread():
            try:
                self._previous = signal.signal(signal.SIGINT, self._handler)
            except ValueError:  # embedded interpreters without signal support
                self._previous = None
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
