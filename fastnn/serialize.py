"""A model and the state of its fit as checkpoint contents: ``(meta, arrays)``.

This module owns every key name of a fastnn checkpoint (the container itself, an
atomic checksummed ``.npz``, is :mod:`fastnn.checkpoint`):

* arrays: ``param.<name>`` (parameters, named as PyTorch's ``"0.weight"``),
  ``optim.<buffer>.<name>`` (optimizer state), ``classes``, and for a training
  checkpoint ``train.perm`` (the shuffle order of an unfinished epoch) and
  ``callback.<i>.<key>`` (callback state);
* metadata: ``model`` (class and config; the config's ``loss`` names a regression
  loss by its ``type``, none is softmax cross-entropy), ``dtype``, ``params``,
  ``optimizer`` (state names and scalars), ``fitted``, ``target_ndim`` (a fitted
  regressor's: 1 for y of shape (n,), 2 for (n, k)), and ``train_state`` (the
  position of a fit: seed, RNG, history, epoch, batch, step, metrics, fit settings,
  callbacks, and what the training strategy adds).

Model classes register themselves (:func:`register`) so that a file names its class
and :func:`load` builds it; metadata is validated before anything is allocated.
"""

from __future__ import annotations

import contextlib
import math
import operator
import os
import time
from typing import Any

import numpy as np

from . import checkpoint as container
from ._version import __version__
from .callbacks import Callback, History
from .checkpoint import CheckpointError
from .optim import optimizer_from_config

__all__ = ["check_meta", "load", "model_from_config", "register", "save"]

PARAM = "param."
OPTIM = "optim."
CLASSES = "classes"
PERM = "train.perm"
CALLBACK = "callback."
TARGET_NDIM = "target_ndim"
_POSITION = ("epoch", "batch", "step", "loss_sum", "correct", "seen", "elapsed",
             "stopped", "finished")  # fmt: skip
_FLOAT_COUNTERS = ("learning rate", "loss_sum", "elapsed")
_REQUIRED = ("model", "dtype", "params", "optimizer", "fitted")
_DTYPES = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}
_MODEL_CLASSES: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: files naming ``cls.__name__`` are built with ``cls``."""
    _MODEL_CLASSES[cls.__name__] = cls
    return cls


def model_from_config(class_name: str, config: dict[str, Any], **kwargs: Any):
    """Build an unfitted model of a registered class from its config."""
    try:
        cls = _MODEL_CLASSES[class_name]
    except KeyError:
        raise ValueError(f"unknown model class {class_name!r}") from None
    return cls.from_config(config, **kwargs)


# ---------------------------------------------------------------- model state
def model_state(model) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(metadata, arrays) describing ``model``."""
    specs = model._param_specs
    meta = {
        "model": {"class": type(model).__name__, "config": model.get_config()},
        "dtype": model.dtype.name,
        "params": [name for name, _, _ in specs],
        "optimizer": {
            "state_names": list(model.optimizer.state_names),
            "state": model.optimizer.state_dict(),
        },
        "fitted": model._is_fitted(),
    }
    if hasattr(model, "target_ndim_"):
        meta[TARGET_NDIM] = model.target_ndim_
    arrays = {PARAM + n: p for n, p in model.named_parameters()}
    for sname, buf in model.optimizer.state.items():
        for name, sl, shape in specs:
            arrays[f"{OPTIM}{sname}.{name}"] = buf[sl].reshape(shape)
    if hasattr(model, "classes_"):
        arrays[CLASSES] = _portable_classes(model.classes_)
    return meta, arrays


def save(
    model,
    path: str | os.PathLike,
    train_meta: dict[str, Any] | None = None,
    train_arrays: dict[str, np.ndarray] | None = None,
) -> None:
    """Write ``model`` (and the state of a fit, from :func:`train_state`) to
    ``path`` atomically."""
    meta, arrays = model_state(model)
    arrays.update(train_arrays or {})
    meta.update(
        fastnn_version=__version__,
        numpy_version=np.__version__,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        train_state=train_meta,
    )
    container.write(path, meta, arrays)


