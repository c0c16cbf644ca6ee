"""One thread count for every pool fastnn uses: Numba, OpenMP and BLAS.

``set_num_threads(n)`` applies ``n`` to Numba's threads, the Cython extension's OpenMP
threads and the BLAS libraries (through threadpoolctl); ``num_threads(n)`` does the same
for a ``with`` block and restores the previous setting afterwards.
"""

from __future__ import annotations

import contextlib
import operator
import os
from collections.abc import Iterator

from threadpoolctl import ThreadpoolController

_controller: ThreadpoolController | None = None
_current: int | None = None


def cpu_count() -> int:
    """Cores this process may run on (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _blas_controller() -> ThreadpoolController:
    global _controller
    if _controller is None:
        import numpy  # noqa: F401  (loads numpy's BLAS)
        import scipy.linalg  # noqa: F401  (loads scipy's BLAS, used by the kernels)

        _controller = ThreadpoolController()
    return _controller


def _apply(n: int) -> None:
    from . import kernels

    for name in kernels.available_backends():
        setter = kernels.get_backend(name).raw.__dict__.get("set_num_threads")
        if setter is not None:
            setter(n)
    _blas_controller().select(user_api="blas").limit(limits=n)


def set_num_threads(n: int) -> int:
    """Use ``n`` threads in Numba, OpenMP and BLAS; return the previous setting."""
    global _current
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"n_threads must be an int, got {type(n).__name__}") from None
    if n < 1:
        raise ValueError(f"n_threads must be >= 1, got {n}")
    previous = get_num_threads()
    _apply(n)
    _current = n
    return previous


def get_num_threads() -> int:
    """The thread count in force (the number of usable cores unless set)."""
    return _current if _current is not None else cpu_count()


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[int]:
    """Run a block with ``n`` threads (None: leave as is); restore afterwards."""
    global _current
    if n is None:
        yield get_num_threads()
        return
    previous_setting = _current
    previous = set_num_threads(n)
    try:
        yield n
    finally:
        _apply(previous)
        _current = previous_setting
