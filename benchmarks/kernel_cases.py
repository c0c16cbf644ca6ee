"""The benchmark registry: op -> shapes, and a setup per op returning a zero-argument
callable (all allocation happens in the setup, outside the timed region).

Implementations are fastnn's backends (numpy is the baseline); a backend that does not
load is reported as skipped by the suites, never silently replaced.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from fastnn.kernels import Backend

DTYPE = np.float32
# (batch, in_features, out_features) of the MLP layers users train
LINEAR_SHAPES = [(32, 784, 256), (128, 784, 256), (128, 256, 128), (1024, 128, 10)]
LOSS_SHAPES = [(128, 10), (1024, 10)]
# regression: 8 outputs (one pass of subtract, square, scale per element)
SQUARED_ERROR_SHAPES = [(1024, 8)]
ELEMENTWISE_SHAPES = [(1024, 1024)]
ACTIVATIONS = ("relu", "sigmoid", "tanh", "gelu")
PARAM_SIZES = [(784 * 256,), (1024 * 1024,)]


def _rand(rng: np.random.Generator, shape, scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(DTYPE)


def linear_forward(be: Backend, shape, act: str = "relu") -> Callable[[], object]:
    n, k, m = shape
    rng = np.random.default_rng(0)
    x, w, b = _rand(rng, (n, k)), _rand(rng, (k, m), k**-0.5), _rand(rng, (m,))
    out = np.empty((n, m), DTYPE)
    return lambda: be.linear_forward(x, w, b, act, out)


def linear_backward(be: Backend, shape, act: str = "relu") -> Callable[[], object]:
    n, k, m = shape
    rng = np.random.default_rng(0)
    x, w, dy = _rand(rng, (n, k)), _rand(rng, (k, m)), _rand(rng, (n, m))
    z = _rand(rng, (n, m))
    y = be.activation_forward(z, act)
    dz, dw, db, dx = (np.empty(s, DTYPE) for s in ((n, m), (k, m), (m,), (n, k)))
    return lambda: be.linear_backward(
        dy,
        x,
        w,
        z,
        y,
        act,
        dw_out=dw,
        db_out=db,
        dx_out=dx,
        dz_out=dz,
        weight_decay=1e-4,
    )


def softmax_cross_entropy(be: Backend, shape) -> Callable[[], object]:
    n, k = shape
    rng = np.random.default_rng(0)
    logits, labels = _rand(rng, shape, 3.0), rng.integers(0, k, n)
    grad = np.empty(shape, DTYPE)
    return lambda: be.softmax_cross_entropy(logits, labels, grad_out=grad)


def squared_error(be: Backend, shape) -> Callable[[], object]:
    rng = np.random.default_rng(0)
    pred, target = _rand(rng, shape), _rand(rng, shape)
    grad = np.empty(shape, DTYPE)
    return lambda: be.squared_error(pred, target, grad_out=grad)


def activation_forward(be: Backend, shape, act: str) -> Callable[[], object]:
    z = _rand(np.random.default_rng(0), shape, 2.0)
    out = np.empty(shape, DTYPE)
    return lambda: be.activation_forward(z, act, out)


def activation_backward(be: Backend, shape, act: str) -> Callable[[], object]:
    rng = np.random.default_rng(0)
    z, dy = _rand(rng, shape, 2.0), _rand(rng, shape)
    y = be.activation_forward(z, act)
    out = np.empty(shape, DTYPE)
    return lambda: be.activation_backward(dy, z, y, act, out)


def sgd_update(be: Backend, shape) -> Callable[[], object]:
    rng = np.random.default_rng(0)
    p, g, v = _rand(rng, shape), _rand(rng, shape, 1e-3), np.zeros(shape, DTYPE)
    return lambda: be.sgd_update(
        p, g, v, lr=1e-3, momentum=0.9, nesterov=True, weight_decay=1e-4
    )


def adam_update(be: Backend, shape) -> Callable[[], object]:
    rng = np.random.default_rng(0)
    p, g = _rand(rng, shape), _rand(rng, shape, 1e-3)
    m, v = np.zeros(shape, DTYPE), np.zeros(shape, DTYPE)
    return lambda: be.adam_update(p, g, m, v, step=10, lr=1e-3, weight_decay=1e-4)


def cases() -> list[tuple[str, str, Callable[[Backend], Callable[[], object]]]]:
    """(op, shape label, setup taking a backend) for every benchmarked configuration."""
    out = []
    for s in LINEAR_SHAPES:
        label = f"{s[0]}x{s[1]}->{s[2]}"
        out.append(
            ("linear_forward_relu", label, lambda be, s=s: linear_forward(be, s))
        )
        out.append(
            ("linear_backward_relu", label, lambda be, s=s: linear_backward(be, s))
        )
    for s in LOSS_SHAPES:
        out.append(
            (
                "softmax_cross_entropy",
                f"{s[0]}x{s[1]}",
                lambda be, s=s: softmax_cross_entropy(be, s),
            )
        )
    for s in SQUARED_ERROR_SHAPES:
        out.append(
            ("squared_error", f"{s[0]}x{s[1]}", lambda be, s=s: squared_error(be, s))
        )
    for s in ELEMENTWISE_SHAPES:
        for act in ACTIVATIONS:
            label = f"{s[0]}x{s[1]}"
            out.append(
                (
                    f"{act}_forward",
                    label,
                    lambda be, s=s, a=act: activation_forward(be, s, a),
                )
            )
            out.append(
                (
                    f"{act}_backward",
                    label,
                    lambda be, s=s, a=act: activation_backward(be, s, a),
                )
            )
    for s in PARAM_SIZES:
        out.append(
            ("sgd_nesterov_update", str(s[0]), lambda be, s=s: sgd_update(be, s))
        )
        out.append(("adam_update", str(s[0]), lambda be, s=s: adam_update(be, s)))
    return out
