"""The one BLAS every compiled GEMM goes through, found once for both backends.

fastnn routes every GEMM through NumPy's own BLAS (on PyPI wheels a bundled OpenBLAS):
the NumPy backend already uses it, so the process runs one BLAS library, and it was
measured faster than the older OpenBLAS bundled with SciPy (single-threaded sgemm
32x784x256: 233 vs 317 us; 128x784x256: 662 vs 834 us). SciPy's OpenBLAS is the
fallback when NumPy's exposes no CBLAS.

The compiled kernels call ``cblas_{s,d}gemm`` through the addresses found here
(row-major, so no operand swap), with 64-bit integers when the library is ILP64
(NumPy's is), and switch the library to one thread around the fixed GEMM blocks they
run in their own OpenMP threads (see ``nb/matmul.py`` and ``cy/_blas.pxi``): one
thread pool at a time, and results that do not depend on the thread count.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

from threadpoolctl import threadpool_info

#: A GEMM is cut into fixed blocks of its output, each worth at least this many flops
#: (and at most one block per core): below it a block's single-threaded BLAS call is
#: too short to pay for waking a thread. 2e6 left 1024x128->10 (2.6 MFLOP) on one core
#: at 0.8x NumPy's two-thread GEMM; 5e5 splits it.
GEMM_BLOCK_FLOPS = 5e5


@dataclass(frozen=True)
class Cblas:
    """Addresses of one CBLAS library's GEMMs and thread controls."""

    path: str
    version: str
    sgemm: int
    dgemm: int
    int64: bool  # ILP64: every integer argument is 64-bit
    set_threads: int  # 0 when the library offers no thread control
    get_threads: int

    @property
    def description(self) -> str:
        width = "ILP64" if self.int64 else "LP64"
        control = "with" if self.set_threads else "without"
        return (
            f"cblas_sgemm/dgemm of {os.path.basename(self.path)} ({self.version}, "
            f"{width}, {control} thread control)"
        )


def _address(dll: ctypes.CDLL, names: list[str]) -> tuple[int, str]:
    for name in names:
        try:
            return ctypes.cast(getattr(dll, name), ctypes.c_void_p).value or 0, name
        except AttributeError:
            continue
    return 0, ""


def _open(info: dict) -> Cblas | None:
    """The CBLAS of one library reported by threadpoolctl, or None."""
    try:
        dll = ctypes.CDLL(info["filepath"])
    except OSError:
        return None
    # OpenBLAS builds for NumPy/SciPy prefix "scipy_" and (ILP64) suffix "64_"
    variants = [(p, s) for p in ("scipy_", "") for s in ("64_", "")]
    for prefix, suffix in variants:
        sgemm, name = _address(dll, [f"{prefix}cblas_sgemm{suffix}"])
        if not sgemm:
            continue
        dgemm, _ = _address(dll, [f"{prefix}cblas_dgemm{suffix}"])
        if not dgemm:
            continue
        config = info.get("internal_api") == "openblas" and _openblas_config(
            dll, prefix, suffix
        )
        int64 = suffix == "64_" or "USE64BITINT" in (config or "")
        set_threads, _ = _address(dll, [f"{prefix}openblas_set_num_threads{suffix}"])
        get_threads, _ = _address(dll, [f"{prefix}openblas_get_num_threads{suffix}"])
        if not (set_threads and get_threads):
            set_threads = get_threads = 0
        return Cblas(
            info["filepath"], str(info.get("version")), sgemm, dgemm, int64,
            set_threads, get_threads,
        )  # fmt: skip
    return None


def _openblas_config(dll: ctypes.CDLL, prefix: str, suffix: str) -> str:
    for name in (f"{prefix}openblas_get_config{suffix}", "openblas_get_config"):
        fn = getattr(dll, name, None)
        if fn is not None:
            fn.restype = ctypes.c_char_p
            return (fn() or b"").decode(errors="replace")
    return ""


def _owner(info: dict) -> int:
    """0 NumPy's library, 1 SciPy's, 2 another's (by the folder it lies in)."""
    folder = os.path.basename(os.path.dirname(info["filepath"]))
    return 0 if folder.startswith("numpy") else 1 if folder.startswith("scipy") else 2


def _blas_libraries() -> list[dict]:
    """threadpoolctl's view of the BLAS libraries loaded now, NumPy's first, then
    SciPy's, then any other."""
    libs = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    return sorted(libs, key=_owner)


def find_cblas() -> Cblas:
    """NumPy's BLAS if it exposes CBLAS, else SciPy's; ImportError if neither does.

    SciPy's is loaded only when NumPy's will not do: importing scipy.linalg costs
    0.15-0.45 s here and starts a second OpenBLAS, with its own threads, in the
    user's process."""
    import numpy  # noqa: F401  (loads NumPy's BLAS)

    for info in _blas_libraries():
        cblas = _open(info) if _owner(info) == 0 else None
        if cblas is not None:
            return cblas
    import scipy.linalg  # noqa: F401  (loads SciPy's)

    libs = _blas_libraries()
    for info in libs:
        cblas = _open(info)
        if cblas is not None:
            return cblas
    raise ImportError(
        "no CBLAS sgemm/dgemm found in the BLAS libraries NumPy and SciPy load: "
        + ", ".join(i["filepath"] for i in libs)
    )


CBLAS = find_cblas()
