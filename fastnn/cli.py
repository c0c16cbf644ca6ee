"""The ``fastnn`` command line: train, predict, evaluate, explain, ood, info, bench.

``fastnn train`` with no arguments trains an MLP on scikit-learn's bundled digits and
prints test accuracy, loss, throughput, first-step (JIT compile) time and the backend;
``fastnn train --task regression`` trains a regressor on the bundled diabetes data and
prints test R², MSE and MAE.
Bad input ends with one line, ``fastnn: error: ...``, and a non-zero exit status (set
FASTNN_DEBUG=1 for the traceback); Ctrl-C exits with status 130 after saving the
checkpoint when one is configured.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import numpy as np

__all__ = ["main"]

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _HelpFormatter(argparse.HelpFormatter):
    """Help texts end with the flag's default unless they already state it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = not (
            action.default is None
            or action.default is False
            or action.default == argparse.SUPPRESS
        )
        if shown and "default" not in text and not action.required:
            value = action.default
            if isinstance(value, (list, tuple)):
                value = ",".join(map(str, value))
            text += f" (default: {str(value).replace('%', '%%')})"
        return text


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error, no usage dump, defaults in the help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"fastnn: error: {message}\n")
        sys.exit(EXIT_USAGE)


def _hidden(text: str) -> list[int]:
    if not text.strip():
        return []
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers like 256,128, got {text!r}"
        ) from None
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"layer sizes must be >= 1, got {text!r}")
    return sizes


def _int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= low."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer, got {text!r}"
            ) from None
        if v < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {v}")
        return v

    return parse


_positive_int = _int_at_least(1)


def _seed(text: str) -> int:
    """An argparse type: a seed that both fit and train_test_split accept."""
    try:
        v = int(text)
    except ValueError:
        v = -1
    if not 0 <= v <= 2**32 - 1:
        raise argparse.ArgumentTypeError(
            f"expected an integer in [0, {2**32 - 1}], got {text!r}"
        )
    return v


