"""Shared fixtures: every backend, both dtypes, one tolerance table."""

from __future__ import annotations

import numpy as np
import pytest
from fastnn.kernels import BACKEND_NAMES

import fastnn

DTYPES = (np.float32, np.float64)
COMPILED = tuple(n for n in BACKEND_NAMES if n != "numpy")


def pytest_report_header(config) -> list[str]:
    """fastnn.show_config() opens the output: what CI installed (backends, BLAS, MPI
    library and launcher), whether the tests pass or fail."""
    import io

    out = io.StringIO()
    fastnn.show_config(file=out)
    return out.getvalue().splitlines()


@pytest.fixture(params=BACKEND_NAMES)
def backend(request):
    """Every backend: an unavailable one fails (numba and the extension are required
    dependencies)."""
    return fastnn.get_backend(request.param)


@pytest.fixture(params=COMPILED)
def compiled(request):
    return fastnn.get_backend(request.param)


@pytest.fixture
def oracle():
    return fastnn.get_backend("numpy")


@pytest.fixture(params=DTYPES, ids=["f32", "f64"])
def dtype(request):
    return np.dtype(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
