"""64-byte aligned arrays.

Buffers whose addresses differ by a few bytes mod 64 made copies ~10x slower on the
reference machine (REFERENCE.md §8), and an aligned layout keeps BLAS on one code path
whatever address the allocator returns, which bitwise-reproducible training relies on.
"""

from __future__ import annotations

import numpy as np

ALIGN = 64


def aligned_empty(shape: int | tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on a 64-byte boundary."""
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGN, dtype=np.uint8)
    start = (-raw.ctypes.data) % ALIGN
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def aligned_zeros(shape: int | tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Like :func:`aligned_empty`, filled with zeros."""
    out = aligned_empty(shape, dtype)
    out.fill(0)
    return out


def aligned_copy(a: np.ndarray, dtype: np.dtype | None = None) -> np.ndarray:
    """A 64-byte aligned C-contiguous copy of ``a`` (cast to ``dtype`` if given)."""
    out = aligned_empty(np.shape(a), a.dtype if dtype is None else dtype)
    out[...] = a
    return out


def padded_size(n: int, dtype: np.dtype) -> int:
    """``n`` rounded up so that ``n`` elements fill whole 64-byte lines."""
    per_line = max(1, ALIGN // np.dtype(dtype).itemsize)
    return -(-n // per_line) * per_line
