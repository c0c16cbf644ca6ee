"""Central finite-difference checks of the kernel gradients (float64, all backends)."""

from __future__ import annotations

import numpy as np
import pytest
from fastnn.kernels import ACTIVATIONS

EPS = 1e-6


def central_difference(f, x):
    """d f / d x by central differences, one coordinate at a time."""
    grad = np.empty_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + EPS
        up = f()
        flat[i] = old - EPS
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * EPS)
    return grad


@pytest.mark.parametrize("act", tuple(ACTIVATIONS))
def test_linear_backward_matches_finite_differences(backend, act):
    rng = np.random.default_rng(1)
    n, k, m = 5, 4, 3
    x, w, b = (
        rng.standard_normal((n, k)),
        rng.standard_normal((k, m)),
        rng.standard_normal(m),
    )
    g = rng.standard_normal((n, m))  # L = sum(g * f(x w + b)) + wd/2 |w|^2
    wd = 0.3
    z = np.empty((n, m))
    y = backend.linear_forward(x, w, b, act, z_out=z, alpha=0.1)
    assert np.abs(z).min() > 10 * EPS, "keep the check away from relu's kink"

    def loss():
        out = backend.linear_forward(x, w, b, act, alpha=0.1)
        return float(np.sum(g * out) + 0.5 * wd * np.sum(w * w))

    dw, db, dx = backend.linear_backward(
        g.copy(), x, w, z, y, act, weight_decay=wd, alpha=0.1
    )
    for name, analytic, param in (("dw", dw, w), ("db", db, b), ("dx", dx, x)):
        numeric = central_difference(loss, param)
        np.testing.assert_allclose(
            analytic, numeric, rtol=1e-6, atol=1e-7, err_msg=name
        )


@pytest.mark.parametrize("act", tuple(ACTIVATIONS))
def test_activation_backward_matches_finite_differences(backend, act):
    z = np.linspace(-3.1, 2.9, 23)
    y = backend.activation_forward(z, act, alpha=0.2)
    dz = backend.activation_backward(np.ones_like(z), z, y, act, alpha=0.2)
    numeric = (
        backend.activation_forward(z + EPS, act, alpha=0.2)
        - backend.activation_forward(z - EPS, act, alpha=0.2)
    ) / (2 * EPS)
    np.testing.assert_allclose(dz, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_softmax_cross_entropy_matches_finite_differences(backend, weighted, smoothing):
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((6, 5)) * 3
    labels = rng.integers(0, 5, 6)
    sw = rng.uniform(0.5, 2.0, 6) if weighted else None
    kw = dict(sample_weight=sw, label_smoothing=smoothing)
    _, grad = backend.softmax_cross_entropy(logits, labels, **kw)

    def loss():
        return backend.softmax_cross_entropy(logits, labels, compute_grad=False, **kw)[
            0
        ]

    np.testing.assert_allclose(
        grad, central_difference(loss, logits), rtol=1e-6, atol=1e-9
    )


def test_softmax_cross_entropy_value_matches_definition(backend):
    """loss = mean_i w_i (lse_i - sum_k t_ik z_ik), computed naively in float64."""
    rng = np.random.default_rng(3)
    logits, labels = rng.standard_normal((8, 4)), rng.integers(0, 4, 8)
    sw, eps = rng.uniform(0.5, 2.0, 8), 0.1
    target = np.full((8, 4), eps / 4)
    target[np.arange(8), labels] += 1 - eps
    lse = np.log(np.exp(logits).sum(axis=1))
    expected = np.mean(sw * (lse - (target * logits).sum(axis=1)))
    loss, _ = backend.softmax_cross_entropy(
        logits, labels, sample_weight=sw, label_smoothing=eps
    )
    np.testing.assert_allclose(loss, expected, rtol=1e-13)
