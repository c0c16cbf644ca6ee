"""The training objectives: softmax cross-entropy (classification) and mean squared
error (regression).

The value and gradient are computed by the backend's fused kernels (one pass per
row). This module holds each loss's settings and the parts that sit outside the
kernel: what the targets are (class labels or float values), class weights and the
L2 penalty. ``loss.kernel_loss`` names the loss in the engine's fused
``loss_grad`` / ``train_step`` (``kernels.contract.TRAIN_LOSSES``) and
``loss.is_classifier`` tells the model and the training loop which targets and
metrics apply.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "MeanSquaredError",
    "SoftmaxCrossEntropy",
    "loss_from_config",
    "loss_from_name",
]


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

    kernel_loss = "softmax_cross_entropy"
    is_classifier = True

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


class MeanSquaredError:
    """Squared error for regression, with sample weights and L2.

    ``loss = (1/n) sum_i w_i (1/2) ||yhat_i - y_i||^2 + (l2 / 2) sum_layers ||W||^2``
    over the ``k`` outputs of row ``i`` (scikit-learn's MLPRegressor objective: half
    the mean over rows of the summed squared error), gradient
    ``w_i (yhat_i - y_i) / n``. The network's last Linear is the output, with no
    activation after it (the identity output); targets are floats of shape (n,) or
    (n, k) where ``k`` is the last Linear's ``out_features``. The L2 term covers
    weight matrices only, as for :class:`SoftmaxCrossEntropy`.

    Parameters
    ----------
    l2 : float >= 0, default=0.0
        Strength of the (l2 / 2) ||W||^2 penalty.

    Examples
    --------
    >>> import fastnn
    >>> model = fastnn.MLP((8, 32, 1), loss=fastnn.MeanSquaredError())
    """

    kernel_loss = "squared_error"
    is_classifier = False
    label_smoothing = 0.0  # the fused kernels' hyper slot; squared error has none
    class_weight = None

    def __init__(self, l2: float = 0.0) -> None:
        self.l2 = _check_range("l2", l2, 0.0, math.inf)

    def __repr__(self) -> str:
        return f"MeanSquaredError(l2={self.l2!r})"

    def class_weights(self, classes: Any, y: Any) -> None:
        """None: a regression loss has no class weights."""
        return None

    penalty = SoftmaxCrossEntropy.penalty

    @staticmethod
    def metrics(
        y_true: np.ndarray, y_pred: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> dict[str, float]:
        """MSE, MAE and R² (scikit-learn's metrics, outputs averaged uniformly,
        weighted by ``sample_weight``) of targets and predictions of one shape."""
        # imported late: sklearn.metrics is a slow import that training never needs
        from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

        return {
            name: float(fn(y_true, y_pred, sample_weight=sample_weight))
            for name, fn in (
                ("mse", mean_squared_error),
                ("mae", mean_absolute_error),
                ("r2", r2_score),
            )
        }

    def get_config(self) -> dict[str, Any]:
        """JSON-compatible settings, tagged with the loss type."""
        return {"type": "mean_squared_error", "l2": self.l2}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MeanSquaredError:
        """Inverse of :meth:`get_config`."""
        return cls(config.get("l2", 0.0))


_LOSS_TYPES = {"mean_squared_error": MeanSquaredError}
#: loss= names, as Keras' ("mse") and the kernels' ("squared_error")
_LOSS_NAMES = {
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
    "squared_error": MeanSquaredError,
    "cross_entropy": SoftmaxCrossEntropy,
    "softmax_cross_entropy": SoftmaxCrossEntropy,
}


def loss_from_name(name: str) -> SoftmaxCrossEntropy | MeanSquaredError:
    """The loss named by ``loss="mse"`` (or ``"cross_entropy"``), default settings."""
    try:
        return _LOSS_NAMES[name.lower()]()
    except KeyError:
        raise ValueError(
            f"unknown loss {name!r}; expected one of {sorted(_LOSS_NAMES)} or a "
            "loss object (fastnn.MeanSquaredError(l2=...))"
        ) from None


def loss_from_config(config: dict[str, Any]) -> SoftmaxCrossEntropy | MeanSquaredError:
    """The loss of a model config: its ``type`` key names a regression loss; configs
    without one (every classifier, and files written before regression) are softmax
    cross-entropy."""
    kind = config.get("type")
    if kind is None:
        return SoftmaxCrossEntropy.from_config(config)
    if kind not in _LOSS_TYPES:
        raise ValueError(f"unknown loss type {kind!r}; known: {sorted(_LOSS_TYPES)}")
    return _LOSS_TYPES[kind].from_config(config)


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
