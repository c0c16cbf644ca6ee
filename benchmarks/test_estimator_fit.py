"""Fit time of fastnn.MLPClassifier against scikit-learn's MLPClassifier.

Same data (float32), architecture (hidden (256, 128)), solver and number of epochs
(``max_iter=EPOCHS`` with ``tol=0`` and a huge ``n_iter_no_change``, so every epoch
runs). ``benchmark.group = "MLPClassifier.fit <dataset>|<solver>"`` lines up the
implementations: ``sklearn`` and ``fastnn-<backend>`` for every available backend; the
fastnn entries carry ``speedup_vs_sklearn`` in ``extra_info`` (sklearn runs first in
each group). ``gemm-only`` runs just the matrix products of the same steps (forward,
weight gradients, and input gradients of every layer but the first: what both
implementations compute) with NumPy's BLAS, nothing else: its ``speedup_vs_sklearn``
is the ceiling of any fit with this math whose products run at BLAS speed. Real run:
``pytest benchmarks/test_estimator_fit.py --benchmark-enable --benchmark-only``. Under
plain ``pytest`` (``--benchmark-disable``) each body runs once on a small slice, as a
smoke test.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier as SkMLP

import fastnn
from fastnn.bench.workloads import estimator_params, make_gemm_only_fit
from fastnn.estimator import MLPClassifier

EPOCHS = 3
HIDDEN = (256, 128)
DATASETS = ("digits", "synthetic-20000x784")
IMPLS = (
    "sklearn",
    *(f"fastnn-{name}" for name in fastnn.available_backends()),
    "gemm-only",
)
_sklearn_median: dict[str, float] = {}


@functools.cache
def _data(name: str, smoke: bool) -> tuple[np.ndarray, np.ndarray]:
    if name == "digits":
        X, y = load_digits(return_X_y=True)
        X = (X / 16.0).astype(np.float32)
        return (X[:300], y[:300]) if smoke else (X, y)
    n, d, k = (500, 784, 10) if smoke else (20000, 784, 10)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d), dtype=np.float32)
    y = (X @ rng.standard_normal((d, k), dtype=np.float32)).argmax(axis=1)
    return X, y


class _GemmOnly:
    """The GEMMs of ``epochs`` epochs of batch-200 steps (scikit-learn's "auto")."""

    def __init__(self, epochs: int):
        self.epochs = epochs
        self.n_iter_ = epochs

    def fit(self, X, y):
        make_gemm_only_fit(HIDDEN, self.epochs, X, y, threads=None)()
        return self


def _estimator(impl: str, solver: str, epochs: int):
    params = estimator_params(solver, HIDDEN, epochs)
    if impl == "sklearn":
        return SkMLP(**params)
    if impl == "gemm-only":
        return _GemmOnly(epochs)
    return MLPClassifier(backend=impl.removeprefix("fastnn-"), **params)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("solver", ("sgd", "adam"))
@pytest.mark.parametrize("dataset", DATASETS)
def test_fit(benchmark, dataset, solver, impl):
    smoke = benchmark.disabled
    X, y = _data(dataset, smoke)
    epochs = 1 if smoke else EPOCHS
    group = f"MLPClassifier.fit {dataset}|{solver}"

    def fit():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return _estimator(impl, solver, epochs).fit(X, y)

    if not smoke:  # JIT compilation and first-touch costs stay out of the timings
        _estimator(impl, solver, 1).fit(X[:256], y[:256])
    benchmark.group = group
    benchmark.extra_info.update(
        impl=impl, dataset=dataset, solver=solver, epochs=epochs, shape=list(X.shape),
        dtype="float32", threads=fastnn.get_num_threads(),
    )  # fmt: skip
    model = benchmark.pedantic(fit, rounds=3, iterations=1)
    assert model.n_iter_ == epochs
    if impl != "gemm-only":
        assert model.coefs_[0].dtype == np.float32
    if not smoke:
        median = benchmark.stats.stats.median
        if impl == "sklearn":
            _sklearn_median[group] = median
        elif group in _sklearn_median:
            benchmark.extra_info["speedup_vs_sklearn"] = _sklearn_median[group] / median
