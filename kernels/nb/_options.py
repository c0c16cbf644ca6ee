"""Every Numba option of the numba backend, in one place.

``JIT`` is used by every serial kernel, ``PARALLEL`` by the prange kernels. The size
thresholds below are read by the Python-level raw kernels at *call* time and passed to
the compiled code as arguments, so changing them needs no recompilation.

Caching caveat (REFERENCE.md §5): Numba's on-disk cache is keyed by the source file of
each jitted function only. A kernel that inlines a helper from another module (linear.py
and loss.py use helpers from activations.py) does not notice when that helper changes:
delete ``kernels/nb/__pycache__`` after editing a helper. Installed copies are not
affected (a fresh install starts with a fresh cache).
"""

from __future__ import annotations

import numpy as np

# fastmath: off. The explicit safe set {'nsz', 'arcp', 'contract', 'afn', 'reassoc'}
# (never 'nnan'/'ninf') was not needed: the hot loops vectorise without it (the float32
# exp/tanh are our own branch-free polynomials), and without 'contract'/'reassoc' the
# serial and parallel variants of a kernel round identically, so results are bitwise
# the same for any thread count and match the NumPy oracle's rounding where possible.
FASTMATH: bool | set[str] = False

# Jitted code passes these, never a bare 0 / False / True, to another jitted function:
# Numba types a literal argument as Literal[int](0) / Literal[bool](False) and compiles
# the callee (and every parallel kernel it calls) once more for it (171 -> 123
# specialisations for every op and train step of both dtypes). np.int64 / np.bool_
# globals are not literals.
ZERO = np.int64(0)
FALSE = np.bool_(False)
TRUE = np.bool_(True)

# error_model="numpy": division by zero gives inf/nan (IEEE), never a Python exception.
JIT = dict(nogil=True, cache=True, error_model="numpy", fastmath=FASTMATH)
PARALLEL = dict(JIT, parallel=True)

# Element-wise kernels split flat arrays into fixed chunks of this many elements, one
# prange task each (chunk boundaries do not change any result).
CHUNK = 16384

# Serial below this much work. A parallel region costs ~15-40 us to wake the sleeping
# OpenMP workers (OMP_WAIT_POLICY=PASSIVE); one "work unit" is one element of a cheap
# streaming op (relu, copy, an SGD update) at ~0.2-0.3 ns. Measured on the 2-core Zen3
# VM (shared with other jobs, so rough): a prange relu lost to the serial loop at 64k
# elements (25 vs 8.5 us) and only broke even around 256k-1M (memory-bound). The
# per-activation costs below are estimates from serial timings, not tuned one by one.
PARALLEL_MIN_WORK = 262144
# PARALLEL_MIN_WORK in a forked child (kernels/_fork.py): no work is large enough.
SERIAL_ONLY = 2**62

# Cost of one element, in work units, per activation code (identity, relu, leaky_relu,
# sigmoid, tanh, gelu) and for the other element-wise kernels.
ACT_COST = (1, 1, 1, 4, 4, 32)
SGD_COST = 2
ADAM_COST = 4
# softmax / softmax-CE: per logit (an exp plus a few passes over a short row).
SOFTMAX_COST = 8
# squared error: per output (a subtract, a square, a multiply).
SQUARED_ERROR_COST = 2

# linear_backward computes dz and db by column blocks of this many columns (one prange
# task each; every column is summed over the rows in order, whatever the block size).
COL_BLOCK = 64

# softmax / softmax-CE prange tasks hold about this many logits (whole rows).
SOFTMAX_TASK = 2048
