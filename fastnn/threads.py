"""fastnn's thread count, applied to fastnn's own work only.

fastnn runs its kernels in its own pools (the Cython extension's OpenMP threads,
Numba's threads) and calls BLAS single-threaded from inside them. The thread count is
a setting of fastnn: ``set_num_threads(n)`` changes what fastnn's later calls use;
``num_threads(n)`` (a ``with`` block, and what every fit/predict runs inside) applies
it to Numba's threads of the calling thread and to the BLAS libraries where fastnn's
products run on BLAS's own threads (the NumPy backend; a compiled backend without
BLAS thread control), and puts back exactly what was there before when the block
ends. Nothing here outlives fastnn's call: NumPy, SciPy, scikit-learn or PyTorch
code beside fastnn keeps the thread settings it had, and no environment variable is
ever set.

In a process forked from one that imported fastnn every kernel runs serially and the
thread count reads 1 (kernels/_fork.py).
"""

from __future__ import annotations

import contextlib
import operator
import os
import sys
import threading
from collections.abc import Iterator

from threadpoolctl import ThreadpoolController

from . import kernels
from .kernels._fork import in_forked_child, on_fork_child

_controller: ThreadpoolController | None = None
_controller_modules = 0  # len(sys.modules) when _controller scanned
_current: int | None = None  # set_num_threads' value (None: the core count)
_block = threading.local()  # .n: the count of the innermost num_threads block
# BLAS thread counts are process-wide: the first of several overlapping blocks (in
# any threads) saves them, the last one out restores them.
_blas_lock = threading.Lock()
_blas_depth = 0
_blas_saved: list[tuple[object, int]] = []


def cpu_count() -> int:
    """Cores this process may run on (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _blas_controller() -> ThreadpoolController:
    """threadpoolctl's view of the loaded libraries, scanned again (~0.7 ms) when a
    module was imported since the last scan: one may have loaded another BLAS
    (scipy.linalg does), whose threads a block must set and put back too."""
    global _controller, _controller_modules
    if _controller is None or len(sys.modules) != _controller_modules:
        import numpy  # noqa: F401  (loads numpy's BLAS)

        _controller_modules = len(sys.modules)
        _controller = ThreadpoolController()
    return _controller


def _blas_libraries() -> list:
    return [c for c in _blas_controller().lib_controllers if c.user_api == "blas"]


def _pin_of(lib):
    """The compiled kernels' BLAS pin (kernels/cy/gemm.pyx) when ``lib`` is the BLAS
    they pin to one thread around their GEMM blocks, else None. While a kernel of
    any thread is pinned, that BLAS reads 1: its count outside the kernels is the
    pin's, which the last unpin restores."""
    pin = sys.modules.get("fastnn.kernels.cy.gemm")
    if pin is None or pin.blas_count() is None:
        return None
    from .kernels._blas import CBLAS

    return pin if lib.filepath == CBLAS.path else None


def _blas_count(lib) -> int:
    """``lib``'s thread count outside the compiled kernels' pins."""
    pin = _pin_of(lib)
    return lib.num_threads if pin is None else pin.blas_count()


def _set_blas(lib, n: int) -> None:
    """Set ``lib``'s thread count from whichever thread runs the block.

    The BLAS the compiled kernels pin goes through their pin: set under a pin, the
    count is what the last unpin restores (set directly, another thread's pinned
    kernel would run its later blocks on BLAS's threads, and a block that saved the
    pinned 1 would restore 1 for good). threadpoolctl (3.6 and later) makes the
    first Python thread that sets a pthreads OpenBLAS's count its only controller
    and silently ignores a count set from any other thread while that one lives. A
    block in another thread then left BLAS at the main thread's count (a
    NumPy-backend fit ignored its n_threads), and fastnn's first block made the
    caller's thread the controller of the user's own ``threadpool_limits`` calls.
    The blocks here coordinate the process-wide count themselves (the lock, the
    depth and the saved counts), so they set it directly.
    """
    pin = _pin_of(lib)
    if pin is not None and pin.set_blas_count(n):
        return
    getattr(lib, "_real_set_num_threads", lib.set_num_threads)(n)


def set_num_threads(n: int) -> int:
    """Use ``n`` threads in fastnn's later calls; return the previous setting.

    Only fastnn's own work is affected: other libraries' thread pools keep their
    settings (fastnn applies ``n`` to Numba and, on the NumPy backend, to BLAS
    inside its own calls and puts their settings back afterwards).
    """
    global _current
    n = _check(n)
    previous = get_num_threads()
    _current = n
    return previous


