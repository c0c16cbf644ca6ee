"""Shared plumbing of :mod:`fastnn.explain` and :mod:`fastnn.calibration`.

Both work on a fitted :class:`fastnn.Sequential`. A fitted
:class:`fastnn.MLPClassifier` (multiclass or binary) is accepted too: a multiclass one
is its own Sequential; a binary one's weights are copied into an equivalent Sequential
whose two logits give the same probabilities.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import write_atomic
from .layers import Linear, activation_layer
from .model import NotFittedError, Sequential


def as_sequential(model: Any, what: str = "this function") -> Sequential:
    """The fitted Sequential behind ``model`` (a Sequential or an MLPClassifier)."""
    if isinstance(model, Sequential):
        if model.is_regressor:
            raise TypeError(
                f"{what} works on classifiers (their class probabilities); this "
                f"model is a regressor (loss {model.loss!r})"
            )
        model._require_fitted()
        return model
    est = sys.modules.get("fastnn.estimator")
    if est is not None and isinstance(model, est.MLPClassifier):
        return _from_estimator(model)
    cal = sys.modules.get("fastnn.calibration")
    if cal is not None and isinstance(model, cal.TemperatureScaled):
        raise TypeError(
            f"{what} works on the model itself: pass the wrapped model "
            "(TemperatureScaled.model)"
        )
    raise TypeError(
        f"{what} needs a fitted fastnn.Sequential, MLP or MLPClassifier, got "
        f"{type(model).__name__}"
    )


def _from_estimator(est: Any) -> Sequential:
    """An MLPClassifier's network as a Sequential with softmax-equivalent logits.

    A multiclass estimator's own Sequential is that already. A binary estimator has
    one logistic output unit z; a copy gets the two centred logits (-z/2, z/2),
    whose softmax is (1 - sigmoid(z), sigmoid(z)), as its ``predict_proba``. Centred,
    neither class's logit is a constant (whose input gradient would be 0 on every
    row) and the energy score does not depend on which class a row is given to.
    """
    if not hasattr(est, "coefs_"):
        raise NotFittedError(
            "This MLPClassifier instance is not fitted yet. Call 'fit' with "
            "appropriate arguments before using this model."
        )
    if est.out_activation_ == "softmax":  # the model's logits are the softmax's
        return est._model
    if est.n_outputs_ != 1:
        raise ValueError("multilabel MLPClassifier models are not supported")
    coefs = [np.asarray(c) for c in est.coefs_]
    intercepts = [np.asarray(b) for b in est.intercepts_]
    # softmax(-z/2, z/2) = (1 - sigmoid(z), sigmoid(z)) (halving is exact)
    coefs[-1] = np.hstack([-0.5 * coefs[-1], 0.5 * coefs[-1]])
    intercepts[-1] = np.concatenate([-0.5 * intercepts[-1], 0.5 * intercepts[-1]])
    layers = []
    for i, c in enumerate(coefs):
        layers.append(Linear(c.shape[0], c.shape[1]))
        if i < len(coefs) - 1:
            layers.append(activation_layer(est.activation))
    dtype = coefs[0].dtype if coefs[0].dtype in (np.float32, np.float64) else None
    model = Sequential(
        layers,
        dtype=dtype if dtype is not None else np.float64,
        backend=est.backend,
        n_threads=est.n_threads,
    )
    for lin, c, b in zip(model.linears, coefs, intercepts, strict=True):
        lin.weight[...] = c
        lin.bias[...] = b
    model._initialized = True
    model.classes_ = np.asarray(est.classes_)
    return model


def new_figure(*args: Any, **kwargs: Any) -> Any:
    """A matplotlib Figure not tied to pyplot (so no global backend is touched)."""
    from matplotlib.figure import Figure

    return Figure(*args, **kwargs)


def write_figure(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Save a figure as PNG atomically (a temp file beside ``path``, then a rename)."""
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    write_atomic(path, lambda f: f.write(buf.getvalue()))
    return path
