"""The process-wide thread setting: overlapping blocks in several threads, fork."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from conftest import COMPILED

import fastnn


def test_overlapping_blocks_of_two_threads_restore_the_setting_found():
    """Two fits in two threads, n_threads=1 and 2, ending in the order they began
    (the interleaving that left the count at 1): the count is the one from before."""
    before = fastnn.get_num_threads()
    first_in, second_in, first_out = (threading.Event() for _ in range(3))
    seen = {}

    def first():
        with fastnn.num_threads(1):
            first_in.set()
            second_in.wait(10)
            seen["first"] = fastnn.get_num_threads()
        first_out.set()

    def second():
        first_in.wait(10)
        with fastnn.num_threads(2):
            second_in.set()
            first_out.wait(10)
            seen["second"] = fastnn.get_num_threads()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert first_out.is_set() and len(seen) == 2
    assert seen["second"] == 2  # the block still running keeps its count
    assert fastnn.get_num_threads() == before


_BLOCK_IN_ANOTHER_THREAD = textwrap.dedent(
    """
    import threading
    import fastnn
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    found = blas()
    other = 1 if found[0] != 1 else 2
    with fastnn.num_threads(other):  # the main thread sets the count first
        pass
    seen = {}

    def worker():
        with fastnn.num_threads(other):
            seen["in"] = blas()
        seen["out"] = blas()
        with threadpool_limits(other, user_api="blas"):  # the user's own, after
            seen["user"] = blas()

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen["in"] == [other] * len(found), (found, seen)
    assert seen["out"] == found, (found, seen)
    assert seen["user"] == [other] * len(found), (found, seen)
    assert blas() == found
    """
)


def test_a_block_in_another_thread_sets_blas_and_leaves_threadpoolctl_alone():
    """threadpoolctl ignores an OpenBLAS count set from any thread but the first
    that set one: a block in a worker thread left BLAS at the main thread's count
    (a NumPy-backend fit there ignored n_threads; concurrent compiled predictions
    changed bits), and a user's threadpool_limits in a worker did nothing after
    fastnn had run in the main thread. A fresh process: threadpoolctl's choice of
    that thread is process-wide."""
    out = subprocess.run([sys.executable, "-c", _BLOCK_IN_ANOTHER_THREAD],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr


def test_a_ctrl_c_while_a_block_sets_blas_leaves_nothing_behind(monkeypatch):
    """A KeyboardInterrupt while a block sets BLAS's count: the block is out of the
    depths again, so the next block restores the count it finds (the depth stayed
    raised and no block ever restored a count again)."""
    from threadpoolctl import threadpool_info

    from fastnn import threads

    def counts():
        info = threadpool_info()
        return sorted(i["num_threads"] for i in info if i["user_api"] == "blas")

    found, before = counts(), fastnn.get_num_threads()
    real = threads._set_blas

    def interrupted(lib, n):
        monkeypatch.setattr(threads, "_set_blas", real)
        raise KeyboardInterrupt

    monkeypatch.setattr(threads, "_set_blas", interrupted)
    with pytest.raises(KeyboardInterrupt), fastnn.num_threads(max(found) + 1):
        pass
    assert counts() == found and fastnn.get_num_threads() == before
    with fastnn.num_threads(max(found) + 1):
        pass
    assert counts() == found


def test_a_nested_block_gives_blas_back_to_the_enclosing_block():
    """A block inside a block of another count in the same thread (a predict with
    n_threads=1 in a callback of a 2-thread fit): the rest of the enclosing block
    runs BLAS on its own count again (it kept the inner count: a NumPy-backend fit
    went on slower and with other bits), and the outermost end restores the count
    found."""
    from threadpoolctl import threadpool_info

    def blas():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    found = blas()
    with fastnn.num_threads(2):
        outer = blas()
        with fastnn.num_threads(1):
            assert blas() == [1] * len(outer)
        assert blas() == outer
    assert blas() == found


# ------------------------------------------------------------------ fork
FORK_SCRIPT = textwrap.dedent(
    """
    import multiprocessing as mp, sys
    import numpy as np
    import fastnn
    from fastnn.model import MLP

    backend = sys.argv[1]
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1024, 256))
    y = np.arange(1024) % 4
    # big enough for every kernel's parallel path, with the default threads
    model = MLP((256, 512, 4), backend=backend)
    model.fit(X, y, epochs=1, batch_size=512, seed=0, verbose=0)

    def work(seed):
        fastnn.set_num_threads(2)  # no effect in a forked child
        m = MLP((256, 512, 4), backend=backend)
        m.fit(X, y, epochs=1, batch_size=512, seed=seed, verbose=0)
        return (fastnn.get_num_threads(), model.predict(X).tobytes(),
                m.get_flat_parameters().tobytes())

    with mp.get_context("fork").Pool(2) as pool:
        got = pool.map(work, [0, 1])
    assert [g[0] for g in got] == [1, 1], got
    assert all(g[1] == model.predict(X).tobytes() for g in got)
    with fastnn.num_threads(1):
        again = MLP((256, 512, 4), backend=backend)
        again.fit(X, y, epochs=1, batch_size=512, seed=0, verbose=0)
    # the same training as in the parent on one thread: the same bits (the GEMMs run
    # the parent's fixed blocks, one after the other)
    assert got[0][2] == again.get_flat_parameters().tobytes()
    # joblib's "multiprocessing" backend forks too (GridSearchCV over the estimator)
    import warnings
    from joblib import parallel_backend
    from sklearn.model_selection import GridSearchCV
    warnings.simplefilter("ignore")  # ConvergenceWarning of the short fits
    est = fastnn.MLPClassifier(hidden_layer_sizes=(512,), max_iter=2, backend=backend)
    est.fit(X, y)  # compiled in the parent, as the fit above
    with parallel_backend("multiprocessing", n_jobs=2):
        search = GridSearchCV(est, {"alpha": [1e-4, 1e-2]}, cv=2).fit(X, y)
    assert len(search.cv_results_["mean_test_score"]) == 2
    print("ok")
    """
)


@pytest.mark.parametrize("backend", fastnn.available_backends())
def test_fork_pool_after_a_fit_runs_serially_in_the_children(tmp_path, backend):
    """A fork Pool after a multi-threaded fit: the children train and predict
    (serially, one thread) instead of hanging or being killed by libgomp."""
    script = tmp_path / "fork_after_fit.py"
    script.write_text(FORK_SCRIPT)
    # its own session, so that a hang kills the forked workers too
    proc = subprocess.Popen(
        [sys.executable, str(script), backend],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=240)  # a hang fails, not the suite
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"the fork pool hung after a fit on {backend}")
    assert proc.returncode == 0 and out.strip() == "ok", err[-2000:]


FORK_IN_OTHER_BLOCK_SCRIPT = textwrap.dedent(
    """
    import os, threading
    from threadpoolctl import threadpool_info
    import fastnn

    def blas():
        return sorted(i["num_threads"] for i in threadpool_info()
                      if i["user_api"] == "blas")

    found = blas()
    inside, done = threading.Event(), threading.Event()

    def other():
        with fastnn.num_threads(1):  # open while the main thread forks
            inside.set()
            done.wait(30)

    t = threading.Thread(target=other)
    t.start()
    inside.wait(30)
    pid = os.fork()
    if pid == 0:
        # the other thread's block does not exist in the child: its BLAS count is
        # the one from outside every block, and a block of the child restores its own
        code = 0 if blas() == found else 3
        with fastnn.num_threads(3):
            pass
        os._exit(code if blas() == found else 4)
    _, status = os.waitpid(pid, 0)
    done.set()
    t.join(30)
    assert blas() == found
    print(os.waitstatus_to_exitcode(status))
    """
)


def test_fork_while_another_thread_is_in_a_block_leaves_the_child_blas_alone(
    tmp_path,
):
    """A fork from one thread while another is in a num_threads block: the child
    does not keep that block's BLAS count, and its own blocks restore theirs (the
    parent's open block kept the child's depth above 0 and nothing was restored)."""
    script = tmp_path / "fork_in_block.py"
    script.write_text(FORK_IN_OTHER_BLOCK_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "0", proc.stderr[-2000:]


def _kernels_blas_count() -> int:
    """The thread count of the BLAS the compiled kernels call (SciPy's may be
    loaded too)."""
    from fastnn.kernels._blas import CBLAS
    from threadpoolctl import threadpool_info

    info = threadpool_info()
    (lib,) = [i for i in info if os.path.samefile(i["filepath"], CBLAS.path)]
    return lib["num_threads"]


def _blas_pin():
    """The compiled kernels' process-wide BLAS pin, callable from Python."""
    import ctypes

    from fastnn.kernels.cy import BLAS_PIN

    assert all(BLAS_PIN), "NumPy's OpenBLAS offers thread control"
    pin = ctypes.CFUNCTYPE(ctypes.c_int)(BLAS_PIN[0])
    unpin = ctypes.CFUNCTYPE(None, ctypes.c_int)(BLAS_PIN[1])
    return pin, unpin


