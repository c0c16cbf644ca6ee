"""One tuning table and one float32 numerics spec (kernels/tuning.py) for both compiled
backends: the same thresholds and chunks, bitwise the same approximations."""

from __future__ import annotations

import numpy as np
import pytest
from fastnn.kernels import tuning

import fastnn


def test_both_backends_read_the_one_table(compiled):
    assert compiled.info["serial_below_work"] == tuning.PARALLEL_MIN_WORK
    assert compiled.info["chunk"] == tuning.CHUNK


@pytest.mark.parametrize("act", ["sigmoid", "tanh", "gelu"])
def test_float32_approximations_are_bitwise_the_same_in_numba_and_cython(act):
    """Across the clamps and switch points: exp's overflow and gradual underflow,
    tanh's polynomial switch, erf's clamp; NaN and +-inf."""
    lo, hi = tuning.EXP_F32_MIN, tuning.EXP_F32_MAX
    s = tuning.TANH_F32_SMALL
    z = np.concatenate([
        np.linspace(lo - 10, hi + 10, 50001),
        np.linspace(-2 * s, 2 * s, 20001),
        np.random.default_rng(0).normal(scale=4.0, size=20000),
        [np.nan, np.inf, -np.inf, 0.0, -0.0],
    ]).astype(np.float32)  # fmt: skip
    nb = fastnn.get_backend("numba").activation_forward(z, act)
    cy = fastnn.get_backend("cython").activation_forward(z, act)
    assert nb.tobytes() == cy.tobytes()
    dy = np.ones_like(z)
    nb_grad = fastnn.get_backend("numba").activation_backward(dy, z, nb, act)
    cy_grad = fastnn.get_backend("cython").activation_backward(dy, z, cy, act)
    assert nb_grad.tobytes() == cy_grad.tobytes()


def test_float32_exp_underflows_gradually(backend):
    """exp(-95) is a float32 subnormal (about 5.5e-42): softmax keeps it, not 0."""
    logits = np.array([[0.0, -95.0], [-95.0, 0.0]], np.float32)
    p = backend.softmax(logits)
    assert p[0, 1] == p[1, 0] > 0
    assert p[0, 1] == pytest.approx(np.exp(-95.0), rel=1e-3)


# rows longer than the squared error's scratch, and several scratch fills per task
SE_LONG_ROW = tuning.SQUARED_ERROR_SCRATCH + 88


@pytest.mark.parametrize("weighted", [True, False], ids=["weighted", "unweighted"])
@pytest.mark.parametrize(
    "shape", [(1024, 8), (3000, 7), (40000, 9), (5, SE_LONG_ROW), (700, 3)]
)
def test_squared_error_is_bitwise_the_same_in_numba_and_cython(dtype, shape, weighted):
    """The same row blocks (tuning.LOSS_TASK), scratch fills and arithmetic, serial or
    parallel: the same loss, gradient and row-loss bits."""
    rng = np.random.default_rng(1)
    pred, target = (rng.normal(size=shape).astype(dtype) for _ in range(2))
    w = rng.uniform(0.2, 2.0, size=shape[0]).astype(dtype) if weighted else None
    out = []
    for name in ("numba", "cython"):
        rows = np.empty(shape[0], dtype)
        loss, grad = fastnn.get_backend(name).squared_error(
            pred, target, sample_weight=w, row_loss_out=rows
        )
        out.append((loss, grad.tobytes(), rows.tobytes()))
    assert out[0] == out[1]
