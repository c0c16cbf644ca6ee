"""What the scikit-learn estimators need from scikit-learn, for every version declared.

Only public scikit-learn API is imported, plus one bridge: ``validate_data`` became a
public function in scikit-learn 1.6; before, the same work was the estimator method
``BaseEstimator._validate_data``, which is what the fallback calls (CI tests the
lowest declared version). Helpers scikit-learn keeps private (parameter constraints,
``_check_sample_weight``, ``_check_partial_fit_first_call``,
``_check_optimize_result``) are small and written out here.
"""

from __future__ import annotations

import math
import warnings
from numbers import Integral, Real
from typing import Any

import numpy as np
import sklearn
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_array
from sklearn.utils.multiclass import unique_labels

from ._validation import all_finite

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data
except ImportError:  # pragma: no cover - exercised by CI's lowest-version run

    def validate_data(estimator: Any, *args: Any, **kwargs: Any) -> Any:
        """scikit-learn < 1.6: the estimator method that became validate_data."""
        return estimator._validate_data(*args, **kwargs)


def validate_predict_X(estimator: Any, X: Any) -> Any:
    """``validate_data(estimator, X, accept_sparse=["csr", "csc"], reset=False)``
    for inference, without scikit-learn's generic checks where they cannot object.

    A plain 2-D float ndarray of the fitted width, finite, given to an estimator
    fitted without feature names is what ``validate_data`` would return unchanged;
    its checks cost more than a small batch's forward pass (~100 us a call under
    scikit-learn 1.9: docs/performance.md). Anything else (lists, other dtypes,
    sparse, subclasses, another width, NaN or infinity, feature names) goes through
    ``validate_data``, so every error, warning and ``set_config`` option is
    scikit-learn's own.
    """
    if (
        type(X) is np.ndarray
        and X.ndim == 2
        and X.dtype.kind == "f"
        and X.shape[0] > 0
        and X.shape[1] == getattr(estimator, "n_features_in_", None)
        and not hasattr(estimator, "feature_names_in_")
        and all_finite(X)
    ):
        return X
    return validate_data(estimator, X, accept_sparse=["csr", "csc"], reset=False)


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


#: scikit-learn >= 1.6 reads ``__sklearn_tags__``; older versions ``_more_tags``.
NEW_TAGS = _version(sklearn.__version__) >= (1, 6)


# ------------------------------------------------------------ parameter checks
def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


class Interval:
    """A numeric range (``kind`` "int" or "real"); ``closed`` as scikit-learn's."""

    def __init__(self, kind: str, low: float | None, high: float | None, closed: str):
        self.kind, self.low, self.high, self.closed = kind, low, high, closed

    def accepts(self, value: Any) -> bool:
        if not (_is_int(value) if self.kind == "int" else _is_real(value)):
            return False
        if isinstance(value, float) and math.isnan(value):
            return False
        left = self.closed in ("left", "both")
        right = self.closed in ("right", "both")
        if self.low is not None and (
            value < self.low or (not left and value == self.low)
        ):
            return False
        if self.high is not None and (
            value > self.high or (not right and value == self.high)
        ):
            return False
        return True

    def __str__(self) -> str:
        kind = "an int" if self.kind == "int" else "a float"
        lo = "[" if self.closed in ("left", "both") else "("
        hi = "]" if self.closed in ("right", "both") else ")"
        low = "-inf" if self.low is None else self.low
        high = "inf" if self.high is None else self.high
        return f"{kind} in the range {lo}{low}, {high}{hi}"


def check_params(estimator: Any, constraints: dict[str, list[Any]]) -> None:
    """ValueError naming the first parameter that none of its constraints accept.

    A constraint is an :class:`Interval`, a set of allowed values (strings, or
    ``np.inf``), a type, None, or one of "boolean", "verbose", "random_state",
    "array-like".
    """
    name = type(estimator).__name__
    for key, options in constraints.items():
        value = getattr(estimator, key)
        if any(_accepts(option, value) for option in options):
            continue
        wanted = " or ".join(_describe(option) for option in options)
        raise ValueError(
            f"The {key!r} parameter of {name} must be {wanted}. Got {value!r} instead."
        )