def _number(
    *,
    above: float | None = None,
    at_least: float | None = None,
    below: float | None = None,
) -> Callable[[str], float]:
    """An argparse type: a finite number in the given range."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a number, got {text!r}"
            ) from None
        bounds = []
        if above is not None:
            bounds.append(f"> {above:g}")
        if at_least is not None:
            bounds.append(f">= {at_least:g}")
        if below is not None:
            bounds.append(f"< {below:g}")
        ok = math.isfinite(v) and not (
            (above is not None and v <= above)
            or (at_least is not None and v < at_least)
            or (below is not None and v >= below)
        )
        if not ok:
            wanted = " and ".join(bounds) or "that is finite"
            raise argparse.ArgumentTypeError(f"expected a number {wanted}, got {text}")
        return v

    return parse


def _installed_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("fastnn")
    except metadata.PackageNotFoundError:
        return "(not installed)"


def _every(text: str) -> int | str:
    return "epoch" if text == "epoch" else _positive_int(text)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``fastnn`` command."""
    parser = _Parser(
        prog="fastnn", description="Fast neural-network training on the CPU."
    )
    parser.add_argument(
        "--version", action="version", version=f"fastnn {_installed_version()}"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    t = sub.add_parser("train", help="train an MLP (default: the built-in digits)")
    t.add_argument(
        "--data",
        help=".npz with arrays X and y, .csv/.tsv, .parquet, or - for stdin "
        "(default: the built-in digits; with --task regression the built-in "
        "diabetes data)",
    )
    data_options(t)
    t.add_argument(
        "--task",
        choices=("auto", "classification", "regression"),
        default="auto",
        help="auto: integer or string labels classify, float labels regress. A "
        "regressor (squared error, identity output) trains on the targets "
        "standardized with the training rows' mean and std; the --out model "
        "predicts in the targets' own units (a --checkpoint holds the fit on the "
        "standardized targets, for --resume)",
    )
    t.add_argument(
        "--test-size",
        type=_number(at_least=0.0, below=1.0),
        default=0.25,
        help="held-out test fraction of --data (default 0.25; 0: none)",
    )
    t.add_argument(
        "--hidden",
        type=_hidden,
        default=None,
        help="hidden layer sizes (default 256,128; a regressor: 64)",
    )
    t.add_argument(
        "--activation",
        default="relu",
        help="relu, leaky_relu, tanh, sigmoid, gelu, identity (default relu)",
    )
    t.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help="default 30; a regressor: 100",
    )
    t.add_argument("--batch-size", type=_positive_int, default=32, help="default 32")
    t.add_argument(
        "--optimizer",
        default="adam",
        choices=["adam", "adamw", "sgd"],
        help="adam, adamw or sgd (Nesterov momentum)",
    )
    t.add_argument(
        "--lr",
        type=_number(above=0.0),
        default=None,
        help="learning rate (default 1e-3 for adam/adamw, 0.05 for sgd)",
    )
    t.add_argument(
        "--momentum",
        type=_number(at_least=0.0, below=1.0),
        default=0.9,
        help="SGD momentum",
    )
    t.add_argument(
        "--weight-decay",
        type=_number(at_least=0.0),
        default=0.0,
        help="L2 weight decay",
    )
    t.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float64"],
        help="parameter and compute dtype",
    )
    _runtime_options(t)
    t.add_argument("--seed", type=_seed, default=0, help="default 0")
    t.add_argument(
        "--validation-split",
        type=_number(at_least=0.0, below=1.0),
        default=0.0,
        help="fraction of the training rows held out to validate on after each "
        "epoch (its metrics are reported; --patience watches them)",
    )
    t.add_argument(
        "--checkpoint", help="write a resumable checkpoint here (default: none)"
    )
    t.add_argument(
        "--checkpoint-every",
        type=_every,
        default="epoch",
        help="'epoch' (default) or a number of steps",
    )
    t.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    t.add_argument(
        "--out", help="save the trained model here, .npz (default: not saved)"
    )
    t.add_argument("--json", action="store_true", help="print one JSON result object")
    shown = t.add_mutually_exclusive_group()
    shown.add_argument(
        "--quiet", action="store_true", help="no progress bar and no epoch lines"
    )
    shown.add_argument(
        "--verbose",
        action="store_true",
        help="one line per epoch (loss, accuracy, validation metrics, time) instead "
        "of the progress bar",
    )
    t.add_argument(
        "--patience",
        type=_int_at_least(0),
        default=None,
        help="stop when the validation loss (the training loss without "
        "--validation-split) has not improved for this many epochs, and keep the "
        "best epoch's weights (default: no early stopping)",
    )
    t.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel over MPI ranks: mpiexec -n N fastnn train --distributed",
    )

    p = sub.add_parser("predict", help="predict labels with a saved model")
    p.add_argument(
        "--model", required=True, help="a model saved by 'fastnn train --out'"
    )
    p.add_argument(
        "--data", required=True, help=".npz with X, .csv/.tsv, .parquet, or - (stdin)"
    )
    data_options(p, predict=True)
    p.add_argument("--out", help="write predictions to this CSV (default: stdout)")
    p.add_argument("--proba", action="store_true", help="also write probabilities")
    _runtime_options(p)

    e = sub.add_parser("evaluate", help="accuracy and loss of a saved model on data")
    e.add_argument(
        "--model", required=True, help="a model saved by 'fastnn train --out'"
    )
    e.add_argument(
        "--data",
        required=True,
        help=".npz with X and y, .csv/.tsv, .parquet, or - (stdin)",
    )
    data_options(e)
    e.add_argument("--json", action="store_true", help="print one JSON result object")
    _runtime_options(e)

    from ._cli_insight import add_parsers  # explain, ood

    add_parsers(sub, _runtime_options, _int_at_least, data_options)

    x = sub.add_parser(
        "export", help="export a saved model to ONNX (pip install 'fastnn[onnx]')"
    )
    x.add_argument(
        "--model", required=True, help="a model saved by 'fastnn train --out'"
    )
    x.add_argument("--onnx", required=True, help="write the ONNX model here (.onnx)")

    i = sub.add_parser(
        "info", help="backends, threads and build configuration (or a saved model)"
    )
    i.add_argument(
        "--model",
        default=None,
        help="describe this saved model instead: layers, output shapes, parameters "
        "(default: describe the installation)",
    )

    b = sub.add_parser("bench", help="benchmark report: report.md, results.json, PNGs")
    mode = b.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        dest="mode",
        action="store_const",
        const="quick",
        help="about 10 minutes on 2 cores (default)",
    )
    mode.add_argument(
        "--full",
        dest="mode",
        action="store_const",
        const="full",
        help="more repeats, sizes and batch sizes",
    )
    b.set_defaults(mode="quick")
    b.add_argument("--out", default="fastnn-bench", help="output folder")
    b.add_argument(
        "--threads",
        type=_counts,
        default=None,
        help="thread counts, e.g. 1,2 (default: 1..cores)",
    )
    b.add_argument(
        "--backends",
        type=_names,
        default=None,
        help="fastnn backends, e.g. numba,cython (default: all)",
    )
    b.add_argument(
        "--peers",
        type=_names,
        default=None,
        help="numpy,torch,jax,sklearn (default: all; missing ones are skipped)",
    )
    b.add_argument("--json", action="store_true", help="print results.json to stdout")
    return parser