def read(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and verify a checkpoint (:func:`fastnn.checkpoint.read`) that holds a
    model."""
    meta, arrays = container.read(path)
    for key in _REQUIRED:
        if key not in meta:
            raise CheckpointError(f"checkpoint {str(path)!r} metadata lacks {key!r}")
    return meta, arrays


def load(
    path: str | os.PathLike, *, backend: str | None = None, n_threads: int | None = None
):
    """Load a model saved with ``model.save`` or ``fit(checkpoint=...)``.

    Parameters
    ----------
    path : path-like
    backend : str, optional
        Kernel backend of the loaded model (None: the process default).
    n_threads : int, optional

    Returns
    -------
    fastnn.Sequential
        The model (an ``MLP`` when one was saved), with weights, classes and
        optimizer state restored.
    """
    meta, arrays = read(path)
    with _malformed(f"checkpoint {str(path)!r}"):
        check_meta(meta, arrays)  # before the model is built (allocated)
        try:
            model = model_from_config(
                meta["model"]["class"],
                meta["model"]["config"],
                backend=backend,
                n_threads=n_threads,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(
                f"checkpoint {str(path)!r} describes an invalid model: {exc}"
            ) from None
        check_state(model, meta, arrays)
        set_state(model, meta, arrays)
    return model


@contextlib.contextmanager
def _malformed(what: str):
    """Turn the errors of metadata of the wrong shape (a key missing, a list where
    a dict belongs: KeyError, TypeError, ... from wherever it is used) into one
    CheckpointError naming the file."""
    try:
        yield
    except CheckpointError:
        raise
    except (KeyError, TypeError, AttributeError, IndexError, OverflowError,
            ValueError) as exc:  # fmt: skip
        raise CheckpointError(
            f"{what} has malformed metadata ({type(exc).__name__}: {exc})"
        ) from None


def check_meta(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Raise CheckpointError unless a read checkpoint's metadata makes sense, before
    anything is built from it: every weight and bias its architecture implies is an
    array stored in the file with that shape (a claimed 10^9-wide layer is refused,
    not allocated), classes are unique and sorted, and every counter is >= 0."""
    try:
        claimed = _claimed_shapes(meta["model"]["class"], meta["model"]["config"])
        dtype = _DTYPES[meta["dtype"]]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"checkpoint architecture is invalid: {exc}") from None
    for name, shape in claimed:  # every claimed layer is an array actually stored
        _expect_array(arrays, PARAM + name, shape, dtype)
    if not isinstance(meta["fitted"], bool):
        raise CheckpointError("checkpoint 'fitted' flag is not a boolean")
    classes = arrays.get(CLASSES)
    if meta["fitted"] and classes is not None:
        try:
            ordered = classes.ndim == 1 and np.array_equal(np.unique(classes), classes)
        except TypeError:
            ordered = False
        if not ordered:
            raise CheckpointError("checkpoint classes are not unique and sorted")
    counters = {}
    opt_meta = meta["optimizer"]
    opt_state = opt_meta.get("state") if isinstance(opt_meta, dict) else None
    if isinstance(opt_state, dict):
        counters["optimizer steps"] = opt_state.get("steps", 0)
        counters["learning rate"] = opt_state.get("current_lr", 0.0)
    ts = meta.get("train_state")
    if isinstance(ts, dict):
        for key in ("epoch", "batch", "step", "correct", "seen"):
            counters[key] = ts.get(key, 0)
        for key in ("loss_sum", "elapsed"):
            counters[key] = ts.get(key, 0.0)
    for name, value in counters.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < 0
            or (name not in _FLOAT_COUNTERS and value >= 2**53)  # int64-safe count
        ):
            raise CheckpointError(f"checkpoint {name} is invalid: {value!r}")
    if isinstance(ts, dict) and ts.get("correct", 0) > ts.get("seen", 0):
        raise CheckpointError("checkpoint counts more correct rows than rows seen")


def check_state(
    model,
    meta: dict[str, Any],
    arrays: dict[str, np.ndarray],
    require_train_state: bool = False,
) -> None:
    """Raise CheckpointError unless (meta, arrays) fit ``model`` exactly (with
    ``require_train_state``: and hold a well-formed train state to resume)."""
    with _malformed("checkpoint"):
        _check_state(model, meta, arrays, require_train_state)