def test_blas_pins_of_overlapping_kernels_keep_one_thread_until_the_last_ends():
    """Two kernels' pins that overlap, ending in the order they began: BLAS stays on
    one thread until the second ends (each kernel restoring what it found handed
    the second's remaining blocks BLAS's threads), then gets its count back."""
    pin, unpin = _blas_pin()
    found = _kernels_blas_count()
    first = pin()
    second = pin()
    unpin(first)
    still = _kernels_blas_count()
    unpin(second)
    assert still == 1
    assert _kernels_blas_count() == found


def test_a_block_that_overlaps_a_pinned_kernel_restores_the_count_from_before():
    """A NumPy-backend block that begins while a compiled kernel of another thread
    has BLAS pinned to one thread, and ends after it: BLAS gets the block's count
    once the kernel is done, and the count from before both when the block ends
    (the block saved the pinned 1 and restored it for good)."""
    pin, unpin = _blas_pin()
    found = _kernels_blas_count()
    other = found + 1
    token = pin()  # a kernel of another thread, mid-GEMM
    with fastnn.num_threads(other):
        pinned = _kernels_blas_count()
        unpin(token)
        after_kernel = _kernels_blas_count()
    assert (pinned, after_kernel) == (1, other)
    assert _kernels_blas_count() == found


