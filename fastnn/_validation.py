"""Input validation with scikit-learn's conventions and wording (REFERENCE.md §2).

Inputs are never modified: conversions copy only when the dtype or memory layout
must change, and the converted array is only ever read.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def check_X(X: Any, dtype: np.dtype, owner: str = "the model") -> np.ndarray:
    """Return ``X`` as a finite, non-empty, C-contiguous 2-D array of ``dtype``.

    Raises ValueError (TypeError for sparse input) with scikit-learn's messages.
    """
    if hasattr(X, "toarray") and hasattr(X, "nnz"):
        raise TypeError(
            "Sparse data was passed, but dense data is required. Use '.toarray()' "
            "to convert to a dense numpy array."
        )
    try:
        arr = np.asarray(X)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"Input X could not be converted to an array: {exc}") from None
    if arr.ndim == 0:
        raise ValueError(
            f"Expected 2D array, got scalar array instead: array={arr!r}. Reshape "
            "your data either using array.reshape(-1, 1) if your data has a single "
            "feature or array.reshape(1, -1) if it contains a single sample."
        )
    if arr.ndim == 1:
        raise ValueError(
            "Expected 2D array, got 1D array instead. Reshape your data either "
            "using array.reshape(-1, 1) if your data has a single feature or "
            "array.reshape(1, -1) if it contains a single sample."
        )
    if arr.ndim > 2:
        raise ValueError(f"Found array with dim {arr.ndim}. {owner} expected <= 2.")
    if arr.dtype.kind == "c":
        raise ValueError("Complex data not supported")
    if arr.dtype.kind in "mM":  # astype(float64) would give counts of time units
        raise ValueError(
            f"Input X must be numeric, got dtype {arr.dtype}: convert dates and "
            "durations to numbers first"
        )
    if arr.dtype.kind not in "biuf":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"Input X must be numeric: {exc}") from None
        except OverflowError as exc:  # a Python int beyond float64
            raise ValueError(f"Input X holds a number too large: {exc}") from None
    n, d = arr.shape
    if n == 0:
        raise ValueError(
            f"Found array with 0 sample(s) (shape={arr.shape}) while a minimum of 1 "
            f"is required by {owner}."
        )
    if d == 0:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={arr.shape}) while a minimum of 1 "
            f"is required by {owner}."
        )
    if arr.dtype.kind == "f":
        _check_finite(arr, arr.dtype)  # before the cast: name NaN as NaN
    with np.errstate(over="ignore"):
        out = np.ascontiguousarray(arr, dtype=dtype)
    if out is not arr and arr.dtype.kind == "f" and out.dtype.itemsize < arr.itemsize:
        _check_finite(out, out.dtype)  # float64 -> float32 overflow gives inf
    return out


#: Up to this size all_finite checks each element: the sum's errstate block and
#: pairwise-sum set-up cost ~4 us, more than the element check of 200x784 float32
#: (docs/performance.md); the sum wins on arrays that stream from memory.
_ELEMENT_CHECK_BYTES = 1 << 20


def all_finite(a: np.ndarray) -> bool:
    """Whether float array ``a`` holds no NaN or infinity, by one cheap reduction.

    A finite sum proves every element finite (NaN and inf propagate); False may also
    mean large finite values whose sum overflowed: the caller tells them apart. In
    ``a``'s own dtype: a float32 sum without the cast to float64 is over twice as
    fast (docs/performance.md). Not float16: its sum overflows past 65504 (90,000
    values of 1), and the slow path would then run on nearly every X; summed in
    float64 it never overflows.
    """
    if a.nbytes <= _ELEMENT_CHECK_BYTES:
        return bool(np.isfinite(a).all())
    wide = np.float64 if a.dtype.itemsize < 4 else None
    with np.errstate(over="ignore", invalid="ignore"):  # 1e308 + 1e308: no warning
        return bool(np.isfinite(np.sum(a, dtype=wide)))


def _check_finite(a: np.ndarray, dtype: np.dtype) -> None:
    if all_finite(a):
        return
    if np.isnan(a).any():
        raise ValueError("Input X contains NaN.")
    if np.isinf(a).any():
        raise ValueError(
            f"Input X contains infinity or a value too large for {np.dtype(dtype)!r}."
        )


def check_n_features(X: np.ndarray, expected: int, owner: str) -> None:
    """ValueError when X's width differs from the width seen at fit."""
    if X.shape[1] != expected:
        raise ValueError(
            f"X has {X.shape[1]} features, but {owner} is expecting {expected} "
            "features as input."
        )


