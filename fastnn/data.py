"""Datasets: the built-in digits split and loaders for .npz, CSV and Parquet files.

CSV goes through pandas' C parser when pandas is installed and through
``numpy.loadtxt`` otherwise (both parse whole columns, no Python loop per cell);
Parquet needs pandas and pyarrow. ``-`` reads standard input (an .npz, a Parquet
file or CSV text, told apart by their first bytes).

What is guessed, and said when it is:

* A header row (``header="auto"``): the first row is a header when one of its cells is
  not a number where the second row has a number, or when it is exactly ``0, 1, ...,
  k-1`` (the integer column names pandas writes; a note says so). ``header="yes"`` /
  ``"no"`` decide instead.
* A leading, unnamed column of distinct integers under a header (the index that
  ``DataFrame.to_csv()`` writes by default) is dropped, with a note.
* The label column is the last one unless named (by header name or 0-based index);
  ``"none"``: no label column. When labels are optional (prediction) and the number of
  features is known, the label column is dropped only when the file has one more
  column than the model has features.

Notes go to the ``fastnn.data`` logger (warning level, so they show without any
logging set-up).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DataError",
    "Table",
    "load_dataset",
    "load_diabetes_split",
    "load_digits_split",
    "infer_task",
    "read_table",
]

HEADER_MODES = ("auto", "yes", "no")
_CSV_SUFFIXES = {".csv": ",", ".tsv": "\t"}
_PARQUET_SUFFIXES = (".parquet", ".pq")
_log = logging.getLogger(__name__)


class DataError(ValueError):
    """A data file is missing, malformed or lacks what was asked for."""


@dataclass
class Table:
    """Features, labels and what was read of a data file.

    Attributes
    ----------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,) or None
    feature_names : list of str or None
        The header's names of the feature columns (None without a header).
    notes : list of str
        What was guessed (a numeric header, a dropped index column).
    """

    X: np.ndarray
    y: np.ndarray | None
    feature_names: list[str] | None = None
    notes: list[str] = field(default_factory=list)


def load_digits_split(
    test_size: float = 0.25, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's bundled handwritten digits (8x8, 10 classes), split and scaled.

    A stratified train/test split (fixed by ``seed``), standardized with the
    training set's mean and standard deviation (constant pixels are left
    centred, not divided by zero). ``test_size=0`` gives empty test arrays.

    Returns
    -------
    X_train, X_test : ndarray of float32, shapes (n_train, 64), (n_test, 64)
    y_train, y_test : ndarray of int
    """
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return _split_standardized(X, y, test_size, seed, stratify=True)


def load_diabetes_split(
    test_size: float = 0.25, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's bundled diabetes regression data (442 patients, 10 features,
    target: disease progression one year later), split and scaled.

    A random train/test split (fixed by ``seed``); X is standardized with the
    training set's mean and standard deviation. The target stays in its own units
    (``fastnn train`` standardizes regression targets itself and folds the scaling
    back into the model's output layer). ``test_size=0`` gives empty test arrays.

    Returns
    -------
    X_train, X_test : ndarray of float32, shapes (n_train, 10), (n_test, 10)
    y_train, y_test : ndarray of float64
    """
    from sklearn.datasets import load_diabetes

    # scaled=False: the raw features (sklearn's default pre-scales them with the
    # whole data set's statistics, test rows included)
    X, y = load_diabetes(return_X_y=True, scaled=False)
    return _split_standardized(X, y, test_size, seed, stratify=False)


def _split_standardized(X, y, test_size: float, seed: int, stratify: bool):
    """Train/test split, X standardized with the training rows' statistics."""
    from sklearn.model_selection import train_test_split

    if test_size == 0:
        X_train, X_test, y_train, y_test = X, X[:0], y, y[:0]
    else:
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=test_size, stratify=y if stratify else None,
            random_state=seed,
        )  # fmt: skip
    mean = X_train.mean(axis=0)
    std = X_train.std(axis=0)
    std[std == 0] = 1.0
    scale = lambda a: ((a - mean) / std).astype(np.float32)  # noqa: E731
    return scale(X_train), scale(X_test), y_train, y_test


