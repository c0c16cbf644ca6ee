"""Kernels vs the NumPy oracle: out= use, read-only inputs, 1 vs 2 threads."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fastnn.kernels import ACTIVATIONS, RAW_KERNELS, contract
from tolerances import assert_close

import fastnn

ACTS = tuple(ACTIVATIONS)
# (rows, in_features, out_features): 1x1, primes, non-multiples of any tile, up to 1024
# wide, and a zero-size batch.
LINEAR_SHAPES = [(1, 1, 1), (7, 13, 17), (17, 7, 13), (13, 1024, 7), (33, 17, 1024),
                 (0, 13, 7)]  # fmt: skip
ELEMENTWISE_SHAPES = [(1, 1), (7, 13), (17, 1024), (0, 5), (1024, 1024)]
LOSS_SHAPES = [(1, 1), (7, 13), (17, 10), (13, 1024), (0, 10), (4099, 10)]


def data(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def act_inputs(rng, shape, dtype, act):
    """z with no element at relu's kink; y = f(z) from the oracle."""
    z = data(rng, shape, dtype, 2.0)
    z[np.abs(z) < 1e-3] = 0.5
    y = fastnn.get_backend("numpy").activation_forward(z, act)
    return z, y


# ------------------------------------------------------------------ signatures
@pytest.mark.parametrize("name", sorted(RAW_KERNELS))
def test_raw_kernel_signatures_match_contract(backend, name):
    assert contract.raw_signature(getattr(backend.raw, name)) == RAW_KERNELS[name]


def test_every_backend_available():
    assert fastnn.available_backends() == ["cython", "numba", "numpy"], (
        fastnn.kernels.backend_status()
    )