def _check_state(model, meta, arrays, require_train_state: bool) -> None:
    check_meta(meta, arrays)
    mine = model.get_config()
    theirs = meta["model"]["config"]
    if meta["model"]["class"] in _MODEL_CLASSES:
        try:
            their_model = model_from_config(meta["model"]["class"], theirs)
        except (ValueError, TypeError) as exc:
            raise CheckpointError(
                f"checkpoint architecture is invalid: {exc}"
            ) from None
        if _layers_signature(their_model) != _layers_signature(model):
            raise CheckpointError(
                "checkpoint architecture does not match this model: "
                f"{_layers_signature(their_model)} vs {_layers_signature(model)}"
            )
    if meta["dtype"] != model.dtype.name:
        raise CheckpointError(
            f"checkpoint dtype is {meta['dtype']}, this model uses {model.dtype.name}"
        )
    for name, _, shape in model._param_specs:
        _expect_array(arrays, PARAM + name, shape, model.dtype)
    # Optimizer state is restored when it has this optimizer's layout; a plain
    # model file loaded into a model with another optimizer keeps that one fresh.
    opt_names = tuple(meta["optimizer"]["state_names"])
    if opt_names == tuple(model.optimizer.state_names):
        for sname in opt_names:
            for name, _, shape in model._param_specs:
                _expect_array(arrays, f"{OPTIM}{sname}.{name}", shape, model.dtype)
    elif require_train_state:
        raise CheckpointError(
            f"checkpoint optimizer state {list(opt_names)} does not match this "
            f"model's optimizer {model.optimizer!r}"
        )
    if meta["fitted"] and model.is_regressor:
        if meta.get(TARGET_NDIM) not in (1, 2) or (
            meta[TARGET_NDIM] == 1 and model.n_outputs_ != 1
        ):
            raise CheckpointError(
                f"checkpoint target_ndim is {meta.get(TARGET_NDIM)!r}, expected 2 "
                f"(or 1 for one output) for a regressor with {model.n_outputs_} outputs"
            )
    elif meta["fitted"]:
        classes = arrays.get(CLASSES)
        if classes is None or classes.shape != (model.n_outputs_,):
            raise CheckpointError(
                f"checkpoint classes have shape "
                f"{None if classes is None else classes.shape}, expected "
                f"({model.n_outputs_},)"
            )
    if require_train_state:
        if meta.get("train_state") is None:
            raise CheckpointError("file is a saved model, not a training checkpoint")
        if not meta["fitted"]:
            raise CheckpointError("training checkpoint is not of a fitted model")
        if mine["optimizer"] != theirs.get("optimizer") or mine["loss"] != theirs.get(
            "loss"
        ):
            raise CheckpointError(
                "checkpoint was written with a different optimizer or loss: "
                f"{theirs.get('optimizer')}, {theirs.get('loss')}"
            )
        _probe_train_state(model, meta)


def _probe_train_state(model, meta: dict[str, Any]) -> None:
    """Raise (any error: the caller names it) unless what a resume reads from the
    metadata is there and usable; run before the model or callbacks change."""
    ts = meta["train_state"]
    if not isinstance(ts, dict):
        raise TypeError(f"train_state is {type(ts).__name__}, not a dict")
    missing = [k for k in ("rng", "history", "fit", "callbacks", *_POSITION)
               if k not in ts]  # fmt: skip
    if missing:
        raise KeyError(f"train_state lacks {missing}")
    np.random.SeedSequence(ts["seed_entropy"])
    probe = np.random.Generator(np.random.PCG64())
    probe.bit_generator.state = ts["rng"]
    History.from_dict(ts["history"])
    if not isinstance(ts["fit"], dict):
        raise TypeError("train_state 'fit' is not a dict")
    for cb in ts["callbacks"]:
        if not isinstance(cb, dict) or "type" not in cb or "state" not in cb:
            raise TypeError(f"a callback entry is malformed: {cb!r}")
    # a fresh copy (unbound, no buffers): its scalars and schedule state only
    opt = optimizer_from_config(model.optimizer.get_config())
    opt.load_state_dict(meta["optimizer"]["state"])


