"""The Cython backend: raw kernels compiled from kernels/cy/*.pyx by setup.py.

Importing this package fails with ImportError when the extension is not built; the
registry then reports the "cython" backend unavailable (never a silent fallback).
GEMMs go through fastnn's own micro-kernels or NumPy's OpenBLAS, per the plan of
``kernels/gemm.py`` (``kernels/_blas.py`` finds OpenBLAS); the element-wise and
row-wise kernels use OpenMP ``prange`` when the build has OpenMP, serially below a
size threshold. Both families run the best instruction set of this CPU (or the one
FASTNN_ISA forces): the element-wise modules are imported from their build for it
(kernels/isa.py).
"""

from __future__ import annotations

import importlib.util
import os

from .. import gemm as _gemm_plan
from .. import isa as _isa
from .. import tuning
from .._blas import CBLAS, GEMM_BLOCK_FLOPS
from .._fork import in_forked_child, on_fork_child
from ..contract import (
    CONFIG_SLOTS,
    HYPER_SLOTS,
    TRAIN_LAYOUT_COLUMNS,
    TRAIN_LOSSES,
    TRAIN_WORK_ALIGN,
)
from . import _openmp
from . import gemm as _gemm_module
from . import matmul as _matmul_module


def _built_isas() -> tuple[str, ...]:
    """The ISAs whose element-wise build is installed (setup.py skips those the
    compiler or the target lacks)."""
    return tuple(
        isa
        for isa in _isa.ISAS
        if importlib.util.find_spec(
            f"{__name__}.{_isa.module_name(_isa.PER_ISA_MODULES[0], isa)}"
        )
        is not None
    )


#: The instruction set of the element-wise kernels (the GEMM's: GEMM_PLAN.isa).
ELEMENTWISE_ISA = _isa.choose(_gemm_module.cpu_isa(), _built_isas(), _isa.requested())
activations, linear, loss, optim, train = (
    importlib.import_module(f".{_isa.module_name(m, ELEMENTWISE_ISA)}", __name__)
    for m in _isa.PER_ISA_MODULES
)
activation_backward = activations.activation_backward
activation_forward = activations.activation_forward
linear_backward, linear_forward = linear.linear_backward, linear.linear_forward
softmax, softmax_cross_entropy = loss.softmax, loss.softmax_cross_entropy
squared_error = loss.squared_error
matmul = _matmul_module.matmul  # the kernel shadows the module of the same name
adam_update, sgd_update = optim.adam_update, optim.sgd_update
forward, loss_grad, train_step = train.forward, train.loss_grad, train.train_step
train_steps = train.train_steps

train._configure_slots(
    {name: i for i, name in enumerate(CONFIG_SLOTS)},
    {name: i for i, name in enumerate(HYPER_SLOTS)},
    TRAIN_LOSSES,
    TRAIN_WORK_ALIGN,
    len(TRAIN_LAYOUT_COLUMNS),
)
_KERNEL_MODULES = (activations, linear, loss, optim, train)


def set_parallel_min_work(min_work: float) -> None:
    """Run each kernel serially below ``min_work`` work units (kernels/tuning.py's
    PARALLEL_MIN_WORK until fastnn/_gemm_wisdom.py measures this machine's); never
    changes a result."""
    for module in _KERNEL_MODULES + (_matmul_module,):
        module._configure_tuning(
            tuning.CHUNK,
            min_work,
            tuning.ACT_COST,
            tuning.SGD_COST,
            tuning.ADAM_COST,
            tuning.SOFTMAX_COST,
            tuning.SQUARED_ERROR_COST,
            tuning.LOSS_TASK,
        )


set_parallel_min_work(tuning.PARALLEL_MIN_WORK)
_GEMM_MODULES = (_matmul_module, linear, train, _gemm_module)
del activations, linear, loss, optim, train

__all__ = [
    "BACKEND_INFO",
    "activation_backward",
    "activation_forward",
    "adam_update",
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
    """Use ``n`` OpenMP threads in every Cython kernel (BLAS is set by fastnn).

    In a forked child always 1 (kernels/_fork.py): every parallel loop then runs
    as a team of one, which libgomp starts without its thread pool, so the
    parent's workers (absent in the child) are never waited for.
    """
    n = 1 if in_forked_child() else int(n)
    # every prange passes num_threads: OpenMP's own default (omp_set_num_threads, a
    # setting of the calling thread shared with all code on the same libgomp, such
    # as Numba's omp layer) is left as the user's process had it
    for module in _KERNEL_MODULES + (_matmul_module, _gemm_module):
        module._set_threads(n)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


on_fork_child(lambda: set_num_threads(1))
_CORES = _cpu_count()
GEMM_PLAN = _gemm_plan.configure()
#: (pin, unpin) addresses: BLAS on one thread while any compiled kernel runs its GEMM
#: blocks (kernels/cy/_blas_pin.h; the Numba backend uses it too); (0, 0) without
#: BLAS thread control.
BLAS_PIN = _gemm_module.blas_pin(CBLAS.set_threads, CBLAS.get_threads)
on_fork_child(_gemm_module._blas_pin_after_fork)
#: Whether the kernels pin BLAS to one thread themselves (Backend.pins_blas).
BLAS_PINNED = all(BLAS_PIN)
for _module in _GEMM_MODULES:
    _module._configure_gemm(
        _CORES,
        GEMM_BLOCK_FLOPS,
        CBLAS.sgemm,
        CBLAS.dgemm,
        CBLAS.int64,
        *BLAS_PIN,
    )
    _module._configure_own_gemm(
        _gemm_plan.MODE_PLAN,
        GEMM_PLAN.max_k,
        GEMM_PLAN.min_n,
        GEMM_PLAN.sgemm,
        GEMM_PLAN.dgemm,
        GEMM_PLAN.lookup,
    )

BACKEND_INFO = {
    "openmp": _openmp.openmp_enabled(),
    "openmp_max_threads": _openmp.get_max_threads(),
    "serial_below_work": tuning.PARALLEL_MIN_WORK,
    "chunk": tuning.CHUNK,
    "gemm_blocks": "one block per 0.5 MFLOP (at most one per core)",
    "blas": CBLAS.description,
    "gemm": GEMM_PLAN.description,
    "isa": f"GEMM {GEMM_PLAN.isa}, element-wise {ELEMENTWISE_ISA}"
    + (
        ""
        if GEMM_PLAN.isa == ELEMENTWISE_ISA == GEMM_PLAN.cpu_isa
        else f" ({'forced; ' if _isa.requested() else ''}CPU: {GEMM_PLAN.cpu_isa})"
    ),
    "gemm_split": (
        f"fixed blocks of C (at most {_CORES}, the core count), one single-threaded "
        "BLAS call each, run in an OpenMP prange: results independent of n_threads"
        if CBLAS.set_threads
        else "fixed blocks run serially with BLAS's own threads (no thread control)"
    ),
}
