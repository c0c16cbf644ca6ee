"""Softmax cross-entropy: the training objective of a fastnn classifier.

The value and gradient are computed by the backend's fused kernel (one pass per row,
max-shifted log-sum-exp). This module holds the loss's settings and the parts that
sit outside the kernel: class weights and the L2 penalty.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["SoftmaxCrossEntropy"]


class SoftmaxCrossEntropy:
    """Softmax cross-entropy with class/sample weights, label smoothing and L2.

    ``loss = (1/n) sum_i w_i l_i + (l2 / 2) sum_layers ||W||^2`` where ``l_i`` is the
    cross-entropy of row ``i`` against the smoothed target
    ``(1 - label_smoothing) onehot(y_i) + label_smoothing / n_classes`` and
    ``w_i = class_weight[y_i] * sample_weight_i``. The mean divides by the batch size
    ``n`` (Keras' "sum over batch size"), not by ``sum w_i`` as PyTorch's
    ``CrossEntropyLoss(weight=...)`` does. The L2 term covers weight matrices only,
    never biases: its gradient ``l2 * W`` is PyTorch's ``weight_decay=l2``.

    Parameters
    ----------
    class_weight : dict, "balanced" or None
        Weight per class label; "balanced" uses
        ``n_samples / (n_classes * count(class))`` as scikit-learn does. Labels not
        in the dict weigh 1.
    label_smoothing : float in [0, 1], default=0.0
    l2 : float >= 0, default=0.0
        Strength of the (l2 / 2) ||W||^2 penalty.
    """

    def __init__(
        self,
        class_weight: Mapping[Any, float] | str | None = None,
        label_smoothing: float = 0.0,
        l2: float = 0.0,
    ) -> None:
        if isinstance(class_weight, str) and class_weight != "balanced":
            raise ValueError(
                f"class_weight must be a dict, 'balanced' or None, got {class_weight!r}"
            )
        if class_weight is not None and not isinstance(class_weight, (str, Mapping)):
            raise ValueError(
                "class_weight must be a dict, 'balanced' or None, got "
                f"{type(class_weight).__name__}"
            )
        if isinstance(class_weight, Mapping):
            for label, w in class_weight.items():
                if not _is_real(w) or not math.isfinite(w) or w < 0:
                    raise ValueError(
                        f"class_weight[{label!r}] must be a finite number >= 0, "
                        f"got {w!r}"
                    )
            class_weight = dict(class_weight)
        self.class_weight = class_weight
        self.label_smoothing = _check_range(
            "label_smoothing", label_smoothing, 0.0, 1.0
        )
        self.l2 = _check_range("l2", l2, 0.0, math.inf)

    def __repr__(self) -> str:
        return (
            f"SoftmaxCrossEntropy(class_weight={self.class_weight!r}, "
            f"label_smoothing={self.label_smoothing!r}, l2={self.l2!r})"
        )

    def class_weights(
        self, classes: np.ndarray, y_idx: np.ndarray
    ) -> np.ndarray | None:
        """Per-class weights aligned with ``classes`` (None when unweighted).

        Parameters
        ----------
        classes : ndarray of shape (n_classes,)
            The model's ``classes_``.
        y_idx : ndarray of int
            Training labels as indices into ``classes`` ("balanced" counts them).
        """
        if self.class_weight is None:
            return None
        n_classes = len(classes)
        if self.class_weight == "balanced":
            counts = np.bincount(y_idx, minlength=n_classes).astype(np.float64)
            with np.errstate(divide="ignore"):
                weights = len(y_idx) / (n_classes * counts)
            weights[counts == 0] = 1.0  # absent classes: no rows to weigh
            return weights
        weights = np.ones(n_classes)
        known = {_py(c): i for i, c in enumerate(classes)}
        unknown = [k for k in self.class_weight if _py(k) not in known]
        if unknown:
            raise ValueError(
                f"class_weight has labels {unknown} that are not in classes_ "
                f"{list(classes)}"
            )
        for label, w in self.class_weight.items():
            weights[known[_py(label)]] = float(w)
        return weights

    def penalty(self, weights_flat: np.ndarray) -> float:
        """(l2 / 2) ||W||^2 over a flat view holding every weight matrix."""
        if not self.l2:
            return 0.0
        return 0.5 * self.l2 * float(np.dot(weights_flat, weights_flat))

    def get_config(self) -> dict[str, Any]:
        """JSON-compatible settings (class_weight as a list of [label, weight])."""
        cw = self.class_weight
        if isinstance(cw, dict):
            cw = [[_py(k), float(v)] for k, v in cw.items()]
        return {
            "class_weight": cw,
            "label_smoothing": self.label_smoothing,
            "l2": self.l2,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SoftmaxCrossEntropy:
        """Inverse of :meth:`get_config`."""
        cw = config.get("class_weight")
        if isinstance(cw, list):
            cw = {(tuple(k) if isinstance(k, list) else k): v for k, v in cw}
        return cls(cw, config.get("label_smoothing", 0.0), config.get("l2", 0.0))


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, bool
    )


def _check_range(name: str, value: Any, low: float, high: float) -> float:
    if not _is_real(value) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must lie in [{low}, {high}], got {value!r}")
    return float(value)


def _py(value: Any) -> Any:
    """A numpy scalar as the equal Python scalar (for dict lookups and JSON)."""
    return value.item() if isinstance(value, np.generic) else value