def get_num_threads() -> int:
    """The thread count of fastnn's calls: the innermost ``num_threads`` block's in
    this thread, else ``set_num_threads``' value, else the number of usable cores
    (1 in a forked child)."""
    if in_forked_child():
        return 1
    n = getattr(_block, "n", None)
    if n is not None:
        return n
    return _current if _current is not None else cpu_count()


def _check(n) -> int:
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"n_threads must be an int, got {type(n).__name__}") from None
    if n < 1:
        raise ValueError(f"n_threads must be >= 1, got {n}")
    return n


@contextlib.contextmanager
def _blas_threads(n: int, outer: int | None = None) -> Iterator[None]:
    """BLAS on ``n`` threads; ``outer``: the count of this thread's enclosing block,
    which BLAS is set back to when this (nested) block ends."""
    global _blas_depth, _blas_saved
    counted = False  # this block is in the depths: the finally must take it out
    try:
        with _blas_lock:
            libraries = _blas_libraries()
            if _blas_depth == 0:
                _blas_saved = []
            # each library's count as the first block that saw it found it (one
            # loaded while blocks were open is saved by the first block after it)
            saved = {lib.filepath for lib, _ in _blas_saved}
            _blas_saved += [(lib, _blas_count(lib)) for lib in libraries
                            if lib.filepath not in saved]  # fmt: skip
            mine = getattr(_block, "blas_depth", 0) + 1
            # no call between these stores (Python raises a Ctrl-C's
            # KeyboardInterrupt at calls and jumps): it cannot land between them
            _blas_depth += 1
            _block.blas_depth = mine
            counted = True
            for lib in libraries:
                if _blas_count(lib) != n:
                    _set_blas(lib, n)
        yield
    finally:
        if counted:
            with _blas_lock:
                _blas_depth -= 1
                _block.blas_depth -= 1
                if _blas_depth == 0:
                    for lib, count in _blas_saved:
                        if _blas_count(lib) != count:
                            _set_blas(lib, count)
                    _blas_saved = []
                elif outer is not None:
                    # the rest of this thread's enclosing block runs on its own count
                    for lib, _ in _blas_saved:
                        if _blas_count(lib) != outer:
                            _set_blas(lib, outer)


@contextlib.contextmanager
def num_threads(n: int | None, blas: bool = True) -> Iterator[int]:
    """Run a block with ``n`` threads (None: fastnn's setting) in fastnn's kernels,
    Numba and (``blas``) BLAS; afterwards each has exactly the setting it had before.

    The block's count is this thread's: blocks in other threads keep theirs. The
    compiled backends' calls pass ``blas=False`` (``Backend.pins_blas``; not
    without BLAS thread control, e.g. Numba without the Cython extension, whose
    products run on BLAS's own threads): their kernels pin BLAS to one
    thread around their GEMM blocks themselves (kernels/cy/_blas_pin.h), and BLAS's
    count, process-wide, set by one thread's block would reach another thread's
    kernel midway (its later blocks on BLAS's threads, with other last bits).
    """
    target = get_num_threads() if n is None else _check(n)
    outer = getattr(_block, "n", None)
    outer_blas = getattr(_block, "blas_n", None)  # the enclosing block's that set it
    numba = sys.modules.get("numba")
    numba_before = numba.get_num_threads() if numba is not None else None
    try:  # whatever the block got to set (a Ctrl-C may stop it midway) is put back
        _block.n = target
        if blas:
            _block.blas_n = target
        kernels.set_num_threads(target)
        with _blas_threads(target, outer_blas) if blas else contextlib.nullcontext():
            yield target
    finally:
        _block.n = outer
        _block.blas_n = outer_blas
        kernels.set_num_threads(get_num_threads())
        # Numba's count (thread-local) goes back to what this thread had; Numba
        # loaded inside the block goes back to its default
        numba = sys.modules.get("numba")
        if numba is not None:
            numba.set_num_threads(
                numba.config.NUMBA_NUM_THREADS if numba_before is None else numba_before
            )


def _after_fork_in_child() -> None:
    # another thread may have held the lock at fork time; it does not exist here
    global _blas_lock, _blas_depth, _blas_saved
    _blas_lock = threading.Lock()
    # only the forking thread's blocks go on in the child: those of the parent's
    # other threads will never exit, so the BLAS counts they set are put back now
    # (else the child's blocks never reach depth 0 and never restore theirs)
    _blas_depth = getattr(_block, "blas_depth", 0)
    if _blas_depth == 0:
        for lib, count in _blas_saved:
            if _blas_count(lib) != count:
                _set_blas(lib, count)
        _blas_saved = []


on_fork_child(_after_fork_in_child)