TASKS = ("auto", "classification", "regression")


def infer_task(y: np.ndarray, task: str = "auto") -> str:
    """ "classification" or "regression" for labels ``y``.

    ``task="auto"``: integer or string labels classify (as before regression
    existed, silently); float labels regress unless all are whole numbers
    (scikit-learn's ``type_of_target``: "continuous"), and a note says which was
    chosen and how to override it. Any other ``task`` is returned as given.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if task != "auto":
        return task
    y = np.asarray(y)
    if y.dtype.kind != "f":
        return "classification"
    from sklearn.utils.multiclass import type_of_target

    if type_of_target(y, input_name="y").startswith("continuous"):
        _log.info(
            "float labels: training a regressor (--task classification to classify)"
        )
        return "regression"
    _log.info(
        "float labels that are all whole numbers: training a classifier (--task "
        "regression to regress)"
    )
    return "classification"


def load_dataset(
    path: str | os.PathLike,
    label_column: str | int | None = None,
    require_y: bool = True,
    *,
    header: str = "auto",
    delimiter: str | None = None,
    n_features: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Load ``(X, y)`` from an .npz (arrays ``X`` and ``y``), CSV or Parquet file.

    Parameters
    ----------
    path : path-like or "-"
        ``.npz``, ``.csv`` / ``.tsv``, ``.parquet``; ``"-"``: stdin.
    label_column : str or int, optional
        CSV / Parquet: the label column, by header name or 0-based index (default:
        the last column); ``"none"``: the file has no labels.
    require_y : bool, default=True
        When False, a file without labels gives ``y=None`` (for prediction).
    header : {"auto", "yes", "no"}, default="auto"
        CSV: whether the first row holds column names (see the module notes).
    delimiter : str, optional
        CSV field separator (default: tab for .tsv, else comma).
    n_features : int, optional
        With ``require_y=False``: the features a model expects, so that a label
        column is dropped only when the file has one more column than that.

    Raises
    ------
    DataError
        With a one-line message naming the problem (and row and column of a
        non-numeric cell).
    """
    table = read_table(
        path,
        label_column,
        require_y,
        header=header,
        delimiter=delimiter,
        n_features=n_features,
    )
    return table.X, table.y


def read_table(
    path: str | os.PathLike,
    label_column: str | int | None = None,
    require_y: bool = True,
    *,
    header: str = "auto",
    delimiter: str | None = None,
    n_features: int | None = None,
) -> Table:
    """:func:`load_dataset`, returning a :class:`Table` (feature names and notes
    too)."""
    if header not in HEADER_MODES:
        raise DataError(f"header must be one of {HEADER_MODES}, got {header!r}")
    if delimiter is not None and len(delimiter) != 1:
        raise DataError(f"the delimiter must be one character, got {delimiter!r}")
    spec = _LabelSpec(label_column, require_y, n_features)
    if str(path) == "-":
        data = sys.stdin.buffer.read()
        name = "<stdin>"
        if data.startswith(b"PK\x03\x04"):
            return _load_npz(io.BytesIO(data), name, require_y)
        if data.startswith(b"PAR1"):
            return _load_parquet(io.BytesIO(data), name, spec)
        return _load_csv(data, name, spec, header, delimiter or ",")
    path = Path(path)
    name = repr(str(path))
    if not path.exists():
        raise DataError(f"data file {name} does not exist")
    if path.is_dir():
        raise DataError(f"data path {name} is a directory")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _load_npz(path, name, require_y)
    if suffix in _PARQUET_SUFFIXES:
        return _load_parquet(path, name, spec)
    if suffix in _CSV_SUFFIXES:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read {name}: {exc}") from None
        return _load_csv(data, name, spec, header, delimiter or _CSV_SUFFIXES[suffix])
    raise DataError(
        f"unsupported data file {name}: expected .npz, .csv, .tsv or .parquet "
        "(or - for standard input)"
    )


