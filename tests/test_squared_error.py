"""The fused squared-error loss kernel: every backend and dtype against the NumPy
oracle, finite differences in float64, NaN/inf, threads, argument checks."""

from __future__ import annotations

import numpy as np
import pytest
from fastnn.kernels import tuning

import fastnn

TOL = {np.dtype(np.float32): 2e-6, np.dtype(np.float64): 1e-13}


def _case(rng, dtype, n=37, k=5, weights=True):
    pred = rng.normal(size=(n, k)).astype(dtype)
    target = rng.normal(size=(n, k)).astype(dtype)
    sw = rng.uniform(0.1, 3.0, size=n).astype(dtype) if weights else None
    return pred, target, sw


@pytest.mark.parametrize("weights", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("shape", [(37, 5), (1, 1), (64, 8), (3, 33)])
def test_matches_the_oracle(backend, oracle, dtype, rng, weights, shape):
    pred, target, sw = _case(rng, dtype, *shape, weights=weights)
    got_rows = np.empty(shape[0], dtype)
    want_rows = np.empty(shape[0], dtype)
    grad = np.full(shape, np.nan, dtype)
    loss, g = backend.squared_error(
        pred, target, sample_weight=sw, grad_out=grad, row_loss_out=got_rows
    )
    want, want_g = oracle.squared_error(
        pred, target, sample_weight=sw, row_loss_out=want_rows
    )
    assert g is grad  # out= really used
    tol = TOL[dtype]
    assert loss == pytest.approx(want, rel=tol)
    np.testing.assert_allclose(grad, want_g, rtol=tol, atol=tol)
    np.testing.assert_allclose(got_rows, want_rows, rtol=tol)
    # the definition, in float64
    d = pred.astype(np.float64) - target
    w = np.ones(shape[0]) if sw is None else sw.astype(np.float64)
    assert loss == pytest.approx(np.sum(w * 0.5 * (d * d).sum(1)) / shape[0], rel=tol)


@pytest.mark.parametrize("weights", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize(
    "shape",
    [(3, tuning.SQUARED_ERROR_SCRATCH + 88), (700, 3)],
    ids=["row-longer-than-scratch", "several-scratch-fills"],
)
def test_scratch_boundaries_match_the_oracle(backend, oracle, dtype, rng, weights,
                                             shape):  # fmt: skip
    pred, target, sw = _case(rng, dtype, *shape, weights=weights)
    got_rows, want_rows = np.empty(shape[0], dtype), np.empty(shape[0], dtype)
    loss, grad = backend.squared_error(
        pred, target, sample_weight=sw, row_loss_out=got_rows
    )
    want, want_g = oracle.squared_error(
        pred, target, sample_weight=sw, row_loss_out=want_rows
    )
    tol = TOL[dtype]
    assert loss == pytest.approx(want, rel=tol)
    np.testing.assert_allclose(grad, want_g, rtol=tol, atol=tol)
    np.testing.assert_allclose(got_rows, want_rows, rtol=tol)


def test_raw_cython_kernel_checks_its_arrays():
    """The Cython raw kernel takes plain arrays (no typed memoryviews): it checks
    them itself, a clear error instead of reading or writing out of bounds."""
    raw = fastnn.get_backend("cython").raw.squared_error
    p = np.ones((4, 3), np.float32)
    e = np.empty(0, np.float32)
    g = np.zeros((4, 3), np.float32)
    assert raw(p, p.copy(), e, g, e) == 0.0
    ro = g.copy()
    ro.flags.writeable = False
    bad = [
        ((p.tolist(), p, e, g, e), TypeError, "pred must be a numpy.ndarray"),
        ((p.astype(np.float16), p, e, g, e), TypeError, "pred must be float32 or"),
        ((p, p.astype(np.float64), e, g, e), TypeError, "target has dtype float64"),
        ((p, p.astype(">f4"), e, g, e), TypeError, "target has dtype"),
        ((p[:, :2], p[:, :2].copy(), e, g, e), ValueError, "pred must be C-contig"),
        ((p, p[:, 0], e, g, e), ValueError, "target must be 2-D"),
        ((p, p, e, ro, e), ValueError, "grad_out is read-only"),
        ((p, p[:2].copy(), e, g, e), ValueError, "does not match"),
        ((p, p, np.ones(3, np.float32), g, e), ValueError, "does not match"),
        ((p, p, e, g[:2].copy(), e), ValueError, "does not match"),
        ((p, p, e, g, np.empty(5, np.float32)), ValueError, "does not match"),
    ]
    for args, exc, match in bad:
        with pytest.raises(exc, match=match):
            raw(*args)
    assert not g.any()


def test_raw_kernels_take_rows_without_outputs(backend):
    """The wrapper rejects k = 0; the raw kernels still give a zero loss (the sum
    over no outputs) instead of dividing their scratch by zero."""
    pred = np.empty((3, 0), np.float64)
    empty = np.empty(0, np.float64)
    assert backend.raw.squared_error(pred, pred, empty, empty, empty) == 0.0


def test_gradient_matches_finite_differences(backend, rng):
    pred, target, sw = _case(rng, np.float64, n=6, k=3)
    _, grad = backend.squared_error(pred, target, sample_weight=sw)
    h = 1e-6
    for i in range(6):
        for j in range(3):
            up, down = pred.copy(), pred.copy()
            up[i, j] += h
            down[i, j] -= h
            fd = (
                backend.squared_error(up, target, sample_weight=sw, compute_grad=False)[
                    0
                ]
                - backend.squared_error(
                    down, target, sample_weight=sw, compute_grad=False
                )[0]
            ) / (2 * h)
            assert grad[i, j] == pytest.approx(fd, rel=1e-7, abs=1e-10)


def test_non_finite_values_propagate(backend, dtype):
    pred = np.zeros((3, 2), dtype)
    target = np.zeros((3, 2), dtype)
    pred[1, 0] = np.nan
    pred[2, 1] = np.inf
    rows = np.empty(3, dtype)
    loss, grad = backend.squared_error(pred, target, row_loss_out=rows)
    assert np.isnan(loss)
    assert rows[0] == 0 and np.isnan(rows[1]) and np.isinf(rows[2])
    assert np.isnan(grad[1, 0]) and np.isinf(grad[2, 1]) and grad[0].tolist() == [0, 0]
    empty = np.empty((0, 2), dtype)
    assert np.isnan(backend.squared_error(empty, empty)[0])


def test_one_and_two_threads_bitwise_equal(compiled, dtype):
    rng = np.random.default_rng(3)
    pred, target, sw = _case(rng, dtype, n=40_000, k=8)
    out = []
    for n_threads in (1, 2):
        with fastnn.num_threads(n_threads):
            loss, grad = compiled.squared_error(pred, target, sample_weight=sw)
            out.append((loss, grad.tobytes()))
    assert out[0] == out[1]


def test_read_only_inputs_and_bad_arguments(backend, rng):
    pred, target, sw = _case(rng, np.float64)
    for a in (pred, target, sw):
        a.flags.writeable = False
    loss, _ = backend.squared_error(pred, target, sample_weight=sw)
    assert np.isfinite(loss)
    with pytest.raises(ValueError, match="target has shape"):
        backend.squared_error(pred, np.ascontiguousarray(target[:, :2]))
    with pytest.raises(TypeError, match="mixed dtypes"):
        backend.squared_error(pred, target.astype(np.float32))
    with pytest.raises(ValueError, match="sample_weight has shape"):
        backend.squared_error(pred, target, sample_weight=sw[:3])
    own = pred.copy()
    with pytest.raises(ValueError, match="must not overlap"):
        backend.squared_error(own, target, grad_out=own)
    with pytest.raises(ValueError, match="2-D"):
        backend.squared_error(pred[:, 0], target[:, 0])