# ---------------------------------------------------------------------- matmul
@pytest.mark.parametrize("shape", LINEAR_SHAPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_matmul(compiled, oracle, dtype, rng, shape, trans_a, trans_b):
    m, k, n = shape
    a = data(rng, (k, m) if trans_a else (m, k), dtype)
    b = data(rng, (n, k) if trans_b else (k, n), dtype)
    flags = dict(trans_a=trans_a, trans_b=trans_b)
    expected = oracle.matmul(a, b, **flags)
    out = np.full((m, n), np.nan, dtype)
    got = compiled.matmul(a, b, out, **flags)
    assert got is out
    assert_close(got, expected, kind="gemm")
    # accumulate adds to what out holds
    base = data(rng, (m, n), dtype)
    acc = base.copy()
    compiled.matmul(a, b, acc, accumulate=True, **flags)
    assert_close(acc, base + expected, kind="gemm")


# ----------------------------------------------------------------- activations
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shape", ELEMENTWISE_SHAPES)
def test_activation_forward(compiled, oracle, dtype, rng, act, shape):
    z = data(rng, shape, dtype, 3.0)
    expected = oracle.activation_forward(z, act, alpha=0.05)
    out = np.full(shape, np.nan, dtype)
    got = compiled.activation_forward(z, act, out, alpha=0.05)
    assert got is out
    assert_close(got, expected, err_msg=act)
    inplace = z.copy()
    assert compiled.activation_forward(inplace, act, inplace, alpha=0.05) is inplace
    assert_close(inplace, expected, err_msg=act)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shape", ELEMENTWISE_SHAPES)
def test_activation_backward(compiled, oracle, dtype, rng, act, shape):
    z, y = act_inputs(rng, shape, dtype, act)
    dy = data(rng, shape, dtype)
    expected = oracle.activation_backward(dy, z, y, act, alpha=0.05)
    out = np.full(shape, np.nan, dtype)
    assert compiled.activation_backward(dy, z, y, act, out, alpha=0.05) is out
    assert_close(out, expected, err_msg=act)
    compiled.activation_backward(dy, z, y, act, dy, alpha=0.05)  # in place
    assert_close(dy, expected, err_msg=act)


def test_activation_limits(backend, dtype):
    """Saturating activations stay finite and exact at huge |z|; NaN propagates."""
    z = np.array([-1e4, -800.0, -89.0, 0.0, 89.0, 800.0, 1e4, np.nan], dtype)
    sig = backend.activation_forward(z, "sigmoid")
    np.testing.assert_array_equal(sig[[0, 1, 3, 5, 6]], [0, 0, 0.5, 1, 1])
    assert np.isnan(sig[-1])
    tanh = backend.activation_forward(z, "tanh")
    np.testing.assert_array_equal(tanh[[0, 1, 3, 5, 6]], [-1, -1, 0, 1, 1])
    for act in ACTS:
        y = backend.activation_forward(z, act)
        assert np.isnan(y[-1]), act
        assert np.all(np.isfinite(y[:-1])), act


# ---------------------------------------------------------------------- linear
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shape", LINEAR_SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_linear_forward(compiled, oracle, dtype, rng, act, shape, bias):
    n, k, m = shape
    x, w = data(rng, (n, k), dtype), data(rng, (k, m), dtype, 1 / np.sqrt(k))
    b = data(rng, (m,), dtype) if bias else None
    expected_z = oracle.linear_forward(x, w, b, "identity")
    expected = oracle.activation_forward(expected_z, act, alpha=0.05)
    out, z_out = np.full((n, m), np.nan, dtype), np.full((n, m), np.nan, dtype)
    got = compiled.linear_forward(x, w, b, act, out, z_out=z_out, alpha=0.05)
    assert got is out
    assert_close(z_out, expected_z, kind="gemm")
    assert_close(out, expected, kind="gemm", err_msg=act)
    # without z_out
    assert_close(
        compiled.linear_forward(x, w, b, act, alpha=0.05), expected, kind="gemm"
    )


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shape", LINEAR_SHAPES)
def test_linear_backward(compiled, oracle, dtype, rng, act, shape):
    n, k, m = shape
    x, w = data(rng, (n, k), dtype), data(rng, (k, m), dtype)
    z, y = act_inputs(rng, (n, m), dtype, act)
    dy = data(rng, (n, m), dtype)
    kw = dict(weight_decay=0.01, alpha=0.05)
    dw_e, db_e, dx_e = oracle.linear_backward(dy, x, w, z, y, act, **kw)
    bufs = {k_: np.full(s, np.nan, dtype) for k_, s in
            (("dw_out", (k, m)), ("db_out", (m,)), ("dx_out", (n, k)))}  # fmt: skip
    dw, db, dx = compiled.linear_backward(dy, x, w, z, y, act, **bufs, **kw)
    assert dw is bufs["dw_out"] and db is bufs["db_out"] and dx is bufs["dx_out"]
    assert_close(dw, dw_e, kind="gemm", err_msg=f"{act} dw")
    assert_close(db, db_e, kind="gemm", err_msg=f"{act} db")
    assert_close(dx, dx_e, kind="gemm", err_msg=f"{act} dx")
    # input layer: no dx, no db; dz written over dy
    dy2 = dy.copy()
    dw2, db2, dx2 = compiled.linear_backward(
        dy2, x, w, z, y, act, dz_out=dy2, compute_db=False, compute_dx=False, **kw
    )
    assert db2 is None and dx2 is None
    assert_close(dw2, dw_e, kind="gemm")
    assert_close(dy2, oracle.activation_backward(dy, z, y, act, alpha=0.05))


# ------------------------------------------------------------------------ loss
@pytest.mark.parametrize("shape", LOSS_SHAPES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_softmax_cross_entropy(
    compiled, oracle, dtype, rng, shape, weighted, smoothing
):
    n, k = shape
    logits = data(rng, shape, dtype, 3.0)
    labels = rng.integers(0, k, n)
    sw = rng.uniform(0.1, 2.0, n).astype(dtype) if weighted else None
    kw = dict(sample_weight=sw, label_smoothing=smoothing)
    rows_e = np.empty(n, dtype)
    loss_e, grad_e = oracle.softmax_cross_entropy(
        logits, labels, row_loss_out=rows_e, **kw
    )
    grad, rows = np.full(shape, np.nan, dtype), np.full(n, np.nan, dtype)
    loss, g = compiled.softmax_cross_entropy(
        logits, labels, grad_out=grad, row_loss_out=rows, **kw
    )
    assert g is grad
    if n == 0:
        assert np.isnan(loss) and np.isnan(loss_e)
        return
    assert_close(rows, rows_e)
    assert_close(grad, grad_e)
    assert_close(loss, loss_e, dtype, kind="gemm")
    loss_only, none = compiled.softmax_cross_entropy(
        logits, labels, compute_grad=False, **kw
    )
    assert none is None and loss_only == loss


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (1024, 10), (0, 3)])
def test_softmax(compiled, oracle, dtype, rng, shape):
    logits = data(rng, shape, dtype, 5.0)
    expected = oracle.softmax(logits)
    out = np.full(shape, np.nan, dtype)
    assert compiled.softmax(logits, out) is out
    assert_close(out, expected)
    if shape[0]:
        assert_close(out.sum(axis=1), np.ones(shape[0], dtype), kind="gemm")