@pytest.mark.parametrize("n_threads", [1, None])
@pytest.mark.parametrize("backend_name", COMPILED)
def test_concurrent_predictions_are_bitwise_those_of_a_call_alone(
    backend_name, n_threads
):
    """4 threads predicting at once on one model: every result equal to a call alone
    (5-14 of 80 differed by an ulp while each kernel restored BLAS's count itself)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((600, 784)).astype(np.float32)
    y = np.arange(600) % 10
    model = fastnn.MLP((784, 256, 128, 10), backend=backend_name,
                       n_threads=n_threads, dtype=np.float32)  # fmt: skip
    model.fit(X, y, epochs=1, batch_size=128, verbose=0, seed=0)
    Xq = X[:450]
    alone = model.predict_proba(Xq)
    results = []

    def work():
        for _ in range(20):
            results.append(model.predict_proba(Xq))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 80
    assert sum(not np.array_equal(r, alone) for r in results) == 0


FORK_WHILE_PINNED_SCRIPT = textwrap.dedent(
    """
    import ctypes, os, threading
    import numpy as np
    from threadpoolctl import threadpool_info
    import fastnn
    from fastnn.kernels.cy import BLAS_PIN

    def blas():
        return sorted(i["num_threads"] for i in threadpool_info()
                      if i["user_api"] == "blas")

    pin = ctypes.CFUNCTYPE(ctypes.c_int)(BLAS_PIN[0])
    unpin = ctypes.CFUNCTYPE(None, ctypes.c_int)(BLAS_PIN[1])
    found = blas()
    pinned, done = threading.Event(), threading.Event()

    def kernel():  # a kernel of another thread, between its pin and unpin
        token = pin()
        pinned.set()
        done.wait(30)
        unpin(token)

    t = threading.Thread(target=kernel)
    t.start()
    pinned.wait(30)
    pid = os.fork()
    if pid == 0:
        code = 0 if blas() == found else 3  # the other thread's pin is gone
        m = fastnn.MLP((8, 16, 2), backend="cython")
        m.fit(np.eye(8), np.arange(8) % 2, epochs=2, verbose=0)  # pins and unpins
        os._exit(code if blas() == found else 4)
    _, status = os.waitpid(pid, 0)
    done.set()
    t.join(30)
    assert blas() == found
    print(os.waitstatus_to_exitcode(status))
    """
)


def test_fork_while_another_thread_holds_the_blas_pin(tmp_path):
    """A fork while a kernel of another thread has BLAS pinned to one thread: the
    child gets BLAS's count back (that kernel never ends there) and its own kernels
    pin and restore it."""
    script = tmp_path / "fork_pinned.py"
    script.write_text(FORK_WHILE_PINNED_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "0", proc.stderr[-2000:]


FORK_DURING_A_NUMBA_COMPILE_SCRIPT = textwrap.dedent(
    """
    import os, threading, time
    import numpy as np
    import fastnn
    from numba.core.compiler_lock import global_compiler_lock

    fastnn.kernels.get_backend("numba")
    held = threading.Event()

    def compiling():  # as a thread does while Numba compiles or loads a kernel
        with global_compiler_lock:
            held.set()
            time.sleep(1.0)

    t = threading.Thread(target=compiling)
    t.start()
    held.wait()
    pid = os.fork()
    if pid == 0:  # the kernels' first calls here compile or load from the cache
        model = fastnn.MLP((8, 16, 2), backend="numba")
        model.fit(np.eye(8), np.arange(8) % 2, epochs=2, verbose=0)
        os._exit(0 if model.predict(np.eye(8)).shape == (8,) else 3)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            print(os.waitstatus_to_exitcode(status))
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        print("the child hung")
    t.join()
    """
)


def test_fork_while_another_thread_compiles_with_numba(tmp_path):
    """A fork while another thread holds Numba's compiler lock (compiling, or loading
    a kernel from the cache): the child trains on the Numba backend instead of
    waiting forever for a lock whose holder it does not have."""
    script = tmp_path / "fork_compiling.py"
    script.write_text(FORK_DURING_A_NUMBA_COMPILE_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "0", (
        proc.stdout[-500:] + proc.stderr[-2000:]
    )


_NUMBA_WITHOUT_THE_EXTENSION = textwrap.dedent(
    """
    import sys
    sys.modules["fastnn.kernels.cy"] = None  # the Cython extension not importable
    import numpy as np
    import scipy.linalg  # noqa: F401  (SciPy's BLAS loaded before the counts are read)
    import fastnn
    from threadpoolctl import threadpool_info

    def blas():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    found = blas()
    other = 1 if found[0] != 1 else 2
    seen = []
    model = fastnn.MLP((8, 16, 2), backend="numba", n_threads=other)
    X, y = np.eye(8), np.arange(8) % 2
    model.fit(X, y, epochs=1, verbose=0, callbacks=[
        fastnn.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(blas()))])
    assert seen == [[other] * len(found)], (found, other, seen)
    assert blas() == found, (found, blas())
    """
)


def test_numba_without_the_extension_runs_blas_on_the_models_threads():
    """Without the Cython extension the Numba backend has no BLAS pin: its GEMM
    blocks run serially on BLAS's own threads, as the NumPy backend's products do,
    so a fit's block must set BLAS to the model's n_threads (blas=False for every
    compiled backend left BLAS on its own count: n_threads=1 ran on every core). A
    fresh process: the extension must not be imported."""
    out = subprocess.run([sys.executable, "-c", _NUMBA_WITHOUT_THE_EXTENSION],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]


def test_an_unchanged_kernel_count_still_sets_numbas_count_in_each_thread():
    """The kernels' count is left alone when it does not change, except Numba's,
    which is each thread's own: a block in a new thread must still set it there."""
    import numba

    from fastnn import kernels

    kernels.get_backend("numba")
    seen = {}

    def run():
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        kernels.set_num_threads(1)  # already the kernels' count: see below
        seen["numba"] = numba.get_num_threads()

    with fastnn.num_threads(1):
        assert kernels._threads == 1
        worker = threading.Thread(target=run)
        worker.start()
        worker.join()
    assert seen["numba"] == 1


