"""The measured sections of a report. Each returns JSON-ready data (see
docs/benchmark-schema.md) and never raises for a system that cannot run: that
system is recorded under ``skipped`` with its reason."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import _suite, isolated
from . import peak as _peak
from .runner import pair_ratios, scaled, stat
from .workloads import (
    ESTIMATOR_SOLVERS,
    GEMM_ONLY,
    INFERENCE_NETWORKS,
    INFERENCE_ROWS,
    SEQUENTIAL_FIT,
    SEQUENTIAL_PREDICT,
    Workload,
    gemm_step,
    op_cases,
)


def _skip(skipped: list, section: str, system: str, reason: str, **where) -> None:
    skipped.append({"section": section, "system": system, "reason": reason, **where})


# -------------------------------------------------------------------- peak
def peak(opts, env, tick) -> dict[str, Any]:
    from .environment import llc_bytes

    return _peak.measure(
        opts.threads,
        opts.preset["peak_rounds"],
        opts.preset["gemm_sizes"],
        llc_bytes(env),
        tick,
    )


# --------------------------------------------------------------------- ops
def ops(opts, peaks, skipped, tick) -> list[dict[str, Any]]:
    """Every registry case, every backend, each backend in a process of its own
    (isolated.py: in one process the NumPy backend's OpenBLAS threads and the
    compiled backends' OpenMP threads would spin against each other), alternated
    round by round; speed-up over the numpy backend paired by round; % of the
    matching ceiling at the thread count used."""
    t = max(opts.threads)
    ceil = peaks["ceilings"][str(t)]
    llc = peaks["llc_bytes"]
    rows = []
    backends = ["numpy", *[b for b in opts.backends if b != "numpy"]]
    try:
        cases = op_cases(opts.preset["stream_ops"], opts.preset.get("op_only"))
    except _suite.SuiteNotFound as exc:
        _skip(skipped, "ops", "all", str(exc))
        return rows
    ids = [f"{c.op}|{c.shape}" for c in cases]
    spec = {"task": "ops", "cases": ids, "stream_ops": opts.preset["stream_ops"],
            "min_time": opts.preset["op_min_time"], "threads": t}  # fmt: skip
    specs = {b: {**spec, "system": f"fastnn-{b}"} for b in backends}
    with isolated.started(specs) as (workers, skips):
        for b, why in skips.items():
            _skip(skipped, "ops", f"fastnn-{b}", why)
        for case, key in zip(cases, ids, strict=True):
            ready = {}
            for b, w in workers.items():
                first = w.info["first_call_s"][key]
                if isinstance(first, str):  # the kernel failed to set up or run
                    _skip(skipped, "ops", f"fastnn-{b}", first, op=case.op,
                          shape=case.shape)  # fmt: skip
                else:
                    ready[b] = w
            if "numpy" not in ready:
                tick()
                continue
            times = isolated.alternate(
                ready, opts.preset["rounds"], opts.preset["settle_s"], case=key
            )
            first = {b: w.info["first_call_s"][key] for b, w in ready.items()}
            processes = {b: w.process() for b, w in ready.items()}
            level = None
            if case.kind == "memory":
                level = "memory" if case.working_set >= 2 * llc else "cache"
            for b, ts in times.items():
                row = {
                    "op": case.op,
                    "shape": case.shape,
                    "backend": b,
                    "kind": case.kind,
                    "threads": t,
                    "flops": case.flops,
                    "bytes": case.bytes,
                    "working_set_bytes": case.working_set,
                    "level": level,
                    "cost_note": case.note,
                    "process": processes[b],
                    "first_call_s": first[b],
                    "time": stat(ts, "s"),
                    "samples_s": ts,
                    "speedup_vs_numpy": stat(pair_ratios(times["numpy"], ts), "x"),
                    "gflops": None,
                    "gbps": None,
                    "pct_of_peak": None,
                    "peak_ref": None,
                }
                med = row["time"]["median"]
                if case.kind == "gemm":
                    row["gflops"] = case.flops / med / 1e9
                    row["pct_of_peak"] = 100 * row["gflops"] / ceil["sgemm_gflops"]
                    row["peak_ref"] = f"sgemm at {t} threads"
                elif case.bytes:
                    row["gbps"] = case.bytes / med / 1e9
                    if case.kind == "memory":
                        ref = ceil[f"copy_gbps_{level}"]
                        row["pct_of_peak"] = 100 * row["gbps"] / ref
                        row["peak_ref"] = f"copy bandwidth ({level}) at {t} threads"
                rows.append(row)
            tick()
    return rows


# ---------------------------------------------------------------- training
def _workloads(opts) -> list[Workload]:
    p = opts.preset
    out = [Workload((784, 256, 128, 10), b, p["n_big"]) for b in p["batches"]]
    out.append(Workload((64, 32, 10), 32, p["n_small"]))
    return out


def _epoch_specs(opts, wl: Workload, names, threads: int) -> dict[str, dict]:
    spec = {"task": "epoch", "sizes": list(wl.sizes), "batch_size": wl.batch_size,
            "n_samples": wl.n_samples, "threads": threads,
            "warmup": opts.preset["warmup"]}  # fmt: skip
    return {name: {**spec, "system": name} for name in names}


def _run_isolated(opts, specs, rounds, skipped, section, tick=None, **where):
    """isolated.run with the section's skips recorded."""
    times, processes, skips = isolated.run(
        specs, rounds, settle_s=opts.preset["settle_s"], tick=tick
    )
    for name, why in skips.items():
        _skip(skipped, section, specs[name]["system"], why, **where)
    return times, processes


def training(opts, peaks, skipped, tick) -> tuple[list[dict], list[dict]]:
    """Whole epochs of every system on each workload, each system in its own
    process (isolated.py), alternated round by round; throughput and the ratio to
    the NumPy MLP (or, without it, to fastnn's numpy backend), paired by round.

    The GEMM-only step (the matrix products of the same SGD steps with NumPy,
    nothing else) is one more process in the same rounds, so each system's share of
    that bound is paired round by round. Returns ``(training rows, gemm_bound rows)``.
    """
    t = max(opts.threads)
    sgemm = peaks["ceilings"][str(t)]["sgemm_gflops"]
    rows, bound_rows = [], []
    for wl in _workloads(opts):
        specs = _epoch_specs(opts, wl, [*opts.systems, GEMM_ONLY], t)
        times, processes = _run_isolated(
            opts, specs, opts.preset["rounds"], skipped, "training",
            workload=wl.name, batch_size=wl.batch_size,
        )  # fmt: skip
        gemm_epochs = times.pop(GEMM_ONLY, None)
        base = "numpy-mlp" if "numpy-mlp" in times else "fastnn-numpy"
        for name, ts in times.items():
            sps = scaled(stat(ts, "s"), wl.n_samples, "samples/s")
            rows.append(
                {
                    "workload": wl.name,
                    "layers": list(wl.sizes),
                    "batch_size": wl.batch_size,
                    "n_samples": wl.n_samples,
                    "system": name,
                    "threads": t,
                    "process": processes[name],
                    "epoch_time": stat(ts, "s"),
                    "samples_s": ts,
                    "samples_per_s": sps,
                    "baseline": base if base in times else None,
                    "ratio_vs_baseline": (
                        stat(pair_ratios(times[base], ts), "x")
                        if base in times
                        else None
                    ),
                    "flops_per_sample": wl.flops_per_sample,
                    "gflops": sps["median"] * wl.flops_per_sample / 1e9,
                    "pct_of_sgemm_peak": 100
                    * sps["median"]
                    * wl.flops_per_sample
                    / 1e9
                    / sgemm,
                }
            )
        if gemm_epochs is not None:
            bound_rows.append(
                _gemm_bound_row(
                    wl, t, sgemm, gemm_epochs, processes[GEMM_ONLY], times, rows
                )
            )
        tick()
    return rows, bound_rows


def _gemm_bound_row(wl, t, sgemm, gemm_epochs, process, times, rows) -> dict:
    """The GEMM-only time of one step of ``wl``, the samples/s it allows, and every
    system's samples/s as a share of it (paired by round)."""
    products, _ = gemm_step(wl.sizes, wl.batch_size)
    steps = max(1, wl.n_samples // wl.batch_size)
    flops = sum(p["flops"] for p in products)
    step_s = [e / steps for e in gemm_epochs]
    step = stat(step_s, "s")
    systems = []
    for name, ts in times.items():
        row = next(
            r
            for r in rows
            if (r["system"], r["workload"], r["batch_size"])
            == (name, wl.name, wl.batch_size)
        )
        # (n_samples / epoch) / (batch / step), round by round, in percent
        share = [100.0 * s * wl.n_samples / wl.batch_size for s in step_s]
        systems.append(
            {
                "system": name,
                "samples_per_s": row["samples_per_s"]["median"],
                "pct_of_bound": stat(pair_ratios(share, ts), "%"),
            }
        )
    gflops = flops / step["median"] / 1e9
    return {
        "workload": wl.name,
        "layers": list(wl.sizes),
        "batch_size": wl.batch_size,
        "threads": t,
        "process": process,
        "products": products,
        "flops_per_step": flops,
        "steps": steps,
        "step_time": step,
        "samples_s": step_s,
        "samples_per_s": scaled(step, wl.batch_size, "samples/s"),
        "gflops": gflops,
        "pct_of_sgemm_peak": 100 * gflops / sgemm,
        "systems": systems,
    }


# --------------------------------------------------------------- estimator
def _fit_row(dataset, sizes, epochs, solver, name, threads, times, processes) -> dict:
    """One system's whole-fit row: its fit times, and its speed-up over
    scikit-learn's paired by round (when scikit-learn ran)."""
    ts = times[name]
    return {
        "dataset": dataset,
        "layers": list(sizes),
        "epochs": epochs,
        "solver": solver,
        "system": name,
        "threads": threads,
        "process": processes[name],
        "fit_time": stat(ts, "s"),
        "samples_s": ts,
        "speedup_vs_sklearn": (
            stat(pair_ratios(times["sklearn"], ts), "x") if "sklearn" in times else None
        ),
    }


def estimator(opts, skipped, tick) -> list[dict[str, Any]]:
    """Whole fits of fastnn.MLPClassifier (every backend) and scikit-learn's, same
    data, solver and epochs, each in its own process, alternated round by round;
    the speed-up over scikit-learn paired by round. The matrix products of the same
    steps alone (``GEMM_ONLY``) run in the same rounds: the ratio no fit whose
    products run at NumPy's BLAS speed can beat. So does ``Sequential.fit`` of each
    backend on the same network, data, batch size and optimizer
    (``SEQUENTIAL_FIT``): each fastnn row carries its fit time and the estimator's
    throughput relative to it, paired by round."""
    t = max(opts.threads)
    spec = opts.preset["estimator"]
    hidden, epochs = list(spec["hidden"]), spec["epochs"]
    sizes = (spec["features"], *hidden, spec["classes"])
    dataset = f"synthetic-{spec['n_samples']}x{spec['features']}"
    names = ["sklearn", *(f"fastnn-{b}" for b in opts.backends), GEMM_ONLY,
             *(SEQUENTIAL_FIT + b for b in opts.backends)]  # fmt: skip
    rows = []
    for solver in ESTIMATOR_SOLVERS:
        # warm-up in each process on a 1000-row slice (imports, JIT caches, pools)
        fit = {"task": "fit", "solver": solver, "hidden": hidden, "epochs": epochs,
               "features": spec["features"], "classes": spec["classes"],
               "n_samples": spec["n_samples"], "threads": t, "warmup": 0}  # fmt: skip
        specs = {name: {**fit, "system": name} for name in names}
        times, processes = _run_isolated(
            opts, specs, spec["rounds"], skipped, "estimator", solver=solver
        )
        for name, ts in times.items():
            if name.startswith(SEQUENTIAL_FIT):
                continue
            row = _fit_row(dataset, sizes, epochs, solver, name, t, times, processes)
            sequential = SEQUENTIAL_FIT + name.removeprefix("fastnn-")
            if sequential in times:
                row["sequential_fit"] = {
                    "process": processes[sequential],
                    "fit_time": stat(times[sequential], "s"),
                    "samples_s": times[sequential],
                }
                # throughput ratio = Sequential.fit's time / the estimator's
                row["ratio_vs_sequential_fit"] = stat(
                    pair_ratios(times[sequential], ts), "x"
                )
            rows.append(row)
        tick()
    return rows


# --------------------------------------------------------------- regressor
def regressor(opts, skipped, tick) -> list[dict[str, Any]]:
    """Whole fits of fastnn.MLPRegressor (every backend) and scikit-learn's, same
    data, solver and epochs, per problem (features -> outputs), each system in its
    own process, alternated round by round; the speed-up over scikit-learn paired by
    round (as :func:`estimator`)."""
    t = max(opts.threads)
    spec = opts.preset["regressor"]
    hidden, epochs, n = list(spec["hidden"]), spec["epochs"], spec["n_samples"]
    names = ["sklearn", *(f"fastnn-{b}" for b in opts.backends)]
    rows = []
    for features, outputs in spec["problems"]:
        dataset = f"synthetic-regression-{n}x{features}->{outputs}"
        for solver in ESTIMATOR_SOLVERS:
            # warm-up in each process on a 1000-row slice (imports, JIT caches, pools)
            fit = {"task": "fit", "estimator": "regressor", "solver": solver,
                   "hidden": hidden, "epochs": epochs, "features": features,
                   "outputs": outputs, "n_samples": n, "threads": t,
                   "warmup": 0}  # fmt: skip
            specs = {name: {**fit, "system": name} for name in names}
            times, processes = _run_isolated(
                opts, specs, spec["rounds"], skipped, "regressor", solver=solver,
                dataset=dataset,
            )  # fmt: skip
            sizes = (features, *hidden, outputs)
            for name in times:
                rows.append(
                    _fit_row(dataset, sizes, epochs, solver, name, t, times, processes)
                )
            tick()
    return rows


# --------------------------------------------------------------- inference
#: The baselines of the inference rows' speed-ups, in the report's order.
INFERENCE_BASELINES = ("sklearn", "torch-eager", "numpy-mlp")


def inference_systems(opts) -> list[str]:
    """fastnn.MLPClassifier on every compiled backend, the model API
    (Sequential.predict_proba) on the one ``backend="auto"`` picks first,
    scikit-learn's MLPClassifier (the ratios' baseline, as in the estimator
    section), PyTorch eager and the NumPy MLP when those peers are selected."""
    from ..kernels import AUTO_ORDER

    compiled = [b for b in opts.backends if b != "numpy"]
    names = [f"fastnn-{b}" for b in compiled]
    names += [SEQUENTIAL_PREDICT + b for b in AUTO_ORDER if b in compiled][:1]
    names.append("sklearn")
    names += [s for p, s in (("torch", "torch-eager"), ("numpy", "numpy-mlp"))
              if p in opts.peers]  # fmt: skip
    return names


def inference(opts, skipped, tick) -> list[dict[str, Any]]:
    """Wall time of one predict_proba call on 1, 32 and 1000 rows of each network
    (float32), every system fitted briefly through its own API in a process of its
    own (isolated.py), the processes alternated round by round per case; a sample
    repeats the call until it lasts ``min_time`` (after one untimed call that wakes
    the pools after the pause); speed-ups over each baseline paired by round."""
    t = max(opts.threads)
    p = opts.preset["inference"]
    base = {"task": "predict", "networks": [list(n) for n in INFERENCE_NETWORKS],
            "rows": list(INFERENCE_ROWS), "n_fit": p["n_fit"], "fit_batch": 32,
            "fit_epochs": 1, "min_time": p["min_time"], "threads": t}  # fmt: skip
    specs = {name: {**base, "system": name} for name in inference_systems(opts)}
    rows = []
    with isolated.started(specs) as (workers, skips):
        for name, why in skips.items():
            _skip(skipped, "inference", name, why)
        processes = {n: w.process() for n, w in workers.items()}
        for sizes in INFERENCE_NETWORKS:
            workload = "-".join(map(str, sizes))
            for n_rows in INFERENCE_ROWS:
                key = f"{workload}|{n_rows}"
                times = isolated.alternate(
                    workers, p["rounds"], opts.preset["settle_s"], case=key
                )
                for name, ts in times.items():
                    info = workers[name].info
                    per_call = stat(ts, "s")
                    rows.append(
                        {
                            "workload": workload,
                            "layers": list(sizes),
                            "rows": n_rows,
                            "system": name,
                            "api": info["api"],
                            "threads": t,
                            "threads_in_use": info["threads_in_use"],
                            "process": processes[name],
                            "min_sample_s": p["min_time"],
                            "time": per_call,
                            "samples_s": ts,
                            "rows_per_s": scaled(per_call, n_rows, "rows/s"),
                            # the baseline's time / this system's, paired by round
                            "speedup_vs": {
                                b: stat(pair_ratios(times[b], ts), "x")
                                for b in INFERENCE_BASELINES
                                if b in times
                            },
                        }
                    )
                tick()
    return rows


# ----------------------------------------------------------------- scaling
def scaling(opts, skipped, tick) -> list[dict[str, Any]]:
    """Each system at every thread count, each count in its own process,
    alternated; speed-up over one thread round by round; parallel efficiency =
    speed-up / threads."""
    rows = []
    counts = sorted(set(opts.threads) | {1})
    names = [n for n in opts.systems if n.startswith("fastnn-") or n == "numpy-mlp"]
    for batch in opts.preset["scaling_batches"]:
        wl = Workload((784, 256, 128, 10), batch, opts.preset["n_big"])
        for name in names:
            specs = {c: {**_epoch_specs(opts, wl, [name], c)[name]} for c in counts}
            times, processes = _run_isolated(
                opts, specs, opts.preset["rounds"], skipped, "scaling",
                workload=wl.name, batch_size=batch,
            )  # fmt: skip
            if len(times) < len(counts):
                tick()
                continue
            for c in counts:
                sp = stat(pair_ratios(times[1], times[c]), "x")
                rows.append(
                    {
                        "system": name,
                        "workload": wl.name,
                        "batch_size": batch,
                        "threads": c,
                        "process": processes[c],
                        "samples_per_s": scaled(
                            stat(times[c], "s"), wl.n_samples, "samples/s"
                        ),
                        "speedup_vs_1_thread": sp,
                        "samples_s": times[c],
                        "efficiency": sp["median"] / c,
                    }
                )
            tick()
    return rows


# ------------------------------------------------------------- distributed
#: Data-parallel training: jobs of this many MPI ranks of one thread each, at this
#: global batch, on the 784-256-128-10 network.
DISTRIBUTED_RANKS = (1, 2)
DISTRIBUTED_BATCH = 256


def distributed(opts, skipped, tick) -> list[dict[str, Any]]:
    """fastnn.distributed.fit with 2 MPI ranks x 1 thread against 1 rank x 1 thread
    (each compiled backend): every job a fresh ``mpiexec`` of processes of its own,
    one epoch per sample, the jobs alternated round by round; the speed-up over one
    rank paired by round."""
    backends = [b for b in opts.backends if b != "numpy"]
    why = _mpi_missing()
    if why:
        for b in backends:
            _skip(skipped, "distributed", f"fastnn-{b}", why)
        tick()
        return []
    wl = Workload((784, 256, 128, 10), DISTRIBUTED_BATCH, opts.preset["n_big"])
    rows = []
    for b in backends:
        system = f"fastnn-{b}"
        base = _epoch_specs(opts, wl, [system], 1)[system]
        specs = {r: {**base, "ranks": r} for r in DISTRIBUTED_RANKS}
        times, processes = _run_isolated(
            opts, specs, opts.preset["rounds"], skipped, "distributed",
            workload=wl.name, batch_size=wl.batch_size,
        )  # fmt: skip
        if 1 not in times:
            continue
        for ranks, ts in times.items():
            rows.append(
                {
                    "system": system,
                    "workload": wl.name,
                    "batch_size": wl.batch_size,
                    "ranks": ranks,
                    "threads_per_rank": 1,
                    "process": processes[ranks],
                    "samples_s": ts,
                    "samples_per_s": scaled(stat(ts, "s"), wl.n_samples, "samples/s"),
                    "speedup_vs_1_rank": stat(pair_ratios(times[1], ts), "x"),
                }
            )
    tick()
    return rows


def _mpi_missing() -> str | None:
    """Why MPI jobs cannot start here, or None."""
    import importlib.util
    import shutil

    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed (pip install 'fastnn[mpi]')"
    if shutil.which("mpiexec") is None:
        return "mpiexec is not on the PATH"
    return None


# ------------------------------------------------------------- own GEMM
#: The step whose products fastnn's own GEMM is measured on, the batches, and the
#: speed-up over OpenBLAS each batch targets (issue: own GEMM micro-kernels).
OWN_GEMM_SIZES = (784, 256, 128, 10)
OWN_GEMM_TARGETS = {32: 1.3, 128: 1.1}


def own_gemm(opts, skipped, tick) -> list[dict[str, Any]]:
    """The products of one 784-256-128-10 training step, four ways, each in a
    process of its own, alternated round by round at min(2, cores) threads: all by
    fastnn's own micro-kernels, each by the kernel the measured plan gives it (what
    a fit runs) and all by OpenBLAS as fastnn calls it (fastnn's GEMM entry point:
    fixed blocks of C, one single-threaded call each), and by ``np.matmul`` as
    NumPy's users run it (OpenBLAS's own threads; the target's baseline). Speed-ups
    paired by round."""
    from .. import threads as _threads
    from .._config import cpu_info

    rows = []
    t = min(2, _threads.cpu_count())
    flops = sum(p["flops"] for p in gemm_step(OWN_GEMM_SIZES, 1)[0])  # per sample
    for batch, target in OWN_GEMM_TARGETS.items():
        base = {"task": "gemm", "sizes": list(OWN_GEMM_SIZES), "batch_size": batch,
                "threads": t, "min_time": opts.preset["own_gemm_min_time"]}  # fmt: skip
        specs = {
            name: {**base, "system": system, "gemm": name}
            for name, system in (("own", "fastnn-gemm-own"),
                                 ("plan", "fastnn-gemm-plan"),
                                 ("openblas", "fastnn-gemm-openblas"),
                                 ("numpy", GEMM_ONLY))
        }  # fmt: skip
        with isolated.started(specs) as (workers, skips):
            for name, why in skips.items():
                _skip(skipped, "own_gemm", specs[name]["system"], why,
                      batch_size=batch)  # fmt: skip
            if len(workers) < len(specs):
                tick()
                continue
            times = isolated.alternate(
                workers, opts.preset["own_gemm_rounds"], opts.preset["settle_s"]
            )
            isa = workers["own"].info.get("gemm_isa")
            processes = {n: w.process() for n, w in workers.items()}
        gflops = {n: flops * batch / stat(times[n], "s")["median"] / 1e9
                  for n in specs}  # fmt: skip
        rows.append(
            {
                "workload": "-".join(map(str, OWN_GEMM_SIZES)),
                "batch_size": batch,
                "threads": t,
                "cpu": cpu_info()["model"],
                "isa": isa,
                "own_step_s": stat(times["own"], "s"),
                "openblas_step_s": stat(times["openblas"], "s"),
                "numpy_step_s": stat(times["numpy"], "s"),
                "plan_step_s": stat(times["plan"], "s"),
                "own_gflops": gflops["own"],
                "plan_gflops": gflops["plan"],
                "openblas_gflops": gflops["openblas"],
                "numpy_gflops": gflops["numpy"],
                "speedup": stat(pair_ratios(times["openblas"], times["own"]), "x"),
                "speedup_vs_numpy": stat(
                    pair_ratios(times["numpy"], times["own"]), "x"
                ),
                "plan_speedup_vs_numpy": stat(
                    pair_ratios(times["numpy"], times["plan"]), "x"
                ),
                "target": target,
                "process": processes,
            }
        )
        tick()
    return rows


# ------------------------------------------------------------- side effects
#: The NumPy MLP's process: as its users run it, after ``import fastnn``, and after
#: one small fastnn fit in the same process.
SIDE_EFFECT_VARIANTS = {"plain": None, "import fastnn": "import",
                        "fastnn fit": "fit"}  # fmt: skip


def side_effect(opts, skipped, tick) -> list[dict[str, Any]]:
    """Does fastnn slow down its neighbours? The NumPy MLP in a fresh process as
    its users run it, and in fresh processes that first imported fastnn or ran a
    fastnn fit; throughput relative to the plain process, paired by round."""
    if "numpy" not in opts.peers:
        _skip(skipped, "side_effect", "numpy-mlp", "the numpy peer was not selected")
        tick()
        return []
    t = max(opts.threads)
    p = opts.preset
    rows = []
    for wl in (
        Workload((784, 256, 128, 10), 32, p["n_big"]),
        Workload((64, 32, 10), 32, p["n_small"]),
    ):
        base = _epoch_specs(opts, wl, ["numpy-mlp"], t)["numpy-mlp"]
        specs = {
            variant: {**base, "preload": preload}
            for variant, preload in SIDE_EFFECT_VARIANTS.items()
        }
        times, processes = _run_isolated(
            opts, specs, p["side_effect_rounds"], skipped, "side_effect",
            workload=wl.name, batch_size=wl.batch_size,
        )  # fmt: skip
        if "plain" not in times:
            continue
        for variant, ts in times.items():
            rows.append(
                {
                    "workload": wl.name,
                    "batch_size": wl.batch_size,
                    "n_samples": wl.n_samples,
                    "system": "numpy-mlp",
                    "variant": variant,
                    "threads": t,
                    "process": processes[variant],
                    "samples_s": ts,
                    "samples_per_s": scaled(stat(ts, "s"), wl.n_samples, "samples/s"),
                    # throughput / the plain process's = plain time / this time
                    "ratio_vs_plain": stat(pair_ratios(times["plain"], ts), "x"),
                }
            )
    tick()
    return rows


# ----------------------------------------------------------------- compile
def _failed(status: int, stdout: str, stderr: str) -> RuntimeError:
    """A failed subprocess as an error: its status and last line of output (the
    skip reason the report shows)."""
    tail = (stderr or stdout).strip().splitlines()[-1:] or ["no output"]
    return RuntimeError(f"exit status {status}: {tail[0]}")


def _script(name: str, args: list[str], preset: dict, env=None) -> dict[str, Any]:
    """Run ``fastnn/bench/<name>`` as a script in a fresh Python process; its last
    stdout line is one JSON object (``process_wall_s`` added).

    The process runs in a session of its own so that on a timeout or an interrupt
    everything it started (memory.py measures in a forked child) is killed with it.
    """
    script = Path(__file__).with_name(name)
    cmd = [sys.executable, str(script), *args]
    group = hasattr(os, "killpg")
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=group,
    )
    try:
        stdout, stderr = proc.communicate(timeout=preset.get("coldstart_timeout", 600))
    except BaseException:
        if group:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        else:
            proc.kill()
        proc.communicate()
        raise
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise _failed(proc.returncode, stdout, stderr)
    data = json.loads(stdout.strip().splitlines()[-1])
    data["process_wall_s"] = wall
    return data


def _coldstart(
    backend: str,
    preset: dict,
    threads: int,
    numba_dir: str | None,
    plan_dir: str | None,
):
    """One cold-start run with these folders for Numba's cache and the measured GEMM
    plan (None: the user's defaults)."""
    env = dict(os.environ)
    if numba_dir is not None:
        env["NUMBA_CACHE_DIR"] = numba_dir
    if plan_dir is not None:
        env["FASTNN_CACHE_DIR"] = plan_dir
    args = ["--backend", backend, "--threads", str(threads)]
    args += ["--rounds", str(preset["rounds"]), "--steps", "8", "--batch", "128"]
    return _script("coldstart.py", args, preset, env)


def _precompile(preset: dict, env: dict) -> float:
    """``python -m fastnn.precompile`` (what ``pip install`` runs) in a fresh process;
    returns its wall time. Its own time limit: it compiles both dtypes (3.5 min on a
    quiet 2-core machine, 7.5 on a loaded one), more than a cold start's 600 s allow."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "fastnn.precompile"],
        env=env,
        capture_output=True,
        text=True,
        timeout=preset.get("precompile_timeout", 1800),
    )
    if proc.returncode != 0:
        raise _failed(proc.returncode, proc.stdout, proc.stderr)
    return time.perf_counter() - t0


def compile_times(opts, skipped, tick) -> list[dict[str, Any]]:
    """Per backend, in fresh processes: first training step minus the steady step.

    Numba runs up to three times: with an empty cache (what the first run pays when
    no cache was built for this CPU: a wheel built elsewhere, or
    FASTNN_NUMBA_PRECOMPILE=0), with the cache that ``fastnn.precompile`` alone
    fills in a fresh folder (the first run after ``pip install``, which runs it; its
    time is reported as ``precompile_s``) and once more with the cache the run before
    it left (every later run; the default cache when neither was measured). The numpy
    and Cython backends have nothing to compile: one run, cache "n/a". Each first run
    also starts without a measured GEMM plan (the same fresh folder), so it pays for
    timing the step's products (fastnn/_gemm_wisdom.py); a run "again" reads it.
    """
    t = max(opts.threads)
    rows = []
    for b in opts.backends:
        variants = [("n/a", "fresh")]
        if b == "numba":
            variants = []
            if opts.preset["cold_cache"]:
                variants.append(("cold", "empty"))
            else:
                _skip(
                    skipped,
                    "compile",
                    "fastnn-numba",
                    "cold-cache compile not measured in this configuration "
                    "(it takes tens of seconds)",
                    cache="cold",
                )
            if opts.preset["installed_cache"]:
                variants.append(("installed", "precompiled"))
            variants.append(("warm", "again" if variants else "default"))
        with contextlib.ExitStack() as folders:
            last = None  # the cache folder of the latest run
            for cache, how in variants:
                extra = {}
                try:
                    if how == "default":
                        d = None
                    elif how == "again":
                        d = last
                    else:
                        d = folders.enter_context(
                            tempfile.TemporaryDirectory(prefix="fastnn-numba-cache-")
                        )
                        if how == "precompiled":  # (a fresh folder otherwise)
                            env = dict(os.environ, NUMBA_CACHE_DIR=d)
                            extra["precompile_s"] = _precompile(opts.preset, env)
                    numba_dir = None if how == "fresh" else d
                    r = _coldstart(b, opts.preset, t, numba_dir, d)
                    last = d
                except Exception as exc:
                    _skip(
                        skipped,
                        "compile",
                        f"fastnn-{b}",
                        f"{type(exc).__name__}: {exc}",
                        cache=cache,
                    )
                    tick()
                    continue
                steady = stat(r["steady_step_s"], "s")
                rows.append(
                    {
                        "backend": b,
                        "cache": cache,
                        "threads": t,
                        "workload": "784-256-128-10",
                        "batch_size": 128,
                        "import_s": r["import_s"],
                        "load_s": r["load_s"],
                        "first_step_s": r["first_step_s"],
                        "steady_step_s": steady,
                        "compile_s": max(0.0, r["first_step_s"] - steady["median"]),
                        "time_to_first_step_s": r["time_to_first_step_s"],
                        "process_wall_s": r["process_wall_s"],
                        **extra,
                    }
                )
                tick()
    return rows


# ------------------------------------------------------------------ memory
MEMORY_SIZES, MEMORY_BATCH = (784, 256, 128, 10), 128


def memory(opts, skipped, tick) -> list[dict[str, Any]]:
    """Per backend, in a fresh process (fastnn/bench/memory.py): the peak RSS of
    training with Adam over what the training needs to hold.

    needed = dataset + weights + gradients + optimizer state + one batch of
    activations; peak increase = ru_maxrss minus the RSS right before the dataset
    is allocated (after imports and a warm-up fit); ratio = increase / needed.
    Nothing in these processes is timed, so the preset's ``memory_jobs`` may run
    several side by side (each one's RSS is its own).
    """
    from concurrent.futures import ThreadPoolExecutor

    t = max(opts.threads)
    p = opts.preset
    workload = "-".join(map(str, MEMORY_SIZES))
    if not sys.platform.startswith("linux"):
        for b in opts.backends:
            why = "needs Linux (/proc/self/statm, ru_maxrss in KiB)"
            _skip(skipped, "memory", f"fastnn-{b}", why)
            tick()
        return []

    def measure(b: str) -> dict[str, Any]:
        args = ["--backend", b, "--threads", str(t)]
        args += ["--sizes", ",".join(map(str, MEMORY_SIZES))]
        args += ["--samples", str(p["memory_samples"])]
        args += ["--epochs", str(p["memory_epochs"]), "--batch", str(MEMORY_BATCH)]
        return _script("memory.py", args, p)

    rows = []
    with ThreadPoolExecutor(max_workers=max(1, p.get("memory_jobs", 1))) as pool:
        futures = {b: pool.submit(measure, b) for b in opts.backends}
        for b, fut in futures.items():
            try:
                r = fut.result()
            except Exception as exc:
                _skip(skipped, "memory", f"fastnn-{b}", f"{type(exc).__name__}: {exc}")
                tick()
                continue
            increase = r["peak_rss"] - r["baseline_rss"]
            rows.append(
                {
                    "backend": b,
                    "threads": t,
                    "workload": workload,
                    "batch_size": r["batch_size"],
                    "n_samples": r["n_samples"],
                    "epochs": r["epochs"],
                    "optimizer": "Adam",
                    "dataset_bytes": r["dataset"],
                    "weights_bytes": r["weights"],
                    "gradients_bytes": r["gradients"],
                    "optimizer_state_bytes": r["optimizer_state"],
                    "activations_bytes": r["activations"],
                    "needed_bytes": r["needed"],
                    "baseline_rss_bytes": r["baseline_rss"],
                    "maxrss_at_baseline_bytes": r["maxrss_at_baseline"],
                    "peak_rss_bytes": r["peak_rss"],
                    "peak_increase_bytes": increase,
                    "rss_after_fit_bytes": r["rss_after_fit"],
                    "ratio": increase / r["needed"],
                    "process_wall_s": r["process_wall_s"],
                }
            )
            tick()
    return rows
