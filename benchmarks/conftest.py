"""Benchmarks run float32 with fastnn's thread setting (2 threads on the CI machine).

fastnn is imported before anything loads NumPy, so its pool settings
(OPENBLAS_THREAD_TIMEOUT, OMP_WAIT_POLICY: fastnn/_runtime_env.py) are in force for
every implementation alike, as in the ``fastnn`` command.
"""

import fastnn  # noqa: F401  (first: see above)
