"""The program tests/test_distributed.py runs under ``mpiexec -n 2``.

Also imported by the tests (not run as a test itself): the scenarios and data are
defined once here, so the single-process references are built the same way.

Usage: ``python tests/_distributed_worker.py MODE ...``

- ``equivalence OUTDIR``: train every scenario of :func:`scenarios` with
  ``fastnn.distributed.fit``; rank 0 saves the weights and history to
  ``OUTDIR/<name>.npz``. Then every rank calls fit with data that differs on
  rank 1 and writes the error it gets (raised on every rank, no abort) to
  ``OUTDIR/caught.<rank>.txt``.
- ``run CKPT OUT [--fail-step K --fail-rank R --fail-how raise|kill]
  [--epochs E] [--announce DIR] [--reference REF]``: the resume scenario with a
  checkpoint every 2 steps, ``resume=True``; rank R raises (or SIGKILLs itself) in
  its K-th step; ``--announce`` writes its pid to ``DIR/ready.<rank>`` after the
  first step; rank 0 saves the final weights to OUT, and with ``--reference`` also those
  of an uninterrupted run to REF.
- ``callback-error WHERE OUTDIR [--abort]``: a 3-epoch fit with a callback that
  fails on one rank only, ``abort_on_error=False`` (``--abort``: the default, True).
  WHERE: ``train_begin`` (rank 1), ``epoch_end`` or ``train_end`` (rank 0: a user
  callback raising :class:`SimulatedError`), ``checkpoint_folder`` (rank 0's
  ModelCheckpoint into a missing folder) or ``checkpoint_write`` (its save at the
  first epoch end into a folder named per epoch, which does not exist) or
  ``last_epoch`` (rank 1's user callback at the last epoch's end, while rank 0 asks to
  stop there, with a checkpoint every epoch and a validation split). Every rank
  writes ``Type: message`` of the error it gets (or "no error") to
  ``OUTDIR/caught.<rank>.txt``.
- ``step-error WHERE OUTDIR --rank R --at K``: a 3-epoch fit (3 steps an epoch,
  a validation split, a checkpoint every 2 steps, ``abort_on_error=False``) in which
  rank R alone fails inside a step or the validation pass, the K-th time it gets
  there. WHERE: ``forward`` (its forward and backward pass raises
  :class:`SimulatedError`), ``workspace`` (the batch's workspace, before the
  gather, raises MemoryError, as a rank out of memory would), ``update`` (the
  optimizer's update, after the Allreduce, raises ValueError) or ``validation``
  (its shard of the validation pass raises RuntimeError). Every rank writes the error
  it gets to ``OUTDIR/caught.<rank>.txt`` as ``callback-error`` does, and its
  optimizer steps and a digest of its weights to ``OUTDIR/state.<rank>.txt``.
"""

from __future__ import annotations  # noqa: I001  (fastnn before NumPy, below)

import argparse
import hashlib
import json
import os
import signal
import sys
from pathlib import Path

import fastnn  # first: its thread-pool settings apply before NumPy loads
import numpy as np

from fastnn.callbacks import Callback, EarlyStopping
from fastnn.layers import Linear, ReLU, Tanh
from fastnn.losses import MeanSquaredError, SoftmaxCrossEntropy
from fastnn.model import MLP, Sequential
from fastnn.optim import SGD, Adam, AdamW, CosineAnnealingLR, ReduceLROnPlateau


