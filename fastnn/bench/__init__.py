"""``fastnn bench``: a reproducible benchmark report of CPU training.

>>> from fastnn import bench
>>> results = bench.run(bench.Options(mode="quick", out="bench-out"))  # doctest: +SKIP

writes ``report.md``, ``results.json`` (schema: docs/benchmark-schema.md) and PNG plots
to ``out``. Sections: machine ceilings (sgemm GFLOP/s, copy bandwidth), per-op speed-up
over NumPy, training throughput against batch size, the GEMM-only bound of each
training workload (its step's matrix products alone, with NumPy), thread scaling, % of
peak, MLPClassifier against scikit-learn and against Sequential.fit, MLPRegressor
against scikit-learn, predict_proba latency on 1 to 1000 rows against scikit-learn,
PyTorch and the NumPy MLP, fastnn's effect on a NumPy neighbour, data-parallel training
on 2 MPI ranks against 1, JIT compile time and training peak memory. Method: every
training system (each baseline and each fastnn backend) in a fresh process of its
own with this environment as it is (isolated.py), warmed up, then one sample per
process per round, the processes alternated (rotated start) with a pause between
samples; medians with quartiles, ratios paired round by round.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PRESETS", "Options", "run"]

SCHEMA = "fastnn-bench/5"

# fit time, fastnn.MLPClassifier vs scikit-learn's: the data set
_ESTIMATOR = dict(
    n_samples=20_000, features=784, classes=10, hidden=[256, 128], epochs=3
)
# fit time, fastnn.MLPRegressor vs scikit-learn's: [features, outputs] per problem
# (the first is the target's), the classifier's hidden layers and epochs
_REGRESSOR = dict(
    n_samples=20_000, problems=[[784, 1], [64, 8]], hidden=[256, 128], epochs=3
)

PRESETS: dict[str, dict[str, Any]] = {
    # ~12 minutes on the 2-core AMD EPYC VM, every section and peer (Numba's compile
    # from an empty cache, ~1-1.5 min, and fastnn.precompile, ~3.5 min, included)
    "quick": dict(
        rounds=5,
        warmup=1,
        op_min_time=0.003,
        stream_ops=True,
        n_big=4096,
        n_small=16384,
        batches=[32, 128, 512],
        scaling_batches=[512],
        peak_rounds=5,
        gemm_sizes=[1024],
        cold_cache=True,
        installed_cache=True,  # fastnn.precompile: ~3.5 min of both dtypes
        memory_samples=40_000,  # 784 float32 features: 126 MB of X
        memory_epochs=2,
        memory_jobs=1,
        estimator={**_ESTIMATOR, "rounds": 3},
        regressor={**_REGRESSOR, "rounds": 3},
        # predict_proba latency: samples >= 50 ms of calls; ~60 s on the 2-core VM
        inference=dict(rounds=5, min_time=0.05, n_fit=2048),
        settle_s=0.15,  # > OpenBLAS's ~0.1 s of spinning after its last GEMM
        # epochs of ~0.1 s, paired ratios spread +-12% on a shared 2-core VM: a
        # 9-round median read <= 0.94 one time in six with no effect at all
        side_effect_rounds=45,
        # the own-GEMM targets' ratios: samples of a few ms, so many rounds are cheap
        own_gemm_rounds=15,
        own_gemm_min_time=0.02,
    ),
    "full": dict(
        rounds=15,
        warmup=2,
        op_min_time=0.02,
        stream_ops=True,
        n_big=16384,
        n_small=65536,
        batches=[16, 32, 64, 128, 256, 512, 1024],
        scaling_batches=[128, 512],
        peak_rounds=11,
        gemm_sizes=[1024, 2048],
        cold_cache=True,
        installed_cache=True,
        memory_samples=60_000,  # 188 MB of X
        memory_epochs=2,
        memory_jobs=1,
        estimator={**_ESTIMATOR, "rounds": 7},
        regressor={**_REGRESSOR, "rounds": 7},
        inference=dict(rounds=11, min_time=0.1, n_fit=2048),
        settle_s=0.15,
        side_effect_rounds=61,
        own_gemm_rounds=31,
        own_gemm_min_time=0.05,
    ),
    # the smallest configuration that still fills every section (tests)
    "tiny": dict(
        rounds=3,
        warmup=1,
        op_min_time=0.0005,
        stream_ops=False,
        n_big=256,
        n_small=512,
        batches=[32, 128],
        scaling_batches=[128],
        peak_rounds=3,
        gemm_sizes=[256],
        cold_cache=False,
        installed_cache=False,
        memory_samples=1024,  # 3.2 MB: exercises the measurement, not the target
        memory_epochs=1,
        memory_jobs=3,  # the backends' processes side by side (nothing is timed)
        estimator=dict(
            n_samples=400, features=32, classes=4, hidden=[16, 8], epochs=1, rounds=2
        ),
        regressor=dict(
            n_samples=400,
            problems=[[32, 1], [16, 3]],
            hidden=[16, 8],
            epochs=1,
            rounds=2,
        ),
        inference=dict(rounds=2, min_time=0.002, n_fit=256),
        settle_s=0.0,  # nothing in the tests reads the numbers
        side_effect_rounds=3,
        own_gemm_rounds=3,
        own_gemm_min_time=0.002,
        op_only=[
            "linear_forward_relu|32x784->256",
            "softmax_cross_entropy|128x10",
            "relu_forward|1024x1024",
            "sgd_nesterov_update|200704",
        ],
    ),
}
PEERS = ("numpy", "torch", "jax", "sklearn")
SECTIONS = ("peak", "ops", "training", "scaling", "estimator", "regressor",
            "inference", "side_effect", "distributed", "own_gemm", "compile",
            "memory")  # fmt: skip


@dataclass
class Options:
    """What to run. ``threads``/``backends``/``peers`` default to everything here."""

    mode: str = "quick"
    out: str | os.PathLike = "fastnn-bench"
    threads: list[int] | None = None
    backends: list[str] | None = None
    peers: list[str] | None = None
    progress: bool = True
    plots: bool = True
    preset: dict[str, Any] = field(default_factory=dict)

    def resolve(self) -> Options:
        import fastnn

        if self.mode not in PRESETS:
            raise ValueError(f"mode must be one of {list(PRESETS)}, got {self.mode!r}")
        self.preset = {**PRESETS[self.mode], **self.preset}
        cores = fastnn.threads.cpu_count()
        self.threads = sorted(set(self.threads or range(1, cores + 1)))
        if any(t < 1 for t in self.threads):
            raise ValueError(f"thread counts must be >= 1, got {self.threads}")
        known = fastnn.kernels.BACKEND_NAMES
        if self.backends is None:
            self.backends = list(known)  # unavailable ones are reported as skipped
        for b in self.backends:
            if b not in known:
                raise ValueError(
                    f"unknown backend {b!r}; expected some of {list(known)}"
                )
        self.peers = list(PEERS if self.peers is None else self.peers)
        for p in self.peers:
            if p not in PEERS:
                raise ValueError(f"unknown peer {p!r}; expected some of {list(PEERS)}")
        self.out = Path(self.out)
        return self

    @property
    def systems(self) -> list[str]:
        from .workloads import system_names

        return system_names(self.backends, self.peers)


def _progress(opts: Options, total: int):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is a dependency; degrade to no bar anyway
        tqdm = None
    if tqdm is None or not opts.progress:

        class _Null:
            def update(self, n=1): ...
            def set_description_str(self, s): ...
            def close(self): ...

        return _Null()
    return tqdm(
        total=total,
        file=sys.stderr,
        unit="step",
        mininterval=0.5,
        desc="fastnn bench",
        dynamic_ncols=True,
    )


def run(opts: Options) -> dict[str, Any]:
    """Measure every section, write the report files, return the results object."""
    import fastnn

    from . import report, sections
    from .environment import fingerprint
    from .workloads import INFERENCE_NETWORKS, INFERENCE_ROWS, op_cases

    opts.resolve()
    t_start = time.perf_counter()
    env = fingerprint()
    skipped: list[dict[str, Any]] = []
    avail = fastnn.available_backends()
    for b in opts.backends:
        if b not in avail:
            skipped.append(
                {
                    "section": "all",
                    "system": f"fastnn-{b}",
                    "reason": fastnn.kernels.backend_status()[b],
                }
            )
    opts.backends = [b for b in opts.backends if b in avail]
    try:
        n_ops = len(op_cases(opts.preset["stream_ops"], opts.preset.get("op_only")))
    except ImportError:  # benchmarks/ not found: the ops section reports it
        n_ops = 0
    n_scaling = len(opts.preset["scaling_batches"]) * sum(
        1 for s in opts.systems if s.startswith("fastnn-") or s == "numpy-mlp"
    )
    n_compile = len(opts.backends) + ("numba" in opts.backends) * (
        opts.preset["cold_cache"] + opts.preset["installed_cache"]
    )
    total = (
        (len(opts.preset["gemm_sizes"]) + 2) * opts.preset["peak_rounds"]
        + n_ops
        + len(opts.preset["batches"])
        + 1
        + n_scaling
        + n_compile
        + len(opts.backends)  # memory
        + 2  # estimator: one per solver
        + 2 * len(opts.preset["regressor"]["problems"])  # regressor: per solver
        + len(INFERENCE_NETWORKS) * len(INFERENCE_ROWS)  # inference: per case
        + 1  # side effect
        + 1  # distributed
        + 2  # own GEMM: batch 32 and 128
    )
    bar = _progress(opts, total)
    tick = bar.update
    results: dict[str, Any] = {"schema": SCHEMA}
    timings: dict[str, float] = {}

    def section(name, label, fn, *args):
        bar.set_description_str(label)
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            timings[name] = time.perf_counter() - t0

    try:
        compile_rows = section(
            "compile",
            "cold start (fresh processes)",
            sections.compile_times,
            opts,
            skipped,
            tick,
        )
        memory_rows = section(
            "memory",
            "training memory (fresh processes)",
            sections.memory,
            opts,
            skipped,
            tick,
        )
        peaks = section("peak", "machine ceilings", sections.peak, opts, env, tick)
        op_rows = section(
            "ops", "per-op kernels", sections.ops, opts, peaks, skipped, tick
        )
        train_rows, gemm_bound_rows = section(
            "training",
            "training throughput",
            sections.training,
            opts,
            peaks,
            skipped,
            tick,
        )
        scaling_rows = section(
            "scaling", "thread scaling", sections.scaling, opts, skipped, tick
        )
        estimator_rows = section(
            "estimator",
            "MLPClassifier vs scikit-learn",
            sections.estimator,
            opts,
            skipped,
            tick,
        )
        regressor_rows = section(
            "regressor",
            "MLPRegressor vs scikit-learn",
            sections.regressor,
            opts,
            skipped,
            tick,
        )
        inference_rows = section(
            "inference",
            "inference latency (fresh processes)",
            sections.inference,
            opts,
            skipped,
            tick,
        )
        side_effect_rows = section(
            "side_effect",
            "fastnn beside a NumPy MLP",
            sections.side_effect,
            opts,
            skipped,
            tick,
        )
        distributed_rows = section(
            "distributed",
            "MPI ranks (fastnn.distributed)",
            sections.distributed,
            opts,
            skipped,
            tick,
        )
        own_gemm_rows = section(
            "own_gemm",
            "own GEMM vs OpenBLAS (fresh processes)",
            sections.own_gemm,
            opts,
            skipped,
            tick,
        )
    finally:
        bar.close()
    env["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    results.update(
        {
            "created": env["date"],
            "duration_s": time.perf_counter() - t_start,
            "section_times_s": timings,
            "config": {
                "mode": opts.mode,
                "threads": opts.threads,
                "backends": opts.backends,
                "peers": opts.peers,
                "systems": opts.systems,
                "dtype": "float32",
                "preset": {k: v for k, v in opts.preset.items()},
                "hyperparameters": {
                    "optimizer": "SGD",
                    "lr": 0.01,
                    "momentum": 0.9,
                    "l2": 1e-4,
                    "loss": "softmax cross-entropy + L2",
                    "activation": "relu",
                },
            },
            "environment": env,
            "peak": peaks,
            "ops": op_rows,
            "training": train_rows,
            "gemm_bound": gemm_bound_rows,
            "scaling": scaling_rows,
            "estimator": estimator_rows,
            "regressor": regressor_rows,
            "inference": inference_rows,
            "side_effect": side_effect_rows,
            "distributed": distributed_rows,
            "own_gemm": own_gemm_rows,
            "compile": compile_rows,
            "memory": memory_rows,
            "skipped": skipped,
        }
    )
    results["targets"] = report.targets(results)
    report.write(results, opts.out, plots=opts.plots)
    return results
