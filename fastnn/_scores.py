"""Confidence scores of logits: pure NumPy, shared by the model and calibration."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["check_temperature", "confidence_from_logits", "logsumexp_rows"]


def logsumexp_rows(z: np.ndarray) -> np.ndarray:
    """Max-shifted log-sum-exp of each row of a 2-D float array (float64)."""
    z = np.asarray(z, dtype=np.float64)
    m = z.max(axis=1)
    shift = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(over="ignore", invalid="ignore"):
        return shift + np.log(np.exp(z - shift[:, None]).sum(axis=1))


def check_temperature(temperature: Any) -> float:
    try:
        t = float(temperature)
    except (TypeError, ValueError):
        raise TypeError(
            f"temperature must be a real number, got {temperature!r}"
        ) from None
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"temperature must be finite and > 0, got {temperature!r}")
    return t


def confidence_from_logits(
    logits: Any, temperature: float = 1.0
) -> dict[str, np.ndarray]:
    """The confidence scores of each row of ``logits`` (see :func:`confidence`).

    Parameters
    ----------
    logits : array-like of shape (n_samples, n_classes)
    temperature : float, default=1.0
        The logits are divided by it first.

    Returns
    -------
    dict of str to ndarray of shape (n_samples,), float64
        ``max_softmax``, ``entropy``, ``energy``, ``margin``.
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] < 1:
        raise ValueError(f"logits must be 2-D with >= 1 column, got shape {z.shape}")
    t = check_temperature(temperature)
    z = z / t
    lse = logsumexp_rows(z)
    with np.errstate(invalid="ignore"):
        logp = z - lse[:, None]
    p = np.exp(logp)
    # 0 log 0 = 0; NaN (from NaN or +inf logits) stays NaN, never a "certain" 0
    with np.errstate(invalid="ignore"):
        plogp = np.where(p == 0, 0.0, p * logp)
    if z.shape[1] >= 2:
        top2 = np.partition(p, z.shape[1] - 2, axis=1)[:, -2:]
        margin = top2[:, 1] - top2[:, 0]
    else:
        margin = p[:, 0].copy()
    return {
        "max_softmax": p.max(axis=1),
        "entropy": 0.0 - plogp.sum(axis=1),  # +0.0 for a certain row, not -0.0
        "energy": -t * lse,
        "margin": margin,
    }
