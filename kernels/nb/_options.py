"""Every Numba option of the numba backend, in one place.

``JIT`` is used by every serial kernel, ``PARALLEL`` by the prange kernels. The tuning
table (``TUNE``) is read by the Python-level raw kernels at *call* time and passed to
the compiled code as an argument, so changing it needs no recompilation.

Caching caveat: Numba's on-disk cache is keyed by the source file of
each jitted function only. A kernel that inlines a helper from another module (linear.py
and loss.py use helpers from activations.py) does not notice when that helper changes:
delete ``kernels/nb/__pycache__`` after editing a helper or a numerics constant of
kernels/tuning.py (frozen into the compiled code). Installed copies are not
affected (a fresh install starts with a fresh cache).
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from .. import tuning

# fastmath: off. The explicit safe set {'nsz', 'arcp', 'contract', 'afn', 'reassoc'}
# (never 'nnan'/'ninf') was not needed: the hot loops vectorise without it (the float32
# exp/tanh are our own branch-free polynomials), and without 'contract'/'reassoc' the
# serial and parallel variants of a kernel round identically, so results are bitwise
# the same for any thread count and match the NumPy oracle's rounding where possible.
FASTMATH: bool | set[str] = False

# Jitted code passes these, never a bare 0 / False / True, to another jitted function:
# Numba types a literal argument as Literal[int](0) / Literal[bool](False) and compiles
# the callee (and every parallel kernel it calls) once more for it. np.int64 / np.bool_
# globals are not literals.
ZERO = np.int64(0)
FALSE = np.bool_(False)
TRUE = np.bool_(True)

# error_model="numpy": division by zero gives inf/nan (IEEE), never a Python exception.
JIT = dict(nogil=True, cache=True, error_model="numpy", fastmath=FASTMATH)
PARALLEL = dict(JIT, parallel=True)

#: kernels/tuning.py's table as the compiled code takes it (one argument, fields by
#: name). Read at call time: a forked child swaps in TUNE with min_work = SERIAL_ONLY.
Tuning = namedtuple(
    "Tuning",
    ["min_work", "chunk", "col_block", "loss_task", "act_cost", "sgd_cost",
     "adam_cost", "softmax_cost", "squared_error_cost"],
)  # fmt: skip
TUNE = Tuning(
    tuning.PARALLEL_MIN_WORK, tuning.CHUNK, tuning.COL_BLOCK, tuning.LOSS_TASK,
    tuning.ACT_COST, tuning.SGD_COST, tuning.ADAM_COST, tuning.SOFTMAX_COST,
    tuning.SQUARED_ERROR_COST,
)  # fmt: skip
# min_work in a forked child (kernels/_fork.py): no work is large enough.
SERIAL_ONLY = tuning.MAX_MIN_WORK