def _text(data: bytes) -> io.TextIOWrapper:
    """A text stream over ``data``, decoded as it is read (no copy of the whole)."""
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline="")


# --------------------------------------------------------------------- npz
def _load_npz(source: Any, name: str, require_y: bool) -> Table:
    try:
        with np.load(source, allow_pickle=False) as npz:
            if not hasattr(npz, "files"):
                raise DataError(f"{name} is a bare .npy array, expected .npz")
            if "X" not in npz.files:
                raise DataError(
                    f"{name} has arrays {sorted(npz.files)}; expected 'X' and 'y'"
                )
            X = npz["X"]
            y = npz["y"] if "y" in npz.files else None
            names = npz["feature_names"] if "feature_names" in npz.files else None
    except DataError:
        raise
    except ValueError as exc:
        raise DataError(f"cannot read {name}: {exc}") from None
    except Exception as exc:  # zip errors, truncation
        raise DataError(f"cannot read {name}: {type(exc).__name__}: {exc}") from None
    for key, a in (("X", X), ("y", y), ("feature_names", names)):
        if a is not None and not isinstance(a, np.ndarray):  # np.load: raw bytes
            raise DataError(f"{name}: member {key!r} is not a .npy array")
    if y is None and require_y:
        raise DataError(f"{name} has no array 'y' (labels)")
    if X.dtype.kind not in "biuf":
        raise DataError(f"{name}: X must be numeric, got dtype {X.dtype}")
    if X.ndim != 2:
        raise DataError(f"{name}: X must be 2-D (rows, features), got shape {X.shape}")
    if X.shape[0] == 0:
        raise DataError(f"{name}: X has no rows")
    if X.shape[1] == 0:
        raise DataError(f"{name}: X has no feature columns")
    if y is not None:
        if y.ndim not in (1, 2):
            raise DataError(f"{name}: y must be 1-D or 2-D, got shape {y.shape}")
        if y.shape[0] != X.shape[0]:
            raise DataError(f"{name}: X has {X.shape[0]} rows but y has {y.shape[0]}")
        y = _finite_labels(y, name)
    feature_names = None
    if names is not None and X.ndim == 2 and names.shape == (X.shape[1],):
        feature_names = [str(v) for v in names]
    return Table(X, y, feature_names)


# ----------------------------------------------------------------- labels
class _LabelSpec:
    """Which column holds the labels, once the columns are known."""

    def __init__(self, label_column: Any, require_y: bool, n_features: int | None):
        if isinstance(label_column, str) and label_column.strip().lower() == "none":
            if require_y:
                raise DataError("labels are needed, but the label column is 'none'")
            label_column = "none"
        self.column = label_column
        self.require_y = require_y
        self.n_features = n_features

    def resolve(self, names: list[str], has_header: bool, name: str) -> int | None:
        """The label's position among ``names`` (None: no label column)."""
        width = len(names)
        if self.column == "none":
            return None
        if self.column is None:
            if self.require_y or self.n_features is None:
                return width - 1 if self.require_y else None
            if width == self.n_features:
                return None
            if width == self.n_features + 1:
                return width - 1
            raise DataError(
                f"{name} has {width} columns; the model expects {self.n_features} "
                "features (plus, optionally, the label column last)"
            )
        if has_header and str(self.column) in names:
            if names.count(str(self.column)) > 1:
                where = [i for i, n in enumerate(names) if n == str(self.column)]
                raise DataError(
                    f"label column {self.column!r} is ambiguous in {name}: columns "
                    f"{where} have that name; pass its 0-based index instead"
                )
            return names.index(str(self.column))
        try:
            idx = int(self.column)
        except (TypeError, ValueError):
            raise DataError(
                f"label column {self.column!r} not found in {name}; columns are {names}"
            ) from None
        if not -width <= idx < width:
            raise DataError(
                f"label column index {idx} is out of range for {width} columns in "
                f"{name}"
            )
        return idx % width