def _counts(text: str) -> list[int]:
    return [_positive_int(part) for part in text.split(",") if part.strip()]


def _names(text: str) -> list[str]:
    return [part.strip().lower() for part in text.split(",") if part.strip()]


def _delimiter(text: str) -> str:
    text = {"\\t": "\t", "tab": "\t"}.get(text, text)
    if len(text) != 1:
        raise argparse.ArgumentTypeError(
            f"expected one character (or tab / \\t), got {text!r}"
        )
    return text


def data_options(p: argparse.ArgumentParser, predict: bool = False) -> None:
    """--label-column, --header, --delimiter: how a data file is read."""
    p.add_argument(
        "--label-column",
        default=None,
        help="label column: header name or 0-based index, or none (default: the "
        "last column"
        + ("; it is dropped when the file has one column more than the model's "
        "features)" if predict else ")"),
    )  # fmt: skip
    p.add_argument(
        "--header",
        choices=("auto", "yes", "no"),
        default="auto",
        help="CSV: is the first row column names? auto: yes when a cell is not a "
        "number above a number, or the row is 0,1,...,k-1 (default: auto)",
    )
    p.add_argument(
        "--delimiter",
        type=_delimiter,
        default=None,
        help="CSV field separator, one character or tab (default: tab for .tsv, "
        "else ,)",
    )


def read_data(
    args: argparse.Namespace,
    path: str,
    require_y: bool = True,
    n_features: int | None = None,
):
    """load_dataset with the command's --label-column, --header and --delimiter."""
    from .data import read_table

    return read_table(
        path,
        args.label_column,
        require_y,
        header=args.header,
        delimiter=args.delimiter,
        n_features=n_features,
    )


def _runtime_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backend",
        default="auto",
        help="auto (fastest available), cython, numba or numpy",
    )
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="threads for kernels and BLAS (default: all cores)",
    )