def set_state(model, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Apply a checked state (see :func:`check_state`) to ``model``."""
    for name, sl, shape in model._param_specs:
        model._params[sl].reshape(shape)[...] = arrays[PARAM + name]
    model._initialized = True
    opt = model.optimizer
    opt.bind(model._kernels(), model._params, model._grads, model._n_decay)
    opt_names = tuple(meta["optimizer"]["state_names"])
    if opt_names == tuple(opt.state_names):
        for sname in opt_names:
            buf = opt.state[sname]
            for name, sl, shape in model._param_specs:
                buf[sl].reshape(shape)[...] = arrays[f"{OPTIM}{sname}.{name}"]
        opt.load_state_dict(meta["optimizer"]["state"])
    if meta["fitted"]:
        classes = arrays.get(CLASSES)
        model._mark_fitted(
            None if classes is None else np.array(classes), meta.get(TARGET_NDIM, 0)
        )


# ----------------------------------------------------------------- fit state
def train_state(
    seed_seq: np.random.SeedSequence,
    rng: np.random.Generator,
    history: History,
    state,
    stopped: bool,
    settings: dict[str, Any],
    callbacks: list[Callback],
    extra: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The (train_state metadata, arrays) of a running fit, for :func:`save`."""
    ts = {
        "seed_entropy": seed_seq.entropy,
        "rng": rng.bit_generator.state,
        "history": history.to_dict(),
        "epoch": state.epoch,
        "batch": state.batch,
        "step": state.step,
        "loss_sum": state.loss_sum,
        "correct": state.correct,
        "seen": state.seen,
        "elapsed": state.elapsed,
        "stopped": stopped,
        "finished": state.finished,
        "fit": settings,
        "callbacks": [],
        **extra,
    }
    arrays = {}
    if state.batch > 0 and state.perm is not None:
        arrays[PERM] = state.perm
    for i, cb in enumerate(callbacks):
        meta_i, arrays_i = cb.get_state()
        ts["callbacks"].append({"type": type(cb).__name__, "state": meta_i})
        for k, v in arrays_i.items():
            arrays[f"{CALLBACK}{i}.{k}"] = v
    return ts, arrays


def saved_train_state(saved) -> dict[str, Any]:
    """The train state (position of the fit) of a read training checkpoint."""
    return saved[0]["train_state"]


def data_parallel_state(world_size: int, allreduce_time: float) -> dict[str, Any]:
    """What a data-parallel fit adds to its train state (see :func:`train_state`)."""
    return {"distributed": {"world_size": world_size, "allreduce_time": allreduce_time}}


def saved_data_parallel_state(train_state: dict[str, Any]) -> tuple[int, float]:
    """(ranks that wrote it, seconds in the Allreduce this epoch) of a train state;
    a single-process checkpoint reads as one rank."""
    extra = train_state.get("distributed") or {}
    return extra.get("world_size", 1), float(extra.get("allreduce_time", 0.0))


def saved_seed_entropy(saved) -> Any:
    """The seed entropy of the fit a read checkpoint ``(meta, arrays)`` holds."""
    return saved_train_state(saved)["seed_entropy"]


def resume_training_state(
    saved, rng: np.random.Generator, callbacks: list[Callback]
) -> tuple[History, dict[str, Any]]:
    """From a read checkpoint ``(meta, arrays)``: the shuffle RNG's state (set on
    ``rng``) and the callbacks' state (set on them); returns the history and the
    position in the epochs (the fields of ``fastnn.training.TrainState``)."""
    ts = saved[0]["train_state"]
    rng.bit_generator.state = ts["rng"]
    position = {key: ts[key] for key in _POSITION}
    position["perm"] = saved[1].get(PERM)
    for i, cb in enumerate(callbacks):
        cb.set_state(*_callback_state(saved, i))
    return History.from_dict(ts["history"]), position


def check_resume(
    model, saved, settings: dict, callbacks, n_train: int, run_here
) -> None:
    """Raise CheckpointError unless a training checkpoint continues this fit: same
    settings and data, a valid RNG state, batch position and shuffle order, and the
    same callbacks (each of ``run_here``, those that run in this process, checking
    its own saved state: a file-writing callback of a data-parallel fit runs on one
    process, whose files and folders the others need not see)."""
    with _malformed("checkpoint"):
        _check_resume(model, saved, settings, callbacks, n_train, run_here)


def _check_resume(
    model, saved, settings: dict, callbacks, n_train: int, run_here
) -> None:
    meta, arrays = saved
    ts = meta["train_state"]
    if ts.get("fit") != settings:
        theirs = {k: v for k, v in (ts.get("fit") or {}).items() if k != "data_sha256"}
        mine = {k: v for k, v in settings.items() if k != "data_sha256"}
        what = "settings" if theirs != mine else "training data"
        raise CheckpointError(
            f"checkpoint was written by a fit with different {what} "
            f"({theirs} vs {mine}); pass resume=False to start afresh"
        )
    try:
        probe = np.random.Generator(np.random.PCG64())
        probe.bit_generator.state = ts["rng"]
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint RNG state is invalid: {exc}") from None
    n_batches = -(-n_train // settings["batch_size"])
    if not 0 <= ts["batch"] <= n_batches:
        raise CheckpointError(f"checkpoint batch position {ts['batch']} is invalid")
    perm = arrays.get(PERM)
    if ts["batch"] > 0 and settings["shuffle"]:
        if (
            perm is None
            or perm.shape != (n_train,)
            or perm.dtype.kind not in "iu"
            or (not np.array_equal(np.sort(perm), np.arange(n_train)))
        ):
            raise CheckpointError(
                "checkpoint shuffle permutation is missing or invalid"
            )
    saved_cbs = ts.get("callbacks", [])
    if [c["type"] for c in saved_cbs] != [type(cb).__name__ for cb in callbacks]:
        raise CheckpointError(
            "checkpoint was written with callbacks "
            f"{[c['type'] for c in saved_cbs]}"
            f", this fit has {[type(cb).__name__ for cb in callbacks]}"
        )
    for i, cb in enumerate(callbacks):
        if not any(cb is mine for mine in run_here):
            continue
        try:
            cb.check_state(*_callback_state(saved, i), model)
        except ValueError as exc:
            raise CheckpointError(str(exc)) from None


# -------------------------------------------------------------------- helpers
def _claimed_shapes(
    class_name: str, config: dict[str, Any]
) -> list[tuple[str, tuple[int, ...]]]:
    """(parameter name, shape) of every weight and bias of the architecture in a
    config, without building it."""

    def width(v: Any) -> int:
        if isinstance(v, bool) or operator.index(v) < 1:
            raise ValueError(f"layer width {v!r} is not a positive int")
        return operator.index(v)

    if class_name == "MLP":
        sizes = [width(v) for v in config["sizes"]]
        # Linear, activation, Linear, ...: the Linears sit at even positions
        linears = [
            (2 * i, k, m, bool(config["bias"]))
            for i, (k, m) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))
        ]
    elif class_name == "Sequential":
        linears = [
            (i, width(spec["config"]["in_features"]),
             width(spec["config"]["out_features"]),
             bool(spec["config"].get("bias", True)))
            for i, spec in enumerate(config["layers"])
            if spec["type"] == "Linear"
        ]  # fmt: skip
    else:
        raise ValueError(f"unknown model class {class_name!r}")
    shapes = []
    for i, k, m, bias in linears:
        shapes.append((f"{i}.weight", (k, m)))
        if bias:
            shapes.append((f"{i}.bias", (m,)))
    return shapes