def check_y(y: Any, n_samples: int) -> np.ndarray:
    """Return classification targets as a 1-D array of length ``n_samples``."""
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr.ravel()  # column vector, as scikit-learn accepts (with a warning)
    if arr.ndim != 1:
        raise ValueError(
            f"y should be a 1d array, got an array of shape {arr.shape} instead."
        )
    if arr.shape[0] != n_samples:
        raise ValueError(
            "Found input variables with inconsistent numbers of samples: "
            f"[{n_samples}, {arr.shape[0]}]"
        )
    if arr.size and arr.dtype.kind in "biu":
        return arr  # 1-D integers or booleans: type_of_target says binary/multiclass
    # imported late: a slow import (~1.3 s), skipped for integer labels
    from sklearn.utils.multiclass import type_of_target

    try:
        kind = type_of_target(arr, input_name="y")
    except TypeError as exc:  # np.unique of e.g. str and None: "'<' not supported"
        raise ValueError(f"labels must be mutually comparable: {exc}") from None
    if kind not in ("binary", "multiclass"):
        raise ValueError(
            f"Unknown label type: {kind}. Maybe you are trying to fit a classifier, "
            "which expects discrete classes on a regression problem with continuous "
            "values."
        )
    return arr


def check_targets(y: Any, n_samples: int, n_outputs: int) -> np.ndarray:
    """Return regression targets: finite floats of shape (n,) or (n, n_outputs).

    A 1-D y is one target per row and needs a model with one output.
    """
    arr = np.asarray(y)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"regression targets y must be numeric, got dtype {arr.dtype}")
    if arr.ndim not in (1, 2):
        raise ValueError(
            f"y must have shape (n_samples,) or (n_samples, n_outputs), got {arr.shape}"
        )
    if arr.shape[0] != n_samples:
        raise ValueError(
            "Found input variables with inconsistent numbers of samples: "
            f"[{n_samples}, {arr.shape[0]}]"
        )
    width = 1 if arr.ndim == 1 else arr.shape[1]
    if width != n_outputs:
        shape = "(n_samples,)" if arr.ndim == 1 else f"(n_samples, {width})"
        raise ValueError(
            f"y of shape {shape} has {width} target(s) per row but the model has "
            f"{n_outputs} outputs; the last Linear's out_features must equal the "
            "number of targets"
        )
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError("Input y contains NaN or infinity.")
    return arr


def check_sample_weight(sample_weight: Any, n_samples: int) -> np.ndarray:
    """Return finite, non-negative float64 sample weights of length ``n_samples``."""
    sw = np.asarray(sample_weight)
    if sw.ndim == 0:
        sw = np.full(n_samples, sw)
    if sw.ndim != 1 or sw.shape[0] != n_samples:
        raise ValueError(f"sample_weight.shape == {sw.shape}, expected ({n_samples},)!")
    try:
        sw = sw.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError("sample_weight must be numeric") from None
    if not np.isfinite(sw).all():
        raise ValueError("Input sample_weight contains NaN or infinity.")
    if (sw < 0).any():
        raise ValueError("Negative values in data passed to sample_weight")
    return sw


def weights_in_dtype(w: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Checked weights as an aligned copy in ``dtype``: ValueError when one is too
    large for it (cast, it would be inf: NaN losses, then "training diverged")."""
    from ._buffers import aligned_copy

    with np.errstate(over="ignore"):
        out = aligned_copy(w, dtype)
    if not np.isfinite(out).all():
        raise ValueError(
            f"sample_weight (times class_weight) holds values too large for "
            f"{np.dtype(dtype).name}: scale the weights down (only their ratios "
            "matter)"
        )
    return out


def check_int(name: str, value: Any, low: int) -> int:
    """An int (not a bool) >= low, else ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)