# ------------------------------------------------------------------ commands
def _train(args: argparse.Namespace, session: Any = None) -> int:
    from .checkpoint import check_output_path

    if args.distributed and session is None:
        # one rank of `mpiexec -n N fastnn train --distributed` (fastnn.distributed)
        from .distributed import run_cli_train

        return run_cli_train(_train, args)

    def check_outputs() -> None:
        # before any training: a typo must not cost the trained model
        for what, path in (("--out", args.out), ("--checkpoint", args.checkpoint)):
            if path:
                check_output_path(path, what, ".npz")

    if session is None or session.is_root:  # distributed: rank 0 alone writes them
        check_outputs()
    import fastnn

    from .data import infer_task, load_diabetes_split, load_digits_split
    from .model import MLP
    from .optim import make_optimizer

    t_start = time.perf_counter()
    backend = fastnn.get_backend(args.backend)
    if args.data is None:
        regress = args.task == "regression"
        load = load_diabetes_split if regress else load_digits_split
        X_train, X_test, y_train, y_test = load(args.test_size, args.seed)
        if args.test_size == 0:
            X_test = y_test = None
        dataset = "diabetes" if regress else "digits"
    else:
        table = read_data(args, args.data)
        X, y = table.X, table.y
        dataset = args.data
        regress = infer_task(y, args.task) == "regression"
        split = _split_random if regress else _split
        X_train, X_test, y_train, y_test = split(X, y, args.test_size, args.seed)
    # regression data sets are small (diabetes: 331 training rows): a smaller net
    # trained longer, where 256,128 for 30 epochs overfits
    hidden = args.hidden if args.hidden is not None else [64] if regress else [256, 128]
    epochs = args.epochs if args.epochs is not None else 100 if regress else 30
    target_scale = None
    if regress:
        y_train, target_scale = _standardized_targets(y_train)
        n_outputs = 1 if y_train.ndim == 1 else y_train.shape[1]
    else:
        if len(np.unique(y_train)) < 2:
            raise ValueError("the training data holds fewer than 2 classes")
        # every class of the data, also one whose only rows the split put in the
        # test set (a class too small to stratify): else its test rows are
        # "previously unseen labels" once the training is done
        classes = np.unique(y_train if y_test is None else np.r_[y_train, y_test])
        n_outputs = len(classes)
    opt_kwargs: dict[str, Any] = {"weight_decay": args.weight_decay}
    if args.optimizer == "sgd":
        opt_kwargs.update(
            lr=0.05 if args.lr is None else args.lr,
            momentum=args.momentum,
            nesterov=args.momentum > 0,
        )
    else:
        opt_kwargs["lr"] = 1e-3 if args.lr is None else args.lr
    model = MLP(
        (X_train.shape[1], *hidden, n_outputs),
        activation=args.activation,
        loss=fastnn.MeanSquaredError() if regress else None,
        optimizer=make_optimizer(args.optimizer, **opt_kwargs),
        dtype=np.dtype(args.dtype),
        backend=backend.name,
        n_threads=args.threads,
    )
    if args.resume and not args.checkpoint:
        raise ValueError("--resume needs --checkpoint PATH")
    from .model import validation_size

    n_val = validation_size(y_train, args.validation_split, regress)
    if args.validation_split > 0 and not 0 < n_val < len(y_train):
        raise ValueError(
            f"--validation-split {args.validation_split:g} holds out {n_val} of "
            f"{len(y_train)} training rows: choose a fraction that leaves some in both"
        )
    verbose = 2 if args.verbose else 0 if (args.json or args.quiet) else 1
    early = None
    if args.patience is not None:
        monitor = "val_loss" if args.validation_split > 0 else "loss"
        early = fastnn.EarlyStopping(monitor, args.patience, restore_best_weights=True)
    fit = model.fit if session is None else session.fit_function(model)
    divergence = fastnn.TerminateOnNaN()
    history = fit(
        X_train,
        y_train,
        epochs=epochs,
        batch_size=args.batch_size,
        validation_split=args.validation_split,
        seed=args.seed,
        verbose=verbose,
        checkpoint=args.checkpoint,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        classes=None if regress else classes,
        callbacks=[divergence] + ([early] if early is not None else []),
    )
    diverged = divergence.stopped_epoch is not None
    if target_scale is not None and not diverged:
        _fold_target_scale(model, *target_scale)
    train_time = float(sum(history["time"])) if len(history) else 0.0
    seen = (
        sum(
            t * r
            for t, r in zip(history["time"], history["samples_per_sec"], strict=True)
        )
        if len(history)
        else 0.0
    )
    result: dict[str, Any] = {
        "dataset": dataset,
        "backend": backend.name,
        "threads": fastnn.get_num_threads() if args.threads is None else args.threads,
        "dtype": args.dtype,
        "layers": list(model.sizes),
        "activation": model.activation,
        "optimizer": args.optimizer,
        "epochs": len(history),
        "n_train": int(X_train.shape[0]) - n_val,
        "n_validation": n_val,
        "n_test": int(X_test.shape[0]) if X_test is not None else 0,
        "task": "regression" if regress else "classification",
        "train_loss": history["loss"][-1] if len(history) else None,
        "train_accuracy": history["accuracy"][-1]
        if len(history) and not regress
        else None,
        "samples_per_sec": seen / train_time if train_time > 0 else None,
        "train_time_s": train_time,
        "first_step_s": history.first_step_time,
        "status": "diverged" if diverged else "ok",
    }
    for key in ("val_loss", "val_accuracy", "val_mse"):
        if key in history.history:
            result[key] = history[key][-1]
    if early is not None and early.stopped_epoch is not None:
        result["stopped_early"] = {
            "monitor": early.monitor,
            "best_epoch": early.best_epoch + 1,
            "best": early.best,
        }
    saved = args.out and (session is None or session.is_root) and not diverged
    if saved:  # before the evaluation: whatever fails there, the model is kept
        model.save(args.out)
    if X_test is not None and not diverged:
        result.update(
            {f"test_{k}": v for k, v in model.evaluate(X_test, y_test).items()}
        )
    if session is not None:
        result.update(session.summary(history))
    if saved:
        result["model"] = args.out
    result["wall_time_s"] = time.perf_counter() - t_start
    if session is not None and not session.is_root:
        return EXIT_ERROR if diverged else 0  # rank 0 reports
    if args.json:
        print(_json(result))
    else:
        _report(result)
    if diverged:
        kept = "; the checkpoint holds the last finite epoch" if args.checkpoint else ""
        sys.stderr.write(
            f"fastnn: error: training diverged: the loss is not finite after epoch "
            f"{divergence.stopped_epoch + 1} (try a smaller --lr); no model "
            f"saved{kept}\n"
        )
        return EXIT_ERROR
    return 0


