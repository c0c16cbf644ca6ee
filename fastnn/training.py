"""The one training loop: every fit of a fastnn model runs through :func:`fit`.

``Sequential.fit``, data-parallel training (:mod:`fastnn.distributed`) and the
scikit-learn estimators all call :func:`fit`; no other module iterates epochs or
batches. The loop owns the validation split, resuming from a checkpoint, the epochs
and batches, callbacks, progress output, Ctrl-C handling, the checkpoint cadence and
the history. What differs between consumers plugs in through three objects:

API (stable)
------------
``fit(model, X, y, *, strategy=None, batch_order=None, batch_l2=None,
**settings) -> History``
    ``settings``: the keyword arguments of ``model.fit`` (:meth:`fastnn.Sequential.fit`:
    ``epochs``, ``batch_size``, ``shuffle``, ``validation_data``,
    ``validation_split``, ``callbacks``, ``seed``, ``verbose``, ``checkpoint``,
    ``checkpoint_every``, ``resume``, ``sample_weight``, ``classes``,
    ``compiled_step``) with its defaults; and:

``strategy`` (default :class:`LocalStrategy`)
    Where the steps run. :class:`LocalStrategy` runs each step in this process (one
    compiled call for the standard stack: ``train_steps``, which gathers each
    batch itself, runs the first step alone, then the full batches up to the next
    checkpoint, at most :data:`WORK_AT_ONCE` rows x parameters of them, in one
    call, and the short last batch alone: a small network's step is then not
    dominated by the Python around it). ``fastnn.distributed``'s
    ``MPIStrategy`` runs ``loss_grad`` on this rank's shard of every global batch,
    sums the gradients with one ``Allreduce`` and applies the fused optimizer
    ``update``; it also makes rank 0 the only writer and evaluates sharded. A
    strategy implements the methods of :class:`LocalStrategy`.

``batch_order`` (default: :func:`shuffled_order` when ``shuffle`` else
:func:`data_order`)
    ``batch_order(n, rng) -> ndarray | None``, called at the start of every epoch:
    the order of the ``n`` training rows for that epoch (``n`` integer row indices
    in [0, n), repeats allowed; None: data order). Batches
    are the consecutive slices of ``batch_size`` rows of that order, the last one
    smaller (scikit-learn's ``gen_batches``). ``rng`` is the fit's shuffle generator
    (checkpointed with the fit); an order with a random state of its own (e.g.
    ``sklearn.utils.shuffle`` with the estimator's ``RandomState``) ignores it.

``batch_l2`` (default: the loss's ``l2`` for every batch)
    ``batch_l2(rows) -> float``: the L2 coefficient of a batch of ``rows`` rows
    (the loss is ``mean CE + (l2 / 2) ||W||^2``, ``dW = mean dCE/dW + l2 W``);
    scikit-learn's ``alpha`` is ``batch_l2 = lambda rows: alpha / rows``.

Classification or regression: the model's loss says which
(``model.loss.is_classifier``). A regressor's targets are float arrays (n, k) of the
model dtype instead of class indices, its validation split is random instead of
stratified, and its logs carry ``loss`` (+ ``val_loss``, ``val_mse``) without
accuracy; everything else is the same loop.

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
import inspect
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import checkpoint as container
from . import serialize
from ._validation import check_int
from .callbacks import Callback, History, _warn_caller
from .progress import Progress
from .standard_callbacks import as_callback

__all__ = [
    "LocalStrategy",
    "TrainState",
    "data_order",
    "fit",
    "shuffled_order",
    "validation_size",
]

BatchOrder = Callable[[int, np.random.Generator], "np.ndarray | None"]

#: The most multiply-adds (rows x parameters) one compiled ``train_steps`` call
#: runs. Python's per-step cost (~13 us, 40% of a 64-32-10 step at batch 32 on a
#: 2-core AMD EPYC) is paid once per call; Ctrl-C waits for the call to end, which
#: this bounds to roughly 10-50 ms on any current CPU (a forward pass's worth of
#: 2**27 multiply-adds; the step is ~3x that).
WORK_AT_ONCE = 2**27


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

    def fuses_steps(self, model, data: FitData) -> bool:
        """Whether the loop runs its steps through :meth:`steps` (several full
        batches per compiled call) instead of :meth:`step`: on the compiled path,
        with this class's own step, shard, add_batch and steps (a strategy that
        changes one decides for itself)."""
        cls = type(self)
        own = all(
            getattr(cls, name) is getattr(LocalStrategy, name)
            for name in ("step", "shard", "add_batch", "steps", "fuses_steps")
        )
        return own and model._fuses_steps()

    def steps(self, model, data: FitData, rows, batch_size: int, l2):
        """The steps on the training rows ``rows`` (whole batches of
        ``batch_size``) in one compiled call, as :meth:`step` on each batch; each
        step's ``(losses, correct)``. ``l2``: the batches' L2 coefficient (None: the
        loss's own)."""
        return model._train_steps(
            data.X_tr, data.x_rows, rows, data.y_tr, data.sw_tr, batch_size, l2
        )

    def add_batch(self, state: TrainState, loss: float, rows: int, correct: int):
        """Count a step's loss and correct rows into the epoch's metrics."""
        state.loss_sum += loss * rows
        state.correct += correct

    def sync_metrics(self, state: TrainState) -> None:
        """Fold metrics counted since the last sync into ``state`` (all processes)."""

    def evaluate(self, model, X, y_idx, prefix: str) -> dict[str, float]:
        """Validation loss and accuracy, or a regressor's loss and MSE (the same
        numbers on every process)."""
        return model._evaluate_encoded(X, y_idx, None, prefix, False)

    def epoch_logs(self) -> dict[str, float]:
        """Strategy metrics added to every epoch's logs."""
        return {}

    def progress_note(self) -> str:
        """Appended to every epoch line."""
        return ""

    def hold_errors(self) -> contextlib.AbstractContextManager:
        """Around an epoch-level block (the callbacks, the epoch's end): a context
        in which an exception is held (:meth:`holds`) or propagates."""
        return contextlib.nullcontext()

    def holds(self, exc: Exception) -> bool:
        """Whether ``exc``, raised by work of this process alone (a callback, a
        batch's gathering, a step's computation, the validation pass), is held
        until the next agreement point (:meth:`after_train_begin`, the next
        :meth:`step`, :meth:`sync_metrics`, :meth:`evaluate`, :meth:`end_epoch`,
        :meth:`end_fit`), so that every process raises rather than some waiting
        for the others; a process that holds one skips the work of its steps
        until then. False (here): the caller raises it at once."""
        return False

    def after_train_begin(self, model) -> None:
        """After ``on_train_begin``: raise an exception held on any process; a stop
        asked for on any process stops all."""

    def end_epoch(self, model) -> None:
        """After the callbacks of an epoch (raise held exceptions, agree on
        stopping, check the weights)."""

    def end_fit(self, model) -> None:
        """After the last epoch and ``on_train_end`` (raise held exceptions)."""

    def train_state_extra(self) -> dict[str, Any]:
        """Strategy facts stored in the checkpoint's train state."""
        return {}


# ------------------------------------------------------------------ the loop
def fit(
    model,
    X: Any,
    y: Any,
    *,
    strategy: LocalStrategy | None = None,
    batch_order: BatchOrder | None = None,
    batch_l2: Callable[[int], float] | None = None,
    **settings: Any,
) -> History:
    """Train ``model`` on (X, y).

    ``settings`` are the keyword arguments of ``model.fit``
    (:meth:`fastnn.Sequential.fit`: ``epochs``, ``batch_size``, ``shuffle``,
    ``validation_data``, ``validation_split``, ``callbacks``, ``seed``,
    ``verbose``, ``checkpoint``, ``checkpoint_every``, ``resume``,
    ``sample_weight``, ``classes``, ``compiled_step``), with its defaults;
    ``strategy``, ``batch_order`` and ``batch_l2`` as in the module docstring.

    Returns
    -------
    History
        The metrics of every epoch (including those before a resume).
    """
    a = inspect.signature(type(model).fit).bind(model, X, y, **settings)
    a.apply_defaults()
    s = a.arguments
    checkpoint, resume = s["checkpoint"], s["resume"]
    strategy = LocalStrategy() if strategy is None else strategy
    args = strategy.agreed(_FitArgs.checked, model, X, y, s)
    if checkpoint is not None:  # fail now, not after the epochs
        strategy.on_root(container.check_output_path, checkpoint, "checkpoint")
    # the checkpoint to resume from: read and verified by the writer
    saved = strategy.on_root(_read, checkpoint if resume else None)
    if saved:
        strategy.agreed(serialize.check_state, model, *saved, True)
    entropy = strategy.seed_entropy(
        serialize.saved_seed_entropy(saved) if saved else s["seed"]
    )
    data = strategy.agreed(
        _derive, model, args, s, saved, entropy, strategy.callbacks(args.callbacks)
    )
    strategy.check_same(
        model,
        data,
        {
            "epochs": args.epochs,
            "checkpoint": checkpoint is not None,
            "seed": s["seed"],
            "checkpoint_every": args.every,
            "resume": bool(resume),
            "callbacks": [type(cb).__name__ for cb in args.callbacks],
        },
    )
    order = batch_order or (shuffled_order if s["shuffle"] else data_order)
    run = _Run(model, strategy, data, args, saved, checkpoint, order, batch_l2)
    return run.train()


@dataclass
class _FitArgs:
    """fit's arguments and input data, checked (every process alike)."""

    epochs: int
    batch_size: int
    verbose: int
    every: int | str  # checkpoint_every
    callbacks: list[Callback]
    compiled_step: bool | None
    X_all: np.ndarray
    y_raw: np.ndarray
    validation: tuple[np.ndarray, np.ndarray] | None  # (X_val, labels)

    @classmethod
    def checked(cls, model, X, y, s: dict[str, Any]) -> _FitArgs:
        """From fit's arguments ``s`` (by name)."""
        settings = check_fit_args(
            s["epochs"], s["batch_size"], s["verbose"], s["validation_split"],
            s["checkpoint_every"], s["callbacks"], s["resume"], s["checkpoint"],
        )  # fmt: skip
        if s["seed"] is not None:  # SeedSequence's errors do not name the seed
            check_int("seed", s["seed"], 0)
        compiled_step = s["compiled_step"]
        if compiled_step is not None and not isinstance(
            compiled_step, (bool, np.bool_)
        ):
            raise ValueError(
                f"compiled_step must be a bool or None, got {compiled_step!r}"
            )
        X_all = model._check_predict_X(X)
        if s["classes"] is not None and not model.loss.is_classifier:
            raise ValueError(
                "classes= is for classifiers; this model regresses (loss "
                f"{model.loss!r})"
            )
        y_raw = model._check_y(y, X_all.shape[0])
        val = None
        validation_data = s["validation_data"]
        if validation_data is not None:
            if (
                not isinstance(validation_data, (tuple, list))
                or len(validation_data) != 2
            ):
                raise ValueError("validation_data must be a pair (X_val, y_val)")
            X_val = model._check_predict_X(validation_data[0])
            val = (X_val, model._check_y(validation_data[1], X_val.shape[0]))
        compiled = None if compiled_step is None else bool(compiled_step)
        return cls(*settings, compiled, X_all, y_raw, val)


def _read(path) -> tuple[dict, dict] | None:
    """The checkpoint at ``path`` (None: no path, or no file there yet)."""
    if path is None or not Path(path).exists():
        return None
    return serialize.read(path)


def _derive(
    model, args: _FitArgs, s: dict[str, Any], saved, entropy, hooks: list[Callback]
) -> FitData:
    """Labels, weights, seeds and the validation split: the same on every process.
    ``hooks``: the callbacks this process runs (a resume checks their saved state)."""
    X_all, validation_split = args.X_all, s["validation_split"]
    classify = model.loss.is_classifier
    if not classify:
        classes_ = None  # a regressor's targets are its float values
    elif saved:
        classes_ = saved[1][serialize.CLASSES]
    elif hasattr(model, "classes_"):
        classes_ = model.classes_
    else:
        classes_ = model._resolve_classes(args.y_raw, s["classes"])
    y_all = model._training_targets(args.y_raw, classes_)
    sw_all = model._combined_weights(
        y_all, s["sample_weight"], X_all.shape[0], classes_
    )
    seed_seq = np.random.SeedSequence(entropy)
    init_ss, split_ss, shuffle_ss = seed_seq.spawn(3)
    X_tr, x_rows, y_tr, sw_tr, X_val, y_val = X_all, None, y_all, sw_all, None, None
    if args.validation is not None:
        X_val, y_val = (
            args.validation[0],
            model._training_targets(args.validation[1], classes_),
        )
    elif validation_split > 0:
        split = stratified_split if classify else random_split
        tr, va = split(
            y_all, validation_split, np.random.Generator(np.random.PCG64(split_ss))
        )
        # X stays uncopied: training batches gather their rows through x_rows
        x_rows, y_tr = tr, y_all[tr]
        sw_tr = None if sw_all is None else sw_all[tr]
        X_val, y_val = X_all[va], y_all[va]
    settings = {
        "batch_size": min(args.batch_size, y_tr.shape[0]),
        "shuffle": bool(s["shuffle"]),
        "validation_split": float(validation_split),
        "n_samples": int(X_all.shape[0]),
        # a resume must see the same data; hashing costs a pass over X, so only
        # runs that checkpoint pay for it
        "data_sha256": fingerprint(X_all, y_all, sw_all) if s["checkpoint"] else None,
    }
    data = FitData(
        classes_, X_all, y_all, sw_all, X_tr, x_rows, y_tr, sw_tr, X_val, y_val,
        seed_seq, init_ss, shuffle_ss, settings,
    )  # fmt: skip
    if saved:
        serialize.check_resume(model, saved, settings, args.callbacks, data.n, hooks)
    return data


class _Run:
    """One fit from its starting state: the epochs, their batches, the epoch ends
    and the checkpoints."""

    def __init__(self, model, strategy, data: FitData, args: _FitArgs, saved,
                 checkpoint, order: BatchOrder, batch_l2) -> None:  # fmt: skip
        self.model, self.strategy, self.data, self.args = model, strategy, data, args
        self.checkpoint, self.order, self.batch_l2 = checkpoint, order, batch_l2
        self.n_threads = strategy.threads(model)
        if saved:
            strategy.resumed(serialize.saved_train_state(saved))
        # ---- nothing above mutated the model: the starting state
        self.rng = np.random.Generator(np.random.PCG64(data.shuffle_ss))
        self.history = History()
        self.state = TrainState()
        model._mark_fitted(data.classes, args.y_raw.ndim)
        if saved:
            serialize.set_state(model, *saved)
            self.history, position = serialize.resume_training_state(
                saved, self.rng, args.callbacks
            )
            self.state = TrainState(**position)
        elif not model._initialized:
            model.initialize(np.random.Generator(np.random.PCG64(data.init_ss)))
        opt = model.optimizer
        opt.bind(model._kernels(), model._params, model._grads, model._n_decay)
        strategy.share_state(model)
        model.stop_training = self.state.stopped
        self.continuing = bool(saved)  # a resumed fit: no on_train_begin
        self.hooks = strategy.callbacks(args.callbacks)
        self.t_first: float | None = None

    def train(self) -> History:
        model, state, args = self.model, self.state, self.args
        if state.nothing_left(args.epochs):
            return self.history
        if not self.continuing:
            with self.strategy.hold_errors():
                for cb in self.hooks:
                    cb.on_train_begin(model)
            self.strategy.after_train_begin(model)
        guard = _SigintGuard() if self.strategy.defers_sigint else _NO_GUARD
        verbosity = self.strategy.verbosity(args.verbose)
        with (
            model._threads(self.n_threads),
            guard,
            model._fit_step_mode(args.compiled_step),
            Progress(verbosity, args.epochs, self.data.n, state.epoch, state.seen)
            as progress,
        ):  # fmt: skip
            model._plan_threads()
            self.interrupted = guard.is_set
            self.fused = self.strategy.fuses_steps(model, self.data)
            while state.epoch < args.epochs and not model.stop_training:
                self._epoch(progress)
            with self.strategy.hold_errors():
                for cb in self.hooks:
                    cb.on_train_end(model)
            state.finished = True
            self.strategy.end_fit(model)
            if self.checkpoint is not None:
                self._save()
        return self.history

    def _epoch(self, progress: Progress) -> None:
        """Run (the rest of) an epoch and its end."""
        model, strategy, data, state = self.model, self.strategy, self.data, self.state
        n, bs = data.n, data.settings["batch_size"]
        n_batches = -(-n // bs)
        every = self.args.every
        t0 = time.perf_counter()
        if state.batch == 0:
            state.perm = self.order(n, self.rng)
            state.loss_sum, state.correct, state.seen = 0.0, 0, 0
            state.elapsed = 0.0
            strategy.begin_epoch()
        state.perm = _checked_order(state.perm, n)
        while state.batch < n_batches:
            b = state.batch
            # a fused strategy runs every step through its compiled steps call:
            # several full batches at once, the first step and the short last
            # batch alone
            k, rows = self._steps_at_once(b, n // bs - b, bs), bs
            if self.fused and b == n // bs:
                rows = n - b * bs
            i, j = b * bs, min(n, b * bs + k * rows)
            if self.t_first is None:
                self.t_first = time.perf_counter()
            if self.fused:
                losses, hits = self._compiled_steps(i, j, rows)
                for loss, correct in zip(losses.tolist(), hits.tolist(), strict=True):
                    strategy.add_batch(state, loss, rows, correct)
            else:
                lo, hi = strategy.shard(i, j)
                ws = None
                try:
                    if hi > lo:
                        ws = model._workspace(hi - lo, True)
                        gather_batch(ws, data.X_tr, data.x_rows, data.y_tr,
                                     data.sw_tr, state.perm, lo, hi)  # fmt: skip
                except Exception as exc:  # held: the step skips its work
                    if not strategy.holds(exc):
                        raise
                l2 = None if self.batch_l2 is None else float(self.batch_l2(j - i))
                loss, correct = strategy.step(
                    model, ws, data.sw_tr is not None, j - i, l2
                )
                strategy.add_batch(state, loss, hi - lo, correct)
            if self.history.first_step_time is None:
                self.history.first_step_time = time.perf_counter() - self.t_first
            state.seen += j - i
            state.batch = b + k
            state.step += k
            running = k > 1 or b % 16 == 0 or state.batch == n_batches
            progress.step(j - i, state.loss_sum / state.seen if running else None)
            if self.interrupted() or (
                self.checkpoint is not None
                and every != "epoch"
                and state.step % every == 0
            ):
                state.elapsed += time.perf_counter() - t0
                t0 = time.perf_counter()
                strategy.sync_metrics(state)
                self._save_or_stop()
        state.elapsed += time.perf_counter() - t0
        self._end_epoch(progress)

    def _steps_at_once(self, b: int, full_left: int, bs: int) -> int:
        """How many steps the next call runs from batch ``b``: one, or several in
        one compiled call (the strategy's ``steps``) when the strategy can
        (``fuses_steps``) and the first step is timed. The chunk stops at the
        epoch's last full batch and at the next checkpoint, so Ctrl-C and
        checkpoints still land on the same step boundaries; it holds at most
        :data:`WORK_AT_ONCE` multiply-adds (Ctrl-C waits for the chunk)."""
        if not self.fused or self.history.first_step_time is None:
            return 1
        k = min(WORK_AT_ONCE // (bs * self.model._params.size), full_left)
        every = self.args.every
        if self.checkpoint is not None and every != "epoch":
            k = min(k, every - self.state.step % every)
        return max(k, 1)

    def _compiled_steps(self, i: int, j: int, bs: int):
        """The steps on the epoch's rows ``[i, j)`` (batches of ``bs`` rows) in one
        compiled call; each step's ``(losses, correct)``."""
        perm = self.state.perm
        rows = np.arange(i, j) if perm is None else perm[i:j]
        l2 = None if self.batch_l2 is None else float(self.batch_l2(bs))
        return self.strategy.steps(self.model, self.data, rows, bs, l2)

    def _end_epoch(self, progress: Progress) -> None:
        """Metrics, validation, schedule and callbacks (every process, same order),
        then the epoch's checkpoint."""
        model, strategy, data, state = self.model, self.strategy, self.data, self.state
        strategy.sync_metrics(state)
        logs = {"loss": state.loss_sum / state.seen}
        if model.loss.is_classifier:
            logs["accuracy"] = state.correct / state.seen
        if data.X_val is not None:
            logs.update(strategy.evaluate(model, data.X_val, data.y_val, "val_"))
        # no collective from here to end_epoch, which raises an exception held on
        # any process on every one
        with strategy.hold_errors():
            logs["lr"] = model.optimizer.current_lr
            logs["time"] = state.elapsed
            logs["samples_per_sec"] = state.seen / max(state.elapsed, 1e-12)
            logs.update(strategy.epoch_logs())
            self.history.append(state.epoch, logs)
            model.optimizer.end_epoch(state.epoch + 1, logs)
            for cb in self.hooks:
                cb.on_epoch_end(state.epoch, logs, model)
        strategy.end_epoch(model)
        state.epoch += 1
        state.batch = 0
        state.perm = None
        progress.epoch_end(state.epoch, logs, strategy.progress_note())
        if self.args.every == "epoch" or self.interrupted():
            self._save_or_stop()

    def _save_or_stop(self) -> None:
        """Write the checkpoint (if any); after Ctrl-C, then stop."""
        written = self.checkpoint is not None and self._save()
        if self.interrupted():
            raise _interrupted(self.checkpoint if written else None)

    def _save(self) -> bool:
        """Write the checkpoint (the writer alone); False when skipped (diverged)."""
        model = self.model
        if not np.isfinite(model._params).all():
            # diverged: the checkpoint keeps the last finite state
            if not model.stop_training and self.strategy.writes:
                _warn_caller(
                    "training diverged (non-finite weights): the checkpoint is "
                    "no longer updated; pass callbacks=[fastnn.TerminateOnNaN()]"
                    " to stop at the first non-finite epoch loss"
                )
            return False
        meta, arrays = serialize.train_state(
            self.data.seed_seq, self.rng, self.history, self.state,
            bool(model.stop_training), self.data.settings, self.args.callbacks,
            self.strategy.train_state_extra(),
        )  # fmt: skip
        self.strategy.on_root(serialize.save, model, self.checkpoint, meta, arrays)
        return True


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
    callbacks = [as_callback(cb) for cb in (() if callbacks is None else callbacks)]
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    return epochs, batch_size, verbose, checkpoint_every, callbacks


def _checked_order(order, n: int) -> np.ndarray | None:
    """An epoch's order (``batch_order``'s, or a checkpoint's) as the loop indexes
    it: None (data order) or a C-contiguous intp array of ``n`` row indices in
    [0, n), repeats allowed. Checked here, once an epoch: the compiled steps
    gather these rows without bounds checks."""
    if order is None:
        return None
    arr = np.asarray(order)
    if arr.dtype.kind not in "iu" or arr.shape != (n,):
        raise ValueError(
            f"batch_order must return None or {n} integer row indices, got "
            f"dtype {arr.dtype} and shape {arr.shape}"
        )
    if n and (arr.min() < 0 or arr.max() >= n):
        raise ValueError(f"batch_order's row indices must lie in [0, {n})")
    return np.ascontiguousarray(arr, dtype=np.intp)


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
        np.take(y, idx, axis=0, out=ws.y, mode="clip")
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


def random_split(
    y: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, validation) indices holding out ``fraction`` of the rows at
    random (regression targets have no classes to stratify by)."""
    n = y.shape[0]
    k = _random_holdout(n, fraction)
    if k == 0:
        raise ValueError(
            f"validation_split={fraction} leaves no validation samples; use a larger "
            "fraction or pass validation_data"
        )
    if k == n:
        raise ValueError(f"validation_split={fraction} leaves no training samples")
    order = rng.permutation(n)
    return np.sort(order[k:]), np.sort(order[:k])


def validation_size(y: Any, fraction: float, regression: bool = False) -> int:
    """Rows that ``fit(validation_split=fraction)`` holds out of labels ``y`` (of
    regression targets: a random split)."""
    if fraction <= 0:
        return 0
    if regression:
        return _random_holdout(len(y), fraction)
    return sum(_holdout_counts(np.asarray(y), fraction)[1])


def _random_holdout(n: int, fraction: float) -> int:
    """Validation rows of a random ``fraction`` split of ``n`` rows."""
    return int(round(fraction * n))


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


class _NoGuard(contextlib.nullcontext):
    """Ctrl-C is not deferred (the strategy leaves it to the launcher)."""

    def is_set(self) -> bool:
        return False


_NO_GUARD = _NoGuard()


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