def _accepts(option: Any, value: Any) -> bool:
    if option is None:
        return value is None
    if isinstance(option, Interval):
        return option.accepts(value)
    if isinstance(option, (set, frozenset)):
        try:
            return value in option and (_is_real(value) or isinstance(value, str))
        except TypeError:
            return False
    if isinstance(option, type):
        return isinstance(value, option)
    if option == "boolean":
        return isinstance(value, (bool, np.bool_))
    if option == "verbose":
        return isinstance(value, (bool, np.bool_)) or _is_int(value)
    if option == "random_state":
        return (
            value is None or _is_int(value) or isinstance(value, np.random.RandomState)
        )
    if option == "array-like":
        return not isinstance(value, (str, bytes)) and (
            hasattr(value, "__len__") or hasattr(value, "__array__")
        )
    raise AssertionError(f"unknown constraint {option!r}")


def _describe(option: Any) -> str:
    if option is None:
        return "None"
    if isinstance(option, (set, frozenset)):
        return "one of " + ", ".join(sorted(repr(v) for v in option))
    if isinstance(option, type):
        return f"an instance of {option.__name__!r}"
    if option == "random_state":
        return "an int, a numpy.random.RandomState instance or None"
    words = {
        "boolean": "a bool",
        "verbose": "a bool or an int",
        "array-like": "array-like",
    }
    return words.get(option, str(option))


# ------------------------------------------------------------------ fit helpers
def check_sample_weight(sample_weight: Any, X: Any, dtype: Any) -> np.ndarray:
    """``sample_weight`` as a 1-D finite array of ``X``'s length (a copy); a
    scalar weighs every row alike. All zero is an error."""
    n = X.shape[0]
    if isinstance(sample_weight, Real):
        sample_weight = np.full(n, sample_weight, dtype=dtype)
    sw = check_array(
        sample_weight,
        accept_sparse=False,
        ensure_2d=False,
        dtype=dtype,
        order="C",
        copy=True,
        input_name="sample_weight",
    )
    if sw.ndim != 1:
        raise ValueError(
            f"Sample weights must be 1D array or scalar, got {sw.ndim}D array. "
            f"Expected either a scalar value or a 1D array of length {n}."
        )
    if sw.shape != (n,):
        raise ValueError(f"sample_weight.shape == {sw.shape}, expected {(n,)}!")
    if not np.any(sw):
        raise ValueError("Sample weights must contain at least one non-zero number.")
    return sw


def partial_fit_first_call(estimator: Any, classes: Any) -> bool:
    """True on the first partial_fit call (``classes_`` then set from ``classes``);
    ValueError when ``classes`` is missing there or differs later."""
    seen = getattr(estimator, "classes_", None)
    if seen is None and classes is None:
        raise ValueError("classes must be passed on the first call to partial_fit.")
    if classes is None:
        return False
    if seen is not None:
        if not np.array_equal(seen, unique_labels(classes)):
            raise ValueError(
                f"`classes={classes!r}` is not the same as on last call "
                f"to partial_fit, was: {seen!r}"
            )
        return False
    estimator.classes_ = unique_labels(classes)
    return True


def lbfgs_iterations(result: Any, max_iter: int) -> int:
    """Iterations of a scipy L-BFGS-B result; ConvergenceWarning when it failed."""
    if result.status != 0:
        message = result.message
        if isinstance(message, bytes):
            message = message.decode("latin1")
        warnings.warn(
            f"lbfgs failed to converge (status={result.status}):\n{message}.\n\n"
            "Increase the number of iterations (max_iter) or scale the data as "
            "shown in:\n    https://scikit-learn.org/stable/modules/"
            "preprocessing.html",
            ConvergenceWarning,
            stacklevel=3,
        )
    return min(int(result.nit), max_iter)
