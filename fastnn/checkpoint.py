"""Checkpoint files: atomic, checksummed ``.npz`` archives without pickle.

Layout: one ``.npz`` (zip) archive holding the arrays (parameters
``param.<name>``, optimizer state ``optim.<buffer>.<name>``, ``classes``, and for
training checkpoints the shuffle permutation and callback state) and a member
``__meta__``: UTF-8 JSON with the architecture, hyper-parameters, optimizer and
schedule state, RNG state, epoch and batch position, versions, and a SHA-256
checksum over the metadata and every array.

Writing: a temporary file in the destination folder, flushed and fsynced, then
``os.replace``d over the destination and the folder fsynced: the path holds either
the old complete file or the new complete file, whenever the process dies.

Reading: ``np.load(allow_pickle=False)``; every member, the checksum, dtypes, shapes
and finiteness are checked before anything touches a model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FORMAT", "VERSION", "CheckpointError", "load", "read", "save"]

FORMAT = "fastnn-checkpoint"
VERSION = 1
_META = "__meta__"


class CheckpointError(ValueError):
    """A checkpoint file is missing, damaged, or does not fit the model."""


# ---------------------------------------------------------------------- write
def save(
    model,
    path: str | os.PathLike,
    *,
    train_state: dict[str, Any] | None = None,
    extra_arrays: dict[str, np.ndarray] | None = None,
) -> None:
    """Write ``model`` (and optionally the state of a fit) to ``path`` atomically.

    Parameters
    ----------
    model : fastnn.Sequential
    path : path-like
        Destination (conventionally ``*.npz``); its folder must exist.
    train_state : dict, optional
        JSON-compatible position of a running fit (written by ``fit``).
    extra_arrays : dict, optional
        Further arrays of the fit (shuffle permutation, callback state).
    """
    from . import __version__

    meta, arrays = model._state()
    arrays = dict(arrays)
    arrays.update(extra_arrays or {})
    for name, a in arrays.items():
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise CheckpointError(
                f"refusing to save non-finite values in {name!r} (training diverged?)"
            )
    meta.update(
        format=FORMAT,
        version=VERSION,
        fastnn_version=__version__,
        numpy_version=np.__version__,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        train_state=train_state,
    )
    meta["checksum"] = _checksum(meta, arrays)
    payload = dict(arrays)
    payload[_META] = np.frombuffer(_canonical(meta), dtype=np.uint8)
    write_atomic(path, lambda f: np.savez(f, **payload))


def write_atomic(path: str | os.PathLike, write) -> None:
    """Call ``write(file)`` on a temp file beside ``path``, then move it into place."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not possible on every platform (Windows).
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


# ----------------------------------------------------------------------- read
def read(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and verify a checkpoint; return ``(metadata, arrays)``.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    CheckpointError
        When the file is not a complete, unmodified fastnn checkpoint: not a zip,
        truncated, a member failing its CRC, pickled object arrays, a bad checksum,
        non-finite parameters, or missing metadata.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    where = f"checkpoint {str(path)!r}"
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":  # every .npz is a zip archive
            raise CheckpointError(f"{where} is damaged or not a checkpoint (not .npz)")
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise CheckpointError(f"{where} is a bare .npy array, not a checkpoint")
            for key in npz.files:
                arrays[key] = npz[key]
    except CheckpointError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise CheckpointError(
                f"{where} contains pickled object arrays, which are refused "
                "(files are loaded with allow_pickle=False)"
            ) from None
        raise CheckpointError(f"{where} is not a valid checkpoint: {exc}") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise CheckpointError(
            f"{where} is damaged or not a checkpoint ({type(exc).__name__}: {exc})"
        ) from None
    raw = arrays.pop(_META, None)
    if raw is None or raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError(f"{where} has no fastnn metadata")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{where} has unreadable metadata: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{where} is not a fastnn checkpoint")
    if meta.get("version") != VERSION:
        raise CheckpointError(
            f"{where} has format version {meta.get('version')!r}; this fastnn reads "
            f"version {VERSION}"
        )
    stored = meta.pop("checksum", None)
    if stored != _checksum(meta, arrays):
        raise CheckpointError(f"{where} failed its checksum: the file was modified")
    meta["checksum"] = stored
    for key in ("model", "dtype", "params", "optimizer", "fitted"):
        if key not in meta:
            raise CheckpointError(f"{where} metadata lacks {key!r}")
    for name, a in arrays.items():
        if a.dtype.kind == "O":
            raise CheckpointError(f"{where}: array {name!r} has object dtype")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise CheckpointError(f"{where}: array {name!r} holds NaN or infinity")
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
    from .model import model_from_config

    meta, arrays = read(path)
    try:
        model = model_from_config(
            meta["model"]["class"],
            meta["model"]["config"],
            backend=backend,
            n_threads=n_threads,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {str(path)!r} describes an invalid model: {exc}"
        ) from None
    model._check_state(meta, arrays)
    model._set_state(meta, arrays)
    return model


def load_into(model, path: str | os.PathLike) -> None:
    """Load weights, classes and optimizer state from ``path`` into ``model``.

    The file must describe the same architecture and dtype; nothing is changed
    when it does not (CheckpointError).
    """
    meta, arrays = read(path)
    model._check_state(meta, arrays)
    model._set_state(meta, arrays)


# -------------------------------------------------------------------- helpers
def _canonical(meta: dict[str, Any]) -> bytes:
    return json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()


def _checksum(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    h.update(_canonical({k: v for k, v in meta.items() if k != "checksum"}))
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"\0{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.data if a.size else b"")
    return "sha256:" + h.hexdigest()