def test_an_unchanged_count_is_one_the_backends_were_given(monkeypatch):
    """set_num_threads skips an unchanged count on the process-wide backends, so the
    count and what they were given must change together: a thread that stored
    count 1 and applies it after another thread stored and applied 2 must not
    leave the backends on 1 while the count reads 2 (every later block of 2 then
    skipping them: a model's n_threads=2 ran its Cython kernels on one thread)."""
    from types import SimpleNamespace

    from fastnn import kernels

    applied = []
    entered, release = threading.Event(), threading.Event()

    def set_threads(n):
        if n == 1 and not entered.is_set():
            entered.set()
            release.wait(5)  # thread a is switched out between storing and applying
        applied.append(n)

    raw = SimpleNamespace(set_num_threads=set_threads)
    fake = SimpleNamespace(name="fake", raw=raw)
    monkeypatch.setattr(kernels, "_loaded", {"fake": fake})
    monkeypatch.setattr(kernels, "_threads", 3)
    a = threading.Thread(target=kernels.set_num_threads, args=(1,))
    b = threading.Thread(target=kernels.set_num_threads, args=(2,))
    a.start()
    assert entered.wait(5)
    b.start()
    b.join(0.5)  # b runs to its end here unless it waits for a
    release.set()
    a.join(5)
    b.join(5)
    kernels.set_num_threads(2)  # unchanged: the backend is not asked again
    assert kernels._threads == 2
    assert applied[-1] == 2, applied
