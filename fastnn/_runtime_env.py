"""Runtime settings that must be in place before the thread pools load.

Two pools share the cores: libgomp's (the Cython extension and Numba's ``omp`` layer)
and OpenBLAS's own pthreads (NumPy's GEMMs). Each pool's idle threads spin for a while
before sleeping, and a spinning thread steals the core the other pool needs next
(REFERENCE.md §8-9). Measured here (2 cores): libgomp with OMP_WAIT_POLICY=ACTIVE made
a 784-256-128-10 training step 14-120x slower next to another busy process; with
OpenBLAS's default spin after each NumPy GEMM, fastnn's linear kernels ran 0.6-0.9x
NumPy when timed alternately with it, and 1.1-1.2x with OPENBLAS_THREAD_TIMEOUT=4
(docs/threading.md). So, unless the user set them:

- ``OMP_WAIT_POLICY=PASSIVE``: idle OpenMP threads sleep at once; small ops, whose
  wake-up would dominate, run serially below a size threshold inside the kernels.
- ``OPENBLAS_THREAD_TIMEOUT=4``: OpenBLAS's idle threads sleep after ~2^4 cycles
  instead of ~2^28. OpenBLAS reads it when NumPy loads it, so it only takes effect when
  fastnn is imported before NumPy (as in the ``fastnn`` command); ``show_config()``
  tells whether it did.

libgomp reads its variable when the extension or Numba's layer first loads it, which
is always after this module runs.
"""

from __future__ import annotations

import os
import sys

_DEFAULTS = (("OMP_WAIT_POLICY", "PASSIVE"), ("OPENBLAS_THREAD_TIMEOUT", "4"))

#: What fastnn set (name -> value); a user's own setting is never changed.
APPLIED: dict[str, str] = {}
#: Whether NumPy (hence its OpenBLAS) was loaded before fastnn: then
#: OPENBLAS_THREAD_TIMEOUT set here has no effect.
NUMPY_LOADED_FIRST = "numpy" in sys.modules

for _name, _value in _DEFAULTS:
    if _name not in os.environ:
        os.environ[_name] = _value
        APPLIED[_name] = _value