def _extreme_logits(dtype):
    big = 89.0 if dtype == np.float32 else 710.0
    return np.array(
        [[1e4, -1e4, 0.0], [-1e4, 1e4, 5.0], [big, -big, 0.0], [-big, big, -big],
         [2.0**20, 2.0**20 + 1, 2.0**20 - 1], [-(2.0**20), -(2.0**20) + 2, 0.0]],
        dtype,
    )  # fmt: skip


def test_softmax_cross_entropy_extreme_logits(backend, dtype):
    logits = _extreme_logits(dtype)
    labels = np.array([0, 0, 1, 1, 2, 1])
    rows = np.empty(len(labels), dtype)
    loss, grad = backend.softmax_cross_entropy(logits, labels, row_loss_out=rows)
    assert np.all(np.isfinite(rows)) and np.isfinite(loss) and np.all(np.isfinite(grad))
    z = logits.astype(np.float64)  # exact per-row answer in float64 from shifted logits
    shifted = z - z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(shifted).sum(axis=1))
    expected_rows = lse - shifted[np.arange(6), labels]
    np.testing.assert_allclose(rows, expected_rows, rtol=1e-6, atol=1e-6)
    p = np.exp(shifted - lse[:, None])
    p[np.arange(6), labels] -= 1
    np.testing.assert_allclose(grad, p / 6, rtol=1e-5, atol=1e-7)


def test_softmax_cross_entropy_nan_and_inf_rows(backend, dtype):
    logits = np.array([[1.0, np.nan, 0.0], [np.inf, 0.0, 1.0], [1.0, 2.0, 3.0],
                       [-np.inf, -np.inf, -np.inf]], dtype)  # fmt: skip
    rows = np.empty(4, dtype)
    loss, grad = backend.softmax_cross_entropy(
        logits, np.array([0, 1, 2, 0]), row_loss_out=rows
    )
    assert np.isnan(rows[0]) and np.isnan(rows[1]) and np.isnan(rows[3])
    assert np.isfinite(rows[2]) and np.isnan(loss)
    assert np.all(np.isnan(grad[0])) and np.all(np.isfinite(grad[2]))


# ------------------------------------------------------------------ optimizers
@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("size", [1, 13, 1027, 300_001])
def test_sgd_update(
    compiled, oracle, dtype, rng, momentum, nesterov, weight_decay, size
):
    p0 = data(rng, (size,), dtype)
    states = {}
    for be in (oracle, compiled):
        p, v = p0.copy(), np.zeros_like(p0) if momentum else None
        for step in range(3):
            g = data(np.random.default_rng(step), (size,), dtype)
            be.sgd_update(p, g, v, lr=0.1, momentum=momentum, nesterov=nesterov,
                          weight_decay=weight_decay)  # fmt: skip
        states[be.name] = (p, v)
    assert_close(states[compiled.name][0], states["numpy"][0])
    if momentum:
        assert_close(states[compiled.name][1], states["numpy"][1])


