"""The Numba backend: raw kernels of ``fastnn.kernels.contract`` compiled with @njit.

Element-wise kernels, the fused epilogues and the softmax losses are Numba loops (prange
over fixed chunks above a size threshold, serial below); every GEMM goes through the
CBLAS that kernels/_blas.py finds (NumPy's OpenBLAS, called from nopython code), cut
into fixed blocks run as single-threaded BLAS calls (BLAS pinned to one thread
meanwhile, so there is never a BLAS thread pool inside a prange). All JIT options live
in ``_options.py``, the sizes, thresholds and float32 numerics in kernels/tuning.py.
Each raw kernel is a thin Python function (the contract's parameter names) that casts
the scalars to the array dtype, picks the serial or parallel variant and calls one
compiled function.
Results are bitwise identical for any thread count.
"""

from __future__ import annotations

import numba
from numba.np.ufunc.parallel import _launch_threads

from .._fork import in_forked_child, on_fork_child
from . import _options
from . import matmul as _matmul_module
from .activations import activation_backward, activation_forward
from .linear import linear_backward, linear_forward
from .loss import softmax, softmax_cross_entropy, squared_error
from .matmul import matmul
from .optim import adam_update, sgd_update
from .train import forward, loss_grad, train_step, train_steps

#: Whether the kernels pin BLAS to one thread themselves (Backend.pins_blas): not
#: without the Cython extension, whose pin they use.
BLAS_PINNED = _matmul_module._HAS_CONTROL

__all__ = [
    "BACKEND_INFO",
    "activation_backward",
    "activation_forward",
    "adam_update",
    "backend_info",
    "forward",
    "linear_backward",
    "linear_forward",
    "loss_grad",
    "matmul",
    "set_num_threads",
    "set_parallel_min_work",
    "sgd_update",
    "softmax",
    "softmax_cross_entropy",
    "squared_error",
    "train_step",
    "train_steps",
]


def set_num_threads(n: int) -> None:
    """Use ``n`` Numba threads (capped at NUMBA_NUM_THREADS, fixed when Numba loads;
    no effect in a forked child, where every kernel runs serially)."""
    if in_forked_child():
        return
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))


def set_parallel_min_work(min_work: float) -> None:
    """Run each kernel serially below ``min_work`` work units (see kernels/cy's);
    a forked child stays serial."""
    if not in_forked_child():
        _options.TUNE = _options.TUNE._replace(min_work=int(min_work))  # one type


def _serial_only() -> None:
    """The forked-child switch (see kernels/_fork.py): no prange kernel runs again.

    Every raw kernel reads the tuning table at call time (_split compares the work
    with its min_work), and the GEMMs run their blocks one after the other: the
    parent's blocks (the split depends on the core count only), so a model trains to
    the parent's bits.
    """
    _options.TUNE = _options.TUNE._replace(min_work=_options.SERIAL_ONLY)
    parts, control, *rest = _matmul_module.GEMM_CONFIG
    if control == _matmul_module.CONTROL:
        control = _matmul_module.CONTROL_SERIAL
    _matmul_module.GEMM_CONFIG = (parts, control, *rest)


def _threading_layer() -> str:
    """The layer in use; known only once Numba launched its threads, so launch them
    (never in a forked child, where no parallel kernel may run). Numba's own
    launcher, not a tiny parallel kernel: compiling one from an empty cache cost
    seconds of every cold start."""
    try:
        return numba.threading_layer()
    except ValueError:
        if in_forked_child():
            return "none started (forked process: kernels run serially)"
        _launch_threads()
        return numba.threading_layer()


def backend_info() -> dict:
    """Facts about this backend, for ``fastnn.show_config()``."""
    return {
        "numba": numba.__version__,
        "threading_layer": _threading_layer(),
        "num_threads": numba.get_num_threads(),
        "max_threads": numba.config.NUMBA_NUM_THREADS,
        "serial_below_work": _options.TUNE.min_work,
        "chunk": _options.TUNE.chunk,
        "fastmath": _options.FASTMATH,
        "gemm": "fixed blocks of C, each a single-threaded call of "
        + (
            _matmul_module.OWN_GEMM.description
            + " ("
            + _matmul_module.CBLAS.description
            + ")"
            if _matmul_module.OWN_GEMM
            else _matmul_module.CBLAS.description
            + " for every product: fastnn's own GEMM (the Cython extension) "
            f"is unavailable ({_matmul_module.OWN_GEMM_MISSING})"
        ),
        "gemm_max_blocks": _matmul_module.GEMM_CONFIG[0],
        "blas_thread_control": _matmul_module.BLAS_CONTROL
        if _matmul_module.GEMM_CONFIG[1]
        else "none: blocks run serially",
        "float32_math": "vectorised polynomial exp/tanh/erf (few ulp); float64: libm",
        "cpu": "compiled for the host CPU (numba JIT)",
    }


def _compiler_lock_across_fork() -> None:
    """Hold Numba's compiler lock across every fork (as CPython holds its import
    lock): a fork while another thread compiles or loads a kernel from the cache
    waits for it to finish. Otherwise the child inherits the lock held by a thread it
    does not have, and its first compile or cache load (every kernel's first call
    there) waits forever."""
    import os

    from numba.core.compiler_lock import global_compiler_lock as lock

    if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
        os.register_at_fork(
            before=lock.acquire, after_in_parent=lock.release,
            after_in_child=lock.release,
        )  # fmt: skip


on_fork_child(_serial_only)
_compiler_lock_across_fork()
BACKEND_INFO = backend_info()
