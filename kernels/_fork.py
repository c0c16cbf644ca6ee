"""Fork safety: a process forked from one that imported fastnn runs every kernel
serially.

The thread pools fastnn uses do not survive ``fork()``: the child has none of the
parent's libgomp worker threads (the Cython extension's OpenMP and Numba's "omp"
threading layer), so its next parallel region waits for them forever, and Numba's
omp layer terminates a forked child that enters one. As PyTorch does with the same
libgomp, fastnn marks the pools unusable in the child (an ``os.register_at_fork``
hook): from then on each backend takes its serial paths only and never enters a
parallel region, ``fastnn.get_num_threads()`` reads 1 there and
``fastnn.set_num_threads`` has no effect. Worker processes that should use
threads are started with the "spawn" or "forkserver" method instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = ["in_forked_child", "on_fork_child"]

_forked = False
_hooks: list[Callable[[], None]] = []


def in_forked_child() -> bool:
    """True in a process forked from one that had imported fastnn."""
    return _forked


def on_fork_child(hook: Callable[[], None]) -> None:
    """Call ``hook()`` in every forked child (and now, when this process is one):
    each backend registers the switch to its serial paths here."""
    _hooks.append(hook)
    if _forked:
        hook()


def _after_fork_in_child() -> None:
    global _forked
    _forked = True
    for hook in _hooks:
        hook()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
