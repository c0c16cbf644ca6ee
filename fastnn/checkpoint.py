"""Checkpoint files: atomic, checksummed ``.npz`` archives without pickle.

Layout: one ``.npz`` (zip) archive holding the arrays (parameters
``param.<name>``, optimizer state ``optim.<buffer>.<name>``, ``classes``, and for
training checkpoints the shuffle permutation and callback state) and a member
``__meta__``: UTF-8 JSON with the architecture, hyper-parameters, optimizer and
schedule state, RNG state, epoch and batch position, versions, and a SHA-256
checksum over the metadata and every array.

Writing: a temporary file in the destination folder, flushed and fsynced, then
``os.replace``d over the destination and the folder fsynced: the path holds either
the old complete file or the new complete file, whenever the process dies. A new
file gets the permissions ``open()`` would give it (0666 less the umask), a replaced
file keeps its own; a symlink is written through (its target is replaced). Temp
files are named ``.<name>.<pid>.<random>.tmp``; those a killed process left behind
are removed by the next save to the same path.

Checksum: a SHA-256 over the metadata and every array detects damage (a truncated or
corrupted file, an edited value), not tampering: anyone who edits a file can
recompute it. Loading never runs code from a file (no pickle), and the metadata's
meaning is validated (unique classes, counters >= 0, layer sizes matching the arrays
stored) before anything is allocated; still, load checkpoints only from sources you
trust, as with any model file.

Reading: ``np.load(allow_pickle=False)``; every member, the checksum, dtypes, shapes
and finiteness are checked before anything touches a model.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import stat
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FORMAT",
    "VERSION",
    "CheckpointError",
    "check_output_path",
    "read",
    "write",
    "write_atomic",
]

FORMAT = "fastnn-checkpoint"
VERSION = 1
_META = "__meta__"


class CheckpointError(ValueError):
    """A checkpoint file is missing, damaged, or does not fit the model."""


# ---------------------------------------------------------------------- write
def write(
    path: str | os.PathLike, meta: dict[str, Any], arrays: dict[str, np.ndarray]
) -> None:
    """Write ``arrays`` and the JSON-compatible ``meta`` to ``path`` atomically,
    with the format, version and checksum added to ``meta``.

    Raises
    ------
    CheckpointError
        When a float array holds NaN or infinity (nothing is written).
    """
    for name, a in arrays.items():
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise CheckpointError(
                f"refusing to save non-finite values in {name!r} (training diverged?)"
            )
    meta = dict(meta, format=FORMAT, version=VERSION)
    meta["checksum"] = _checksum(meta, arrays)
    payload = dict(arrays)
    payload[_META] = np.frombuffer(_canonical(meta), dtype=np.uint8)
    write_atomic(path, lambda f: np.savez(f, **payload))


def write_atomic(path: str | os.PathLike, write) -> None:
    """Call ``write(file)`` on a temp file beside ``path``, then move it into place.

    A symlink at ``path`` is written through; a replaced file keeps its permission
    bits, a new one gets 0666 less the umask. Temp files of ``path`` left by a
    process that died mid-save are removed first.
    """
    target = Path(os.path.realpath(path))
    folder = target.parent
    _remove_stale_temps(target)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = None
    tmp = folder / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    # the errors name the user's path, not the hidden temp file
    where = f"cannot write {str(path)!r}"
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"{where}: it is a folder")
    try:
        fd = os.open(tmp, flags, 0o666)  # the kernel applies the umask
    except FileNotFoundError:
        raise FileNotFoundError(
            errno.ENOENT, f"{where}: folder {str(folder)!r} does not exist"
        ) from None
    except PermissionError:
        raise PermissionError(
            errno.EACCES, f"{where}: folder {str(folder)!r} is not writable"
        ) from None
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None and hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), mode)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def _remove_stale_temps(target: Path) -> None:
    """Delete the temp files of ``target`` whose writing process no longer runs."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(\d+)\.[0-9a-f]+\.tmp")
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match and not _process_alive(int(match.group(1))):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # another thread of this process may be writing it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError):
        return True  # exists (another user's), or cannot tell: keep the file
    return True


def check_output_path(
    path: str | os.PathLike, what: str, suffix: str | None = None
) -> None:
    """Raise ValueError unless a file can be written to ``path``: its folder exists
    and is writable, it is not a folder, and it ends in ``suffix`` when given.

    Called before long work (training) so that a typo does not cost the result.
    """
    given = str(path)
    if suffix is not None and Path(given).suffix.lower() != suffix:
        raise ValueError(f"{what} {given!r} must be a {suffix} file")
    target = Path(os.path.realpath(path))
    if target.is_dir():
        raise ValueError(f"{what} {given!r} is a folder, not a file")
    folder = target.parent
    if not folder.is_dir():
        raise ValueError(f"{what} {given!r}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {given!r}: folder {str(folder)!r} is not writable")


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
                if not isinstance(arrays[key], np.ndarray):  # raw bytes, no .npy
                    raise CheckpointError(
                        f"{where}: member {key!r} is not a .npy array"
                    )
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
        raise CheckpointError(
            f"{where} failed its checksum: the file is damaged or was modified"
        )
    meta["checksum"] = stored
    for name, a in arrays.items():
        if a.dtype.kind == "O":
            raise CheckpointError(f"{where}: array {name!r} has object dtype")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise CheckpointError(f"{where}: array {name!r} holds NaN or infinity")
    return meta, arrays


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
