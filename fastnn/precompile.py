"""Compile the Numba backend ahead of time, into Numba's on-disk cache.

``pip install`` runs this once the package is built (setup.py), so the first
``fastnn train --backend numba`` after an install loads compiled kernels instead of
compiling them (tens of seconds). It trains tiny networks through the public API, in
both float dtypes, with every kind of call the engine makes (softmax cross-entropy and
squared error, SGD and Adam, sample weights, a validation split, read-only inputs,
prediction, input gradients, the single-op kernels), once with the serial kernels and
once with the parallel ones: Numba compiles one specialisation per argument type,
never per value, so tiny arrays compile exactly what large ones use. It needs only what
building fastnn needs (pyproject.toml's build requirements: NumPy, SciPy, Numba,
threadpoolctl).

Numba keys its cache by the source files' contents, its own version, Python's, and the
CPU's name and features: a cache built on one CPU is never used on another (Numba then
compiles as usual). ``python -m fastnn.precompile`` fills the cache by hand, e.g. in a
container image built from a wheel made on another machine.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

#: The widths of the networks trained: tiny, since only the argument types matter.
_SIZES = (6, 5, 3)
_ROWS = 24


@contextlib.contextmanager
def _kernel_split(parallel: bool):
    """Run the single-op kernels' parallel (every size) or serial (no size) variant:
    their Python wrappers choose by the tuning table's ``min_work`` at call time."""
    from .kernels.nb import _options

    saved = _options.TUNE
    _options.TUNE = saved._replace(min_work=0 if parallel else _options.SERIAL_ONLY)
    try:
        yield
    finally:
        _options.TUNE = saved


def _readonly(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flags.writeable = False
    return a


def _train_everything(dtype: np.dtype) -> None:
    """Every kind of call the model API makes, on the numba backend."""
    from . import MLP, SGD, Adam
    from .explain import input_gradients
    from .kernels import get_backend

    rng = np.random.default_rng(0)
    n_in, _, n_out = _SIZES
    X = rng.standard_normal((_ROWS, n_in)).astype(dtype)
    labels = np.arange(_ROWS) % n_out
    targets = rng.standard_normal((_ROWS, 2)).astype(dtype)
    weights = rng.uniform(0.5, 1.5, _ROWS)
    for optimizer in (SGD(lr=0.01, momentum=0.9), Adam(lr=1e-3)):
        for X_fit in (X, _readonly(X)):
            clf = MLP(_SIZES, optimizer=optimizer, dtype=dtype, backend="numba")
            # batches of 8 and a last one of 5: several steps per compiled call and
            # the single-step path; a validation split evaluates every epoch
            clf.fit(X_fit[:21], labels[:21], epochs=2, batch_size=8, verbose=0,
                    validation_split=0.2, seed=0)  # fmt: skip
            clf.fit(X_fit, labels, epochs=1, batch_size=8, verbose=0,
                    sample_weight=weights, seed=0)  # fmt: skip
            clf.predict_proba(X_fit)
            clf.evaluate(X_fit, labels, sample_weight=weights)
            # the fused loss_grad alone: explain, the distributed fit, L-BFGS (in
            # float64, on the user's own X, read-only too, when it is float64)
            input_gradients(clf, X_fit, y=labels)
            for y in (targets, targets[:, 0]):
                reg = MLP((n_in, 5, y.ndim), loss="mse", optimizer=optimizer,
                          dtype=dtype, backend="numba")  # fmt: skip
                # the validation loss is evaluate's kernel part (its metrics are
                # scikit-learn's, which the build environment lacks)
                reg.fit(X_fit, y, epochs=1, batch_size=8, verbose=0, seed=0,
                        validation_split=0.2)  # fmt: skip
                reg.predict(X_fit)
    _single_ops(get_backend("numba"), rng, dtype)


def _single_ops(kb, rng, dtype: np.dtype) -> None:
    """The kernels a user may call one by one (``fastnn.kernels``), each once."""
    a = rng.standard_normal((4, 3)).astype(dtype)
    b = rng.standard_normal((3, 5)).astype(dtype)
    kb.matmul(a, b)
    z = rng.standard_normal(12).astype(dtype)
    y = kb.activation_forward(z, "tanh")
    kb.activation_backward(z, z, y, "tanh")
    w, g = z.copy(), z.copy()
    kb.sgd_update(w, g, np.zeros_like(w), lr=0.1, momentum=0.9)
    kb.adam_update(w, g, np.zeros_like(w), np.zeros_like(w), lr=0.1, step=1)
    logits = rng.standard_normal((4, 3)).astype(dtype)
    kb.softmax(logits)
    kb.softmax_cross_entropy(logits, np.arange(4) % 3)
    kb.squared_error(logits, logits[::-1].copy())
    z_out = np.empty((4, 5), dtype)
    y_out = kb.linear_forward(a, b, np.zeros(5, dtype), "relu", z_out=z_out)
    kb.linear_backward(y_out, a, b, z_out, y_out, "relu")


def compile_all(dtypes=(np.float32, np.float64)) -> float:
    """Compile (or load from the cache) every kernel specialisation the engine uses,
    for each dtype; returns the seconds it took."""
    t0 = time.perf_counter()
    for dtype in dtypes:
        for parallel in (False, True):
            with _kernel_split(parallel):
                _train_everything(np.dtype(dtype))
    return time.perf_counter() - t0


def in_build(build_lib: Path, environ: Mapping[str, str]) -> int | None:
    """What setup.py runs on the package built in ``build_lib`` (not in-place builds).

    First the Numba cache files an earlier build left there go, also when the
    precompile is skipped (``FASTNN_NUMBA_PRECOMPILE=0`` in ``environ``): the wheel
    would ship them, and Numba loads an entry whose inlined helpers in another module
    have changed since (kernels/nb/_options.py). Then the precompile runs in a fresh
    process that imports the built package, with no ``NUMBA_*`` variable (and
    ``FASTNN_GEMM_PLAN=rule``: nothing to measure for a build):
    ``NUMBA_CACHE_DIR`` would send the cache out of the package, and settings such as
    ``NUMBA_OPT``, ``NUMBA_BOUNDSCHECK`` or ``NUMBA_DEBUGINFO`` change the compiled
    code but not Numba's cache key, so every user of the build would load code made
    with them.

    Parameters
    ----------
    build_lib : Path
        The build folder holding the built ``fastnn`` package.
    environ : mapping
        The build's environment variables.

    Returns
    -------
    int or None
        The precompile's exit status; None when skipped.
    """
    cache = build_lib / "fastnn" / "kernels" / "nb" / "__pycache__"
    for stale in [*cache.glob("*.nbi"), *cache.glob("*.nbc")]:
        stale.unlink()
    if environ.get("FASTNN_NUMBA_PRECOMPILE") == "0":
        return None
    env = {k: v for k, v in environ.items() if not k.startswith("NUMBA_")}
    # its fits compile kernels; timing the GEMM plan there would only fill the
    # builder's cache (fastnn/_gemm_wisdom.py)
    env["FASTNN_GEMM_PLAN"] = "rule"
    paths = [str(build_lib.resolve()), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    print("fastnn: compiling the Numba kernels into their cache", file=sys.stderr)
    command = [sys.executable, "-m", "fastnn.precompile"]
    return subprocess.run(command, cwd=build_lib, env=env).returncode


def main() -> int:
    seconds = compile_all()
    print(f"fastnn: Numba kernels compiled into the cache in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
