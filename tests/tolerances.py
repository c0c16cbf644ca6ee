"""The one tolerance table of the test suite, and the comparison that uses it."""

from __future__ import annotations

import numpy as np

# One tolerance table. "elementwise": one rounding chain per element (transcendental
# functions may differ by a few ulp between NumPy and libm). "gemm": a length-K dot
# product per element, compared by relative Frobenius error (REFERENCE.md §4).
TOLERANCES = {
    np.dtype(np.float32): {"rtol": 2e-5, "atol": 2e-6, "frobenius": 1e-5},
    np.dtype(np.float64): {"rtol": 1e-12, "atol": 1e-13, "frobenius": 1e-12},
}


def assert_close(actual, expected, dtype=None, *, kind="elementwise", err_msg=""):
    """Compare a kernel's result with the oracle's using the tolerance table."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    tol = TOLERANCES[np.dtype(dtype if dtype is not None else expected.dtype)]
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if kind == "gemm":
        scale = np.linalg.norm(expected.astype(np.float64))
        diff = np.linalg.norm(actual.astype(np.float64) - expected)
        if scale == 0.0:
            assert diff == 0.0, err_msg
        else:
            assert diff / scale <= tol["frobenius"], (
                f"{err_msg} rel err {diff / scale:g}"
            )
    else:
        np.testing.assert_allclose(
            actual, expected, rtol=tol["rtol"], atol=tol["atol"], err_msg=err_msg
        )
