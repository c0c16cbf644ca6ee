"""Shared fixtures: every backend, both dtypes, one tolerance table."""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import pytest
from fastnn.kernels import BACKEND_NAMES

import fastnn

DTYPES = (np.float32, np.float64)
COMPILED = tuple(n for n in BACKEND_NAMES if n != "numpy")


def pytest_configure(config) -> None:
    """The measured GEMM plan (fastnn/_gemm_wisdom.py) of the whole session goes to a
    folder of its own, which subprocesses inherit: tests never read or write the
    user's cache."""
    if "FASTNN_CACHE_DIR" not in os.environ:
        config._fastnn_cache = tempfile.mkdtemp(prefix="fastnn-test-cache-")
        os.environ["FASTNN_CACHE_DIR"] = config._fastnn_cache


def pytest_unconfigure(config) -> None:
    folder = getattr(config, "_fastnn_cache", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


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