def data(n: int, d: int = 6, k: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    X = rng.normal(size=(k, d))[y] * 1.5 + rng.normal(size=(n, d))
    w = rng.uniform(0.5, 2.0, size=n)
    return X, y, w


def regression_data(n: int, d: int = 6, seed: int = 0):
    """X, two float targets (n, 2) and sample weights of a smooth regression."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    Y = np.c_[np.sin(X[:, 0]) + 0.5 * X[:, 1], X[:, 2] * X[:, 3]]
    return X, Y + 0.1 * rng.normal(size=(n, 2)), rng.uniform(0.5, 2.0, size=n)


def scenarios() -> dict[str, tuple]:
    """name -> (model factory, data, fit keyword arguments); 10 optimizer steps
    each, global batches whose halves are unequal or empty included."""
    X70, y70, _ = data(70)
    X87, y87, _ = data(87)
    X61, y61, w61 = data(61, seed=1)
    Xr87, Yr87, _ = regression_data(87)
    Xr61, Yr61, wr61 = regression_data(61, seed=1)
    return {
        # regression (squared error): 1-D targets, 17 of 87 rows held out at random
        # (70 trained: 5 batches of 14), L2, momentum
        "mse_sgd_f64": (
            lambda: MLP(
                (6, 12, 1),
                loss=MeanSquaredError(l2=1e-3),
                optimizer=SGD(lr=0.05, momentum=0.9),
                dtype=np.float64,
            ),
            (Xr87, Yr87[:, 0]),
            dict(epochs=2, batch_size=14, seed=3, validation_split=0.2),
        ),
        # two targets per row, sample weights, batches 15, 15, 15, 15, 1
        "mse_adam_f64_two_targets": (
            lambda: Sequential(
                [Linear(6, 9), Tanh(), Linear(9, 2)],
                loss=MeanSquaredError(),
                optimizer=Adam(lr=0.01),
                dtype=np.float64,
            ),
            (Xr61, Yr61),
            dict(epochs=2, batch_size=15, seed=4, sample_weight=wr61),
        ),
        # 69 training rows (18 held out for validation, watched by EarlyStopping and
        # ReduceLROnPlateau): 5 batches of 14, 14, 14, 14, 13; L2, Nesterov
        "sgd_f64": (
            lambda: MLP(
                (6, 12, 3),
                loss=SoftmaxCrossEntropy(l2=1e-3),
                optimizer=SGD(
                    lr=0.1,
                    momentum=0.9,
                    nesterov=True,
                    schedule=ReduceLROnPlateau("val_loss", patience=0, factor=0.5),
                ),
                dtype=np.float64,
            ),
            (X87, y87),
            dict(
                epochs=2,
                batch_size=14,
                seed=3,
                validation_split=0.2,
                callbacks=[EarlyStopping(patience=10)],
            ),
        ),
        # 61 rows in batches of 15: 15, 15, 15, 15, 1 -> halves 7/8 and 0/1;
        # sample weights, balanced class weights, label smoothing, weight decay
        "adam_f64": (
            lambda: Sequential(
                [Linear(6, 9), Tanh(), Linear(9, 7), ReLU(), Linear(7, 3)],
                loss=SoftmaxCrossEntropy(
                    class_weight="balanced", label_smoothing=0.1, l2=1e-4
                ),
                optimizer=Adam(lr=0.02, weight_decay=1e-3),
                dtype=np.float64,
            ),
            (X61, y61),
            dict(epochs=2, batch_size=15, seed=4, sample_weight=w61, shuffle=True),
        ),
        "adamw_f64_noshuffle": (
            lambda: MLP(
                (6, 10, 3),
                optimizer=AdamW(lr=0.01, schedule=CosineAnnealingLR(3)),
                dtype=np.float64,
            ),
            (X61, y61),
            dict(epochs=2, batch_size=15, seed=5, shuffle=False),
        ),
        "sgd_f32": (
            lambda: MLP(
                (6, 12, 3),
                loss=SoftmaxCrossEntropy(l2=1e-3),
                optimizer=SGD(lr=0.1, momentum=0.9),
                dtype=np.float32,
            ),
            (X70, y70),
            dict(epochs=2, batch_size=14, seed=3),
        ),
        "adam_f32": (
            lambda: MLP((6, 12, 3), optimizer=Adam(lr=0.01), dtype=np.float32),
            (X61, y61),
            dict(epochs=2, batch_size=15, seed=4, sample_weight=w61),
        ),
    }


def resume_scenario():
    """The model and fit arguments of the checkpoint / fault tests."""
    X, y, _ = data(90, seed=2)
    model = MLP(
        (6, 12, 3),
        optimizer=Adam(
            lr=0.01, schedule=ReduceLROnPlateau("val_loss", patience=1, factor=0.5)
        ),
        dtype=np.float64,
    )
    kwargs = dict(
        batch_size=9,
        seed=7,
        verbose=0,
        validation_split=0.2,
        callbacks=[EarlyStopping(patience=100, restore_best_weights=True)],
    )
    return model, X, y, kwargs


def _equivalence(outdir: str) -> None:
    from mpi4py import MPI

    from fastnn import distributed

    rank = MPI.COMM_WORLD.Get_rank()
    for name, (factory, (X, y), kwargs) in scenarios().items():
        model = factory()
        hist = distributed.fit(model, X, y, verbose=0, **kwargs)
        if rank == 0:
            np.savez(
                os.path.join(outdir, f"{name}.npz"),
                params=model.get_flat_parameters(),
                steps=model.optimizer.steps,
                history=json.dumps(hist.history),
            )
    # Different data on rank 1: every rank gets the same error, nothing aborts.
    X, y, _ = data(40)
    if rank == 1:
        X = X + 1.0
    try:
        distributed.fit(MLP((6, 5, 3)), X, y, epochs=1, verbose=0)
    except ValueError as exc:  # one file per rank: their stdout lines may interleave
        Path(outdir, f"caught.{rank}.txt").write_text(str(exc))


def _run(args: argparse.Namespace) -> None:
    from mpi4py import MPI

    from fastnn import distributed

    rank = MPI.COMM_WORLD.Get_rank()
    model, X, y, kwargs = resume_scenario()
    calls = [0]
    original = model._forward_backward

    def step(xb, yb, sw):
        calls[0] += 1
        if rank == args.fail_rank and calls[0] == args.fail_step:
            if args.fail_how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("simulated failure")
        out = original(xb, yb, sw)
        if args.announce and calls[0] == 1:
            tmp = Path(args.announce, f".ready.{rank}")
            tmp.write_text(str(os.getpid()))
            tmp.replace(Path(args.announce, f"ready.{rank}"))
        return out

    model._forward_backward = step
    distributed.fit(
        model,
        X,
        y,
        epochs=args.epochs,
        checkpoint=args.ckpt,
        checkpoint_every=2,
        resume=True,
        **kwargs,
    )
    if rank == 0:
        np.save(args.out, model.get_flat_parameters())
    if args.reference:
        ref, X, y, kwargs = resume_scenario()
        distributed.fit(ref, X, y, epochs=args.epochs, **kwargs)
        if rank == 0:
            np.save(args.reference, ref.get_flat_parameters())


class SimulatedError(Exception):
    """Raised by :class:`FailOnOneRank` (a type fastnn does not know)."""


class FailOnOneRank(Callback):
    """Raise :class:`SimulatedError` on rank ``rank`` alone at ``where``
    (``train_begin``, ``epoch_end`` of epoch ``epoch``, or ``train_end``)."""

    def __init__(self, where: str, rank: int, my_rank: int, epoch: int = 1) -> None:
        self.where, self.fails, self.epoch = where, rank == my_rank, epoch

    def _maybe(self, where: str) -> None:
        if self.fails and where == self.where:
            raise SimulatedError(f"simulated {where} failure")

    def on_train_begin(self, model):
        self._maybe("train_begin")

    def on_epoch_end(self, epoch, logs, model):
        if epoch == self.epoch:
            self._maybe("epoch_end")

    def on_train_end(self, model):
        self._maybe("train_end")


class StopOnOneRank(Callback):
    """Ask to stop on rank ``rank`` alone at the end of epoch ``epoch``."""

    def __init__(self, rank: int, my_rank: int, epoch: int) -> None:
        self.stops, self.epoch = rank == my_rank, epoch

    def on_epoch_end(self, epoch, logs, model):
        if self.stops and epoch == self.epoch:
            model.stop_training = True


def _callback_error(args: argparse.Namespace) -> None:
    from mpi4py import MPI

    from fastnn import distributed
    from fastnn.standard_callbacks import ModelCheckpoint

    rank = MPI.COMM_WORLD.Get_rank()
    X, y, _ = data(40)
    more = {}
    if args.where == "checkpoint_folder":
        callbacks = [ModelCheckpoint(os.path.join(args.outdir, "missing", "m.npz"))]
    elif args.where == "checkpoint_write":
        callbacks = [ModelCheckpoint(os.path.join(args.outdir, "{epoch}", "m.npz"))]
    elif args.where == "last_epoch":
        callbacks = [StopOnOneRank(0, rank, 2), FailOnOneRank("epoch_end", 1, rank, 2)]
        more = {
            "checkpoint": os.path.join(args.outdir, "fit.npz"),
            "validation_split": 0.25,
        }
    else:
        failing = 1 if args.where == "train_begin" else 0
        callbacks = [FailOnOneRank(args.where, failing, rank)]
    try:
        distributed.fit(
            MLP((6, 5, 3), backend="numpy"),
            X,
            y,
            epochs=3,
            batch_size=10,
            seed=0,
            verbose=0,
            callbacks=callbacks,
            abort_on_error=args.abort,
            **more,
        )
    except Exception as exc:  # one file per rank: their output lines may interleave
        caught = f"{type(exc).__name__}: {exc}"
    else:
        caught = "no error"
    Path(args.outdir, f"caught.{rank}.txt").write_text(caught)


def _step_error(args: argparse.Namespace) -> None:
    from mpi4py import MPI

    from fastnn import distributed

    rank = MPI.COMM_WORLD.Get_rank()
    X, y, _ = data(40)
    model = MLP((6, 5, 3), backend="numpy")
    calls = [0]

    def failing(original, error, counts=lambda *a: True):
        def wrapper(*a, **kw):
            if rank == args.rank and counts(*a):
                calls[0] += 1
                if calls[0] == args.at:
                    raise error
            return original(*a, **kw)

        return wrapper

    if args.where == "forward":
        error = SimulatedError("simulated forward failure")
        model._forward_backward = failing(model._forward_backward, error)
    elif args.where == "workspace":  # the loop's call, then the step's: 2 a step
        error = MemoryError("simulated workspace failure")
        model._workspace = failing(model._workspace, error, lambda n, train: train)
    elif args.where == "update":
        error = ValueError("simulated update failure")
        model.optimizer.step = failing(model.optimizer.step, error)
    else:
        error = RuntimeError("simulated validation failure")
        model._loss_sum = failing(model._loss_sum, error)
    try:
        distributed.fit(
            model, X, y, epochs=3, batch_size=10, seed=0, verbose=0,
            validation_split=0.25, checkpoint=os.path.join(args.outdir, "fit.npz"),
            checkpoint_every=2, abort_on_error=False,
        )  # fmt: skip
    except Exception as exc:
        caught = f"{type(exc).__name__}: {exc}"
    else:
        caught = "no error"
    Path(args.outdir, f"caught.{rank}.txt").write_text(caught)
    digest = hashlib.sha256(model.get_flat_parameters().tobytes()).hexdigest()
    Path(args.outdir, f"state.{rank}.txt").write_text(
        f"{model.optimizer.steps} {digest}"
    )


def _checkpoint_folder_on_rank_0(outdir: str) -> None:
    """ModelCheckpoint into a folder that exists for rank 0 alone (as on a host of
    its own: ``host<rank>/``, only ``host0`` created), a fit of 2 epochs with a
    checkpoint, then its resume to 3: rank 0 writes, no other rank needs the
    folder. Each rank's outcome goes to ``caught.<rank>.txt``."""
    from mpi4py import MPI

    from fastnn import distributed
    from fastnn.standard_callbacks import ModelCheckpoint

    rank = MPI.COMM_WORLD.Get_rank()
    if rank == 0:
        os.makedirs(os.path.join(outdir, "host0"))
    MPI.COMM_WORLD.Barrier()
    X, y, _ = data(40)
    caught = "no error"
    for epochs in (2, 3):
        callback = ModelCheckpoint(os.path.join(outdir, f"host{rank}", "m{epoch}.npz"))
        try:
            distributed.fit(
                MLP((6, 5, 3), backend="numpy"), X, y, epochs=epochs, batch_size=10,
                seed=0, verbose=0, callbacks=[callback],
                checkpoint=os.path.join(outdir, "run.npz"), resume=True,
            )  # fmt: skip
        except Exception as exc:
            caught = f"{type(exc).__name__}: {exc}"
            break
    Path(outdir, f"caught.{rank}.txt").write_text(caught)


class StopAtBeginOnRank1(Callback):
    """Ask to stop in on_train_begin, on rank 1 alone."""

    def __init__(self, my_rank: int) -> None:
        self.stops = my_rank == 1

    def on_train_begin(self, model):
        if self.stops:
            model.stop_training = True


def _stop_at_begin(outdir: str) -> None:
    """A stop asked for in on_train_begin on rank 1 alone (default abort_on_error):
    each rank's epochs run and outcome go to ``caught.<rank>.txt``."""
    from mpi4py import MPI

    from fastnn import distributed

    rank = MPI.COMM_WORLD.Get_rank()
    X, y, _ = data(40)
    model = MLP((6, 5, 3), backend="numpy")
    try:
        h = distributed.fit(
            model, X, y, epochs=3, batch_size=10, seed=0, verbose=0,
            callbacks=[StopAtBeginOnRank1(rank)],
        )  # fmt: skip
        caught = f"epochs run: {len(h.history.get('loss', []))}"
    except Exception as exc:
        caught = f"{type(exc).__name__}: {exc}"
    Path(outdir, f"caught.{rank}.txt").write_text(caught)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="mode", required=True)
    e = sub.add_parser("equivalence")
    e.add_argument("outdir")
    r = sub.add_parser("run")
    r.add_argument("ckpt")
    r.add_argument("out")
    r.add_argument("--epochs", type=int, default=3)
    r.add_argument("--fail-step", type=int, default=0)
    r.add_argument("--fail-rank", type=int, default=-1)
    r.add_argument("--fail-how", choices=["raise", "kill"], default="raise")
    r.add_argument("--announce", help="folder for the files ready.<rank>")
    r.add_argument("--reference")
    c = sub.add_parser("callback-error")
    c.add_argument(
        "where",
        choices=[
            "train_begin",
            "epoch_end",
            "train_end",
            "checkpoint_folder",
            "checkpoint_write",
            "last_epoch",
        ],
    )
    c.add_argument("outdir")
    c.add_argument("--abort", action="store_true")
    s = sub.add_parser("step-error")
    s.add_argument("where", choices=["forward", "workspace", "update", "validation"])
    s.add_argument("outdir")
    s.add_argument("--rank", type=int, default=1)
    s.add_argument("--at", type=int, default=1)
    f = sub.add_parser("checkpoint-folder-on-rank-0")
    f.add_argument("outdir")
    b = sub.add_parser("stop-at-begin")
    b.add_argument("outdir")
    args = p.parse_args(argv)
    fastnn.set_num_threads(1)
    if args.mode == "equivalence":
        _equivalence(args.outdir)
    elif args.mode == "callback-error":
        _callback_error(args)
    elif args.mode == "step-error":
        _step_error(args)
    elif args.mode == "checkpoint-folder-on-rank-0":
        _checkpoint_folder_on_rank_0(args.outdir)
    elif args.mode == "stop-at-begin":
        _stop_at_begin(args.outdir)
    else:
        _run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