def _json(result: dict[str, Any]) -> str:
    """Strict JSON: a NaN or infinite number becomes null (the "status" says why)."""

    def finite(v):
        return None if isinstance(v, float) and not np.isfinite(v) else v

    return json.dumps({k: finite(v) for k, v in result.items()}, allow_nan=False)


def _split_random(X, y, test_size: float, seed: int):
    """A plain (unstratified) train/test split: regression targets."""
    if test_size == 0:
        return X, None, y, None
    from sklearn.model_selection import train_test_split

    return train_test_split(X, y, test_size=test_size, random_state=seed)


def _standardized_targets(y) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Regression targets standardized per output (a constant one only centred),
    and the (mean, std) that :func:`_fold_target_scale` puts back."""
    y = np.asarray(y, dtype=np.float64)
    mean, std = y.mean(axis=0), y.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (y - mean) / std, (np.atleast_1d(mean), np.atleast_1d(std))


def _fold_target_scale(model, mean: np.ndarray, std: np.ndarray) -> None:
    """Make a model trained on standardized targets predict in their units: the
    output layer's W, b become W std, b std + mean (the identity output is linear,
    so this is exactly y = std yhat + mean)."""
    last = model.linears[-1]
    last.weight *= std.astype(model.dtype)
    last.bias[...] = last.bias * std + mean


def _split(X, y, test_size: float, seed: int):
    if test_size == 0:
        return X, None, y, None
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(
            X, y, test_size=test_size, stratify=y, random_state=seed
        )
    except ValueError:  # a class too small to stratify: fall back to a plain split
        return train_test_split(X, y, test_size=test_size, random_state=seed)


def _report(r: dict[str, Any]) -> None:
    lines = []
    if "test_r2" in r:
        lines.append(
            f"test R²         {r['test_r2']:.4f}   test MSE {r['test_mse']:.4g}   "
            f"test MAE {r['test_mae']:.4g}"
        )
    if "test_accuracy" in r:
        lines.append(
            f"test accuracy   {r['test_accuracy']:.4f}   test loss {r['test_loss']:.4f}"
        )
    if r["train_accuracy"] is not None:
        lines.append(
            f"train accuracy  {r['train_accuracy']:.4f}   "
            f"train loss {r['train_loss']:.4f}"
        )
    elif r["train_loss"] is not None:  # a regressor: on the standardized targets
        lines.append(f"train loss      {r['train_loss']:.4f} (standardized targets)")
    if r["samples_per_sec"]:
        lines.append(
            f"throughput      {r['samples_per_sec']:,.0f} samples/s "
            f"({r['epochs']} epochs in {r['train_time_s']:.2f} s)"
        )
    if "val_loss" in r:
        first = (
            f"val MSE         {r['val_mse']:.4f} (standardized)"
            if "val_mse" in r
            else f"val accuracy    {r['val_accuracy']:.4f}"
        )
        lines.append(
            f"{first}   val loss {r['val_loss']:.4f}"
            f"   ({r['n_validation']} of {r['n_train'] + r['n_validation']} training "
            "rows held out)"
        )
    if "stopped_early" in r:
        stop = r["stopped_early"]
        lines.append(
            f"early stopping  after epoch {r['epochs']}; weights of epoch "
            f"{stop['best_epoch']} ({stop['monitor']} {stop['best']:.4f})"
        )
    if r["first_step_s"] is not None:
        # only Numba compiles on first use; the cython backend is compiled ahead
        jit = " (includes JIT compile)" if r["backend"] == "numba" else ""
        lines.append(f"first step      {r['first_step_s']:.3f} s{jit}")
    lines.append(
        f"backend         {r['backend']}, {r['threads']} thread(s), {r['dtype']}"
    )
    if "ranks" in r:
        lines.append(
            f"distributed     {r['ranks']} MPI ranks x {r['threads']} thread(s), "
            f"{r['allreduce_s']:.2f} s in gradient allreduce"
        )
    lines.append(
        f"model           MLP {'-'.join(map(str, r['layers']))} "
        f"({r['activation']}, {r['optimizer']}) on {r['dataset']}"
    )
    if "model" in r:
        lines.append(f"saved to        {r['model']}")
    lines.append(f"wall time       {r['wall_time_s']:.2f} s")
    print("\n".join(lines))


def load_model_arg(args: argparse.Namespace, **kwargs: Any):
    """The model of ``--model``; a file that is missing or not a model is reported
    under the flag's name (the README: bad input names the flags)."""
    from .serialize import load

    try:
        return load(args.model, **kwargs)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"--model: {exc}") from None
    except ValueError as exc:  # CheckpointError: damaged, not a model
        raise ValueError(f"--model: {exc}") from None


