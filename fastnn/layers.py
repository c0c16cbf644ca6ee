"""Layers: ``Linear`` and the activation layers of a :class:`fastnn.Sequential`.

Layers are small descriptions; the model owns the memory. When a model is built it
hands each :class:`Linear` views into one flat parameter buffer (``weight``, ``bias``),
so an optimizer can update every parameter with one fused kernel call.

Unlike PyTorch's ``nn.Linear`` (weight stored ``(out_features, in_features)``), fastnn
stores the weight as ``(in_features, out_features)``: the forward pass is
``y = x @ W + b`` with no transpose. Transpose when moving weights between the two.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np

from .kernels import ACTIVATIONS, activation_code

__all__ = [
    "INITS",
    "GELU",
    "Activation",
    "Identity",
    "Layer",
    "LeakyReLU",
    "Linear",
    "ReLU",
    "Sigmoid",
    "Tanh",
    "activation_layer",
    "layer_from_config",
]

#: Weight initialisations: name -> (distribution, uses fan_out).
INITS: dict[str, tuple[str, bool]] = {
    "glorot_uniform": ("uniform", True),
    "glorot_normal": ("normal", True),
    "he_uniform": ("uniform", False),
    "he_normal": ("normal", False),
}


class Layer:
    """Base class of every layer (a description plus, for Linear, parameter views)."""

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments as JSON-compatible values (used by checkpoints)."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Linear(Layer):
    """Affine layer ``y = x @ W + b``.

    Parameters
    ----------
    in_features, out_features : int
        Input and output widths.
    bias : bool, default=True
        Whether to learn an additive bias.
    init : {"glorot_uniform", "glorot_normal", "he_uniform", "he_normal"}
        Weight initialisation (Glorot/Xavier or He/Kaiming). Biases start at zero.

    Attributes
    ----------
    weight : ndarray of shape (in_features, out_features) or None
        Note the layout: (in, out), the transpose of PyTorch's. None until the model
        that holds the layer is built.
    bias : ndarray of shape (out_features,) or None
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        init: str = "glorot_uniform",
    ) -> None:
        self.in_features = _positive_int("in_features", in_features)
        self.out_features = _positive_int("out_features", out_features)
        self.use_bias = bool(bias)
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; expected one of {sorted(INITS)}")
        self.init = init
        self.weight: np.ndarray | None = None
        self.bias: np.ndarray | None = None
        # Gradients of the last backward pass (views into the model's flat buffer).
        # After a fused training step, grad_weight holds the data term's gradient:
        # the step leaves the L2 term's l2 * W to the optimizer's update.
        self.grad_weight: np.ndarray | None = None
        self.grad_bias: np.ndarray | None = None

    def get_config(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.use_bias,
            "init": self.init,
        }

    def init_weight(self, rng: np.random.Generator) -> np.ndarray:
        """Draw a float64 initial weight matrix of shape (in_features, out_features).

        Drawn in float64 and cast by the caller, so float32 and float64 models built
        from one seed start from the same values up to rounding.
        """
        dist, uses_fan_out = INITS[self.init]
        fan = self.in_features + self.out_features if uses_fan_out else self.in_features
        # Glorot: Var = 2 / (fan_in + fan_out); He: Var = 2 / fan_in.
        std = math.sqrt(2.0 / fan)
        shape = (self.in_features, self.out_features)
        if dist == "uniform":
            limit = math.sqrt(3.0) * std  # U(-a, a) has variance a^2 / 3
            return rng.uniform(-limit, limit, size=shape)
        return rng.normal(0.0, std, size=shape)


class Activation(Layer):
    """An element-wise activation; follows a Linear to be fused into its kernel call.

    Parameters
    ----------
    activation : str
        A kernel-contract activation name ("identity", "relu", "leaky_relu",
        "sigmoid", "tanh", "gelu"; "logistic" is accepted for "sigmoid").
    alpha : float, default=0.01
        Slope for negative inputs (leaky_relu only).
    """

    def __init__(self, activation: str, alpha: float = 0.01) -> None:
        code = activation_code(activation)
        self.activation = _ACT_NAMES[code]
        self.alpha = float(alpha)
        if not math.isfinite(self.alpha):
            raise ValueError(f"alpha must be finite, got {alpha}")

    def get_config(self) -> dict[str, Any]:
        return {"activation": self.activation, "alpha": self.alpha}


class ReLU(Activation):
    """max(x, 0)."""

    def __init__(self) -> None:
        super().__init__("relu")

    def get_config(self) -> dict[str, Any]:
        return {}


class LeakyReLU(Activation):
    """x if x > 0 else negative_slope * x."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__("leaky_relu", negative_slope)

    @property
    def negative_slope(self) -> float:
        return self.alpha

    def get_config(self) -> dict[str, Any]:
        return {"negative_slope": self.alpha}


class Sigmoid(Activation):
    """1 / (1 + exp(-x))."""

    def __init__(self) -> None:
        super().__init__("sigmoid")

    def get_config(self) -> dict[str, Any]:
        return {}


class Tanh(Activation):
    """tanh(x)."""

    def __init__(self) -> None:
        super().__init__("tanh")

    def get_config(self) -> dict[str, Any]:
        return {}


class GELU(Activation):
    """Exact GELU: 0.5 x (1 + erf(x / sqrt 2))."""

    def __init__(self) -> None:
        super().__init__("gelu")

    def get_config(self) -> dict[str, Any]:
        return {}


class Identity(Activation):
    """f(x) = x."""

    def __init__(self) -> None:
        super().__init__("identity")

    def get_config(self) -> dict[str, Any]:
        return {}


_ACT_NAMES = {code: name for name, code in ACTIVATIONS.items()}
_ACT_CLASSES: dict[str, type[Activation]] = {
    "identity": Identity,
    "relu": ReLU,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "gelu": GELU,
}
_LAYER_CLASSES: dict[str, type[Layer]] = {
    cls.__name__: cls
    for cls in (Linear, Activation, ReLU, LeakyReLU, Sigmoid, Tanh, GELU, Identity)
}


def activation_layer(name: str, alpha: float = 0.01) -> Activation:
    """Return the activation layer for a name ("relu", "tanh", "logistic", ...)."""
    code = activation_code(name)
    canonical = _ACT_NAMES[code]
    if canonical == "leaky_relu":
        return LeakyReLU(alpha)
    return _ACT_CLASSES[canonical]()


def layer_from_config(spec: dict[str, Any]) -> Layer:
    """Rebuild a layer from ``{"type": name, "config": {...}}`` (checkpoint format)."""
    try:
        cls = _LAYER_CLASSES[spec["type"]]
        return cls(**spec.get("config", {}))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"invalid layer description {spec!r}: {exc}") from None


def _positive_int(name: str, value: Any) -> int:
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None
    if v < 1:
        raise ValueError(f"{name} must be >= 1, got {v}")
    return v
