"""This machine's ceilings, measured: sgemm GFLOP/s and copy bandwidth.

* sgemm: NumPy float32 ``matmul(a, b, out=c)`` on square n x n matrices (2 n^3 FLOP),
  BLAS limited to t threads through threadpoolctl (fastnn.num_threads).
* copy: ``np.copyto`` between two arrays, split into t contiguous chunks copied by t
  Python threads (NumPy releases the GIL while copying). Bytes counted as read + write
  (2 x array size, the STREAM convention; write-allocate traffic is not counted, so the
  same convention is used for every kernel's byte count). Two sizes: arrays past the
  last-level cache ("memory") and arrays that fit in it ("cache").

The ceiling at t threads is the best median measured at t or fewer threads.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .. import threads as _threads
from .runner import interleave, scaled

MiB = 1 << 20


def sgemm(n: int, thread_counts: list[int], rounds: int, tick=None) -> list[dict]:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)

    def make(t):
        def run():
            with _threads.num_threads(t):  # switching threads stays out of the time
                t0 = time.perf_counter()
                np.matmul(a, b, out=c)
                return time.perf_counter() - t0

        return run

    flops = 2.0 * n**3
    times = interleave(
        {t: make(t) for t in thread_counts},
        rounds,
        warmup=1,
        tick=tick,
        self_timed=True,
    )
    return [
        {
            "threads": t,
            "n": n,
            "flops": flops,
            "gflops": scaled(_stat(times[t]), flops / 1e9, "GFLOP/s"),
        }
        for t in thread_counts
    ]


def copy_bandwidth(
    nbytes: int, thread_counts: list[int], rounds: int, level: str, tick=None
) -> list[dict]:
    n = nbytes // 4
    src = np.random.default_rng(0).standard_normal(n, dtype=np.float32)
    dst = np.empty_like(src)
    pool = ThreadPoolExecutor(max(thread_counts))

    def make(t):
        bounds = np.linspace(0, n, t + 1).astype(int)
        chunks = [
            (dst[i:j], src[i:j]) for i, j in zip(bounds[:-1], bounds[1:], strict=True)
        ]

        def run():
            if t == 1:
                np.copyto(dst, src)
            else:
                list(pool.map(lambda c: np.copyto(*c), chunks))

        return run

    try:
        # small arrays: many copies per sample so a sample is long enough to time
        times = interleave(
            {t: make(t) for t in thread_counts},
            rounds,
            warmup=2,
            min_time=0.01,
            tick=tick,
        )
    finally:
        pool.shutdown()
    moved = 2.0 * nbytes
    return [
        {
            "threads": t,
            "level": level,
            "array_bytes": nbytes,
            "bytes_moved": moved,
            "gbps": scaled(_stat(times[t]), moved / 1e9, "GB/s"),
        }
        for t in thread_counts
    ]


def _stat(times):
    from .runner import stat

    return stat(times, "s")


def measure(
    thread_counts: list[int],
    rounds: int,
    gemm_sizes: list[int],
    llc_bytes: int | None,
    tick=None,
) -> dict[str, Any]:
    """The ceilings at every thread count; the sgemm ceiling is the best median."""
    gemm = [r for n in gemm_sizes for r in sgemm(n, thread_counts, rounds, tick)]
    llc = llc_bytes or 32 * MiB
    mem_bytes = max(64 * MiB, 4 * llc)  # each array alone 4x the last-level cache
    cache_bytes = max(MiB // 4, min(4 * MiB, llc // 8))
    copy = copy_bandwidth(mem_bytes, thread_counts, rounds, "memory", tick)
    copy += copy_bandwidth(cache_bytes, thread_counts, rounds, "cache", tick)
    # The ceiling at t threads is the best median at <= t threads (a kernel given t
    # threads could always use fewer), over the measured sizes.
    ceilings = {}
    for t in thread_counts:
        ceilings[str(t)] = {
            "sgemm_gflops": max(
                g["gflops"]["median"] for g in gemm if g["threads"] <= t
            ),
            "copy_gbps_memory": max(
                c["gbps"]["median"]
                for c in copy
                if c["threads"] <= t and c["level"] == "memory"
            ),
            "copy_gbps_cache": max(
                c["gbps"]["median"]
                for c in copy
                if c["threads"] <= t and c["level"] == "cache"
            ),
        }
    return {"sgemm": gemm, "copy": copy, "ceilings": ceilings, "llc_bytes": llc}