def _labels(values: np.ndarray, name: str) -> np.ndarray:
    """Integer labels when all are integers, floats when all numeric, else strings
    (stripped). A missing (None, NaN, NA) or infinite label is refused, naming its
    row: as text it would become a class of its own ("None", "<NA>")."""
    if values.dtype.kind == "O":
        missing = _missing(values)
        if missing.any():
            row = int(np.argmax(missing)) + 1
            raise DataError(f"{name} row {row}: the label is missing")
    if values.dtype.kind not in "biuf":
        text = np.char.strip(np.asarray(values, dtype=str))
        if (text == "").any():
            row = int(np.argmax(text == "")) + 1
            raise DataError(f"{name} row {row}: the label is empty")
        for kind in (np.int64, np.float64):
            try:
                values = text.astype(kind)
                break
            except (ValueError, OverflowError):
                pass
        else:
            return text
    return _finite_labels(values, name)


def _finite_labels(values: np.ndarray, name: str) -> np.ndarray:
    """``values`` unchanged, or DataError naming the first row whose float label is
    NaN (missing) or infinite."""
    if values.dtype.kind == "f":
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.argwhere(bad)[0][0])
            v = values[i] if values.ndim == 1 else values[i][~np.isfinite(values[i])][0]
            what = "missing" if np.isnan(v) else f"not finite ({v})"
            raise DataError(f"{name} row {i + 1}: the label is {what}")
    return values


def _missing(values: np.ndarray) -> np.ndarray:
    """Which cells of a 1-D object array are None, NaN or pandas' NA / NaT."""
    try:
        import pandas as pd
    except ImportError:
        return np.array([v is None or v != v for v in values], dtype=bool)
    return np.asarray(pd.isna(values), dtype=bool)


# -------------------------------------------------------------------- CSV
def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _first_rows(data: bytes, delimiter: str, name: str, k: int = 2) -> list[list[str]]:
    rows = []
    try:
        for row in csv.reader(_text(data), delimiter=delimiter):
            if row and any(c.strip() for c in row):
                rows.append([c.strip() for c in row])
                if len(rows) == k:
                    break
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {name}: {exc}") from None
    return rows


def _has_header(rows: list[list[str]], mode: str, name: str) -> tuple[bool, str | None]:
    """Whether the first row is a header, and a note when that was a guess from
    numbers."""
    if mode != "auto":
        return mode == "yes", None
    first = rows[0]
    numeric = [_is_number(c) for c in first]
    if len(rows) == 1:
        return not all(numeric), None
    below = [_is_number(c) for c in rows[1]]
    if any(b and not a for a, b in zip(numeric, below, strict=False)):
        return True, None
    if len(first) >= 3 and first == [str(i) for i in range(len(first))]:
        return True, (
            f"the first row of {name} ({first[0]}, {first[1]}, ..., {first[-1]}) is "
            "read as column names (pandas writes integer column names so); pass "
            "--header no (header='no') to read it as data"
        )
    return False, None


def _load_csv(data: bytes, name: str, spec: _LabelSpec, header: str, sep: str) -> Table:
    rows = _first_rows(data, sep, name)
    if not rows:
        raise DataError(f"{name} is empty")
    has_header, note = _has_header(rows, header, name)
    notes = [note] if note else []
    width = len(rows[0])
    names = rows[0] if has_header else [str(i) for i in range(width)]
    if has_header and len(rows) == 1:
        raise DataError(f"{name} has a header but no data rows")
    try:
        import pandas  # noqa: F401
    except ImportError:
        columns = _NumpyColumns(data, sep, has_header, width, name)
    else:
        columns = _PandasColumns(data, sep, has_header, width, name)
    index_dropped = (
        has_header
        and names[0] in ("", "Unnamed: 0")
        and width > 1
        and columns.is_unique_integers(0)
    )
    first_col = 0
    if index_dropped:
        notes.append(
            f"{name}: the unnamed first column holds distinct integers (an index, "
            "as DataFrame.to_csv() writes it) and is dropped"
        )
        first_col = 1
    kept = list(range(first_col, width))
    kept_names = [names[i] for i in kept]
    label = spec.resolve(kept_names, has_header, name)
    feature_cols = [c for i, c in enumerate(kept) if i != label]
    if not feature_cols:
        hint = ""
        if width == 1:  # one column: often another separator than the one used
            seps = [c for c in ";\t|," if c != sep and c in rows[0][0]]
            if seps:
                hint = (
                    f" (its rows hold {seps[0]!r}: pass --delimiter {seps[0]!r}, "
                    f"delimiter={seps[0]!r})"
                )
        raise DataError(f"{name} has no feature columns besides the labels{hint}")
    X = columns.features(feature_cols, names)
    y = None if label is None else _labels(columns.labels(kept[label]), name)
    for message in notes:
        _log.warning(message)
    return Table(X, y, [names[c] for c in feature_cols] if has_header else None, notes)


