"""Confidence, calibration and out-of-distribution scores of a fitted classifier.

* :func:`confidence` (also ``model.confidence(X)``): per-row maximum softmax
  probability, predictive entropy, energy and margin, from the logits of the compiled
  forward pass.
* :func:`calibrate`: temperature scaling (Guo et al., 2017). One scalar ``T`` is fitted
  on held-out data by minimising the negative log-likelihood of ``softmax(z / T)``;
  the result is a :class:`TemperatureScaled` model that wraps the original (which is
  left untouched) and divides its logits by ``T``. Predicted labels do not change.
* :func:`expected_calibration_error`, :func:`reliability_curve` and
  :func:`reliability_diagram` (a PNG) measure calibration.
* :func:`ood_scores`, :func:`auroc`, :func:`fpr_at_tpr` and :func:`ood_metrics` rate how
  well each confidence score separates in-distribution inputs from others.

Every function taking a model accepts a fitted :class:`fastnn.Sequential` / ``MLP``,
a fitted :class:`fastnn.MLPClassifier` or a :class:`TemperatureScaled` model (whose
temperature is then used unless ``temperature=`` is given).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ._insight import as_sequential, new_figure, write_figure
from ._scores import check_temperature, confidence_from_logits, logsumexp_rows
from ._validation import check_int, check_y
from .model import Sequential

__all__ = [
    "SCORES",
    "TemperatureScaled",
    "auroc",
    "calibrate",
    "confidence",
    "confidence_from_logits",
    "expected_calibration_error",
    "fpr_at_tpr",
    "ood_metrics",
    "ood_score_histograms",
    "ood_scores",
    "reliability_curve",
    "reliability_diagram",
]

#: Names of the confidence scores, in report order.
SCORES = ("max_softmax", "entropy", "energy", "margin")
# Sign that turns each score into "higher means more in-distribution".
_ORIENTATION = {"max_softmax": 1.0, "entropy": -1.0, "energy": -1.0, "margin": 1.0}


# ---------------------------------------------------------------- confidence
def _model_and_temperature(model: Any, temperature: Any) -> tuple[Sequential, float]:
    if isinstance(model, TemperatureScaled):
        t = model.temperature_ if temperature is None else temperature
        return model.model, check_temperature(t)
    seq = as_sequential(model, "this function")
    return seq, check_temperature(1.0 if temperature is None else temperature)


def confidence(
    model: Any, X: Any, *, temperature: float | None = None
) -> dict[str, np.ndarray]:
    """Per-row confidence scores of a fitted classifier.

    With logits ``z`` (from the model's compiled forward pass) divided by the
    temperature ``T`` and ``p = softmax(z / T)``:

    * ``max_softmax``: ``max_k p_k`` (in [1/K, 1]; high = confident);
    * ``entropy``: ``-sum_k p_k log p_k`` (in [0, log K], natural log; high = unsure);
    * ``energy``: ``-T logsumexp(z / T)`` (Liu et al., 2020; low = in-distribution);
    * ``margin``: ``p_(1) - p_(2)``, the gap between the two largest probabilities
      (in [0, 1]; high = confident).

    Parameters
    ----------
    model : fitted Sequential, MLPClassifier or TemperatureScaled
    X : array-like of shape (n_samples, n_features)
    temperature : float, optional
        Default: the model's fitted temperature for a :class:`TemperatureScaled`
        model, else 1.

    Returns
    -------
    dict of str to ndarray of shape (n_samples,), float64
        Keys as in :data:`SCORES`.
    """
    seq, t = _model_and_temperature(model, temperature)
    return confidence_from_logits(seq.decision_function(X), t)


# ---------------------------------------------------------- temperature scaling
class TemperatureScaled:
    """A fitted classifier whose logits are divided by a temperature.

    Built by :func:`calibrate`; wraps ``model`` without changing it. Use it where
    the model is used: ``predict_proba``, ``decision_function``, ``predict``,
    ``confidence``, ``score``, and the functions of this module.

    Parameters
    ----------
    model : fitted Sequential or MLPClassifier
    temperature : float
        ``T > 0``; ``T > 1`` softens over-confident probabilities.

    Attributes
    ----------
    model : Sequential
        The wrapped model (an MLPClassifier is converted once).
    temperature_ : float
    classes_ : ndarray
    n_features_in_ : int
    nll_before_, nll_after_ : float
        Mean negative log-likelihood on the calibration data at T = 1 and at the
        fitted T (set by :func:`calibrate`; NaN otherwise).
    """

    def __init__(self, model: Any, temperature: float) -> None:
        self.model = as_sequential(model, "TemperatureScaled")
        self.temperature_ = check_temperature(temperature)
        self.nll_before_ = math.nan
        self.nll_after_ = math.nan

    @property
    def classes_(self) -> np.ndarray:
        return self.model.classes_

    @property
    def n_features_in_(self) -> int:
        return self.model.n_features_in_

    def decision_function(self, X: Any) -> np.ndarray:
        """Logits divided by the temperature, shape (n_samples, n_classes)."""
        z = self.model.decision_function(X)
        z /= z.dtype.type(self.temperature_)
        return z

    def predict_proba(self, X: Any) -> np.ndarray:
        """``softmax(logits / T)``, shape (n_samples, n_classes)."""
        z = self.decision_function(X)
        kb = self.model._kernels()
        with self.model._threads():
            return kb.softmax(z, z)

    def predict(self, X: Any) -> np.ndarray:
        """Labels (the same as the wrapped model's: T > 0 keeps the argmax)."""
        return self.model.predict(X)

    def score(self, X: Any, y: Any) -> float:
        """Accuracy on (X, y)."""
        return self.model.score(X, y)

    def confidence(self, X: Any) -> dict[str, np.ndarray]:
        """:func:`confidence` at the fitted temperature."""
        return confidence(self.model, X, temperature=self.temperature_)

    def __repr__(self) -> str:
        return (
            f"TemperatureScaled({type(self.model).__name__}, "
            f"temperature={self.temperature_:.4g})"
        )


def _nll(z: np.ndarray, idx: np.ndarray, t: float) -> float:
    zt = z / t
    return float(np.mean(logsumexp_rows(zt) - zt[np.arange(z.shape[0]), idx]))


def _check_bounds(bounds: Any) -> tuple[float, float]:
    """(low, high) of the temperature search, 0 < low < high, both finite."""
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise TypeError(
            f"bounds must be two real numbers (low, high), got {bounds!r}"
        ) from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi):
        raise ValueError(
            f"bounds must be (low, high) with 0 < low < high, both finite; got {bounds}"
        )
    return lo, hi


def calibrate(
    model: Any,
    X_val: Any,
    y_val: Any,
    *,
    bounds: tuple[float, float] = (0.01, 100.0),
) -> TemperatureScaled:
    """Fit temperature scaling on held-out data.

    Finds the ``T`` in ``bounds`` that minimises the mean negative log-likelihood
    ``mean_i [logsumexp(z_i / T) - z_i[y_i] / T]`` of the validation set (a
    bounded 1-D search over ``log T`` in float64). Use data the model was not
    trained on: on training data an over-fitted model looks calibrated.

    Parameters
    ----------
    model : fitted Sequential, MLPClassifier or TemperatureScaled
        A TemperatureScaled model is re-fitted from its wrapped model.
    X_val : array-like of shape (n_samples, n_features)
    y_val : array-like of shape (n_samples,)
        Labels from the model's ``classes_``.
    bounds : (float, float), default=(0.01, 100.0)
        Search interval for T.

    Returns
    -------
    TemperatureScaled
        The wrapped model with ``temperature_``, ``nll_before_``, ``nll_after_``.

    Warns
    -----
    RuntimeWarning
        When the fitted ``T`` lies at a bound: the NLL still falls beyond it (at the
        lower bound: a model that classifies every validation row correctly).

    Examples
    --------
    >>> scaled = fastnn.calibrate(model, X_val, y_val)  # doctest: +SKIP
    >>> scaled.temperature_, scaled.predict_proba(X_test)  # doctest: +SKIP
    """
    from scipy.optimize import minimize_scalar

    seq = model.model if isinstance(model, TemperatureScaled) else as_sequential(model)
    lo, hi = _check_bounds(bounds)
    if y_val is None:
        raise TypeError("calibrate needs the labels y_val of X_val, got None")
    z = seq.decision_function(X_val).astype(np.float64)
    idx = seq._encode(check_y(y_val, z.shape[0]))
    res = minimize_scalar(
        lambda s: _nll(z, idx, math.exp(s)),
        bounds=(math.log(lo), math.log(hi)),
        method="bounded",
        options={"xatol": 1e-7},
    )
    t = math.exp(float(res.x))
    nll_before = _nll(z, idx, 1.0)
    nll_after = _nll(z, idx, t)
    if not nll_after <= nll_before and lo <= 1.0 <= hi:
        t, nll_after = 1.0, nll_before  # never worse than leaving it alone
    elif math.log(t / lo) < 1e-4 or math.log(hi / t) < 1e-4:
        # the minimum lies beyond the bound: T -> 0 when the model classifies the
        # validation rows perfectly, T -> inf when its logits carry no information
        at_lower = math.log(t / lo) < 1e-4
        why = (
            "the model classifies every validation row correctly; T -> 0 makes its "
            "probabilities 0 or 1"
            if at_lower
            else "the logits carry next to no information about the labels"
        )
        warnings.warn(
            f"the fitted temperature {t:.4g} lies at the "
            f"{'lower' if at_lower else 'upper'} bound of {bounds}: the validation "
            f"NLL still falls beyond it ({why}). Use more, or harder, held-out data",
            RuntimeWarning,
            stacklevel=2,
        )
    scaled = TemperatureScaled(seq, t)
    scaled.nll_before_, scaled.nll_after_ = nll_before, nll_after
    return scaled


# ------------------------------------------------------------------ calibration
def _probabilities(y_true: Any, y_prob: Any, classes: Any) -> tuple[np.ndarray, ...]:
    """(confidence, correct) of each row: max probability, argmax == label."""
    p = np.asarray(y_prob, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 1:
        raise ValueError(f"y_prob must be 2-D (n_samples, n_classes), got {p.shape}")
    if p.shape[0] == 0:
        raise ValueError("y_prob holds no samples")
    if not np.isfinite(p).all():
        raise ValueError("y_prob contains NaN or infinity")
    y = np.asarray(y_true)
    if y.shape != (p.shape[0],):
        raise ValueError(
            f"y_true has shape {y.shape}, expected ({p.shape[0]},) like y_prob's rows"
        )
    classes = np.arange(p.shape[1]) if classes is None else np.asarray(classes)
    if classes.shape != (p.shape[1],):
        raise ValueError(
            f"classes has shape {classes.shape}, but y_prob has {p.shape[1]} columns"
        )
    unknown = ~np.isin(y, classes)
    if unknown.any():
        raise ValueError(
            f"y_true holds labels not in classes: {np.unique(y[unknown]).tolist()}"
        )
    return p.max(axis=1), classes[p.argmax(axis=1)] == y


def reliability_curve(
    y_true: Any, y_prob: Any, *, n_bins: int = 15, classes: Any = None
) -> dict[str, np.ndarray]:
    """Accuracy against confidence in equal-width bins.

    The confidence of a row is its largest probability; a row falls in bin ``b``
    when its confidence lies in ``(b / n_bins, (b + 1) / n_bins]``.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
    y_prob : array-like of shape (n_samples, n_classes)
    n_bins : int, default=15
    classes : array-like of shape (n_classes,), optional
        Label of each column of ``y_prob`` (default 0 .. n_classes - 1; pass the
        model's ``classes_``: with other labels the default can match a label to
        the wrong column unnoticed, e.g. labels 1, 2, 3 with only 1 and 2 in
        ``y_true``).

    Returns
    -------
    dict
        ``bin_edges`` (n_bins + 1,), ``confidence`` and ``accuracy`` (n_bins,; mean
        per bin, NaN for empty bins), ``count`` (n_bins,; rows per bin).
    """
    from sklearn.calibration import calibration_curve

    n_bins = check_int("n_bins", n_bins, 1)
    conf, correct = _probabilities(y_true, y_prob, classes)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # calibration_curve gives the non-empty bins' means only: the counts come from
    # its own binning rule (right-closed bins, 0 in the first)
    count = np.bincount(np.searchsorted(edges[1:-1], conf), minlength=n_bins)
    used = count > 0
    accuracy = np.full(n_bins, np.nan)
    mean_conf = np.full(n_bins, np.nan)
    accuracy[used], mean_conf[used] = calibration_curve(
        correct.astype(np.int8), conf, n_bins=n_bins, pos_label=1
    )
    return {
        "bin_edges": edges,
        "confidence": mean_conf,
        "accuracy": accuracy,
        "count": count,
    }


def expected_calibration_error(
    y_true: Any, y_prob: Any, *, n_bins: int = 15, classes: Any = None
) -> float:
    """Expected calibration error: ``sum_b |B_b| / n * |accuracy_b - confidence_b|``.

    Top-label ECE over ``n_bins`` equal-width confidence bins (Guo et al., 2017); 0
    is perfectly calibrated. Arguments as in :func:`reliability_curve`.
    """
    curve = reliability_curve(y_true, y_prob, n_bins=n_bins, classes=classes)
    used = curve["count"] > 0
    gaps = np.abs(curve["accuracy"][used] - curve["confidence"][used])
    return float(np.sum(curve["count"][used] * gaps) / curve["count"].sum())


def reliability_diagram(
    y_true: Any,
    y_prob: Any,
    path: str | Path,
    *,
    n_bins: int = 15,
    classes: Any = None,
    title: str = "Reliability diagram",
    min_count: int = 10,
) -> Path:
    """Write a reliability diagram (PNG): accuracy against confidence per bin.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
    y_prob : array-like of shape (n_samples, n_classes), or a mapping of name to such
        arrays to overlay, e.g. ``{"uncalibrated": p, "temperature-scaled": q}``.
    path : path-like
        Where the PNG goes (written atomically).
    n_bins, classes
        As in :func:`reliability_curve`.
    title : str
    min_count : int, default=10
        Bins with fewer rows are drawn as hollow markers, off the line.

    Returns
    -------
    Path
    """
    probs = dict(y_prob) if isinstance(y_prob, Mapping) else {"model": y_prob}
    if not probs:
        raise ValueError("y_prob holds no probability arrays")
    curves = {
        name: reliability_curve(y_true, p, n_bins=n_bins, classes=classes)
        for name, p in probs.items()
    }
    fig = new_figure(figsize=(5.5, 6.5), layout="constrained")
    ax, ax_n = fig.subplots(2, 1, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], ls="--", color="0.5", lw=1, label="perfectly calibrated")
    width = 1.0 / n_bins
    for k, (name, c) in enumerate(curves.items()):
        ece = expected_calibration_error(
            y_true, probs[name], n_bins=n_bins, classes=classes
        )
        # a bin of a few rows has an accuracy of 0 or 1 by chance: the line joins
        # the bins with at least min_count rows; the others are hollow markers
        solid = c["count"] >= min_count
        sparse = (c["count"] > 0) & ~solid
        ax.plot(
            c["confidence"][solid],
            c["accuracy"][solid],
            marker="o",
            ms=4,
            label=f"{name} (ECE {ece:.3f})",
            color=f"C{k}",
        )
        if sparse.any():
            ax.plot(
                c["confidence"][sparse],
                c["accuracy"][sparse],
                ls="none",
                marker="o",
                ms=4,
                mfc="none",
                color=f"C{k}",
                label=f"{name}: bins of < {min_count} rows",
            )
        centers = c["bin_edges"][:-1] + width / 2
        bars = ax_n.bar(
            centers + (k - (len(curves) - 1) / 2) * width / len(curves),
            c["count"],
            width=width / len(curves),
            color=f"C{k}",
            label=name,
        )
        ax_n.bar_label(
            bars, labels=[str(v) if v else "" for v in c["count"]], fontsize=6
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("confidence (mean max softmax probability in bin)")
    ax.set_ylabel("accuracy (fraction correct in bin)")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    ax_n.set_xlim(0, 1)
    ax_n.set_xlabel("confidence (max softmax probability)")
    ax_n.set_ylabel("samples (log)")
    ax_n.set_yscale("log")  # a few well-filled bins hold most rows
    ax_n.set_title(f"Samples per bin ({n_bins} bins)", fontsize=9)
    return write_figure(fig, path)


# ------------------------------------------------------------ out-of-distribution
def ood_scores(
    model: Any, X: Any, *, temperature: float | None = None
) -> dict[str, np.ndarray]:
    """Confidence scores oriented for detection: higher means more in-distribution.

    ``max_softmax``, ``-entropy``, ``-energy`` and ``margin`` of each row (see
    :func:`confidence`), under the names of :data:`SCORES`.
    """
    scores = confidence(model, X, temperature=temperature)
    return {k: _ORIENTATION[k] * scores[k] for k in SCORES}


def _two_scores(scores_in: Any, scores_out: Any) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(scores_in, dtype=np.float64).ravel()
    b = np.asarray(scores_out, dtype=np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise ValueError("both score arrays need at least one value")
    if np.isnan(a).any() or np.isnan(b).any():
        raise ValueError("scores contain NaN")
    return a, b


def _labelled(scores_in: Any, scores_out: Any) -> tuple[np.ndarray, np.ndarray]:
    """(labels, scores) for scikit-learn's ROC functions: in-distribution = 1."""
    a, b = _two_scores(scores_in, scores_out)
    labels = np.concatenate([np.ones(a.size, np.int8), np.zeros(b.size, np.int8)])
    return labels, np.concatenate([a, b])


def auroc(scores_in: Any, scores_out: Any) -> float:
    """Area under the ROC curve for telling ``scores_in`` (positives) from others.

    The probability that a random in-distribution score exceeds a random
    out-of-distribution one, ties counting one half:
    ``sklearn.metrics.roc_auc_score`` with the in-scores labelled 1. 1: perfect
    separation, 0.5: chance.
    """
    from sklearn.metrics import roc_auc_score

    labels, scores = _labelled(scores_in, scores_out)
    return float(roc_auc_score(labels, scores))


def fpr_at_tpr(scores_in: Any, scores_out: Any, tpr: float = 0.95) -> float:
    """False-positive rate at the highest threshold that keeps ``tpr`` of the positives.

    The threshold ``t`` is the largest score with at least a fraction ``tpr`` of
    ``scores_in`` at or above it; the result is the fraction of ``scores_out`` at
    or above ``t`` (out-of-distribution inputs taken for in-distribution ones; lower
    is better): the first ``sklearn.metrics.roc_curve`` point with true-positive
    rate >= ``tpr``.
    """
    from sklearn.metrics import roc_curve

    tpr = float(tpr)
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must lie in (0, 1], got {tpr}")
    labels, scores = _labelled(scores_in, scores_out)
    fpr, tprs, _ = roc_curve(labels, scores, drop_intermediate=False)
    # the first operating point (highest threshold) that reaches the asked rate;
    # the tolerance keeps k/n >= tpr exact when tpr * n is an integer
    return float(fpr[np.argmax(tprs >= tpr - 1e-12)])


def ood_metrics(
    model: Any,
    X_in: Any,
    X_out: Any,
    *,
    temperature: float | None = None,
    tpr: float = 0.95,
) -> dict[str, dict[str, float]]:
    """How well each confidence score separates ``X_in`` from ``X_out``.

    Returns
    -------
    dict
        ``{score: {"auroc": float, "fpr_at_95_tpr": float}}`` for every score of
        :data:`SCORES` (the FPR key names ``tpr`` in percent).
    """
    s_in = ood_scores(model, X_in, temperature=temperature)
    s_out = ood_scores(model, X_out, temperature=temperature)
    key = f"fpr_at_{100 * float(tpr):g}_tpr"
    return {
        name: {
            "auroc": auroc(s_in[name], s_out[name]),
            key: fpr_at_tpr(s_in[name], s_out[name], tpr),
        }
        for name in SCORES
    }


def _histogram_bins(values: np.ndarray, n: int = 40) -> np.ndarray:
    """Bin edges over the 1st-100th percentile of ``values``: max-softmax scores
    pile up just below 1, so the low tail must not stretch the range."""
    lo, hi = np.percentile(values, [1.0, 100.0])
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, n + 1)


def ood_score_histograms(
    scores_in: Mapping[str, Any],
    scores_out: Mapping[str, Any],
    path: str | Path,
    *,
    title: str = "Confidence scores: in- vs out-of-distribution",
    metrics: Mapping[str, Mapping[str, float]] | None = None,
) -> Path:
    """Write one histogram per score (in- and out-of-distribution overlaid) as PNG.

    ``scores_in`` / ``scores_out`` as returned by :func:`ood_scores`; ``metrics``
    (from :func:`ood_metrics`) adds the AUROC to each panel's title.
    """
    names = [k for k in scores_in if k in scores_out]
    if not names:
        raise ValueError("no score appears in both scores_in and scores_out")
    cols = 2 if len(names) > 1 else 1
    rows = -(-len(names) // cols)
    fig = new_figure(figsize=(4.2 * cols, 3.2 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, name in zip(axes, names, strict=False):
        a, b = _two_scores(scores_in[name], scores_out[name])
        bins = _histogram_bins(np.concatenate([a, b]))
        for scores, label, color in ((a, "in-distribution", "C0"),
                                     (b, "out-of-distribution", "C3")):  # fmt: skip
            # values outside the zoomed range go into the edge bins
            ax.hist(np.clip(scores, bins[0], bins[-1]), bins=bins, alpha=0.55,
                    label=label, color=color, histtype="stepfilled")  # fmt: skip
        ax.set_yscale("log")  # a spike of confident rows must not flatten the rest
        sign = "" if _ORIENTATION.get(name, 1.0) > 0 else "-"
        sub = f"{sign}{name}"
        if metrics is not None and name in metrics:
            sub += f" (AUROC {metrics[name]['auroc']:.3f})"
        ax.set_title(sub, fontsize=10)
        ax.set_xlabel(f"{sign}{name} (higher = more in-distribution)")
        ax.set_ylabel("samples (log)")
        ax.legend(fontsize=7)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    fig.suptitle(title)
    return write_figure(fig, path)