def _layers_signature(model) -> list[tuple]:
    return [
        (type(layer).__name__, sorted(layer.get_config().items()))
        for layer in model.layers
    ]


def _portable_classes(classes: np.ndarray) -> np.ndarray:
    """classes_ as an array numpy can save without pickle (no object dtype)."""
    if classes.dtype != object:
        return classes
    values = classes.tolist()
    if all(isinstance(v, str) for v in values):
        return np.array(values, dtype=str)
    if all(isinstance(v, (bool, int, float, np.generic)) for v in values):
        return np.array(values)
    raise ValueError(
        "classes_ holds Python objects that cannot be saved without pickle; use "
        "numbers or strings as labels"
    )


def _expect_array(arrays, key, shape, dtype) -> None:
    a = arrays.get(key)
    if a is None:
        raise CheckpointError(f"checkpoint lacks array {key!r}")
    if a.shape != tuple(shape):
        raise CheckpointError(
            f"checkpoint array {key!r} has shape {a.shape}, expected {tuple(shape)}"
        )
    if a.dtype != dtype:
        raise CheckpointError(
            f"checkpoint array {key!r} has dtype {a.dtype}, expected {dtype}"
        )


def _callback_state(saved, i: int) -> tuple[dict, dict]:
    meta, arrays = saved
    cb_meta = meta["train_state"]["callbacks"][i]["state"]
    prefix = f"{CALLBACK}{i}."
    cb_arrays = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
    return cb_meta, cb_arrays