@pytest.mark.parametrize("solver", ["sgd", "adam"])
@pytest.mark.parametrize("size", [1, 13, 1027, 300_001])
def test_update_sq_norm_is_the_squared_norm_before_the_step(
    compiled, oracle, dtype, rng, solver, size
):
    """sq_norm_out: sum(param**2) in float64 before the step, read in the same pass;
    the step itself is bitwise the same with and without it."""
    p0, g = data(rng, (size,), dtype), data(rng, (size,), dtype)
    before = float(np.dot(p0.astype(np.float64), p0.astype(np.float64)))
    for be in (oracle, compiled):
        stepped = []
        out = np.full(1, np.nan)
        for sq_norm_out in (out, None):
            p, s1, s2 = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
            if solver == "sgd":
                be.sgd_update(p, g, s1, lr=0.1, momentum=0.9, nesterov=True,
                              weight_decay=0.01, sq_norm_out=sq_norm_out)  # fmt: skip
            else:
                be.adam_update(p, g, s1, s2, step=1, weight_decay=0.01,
                               sq_norm_out=sq_norm_out)  # fmt: skip
            stepped.append(p)
        np.testing.assert_array_equal(stepped[0], stepped[1])
        assert not np.array_equal(stepped[0], p0)
        # float64 sums of up to 3e5 squares in different orders: a few ulps apart
        assert math.isclose(out[0], before, rel_tol=1e-12), (be.name, out[0], before)


@pytest.mark.parametrize("decoupled", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("shape", [(1,), (7, 13), (300_001,)])
def test_adam_update(compiled, oracle, dtype, rng, decoupled, weight_decay, shape):
    p0 = data(rng, shape, dtype)
    states = {}
    for be in (oracle, compiled):
        p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
        for step in range(1, 4):
            g = data(np.random.default_rng(step), shape, dtype)
            be.adam_update(p, g, m, v, step=step, lr=0.01, weight_decay=weight_decay,
                           decoupled=decoupled)  # fmt: skip
        states[be.name] = (p, m, v)
    for got, expected in zip(states[compiled.name], states["numpy"], strict=True):
        assert_close(got, expected)


# ---------------------------------------------------------- read-only, threads
def _all_ops(be, dtype, rng, n=257, k=129, m=65):
    """Run every op on fresh data; return inputs (to check they stay unchanged) and
    outputs."""
    x, w, b = data(rng, (n, k), dtype), data(rng, (k, m), dtype), data(rng, (m,), dtype)
    z, y = act_inputs(rng, (n, m), dtype, "gelu")
    dy, labels = data(rng, (n, m), dtype), rng.integers(0, m, n)
    big = data(rng, (600, 600), dtype)
    inputs = [x, w, b, z, y, dy, labels, big]
    for a in inputs:
        a.flags.writeable = False
    outs = [be.matmul(x, w, trans_b=False), be.matmul(x, x, trans_a=True)]
    for act in ACTS:
        outs.append(be.linear_forward(x, w, b, act, z_out=np.empty((n, m), dtype)))
        outs.extend(be.linear_backward(dy, x, w, z, y, act, weight_decay=0.1))
        outs.append(be.activation_forward(big, act))
        outs.append(be.activation_backward(big, big, big, act))
    loss, grad = be.softmax_cross_entropy(z, labels, label_smoothing=0.1)
    outs += [np.array(loss), grad, be.softmax(big)]
    p, vel = np.ones(big.shape, dtype), np.zeros(big.shape, dtype)
    sq_norms = np.zeros(2)
    be.sgd_update(p, big, vel, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1,
                  sq_norm_out=sq_norms[:1])  # fmt: skip
    mom, sq = np.zeros_like(p), np.zeros_like(p)
    be.adam_update(p, big, mom, sq, step=1, weight_decay=0.1, decoupled=True,
                   sq_norm_out=sq_norms[1:])  # fmt: skip
    return inputs, outs + [p, vel, mom, sq, sq_norms]


def test_read_only_inputs_accepted_and_unchanged(backend, dtype):
    rng = np.random.default_rng(7)
    inputs, _ = _all_ops(backend, dtype, rng)
    fresh, _ = _all_ops(fastnn.get_backend("numpy"), dtype, np.random.default_rng(7))
    for a, b in zip(inputs, fresh, strict=True):
        np.testing.assert_array_equal(a, b)


def test_one_and_two_threads_bitwise_equal(compiled, dtype):
    """The compiled backends split every GEMM and reduction in fixed blocks, so the
    thread count never changes a result (NumPy's own OpenBLAS does not promise that:
    its partition, and so its rounding, follows the thread count)."""
    results = []
    for n_threads in (1, 2):
        with fastnn.num_threads(n_threads):
            results.append(_all_ops(compiled, dtype, np.random.default_rng(3))[1])
    for one, two in zip(*results, strict=True):
        np.testing.assert_array_equal(one, two)
