"""fastnn.kernels: one registry over the numpy, numba and cython backends.

Backends load lazily on first use. A backend whose dependency is missing (Numba not
installed, the Cython extension not built) is reported unavailable with the reason; it
is never silently replaced by another one. A FASTNN_ISA the compiled backends cannot
honour (kernels/isa.py) is an error even for "auto", which would otherwise run the
NumPy reference instead.
"""

from __future__ import annotations

import importlib
import operator
import threading

from . import tuning
from ._fork import on_fork_child
from .contract import ACTIVATIONS, RAW_KERNELS, Backend, activation_code
from .isa import ISAError

__all__ = [
    "ACTIVATIONS",
    "RAW_KERNELS",
    "Backend",
    "BACKEND_NAMES",
    "activation_code",
    "available_backends",
    "backend_status",
    "get_backend",
    "get_default_backend",
    "parallel_min_work",
    "set_backend",
    "set_num_threads",
    "set_parallel_min_work",
]

# Registry name -> module (relative to this package) holding the raw kernels.
_MODULES = {"numpy": ".reference", "numba": ".nb", "cython": ".cy"}
BACKEND_NAMES = tuple(_MODULES)
# "auto" takes the first available of these: the fastest first (see benchmarks/).
AUTO_ORDER = ("cython", "numba", "numpy")

_loaded: dict[str, Backend] = {}
_errors: dict[str, str] = {}
_bad_setting: set[str] = set()  # failed on FASTNN_ISA: "auto" must not skip them
_lock = threading.Lock()
_default = "auto"
_threads: int | None = None  # the kernels' thread count (None: each backend's own)
_min_work: dict[int, int] = {}  # serial threshold by thread count (else tuning.py's)
_applied: dict[str, int] = {}  # the threshold each loaded backend runs with
# _threads and what the loaded backends were given change together under this lock:
# set_num_threads skips an unchanged count, so a count one thread applied after
# another's newer _threads would otherwise stay until the count next changes
_threads_lock = threading.Lock()
#: The largest serial threshold (Numba types a larger Python int otherwise, or not
#: at all).
MAX_MIN_WORK = tuning.MAX_MIN_WORK


def _load(name: str) -> Backend | None:
    with _lock:
        if name in _loaded:
            return _loaded[name]
        if name in _errors:
            return None
        try:
            module = importlib.import_module(_MODULES[name], __name__)
            info = dict(getattr(module, "BACKEND_INFO", {}))
            backend = Backend(name, module, info)
            with _threads_lock:  # loaded and given the count at once
                _loaded[name] = backend
                if _threads is not None:
                    _apply_threads(backend, _threads)
                    _apply_min_work(backend, _threads)
            return backend
        except (
            Exception
        ) as exc:  # missing numba, unbuilt or broken extension: report it
            _errors[name] = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, ISAError):
                _bad_setting.add(name)
            return None


def _apply_threads(backend: Backend, n: int) -> None:
    setter = backend.raw.__dict__.get("set_num_threads")
    if setter is not None:
        setter(n)


def set_num_threads(n: int) -> None:
    """Run the kernels of every backend, loaded now or later, on ``n`` threads
    (fastnn's thread setting; for Numba, in the calling thread)."""
    global _threads
    with _threads_lock:
        # every fit and predict sets it twice, mostly to what it is: a process-wide
        # setting already applied is left alone (Numba's is the calling thread's)
        unchanged = n == _threads
        _threads = n
        for backend in list(_loaded.values()):
            if unchanged and backend.name != "numba":
                continue
            _apply_threads(backend, n)
            _apply_min_work(backend, n)  # the threshold measured for n threads


def set_parallel_min_work(threads: int, min_work: int | None) -> None:
    """When the kernels run on ``threads`` threads, run each serially below
    ``min_work`` work units (None: kernels/tuning.py's PARALLEL_MIN_WORK), in every
    compiled backend, loaded now or later. fastnn/_gemm_wisdom.py measures it per
    machine and thread count; it never changes a result. A ``min_work`` outside
    0..MAX_MIN_WORK is a ValueError."""
    if min_work is None:
        _min_work.pop(threads, None)
    else:
        min_work = operator.index(min_work)
        if not 0 <= min_work <= MAX_MIN_WORK:
            raise ValueError(f"min_work must be in 0..{MAX_MIN_WORK}, got {min_work}")
        _min_work[threads] = min_work
    with _threads_lock:
        if threads == _threads:
            for backend in list(_loaded.values()):
                _apply_min_work(backend, threads)


def _new_threads_lock() -> None:
    # another thread may have held it at fork time; that thread does not exist here
    global _threads_lock
    _threads_lock = threading.Lock()


on_fork_child(_new_threads_lock)


def parallel_min_work(threads: int | None = None) -> int:
    """The serial threshold (work units) of the kernels on ``threads`` threads (None:
    the kernels' thread count now)."""
    return _min_work.get(_threads if threads is None else threads,
                         tuning.PARALLEL_MIN_WORK)  # fmt: skip


def _apply_min_work(backend: Backend, threads: int | None) -> None:
    setter = backend.raw.__dict__.get("set_parallel_min_work")
    value = parallel_min_work(threads)
    if setter is not None and _applied.get(backend.name) != value:  # every fit's
        setter(value)  # thread switch comes here: a no-op unless it changes
        _applied[backend.name] = value


def backend_status() -> dict[str, str]:
    """Map each backend name to "available" or the reason it is not."""
    return {n: "available" if _load(n) else _errors[n] for n in BACKEND_NAMES}


def available_backends() -> list[str]:
    """Names of the backends that load on this machine, fastest first."""
    return [n for n in AUTO_ORDER if _load(n) is not None]


def get_backend(name: str | Backend | None = None) -> Backend:
    """Return a backend by name ("auto" or None: the process default)."""
    if isinstance(name, Backend):
        return name
    if name is None:
        name = _default
    if not isinstance(name, str):
        raise TypeError(f"backend must be a name, got {type(name).__name__}")
    name = name.lower()
    if name == "auto":
        for candidate in AUTO_ORDER:
            backend = _load(candidate)
            if backend is not None:
                return backend
            if candidate in _bad_setting:
                raise ValueError(
                    f"backend {candidate!r} is unavailable: {_errors[candidate]}"
                )
        raise RuntimeError("no kernel backend is available")  # numpy always loads
    if name not in _MODULES:
        raise ValueError(
            f"unknown backend {name!r}; expected 'auto' or one of {list(_MODULES)}"
        )
    backend = _load(name)
    if backend is None:
        raise ValueError(f"backend {name!r} is unavailable: {_errors[name]}")
    return backend


def set_backend(name: str) -> Backend:
    """Set the process-wide default backend ("auto" = fastest available)."""
    global _default
    backend = get_backend(name)
    _default = name.lower()
    return backend


def get_default_backend() -> str:
    """The name set by :func:`set_backend` ("auto" unless changed)."""
    return _default
