"""fastnn is a good neighbour: importing it and training leave the environment and
other libraries' thread settings as they were (each case in a fresh process, since
what a library reads at load time can only be seen there)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

import fastnn

_PROBE = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    from threadpoolctl import threadpool_info, threadpool_limits

    blas_threads = int(sys.argv[1])
    if blas_threads:  # a user's own setting, made before fastnn is imported
        threadpool_limits(blas_threads, user_api="blas")

    def state():
        numba = sys.modules.get("numba")
        return {
            "environ": dict(os.environ),
            "blas": sorted(
                (i["filepath"], i["num_threads"])
                for i in threadpool_info()
                if i["user_api"] == "blas"
            ),
            "numba": None if numba is None else numba.get_num_threads(),
        }

    before = state()
    import fastnn
    after_import = state()
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 5)).astype(np.float32)
    y = np.arange(64) % 3
    for backend in fastnn.available_backends():
        for n in (None, 1, 2):
            m = fastnn.MLP((5, 8, 3), backend=backend, n_threads=n)
            m.fit(X, y, epochs=1, batch_size=16, verbose=0)
            m.predict_proba(X)
        with fastnn.num_threads(1):
            m.evaluate(X, y)
    fastnn.set_num_threads(1)
    m.fit(X, y, epochs=1, batch_size=16, verbose=0)
    numba_loaded = "numba" in sys.modules
    after_fit = state()
    # Numba was loaded by fastnn: what a later import by the user would see
    before["numba"] = after_import["numba"] = None
    if numba_loaded:
        import numba

        after_fit["numba_default"] = numba.config.NUMBA_NUM_THREADS
    print(json.dumps([before, after_import, after_fit]))
    """
)


@pytest.mark.parametrize("blas_threads", [0, 1], ids=["default", "user-set-1"])
def test_import_and_fit_leave_environment_and_blas_threads_alone(blas_threads):
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(blas_threads)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    before, after_import, after_fit = json.loads(out.stdout.strip().splitlines()[-1])
    assert after_import["environ"] == before["environ"]
    assert after_fit["environ"] == before["environ"]
    assert before["blas"], "no BLAS library seen: the probe checks nothing"
    # the BLAS libraries loaded before fastnn keep their thread counts
    seen = dict(after_fit["blas"])
    for path, count in before["blas"]:
        assert seen[path] == count, (path, count, seen[path])
    if blas_threads:
        assert {c for _, c in before["blas"]} == {blas_threads}
    if "numba_default" in after_fit:  # fastnn's Numba calls put the count back
        assert after_fit["numba"] == after_fit["numba_default"]


def test_num_threads_block_restores_blas_threads_it_found():
    import scipy.linalg  # noqa: F401  (both BLAS libraries loaded before the limit)
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas():
        return sorted(
            (i["filepath"], i["num_threads"])
            for i in threadpool_info()
            if i["user_api"] == "blas"
        )

    with threadpool_limits(1, user_api="blas"):
        found = blas()
        with fastnn.num_threads(2):
            assert {c for _, c in blas()} == {2}
        assert blas() == found
        previous = fastnn.set_num_threads(2)  # fastnn's setting, not a pool change
        try:
            assert blas() == found
        finally:
            fastnn.set_num_threads(previous)