def _bad_cell(name: str, row: int, column: str, value: Any) -> DataError:
    if isinstance(value, float) and np.isinf(value):
        what = f"an infinite value ({value})"
    elif str(value).strip() in ("", "nan"):
        what = "an empty (or NaN) cell"
    else:
        what = f"non-numeric value {value!r}"
    return DataError(f"{name} row {row}, column {column!r}: {what}")


class _PandasColumns:
    """The CSV parsed by pandas' C reader, every column at once."""

    def __init__(self, data, sep, has_header, width, name):
        import pandas as pd

        self.name, self.data, self.sep = name, data, sep
        self.skip, self.width = (1 if has_header else 0), width
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", pd.errors.ParserWarning)
                self.df = pd.read_csv(
                    io.BytesIO(data),
                    encoding="utf-8-sig",
                    sep=sep,
                    header=0 if has_header else None,
                    index_col=False,
                    skipinitialspace=True,
                    skip_blank_lines=True,
                    low_memory=False,
                )
        except (pd.errors.ParserError, pd.errors.ParserWarning) as exc:
            message = " ".join(str(exc).split())
            raise DataError(f"cannot read {name}: {message}") from None
        except (ValueError, pd.errors.EmptyDataError) as exc:  # incl. bad UTF-8
            raise DataError(f"cannot read {name}: {exc}") from None
        if self.df.shape[1] != width:
            raise DataError(
                f"{name}: rows have {self.df.shape[1]} columns, the first has {width}"
            )

    def _short_row(self, i: int) -> None:
        """Raise when data row ``i`` (0-based) has too few cells: pandas pads it with
        NaN (only called for a row with a missing value)."""
        rows = (r for r in csv.reader(_text(self.data), delimiter=self.sep) if r)
        for k, row in enumerate(rows):
            if k == i + self.skip and len(row) < self.width:
                raise DataError(
                    f"{self.name} row {i + 1} has {len(row)} columns, expected "
                    f"{self.width}"
                )
            if k > i + self.skip:
                return

    def is_unique_integers(self, col: int) -> bool:
        values = self.df.iloc[:, col]
        if not np.issubdtype(values.dtype, np.integer):
            return False
        return bool(values.is_unique)

    def features(self, cols: list[int], names: list[str]) -> np.ndarray:
        import pandas as pd

        frame = self.df.iloc[:, cols]
        for j, col in enumerate(cols):
            values = frame.iloc[:, j]
            if not pd.api.types.is_numeric_dtype(values.dtype):
                numbers = pd.to_numeric(values, errors="coerce")
                bad = np.flatnonzero(numbers.isna().to_numpy())
                if bad.size:
                    i = int(bad[0])
                    raise _bad_cell(self.name, i + 1, names[col], values.iloc[i])
        X = frame.apply(pd.to_numeric).to_numpy(dtype=np.float64)
        missing = np.isnan(X)
        if missing.any():
            self._short_row(int(np.argwhere(missing)[0][0]))
        _check_missing(X, cols, names, self.name)
        return X

    def labels(self, col: int) -> np.ndarray:
        values = self.df.iloc[:, col]
        if values.isna().any():
            row = int(np.flatnonzero(values.isna().to_numpy())[0])
            self._short_row(row)
            raise DataError(f"{self.name} row {row + 1}: the label is empty")
        return values.to_numpy()


