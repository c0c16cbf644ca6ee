"""Datasets: the built-in digits split and loaders for .npz and .csv files."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

__all__ = ["DataError", "load_dataset", "load_digits_split"]


class DataError(ValueError):
    """A data file is missing, malformed or lacks what was asked for."""


def load_digits_split(
    test_size: float = 0.25, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's bundled handwritten digits (8x8, 10 classes), split and scaled.

    A stratified train/test split (fixed by ``seed``), standardized with the
    training set's mean and standard deviation (constant pixels are left
    centred, not divided by zero).

    Returns
    -------
    X_train, X_test : ndarray of float32, shapes (n_train, 64), (n_test, 64)
    y_train, y_test : ndarray of int
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=test_size, stratify=y, random_state=seed
    )
    mean = X_train.mean(axis=0)
    std = X_train.std(axis=0)
    std[std == 0] = 1.0
    scale = lambda a: ((a - mean) / std).astype(np.float32)  # noqa: E731
    return scale(X_train), scale(X_test), y_train, y_test


def load_dataset(
    path: str | os.PathLike,
    label_column: str | int | None = None,
    require_y: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Load ``(X, y)`` from a ``.npz`` (arrays ``X`` and ``y``) or a ``.csv`` file.

    Parameters
    ----------
    path : path-like
    label_column : str or int, optional
        CSV only: the label column, by header name or 0-based index (default: the
        last column). Every other column must be numeric.
    require_y : bool, default=True
        When False, a file without labels gives ``y=None`` (for prediction).

    Raises
    ------
    DataError
        With a one-line message naming the problem.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file {str(path)!r} does not exist")
    if path.is_dir():
        raise DataError(f"data path {str(path)!r} is a directory")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _load_npz(path, require_y)
    if suffix == ".csv":
        return _load_csv(path, label_column, require_y)
    raise DataError(f"unsupported data file {str(path)!r}: expected .npz or .csv")


def _load_npz(path: Path, require_y: bool):
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not hasattr(npz, "files"):
                raise DataError(f"{str(path)!r} is a bare .npy array, expected .npz")
            if "X" not in npz.files:
                raise DataError(
                    f"{str(path)!r} has arrays {sorted(npz.files)}; "
                    "expected 'X' and 'y'"
                )
            X = npz["X"]
            y = npz["y"] if "y" in npz.files else None
    except DataError:
        raise
    except ValueError as exc:
        raise DataError(f"cannot read {str(path)!r}: {exc}") from None
    except Exception as exc:  # zip errors, truncation
        raise DataError(
            f"cannot read {str(path)!r}: {type(exc).__name__}: {exc}"
        ) from None
    if y is None and require_y:
        raise DataError(f"{str(path)!r} has no array 'y' (labels)")
    if X.dtype.kind not in "biuf":
        raise DataError(f"{str(path)!r}: X must be numeric, got dtype {X.dtype}")
    return X, y


def _load_csv(path: Path, label_column, require_y: bool):
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {str(path)!r}: {exc}") from None
    if not rows:
        raise DataError(f"{str(path)!r} is empty")
    header = None
    if not all(_is_number(c) for c in rows[0]):
        header, rows = [c.strip() for c in rows[0]], rows[1:]
    if not rows:
        raise DataError(f"{str(path)!r} has a header but no data rows")
    width = len(header) if header else len(rows[0])
    for i, r in enumerate(rows):
        if len(r) != width:
            line = i + (2 if header else 1)
            raise DataError(
                f"{str(path)!r} line {line} has {len(r)} columns, expected {width}"
            )
    names = header or [str(i) for i in range(width)]
    label = _label_index(label_column, names, header is not None, width, path)
    if label is None and not require_y:
        feature_idx = list(range(width))
    else:
        if label is None:
            label = width - 1
        feature_idx = [i for i in range(width) if i != label]
    if not feature_idx:
        raise DataError(f"{str(path)!r} has no feature columns besides the labels")
    X = np.empty((len(rows), len(feature_idx)), dtype=np.float64)
    for i, r in enumerate(rows):
        for j, c in enumerate(feature_idx):
            try:
                X[i, j] = float(r[c])
            except ValueError:
                line = i + (2 if header else 1)
                raise DataError(
                    f"{str(path)!r} line {line}: non-numeric value {r[c]!r} in column "
                    f"{names[c]!r}"
                ) from None
    if label is None:
        return X, None
    y_text = [r[label].strip() for r in rows]
    return X, _parse_labels(y_text)


def _label_index(label_column, names, has_header, width, path) -> int | None:
    if label_column is None:
        return None
    if isinstance(label_column, str) and label_column in names and has_header:
        return names.index(label_column)
    try:
        idx = int(label_column)
    except (TypeError, ValueError):
        raise DataError(
            f"label column {label_column!r} not found in {str(path)!r}; columns are "
            f"{names}"
        ) from None
    if not -width <= idx < width:
        raise DataError(
            f"label column index {idx} is out of range for {width} columns in "
            f"{str(path)!r}"
        )
    return idx % width


def _parse_labels(values: list[str]) -> np.ndarray:
    """Integer labels when all are integers, floats when all numeric, else strings."""
    try:
        return np.array([int(v) for v in values])
    except ValueError:
        pass
    try:
        return np.array([float(v) for v in values])
    except ValueError:
        return np.array(values)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False