def test_thread_count_of_a_block_is_per_thread():
    import threading

    outside = fastnn.get_num_threads()
    seen = {}
    barrier = threading.Barrier(2)

    def run(n):
        with fastnn.num_threads(n):
            barrier.wait(timeout=30)
            seen[n] = fastnn.get_num_threads()
            barrier.wait(timeout=30)

    workers = [threading.Thread(target=run, args=(n,)) for n in (1, 2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert seen == {1: 1, 2: 2}
    assert fastnn.get_num_threads() == outside


def _run(code: str, env: dict[str, str] | None = None) -> str:
    """The last line ``code`` prints in a fresh interpreter (``env``: its
    environment, else this one's)."""
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_training_loads_no_second_blas():
    """The kernels run on NumPy's BLAS: training imports no scipy.linalg (0.15-0.45 s,
    and a second OpenBLAS with threads of its own). Not with Numba: Numba imports it
    itself when it compiles (numba.np.arraymath checks for SciPy's BLAS)."""
    code = """
        import json, sys
        import numpy as np
        import fastnn
        from fastnn.kernels._blas import CBLAS
        from threadpoolctl import threadpool_info

        X = np.random.default_rng(0).standard_normal((64, 5)).astype(np.float32)
        backends = [b for b in fastnn.available_backends() if b != "numba"]
        for backend in backends:
            m = fastnn.MLP((5, 8, 3), backend=backend)
            m.fit(X, np.arange(64) % 3, epochs=1, batch_size=16, verbose=0)
            m.predict(X)
        blas = [i["filepath"] for i in threadpool_info() if i["user_api"] == "blas"]
        print(json.dumps([CBLAS.path, "scipy.linalg" in sys.modules, blas, backends]))
    """
    path, scipy_linalg, blas, backends = json.loads(_run(code))
    assert backends == ["cython", "numpy"], backends
    assert "numpy" in path.split("/")[-2], path  # NumPy's bundled BLAS: no fallback
    assert not scipy_linalg
    assert blas == [path]


def test_a_block_sets_and_restores_a_blas_loaded_after_an_earlier_block():
    """A BLAS loaded while a num_threads block is open (the user imports scipy.linalg
    inside it) is set by the next block and put back when the outermost ends."""
    code = """
        import json
        import numpy as np
        import fastnn
        from threadpoolctl import threadpool_info

        def counts():
            return {i["filepath"]: i["num_threads"] for i in threadpool_info()
                    if i["user_api"] == "blas"}

        with fastnn.num_threads(1):  # only NumPy's BLAS is loaded
            import scipy.linalg  # noqa: F401
            loaded = counts()
            n = max(loaded.values()) + 1
            with fastnn.num_threads(n):
                inside = counts()
        after = counts()
        print(json.dumps([loaded, inside, after, n]))
    """
    loaded, inside, after, n = json.loads(_run(code))
    assert len(loaded) == 2, loaded  # NumPy's and SciPy's OpenBLAS
    assert set(inside.values()) == {n}
    scipy_path = next(p for p in loaded if "scipy" in p.split("/")[-2])
    assert after[scipy_path] == loaded[scipy_path]


def test_without_a_cblas_in_numpys_blas_the_kernels_take_scipys(monkeypatch):
    """The fallback: NumPy's library offers no cblas_sgemm (a NumPy built against
    another BLAS), so SciPy's is loaded and used."""
    from fastnn.kernels import _blas

    real_open = _blas._open

    def scipys_only(info):
        return None if _blas._owner(info) == 0 else real_open(info)

    monkeypatch.setattr(_blas, "_open", scipys_only)
    cblas = _blas.find_cblas()
    assert _blas._owner({"filepath": cblas.path}) == 1, cblas.path
    assert cblas.sgemm and cblas.dgemm


@pytest.mark.parametrize("user_value", [None, "FALSE"], ids=["unset", "user-set"])
def test_import_alone_leaves_environment_alone(user_value):
    """The probe above imports threadpoolctl before fastnn, which hides that importing
    threadpoolctl sets KMP_DUPLICATE_LIB_OK=True: here fastnn is the first import."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "KMP_DUPLICATE_LIB_OK"}
    if user_value is not None:
        env["KMP_DUPLICATE_LIB_OK"] = user_value
    probe = (
        "import json, os; before = dict(os.environ); import fastnn; "
        "print(json.dumps([before, dict(os.environ)]))"
    )
    before, after = json.loads(_run(probe, env))
    assert after == before
    assert after.get("KMP_DUPLICATE_LIB_OK") == user_value


def test_a_fit_leaves_openmps_thread_count_alone():
    """fastnn's kernels pass their thread count to each parallel loop: the OpenMP
    runtime's own default (per calling thread, shared with every library on the same
    runtime) stays as the process had it, whatever n_threads the fits use."""
    code = """
        import json
        import numpy as np
        import fastnn
        from threadpoolctl import threadpool_info

        def omp():
            return {i["filepath"]: i["num_threads"] for i in threadpool_info()
                    if i["user_api"] == "openmp"}

        fastnn.get_backend("cython")  # loads the extension's OpenMP runtime
        before = omp()
        X = np.random.default_rng(0).standard_normal((256, 5)).astype(np.float32)
        for n in (1, max(before.values()) + 1):
            m = fastnn.MLP((5, 8, 3), backend="cython", n_threads=n)
            m.fit(X, np.arange(256) % 3, epochs=1, batch_size=16, verbose=0)
            fastnn.set_num_threads(n)
            m.predict(X)
        print(json.dumps([before, omp()]))
    """
    before, after = json.loads(_run(code))
    assert before, "no OpenMP runtime seen: the probe checks nothing"
    assert after == before


def test_a_fit_leaves_the_floating_point_state_alone():
    """A fit leaves the thread's floating-point control state (x86: MXCSR's
    flush-to-zero, denormals-are-zero and rounding bits) and NumPy's error state as
    it found them: NumPy code beside fastnn computes the same bits (a subnormal
    flushed to zero, or another rounding mode, changes them) at the same speed."""
    code = """
        import json
        import numpy as np

        def fp_state():
            f32, f64 = np.float32, np.float64
            probes = [
                np.array([1e-40], f32) * f32(2),  # subnormal input (DAZ)
                np.array([1e-30], f32) * f32(1e-10),  # subnormal result (FTZ)
                np.array([1.0, -1.0], f32) / f32(3),  # rounding mode
                np.array([1.0, -1.0], f64) / f64(3),
                np.array([1.0], f64) + f64(2.0**-53),  # round half to even
            ]
            return [p.tobytes().hex() for p in probes] + [sorted(np.geterr().items())]

        before = fp_state()
        import fastnn

        X = np.random.default_rng(0).standard_normal((256, 5)).astype(np.float32)
        for backend in fastnn.available_backends():
            for n in (1, 2):
                m = fastnn.MLP((5, 8, 3), backend=backend, n_threads=n)
                m.fit(X, np.arange(256) % 3, epochs=1, batch_size=16, verbose=0)
                m.predict_proba(X)
        print(json.dumps([before, fp_state()]))
    """
    before, after = json.loads(_run(code))
    assert after == before
