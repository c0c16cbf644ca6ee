"""fastnn: fast neural-network training on the CPU.

The kernel backends (numpy reference, Numba, Cython) live in :mod:`fastnn.kernels`;
this package holds the settings and the model API built on them.
"""

from __future__ import annotations

from . import _runtime_env  # noqa: F401  (must run before numba / the extension load)
from ._config import show_config
from .kernels import available_backends, get_backend, set_backend
from .threads import get_num_threads, num_threads, set_num_threads

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "available_backends",
    "get_backend",
    "get_num_threads",
    "num_threads",
    "set_backend",
    "set_num_threads",
    "show_config",
]
