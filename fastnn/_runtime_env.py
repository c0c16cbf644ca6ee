"""Runtime settings that must be in place before the thread pools load.

libgomp (used by the Cython extension and Numba's ``omp`` threading layer) reads
``OMP_WAIT_POLICY`` once, when it loads. Its default lets idle worker threads spin for
a while, and those spinning threads steal the cores OpenBLAS's own pool needs between
our kernels and the GEMMs of a training step (REFERENCE.md §8-9). A passive policy
puts idle threads to sleep at once; small ops, whose wake-up cost would dominate, run
serially below a size threshold inside the kernels. A user's own setting always wins.
"""

from __future__ import annotations

import os

#: What fastnn set (name -> value); empty when the user's environment already had it.
APPLIED: dict[str, str] = {}

for _name, _value in (("OMP_WAIT_POLICY", "PASSIVE"),):
    if _name not in os.environ:
        os.environ[_name] = _value
        APPLIED[_name] = _value