def check_data_width(X: np.ndarray, model: Any, flag: str, path: str) -> None:
    """A data file whose feature count differs from the model's, named by flags."""
    d = model.n_features_in_
    if X.ndim == 2 and X.shape[1] != d:
        raise ValueError(
            f"{flag} {path!r} has {X.shape[1]} feature columns, but the --model "
            f"expects {d}"
        )


def _load_model(args):
    return load_model_arg(args, backend=args.backend, n_threads=args.threads)


def _predict(args: argparse.Namespace) -> int:
    from .checkpoint import check_output_path, write_atomic

    if args.out:
        check_output_path(args.out, "--out")
    model = _load_model(args)
    X = read_data(args, args.data, False, model.n_features_in_).X
    check_data_width(X, model, "--data", args.data)
    labels = model.predict(X)
    header = ["prediction"]
    columns = [labels]
    if labels.ndim == 2:  # a regressor of several targets: one column each
        header = [f"prediction_{k}" for k in range(labels.shape[1])]
        columns = list(labels.T)
    if args.proba and model.is_regressor:
        raise ValueError("--proba is for classifiers; this model is a regressor")
    if args.proba:
        proba = model.predict_proba(X)
        header += [f"proba_{c}" for c in model.classes_]
        columns += [proba[:, k] for k in range(proba.shape[1])]
    rows = zip(*[c.tolist() for c in columns], strict=True)
    text = ",".join(header) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows)
    if args.out:
        write_atomic(args.out, lambda f: f.write(text.encode()))
    else:
        sys.stdout.write(text)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    model = _load_model(args)
    table = read_data(args, args.data)
    X, y = table.X, table.y
    check_data_width(X, model, "--data", args.data)
    result = model.evaluate(X, y)
    if args.json:
        print(_json(result))
    elif model.is_regressor:
        print(
            f"R² {result['r2']:.4f}   MSE {result['mse']:.4g}   MAE "
            f"{result['mae']:.4g}   loss {result['loss']:.4g}   ({X.shape[0]} samples)"
        )
    else:
        print(
            f"accuracy {result['accuracy']:.4f}   loss {result['loss']:.4f}   "
            f"({X.shape[0]} samples)"
        )
    return 0