class _NumpyColumns:
    """The CSV parsed by numpy.loadtxt (pandas not installed)."""

    # numpy's messages: the row is 0-based in the first, 1-based in the second
    _CELL = re.compile(
        r"could not convert string '(.*)' to \w+ at row (\d+), column (\d+)"
    )
    _SHORT = re.compile(r"at row (\d+) with (\d+) columns")

    def __init__(self, data, sep, has_header, width, name):
        self.data, self.sep, self.name, self.width = data, sep, name, width
        self.skip = 1 if has_header else 0
        self._cache: dict[int, np.ndarray] = {}

    def _load(self, cols: list[int], dtype, names: list[str] | None) -> np.ndarray:
        try:
            return np.loadtxt(
                _text(self.data),
                delimiter=self.sep,
                skiprows=self.skip,
                usecols=cols,
                dtype=dtype,
                ndmin=2,
                comments=None,
                quotechar='"',
                encoding=None,
            )
        except ValueError as exc:
            found = self._CELL.search(str(exc))
            if found and names is not None:
                value, row, col = found.groups()
                column = names[cols[int(col) - 1]]
                raise _bad_cell(self.name, int(row) + 1, column, value) from None
            short = self._SHORT.search(str(exc))
            if short:
                row, n = short.groups()
                raise DataError(
                    f"{self.name} row {row} has {n} columns, expected {self.width}"
                ) from None
            message = " ".join(str(exc).split())
            raise DataError(f"cannot read {self.name}: {message}") from None

    def is_unique_integers(self, col: int) -> bool:
        try:
            values = self._load([col], np.float64, None)[:, 0]
        except DataError:
            return False
        whole = np.all(np.isfinite(values)) and np.all(values == np.round(values))
        return bool(whole and np.unique(values).size == values.size)

    def features(self, cols: list[int], names: list[str]) -> np.ndarray:
        X = self._load(cols, np.float64, names)
        _check_missing(X, cols, names, self.name)
        return X

    def labels(self, col: int) -> np.ndarray:
        return self._load([col], str, None)[:, 0]


def _check_missing(X: np.ndarray, cols: list[int], names: list[str], name: str):
    """DataError naming the first empty (NaN) or infinite cell."""
    bad = ~np.isfinite(X)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        value = "" if np.isnan(X[i, j]) else float(X[i, j])
        raise _bad_cell(name, int(i) + 1, names[cols[j]], value)


# ---------------------------------------------------------------- Parquet
def _load_parquet(source: Any, name: str, spec: _LabelSpec) -> Table:
    try:
        import pandas as pd
        import pyarrow  # noqa: F401
    except ImportError:
        raise DataError(
            f"reading Parquet ({name}) needs pandas and pyarrow: pip install pandas "
            "pyarrow"
        ) from None
    try:
        df = pd.read_parquet(source)
    except Exception as exc:  # pyarrow's errors: not Parquet, truncated
        raise DataError(f"cannot read {name}: {type(exc).__name__}: {exc}") from None
    names = [str(c) for c in df.columns]
    label = spec.resolve(names, True, name)
    cols = [i for i in range(len(names)) if i != label]
    if not cols:
        raise DataError(f"{name} has no feature columns besides the labels")
    for col in cols:
        if not pd.api.types.is_numeric_dtype(df.iloc[:, col].dtype):
            raise DataError(
                f"{name}: column {names[col]!r} is not numeric "
                f"({df.iloc[:, col].dtype})"
            )
    X = df.iloc[:, cols].to_numpy(dtype=np.float64)
    _check_missing(X, cols, names, name)
    y = None if label is None else _labels(df.iloc[:, label].to_numpy(), name)
    return Table(X, y, [names[c] for c in cols])