def _explain(args: argparse.Namespace) -> int:
    from ._cli_insight import explain_command

    return explain_command(args)


def _ood(args: argparse.Namespace) -> int:
    from ._cli_insight import ood_command

    return ood_command(args)


def _export(args: argparse.Namespace) -> int:
    from .onnx_export import OPSET

    if not args.onnx.lower().endswith(".onnx"):
        raise ValueError(f"--onnx must name a .onnx file, got {args.onnx!r}")
    model = load_model_arg(args)
    model.to_onnx(args.onnx)
    outputs = (
        "output 'predictions'"
        if model.is_regressor
        else ("outputs 'label', 'probabilities'")
    )
    print(f"wrote {args.onnx} (ONNX opset {OPSET}; input 'input', {outputs})")
    return 0


def _info(args: argparse.Namespace) -> int:
    import fastnn

    if args.model is None:
        fastnn.show_config()
        return 0
    model = load_model_arg(args)
    model.summary()
    targets = (
        f"regression targets: {model.n_outputs_}"
        if model.is_regressor
        else f"classes: {model.classes_.tolist()}"
    )
    print(
        f"{targets}\n"
        f"optimizer: {model.optimizer!r}\n"
        f"backend: {model.backend or 'default'}"
    )
    return 0


def _bench(args: argparse.Namespace) -> int:
    from . import bench

    opts = bench.Options(
        mode=args.mode,
        out=args.out,
        threads=args.threads or None,
        backends=args.backends,
        peers=args.peers,
    )
    results = bench.run(opts)
    if args.json:
        print(json.dumps(results))
    else:
        print(
            f"report written to {opts.out / 'report.md'} "
            f"({results['duration_s']:.0f} s)"
        )
    return 0


_COMMANDS = {
    "train": _train,
    "predict": _predict,
    "evaluate": _evaluate,
    "explain": _explain,
    "ood": _ood,
    "export": _export,
    "info": _info,
    "bench": _bench,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fastnn`` command; return the exit status."""
    from ._cli_output import cli_logging, quiet_broken_pipe, warn

    args = build_parser().parse_args(argv)
    threads = getattr(args, "threads", None)
    if isinstance(threads, int):
        from .threads import cpu_count

        if threads > cpu_count():
            warn(
                f"--threads {threads} is more than the {cpu_count()} cores here: "
                "threads will take turns on the cores (slower, not faster)"
            )
    try:
        with cli_logging(lines_to_stderr=getattr(args, "json", False) is True):
            status = _COMMANDS[args.command](args)
            sys.stdout.flush()  # a closed pipe shows here, not at exit
        return status
    except BrokenPipeError:  # the reader went away (fastnn info | head -1): done
        quiet_broken_pipe()
        return 0
    except KeyboardInterrupt as exc:
        # fit names the checkpoint it saved on the way out (none before a step)
        saved = getattr(exc, "checkpoint", None)
        if saved:
            note = f"; checkpoint saved to {saved}"
        elif getattr(args, "checkpoint", None):
            note = "; no checkpoint saved"
        else:
            note = ""
        sys.stderr.write(f"fastnn: interrupted{note}\n")
        return EXIT_INTERRUPTED
    except Exception as exc:  # one line for the user; FASTNN_DEBUG=1 shows all
        if os.environ.get("FASTNN_DEBUG"):
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, (OSError, LookupError, TypeError)) and not isinstance(
            exc, FileNotFoundError
        ):
            message = f"{type(exc).__name__}: {message}"
        sys.stderr.write(f"fastnn: error: {message}\n")
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
