"""Write a results object as results.json, report.md and PNG plots (matplotlib Agg).

Without matplotlib the report is still written, without plots, and says so in one
line (``pip install "fastnn[bench]"`` brings it).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from .runner import pair_ratios, stat
from .sections import SIDE_EFFECT_VARIANTS

PLOTS = {
    "ops_speedup": "ops_speedup.png",
    "training_throughput": "training_throughput.png",
    "thread_scaling": "thread_scaling.png",
    "pct_of_peak": "pct_of_peak.png",
    "compile_time": "compile_time.png",
}
SECTION_TITLES = (
    "Summary",
    "Targets",
    "Environment",
    "Machine ceilings",
    "Per-op speed-up over NumPy",
    "Training throughput",
    "GEMM-only bound",
    "Thread scaling",
    "MLPClassifier vs scikit-learn",
    "MLPRegressor vs scikit-learn",
    "Inference latency",
    "fastnn beside a NumPy MLP",
    "Data-parallel training (MPI)",
    "fastnn's own GEMM vs OpenBLAS",
    "% of measured peak",
    "JIT compile and cold start",
    "Training memory",
    "Skipped",
    "Method",
)


# ------------------------------------------------------------------ targets
#: Training throughput vs the NumPy MLP (784-256-128-10 by batch size; 64-32-10 at
#: batch 32) and MLPClassifier.fit vs scikit-learn's: the targets of the open speed
#: issue (fastnn's own GEMM).
TRAIN_TARGETS = {32: 2.0, 128: 1.4, 512: 1.2}
SMALL_TARGET = 5.0
ESTIMATOR_TARGET = 2.5


def _train(results, system, workload, batch):
    for r in results["training"]:
        if (r["system"], r["workload"], r["batch_size"]) == (system, workload, batch):
            return r
    return None


def _bound(results, workload, batch):
    for r in results.get("gemm_bound", []):
        if (r["workload"], r["batch_size"]) == (workload, batch):
            return r
    return None


def _needs(results, baseline, workload, batch, ratio) -> dict[str, Any] | None:
    """What a "ratio x baseline" throughput target needs in samples/s (ratio x the
    baseline's median), next to the GEMM-only bound of that workload."""
    r, b = _train(results, baseline, workload, batch), _bound(results, workload, batch)
    if r is None or b is None:
        return None
    base = r["samples_per_s"]["median"]
    bound = b["samples_per_s"]["median"]
    if not (math.isfinite(base) and math.isfinite(bound) and bound > 0):
        return None
    needed = ratio * base
    return {
        "workload": workload,
        "batch_size": batch,
        "baseline": baseline,
        "baseline_samples_per_s": base,
        "needed_samples_per_s": needed,
        "bound_samples_per_s": bound,
        "needed_pct_of_bound": 100 * needed / bound,
        "exceeds_bound": needed > bound,
    }


def _fastnn(results) -> list[str]:
    return [f"fastnn-{b}" for b in results["config"]["backends"]]


def _target(
    tid,
    text,
    threshold,
    unit,
    values: dict[str, float | None],
    note="",
    at_most: bool = False,
    gemm_bound: dict[str, Any] | None = None,
    every: bool = False,
):
    """values: system -> measured (None: not measured). Met when a value is >=
    ``threshold`` (``at_most``: <= ``threshold``); ``every``: only when every value
    is (each value is a condition of the target, not a system that may meet it
    alone). ``gemm_bound``: for a throughput target, the samples/s it needs next to
    the GEMM-only bound (:func:`_needs`)."""
    measured = {k: v for k, v in values.items() if v is not None and math.isfinite(v)}
    met = {
        k: (v <= threshold if at_most else v >= threshold) for k, v in measured.items()
    }
    missed = [k for k, m in met.items() if not m]
    unmeasured = [k for k in values if k not in measured]
    if not measured:
        status = "not measured"
    elif every and (missed or unmeasured):
        # a condition not measured is not met either
        status = "; ".join(
            [f"missed by {', '.join(missed)}"] * bool(missed)
            + [f"not measured: {', '.join(unmeasured)}"] * bool(unmeasured)
        )
    elif all(met.values()):
        status = "met"
    elif any(met.values()):
        status = "met by " + ", ".join(k for k, m in met.items() if m)
    else:
        status = "missed"
    return {
        "id": tid,
        "target": text,
        "threshold": threshold,
        "comparison": "<=" if at_most else ">=",
        "unit": unit,
        "values": {k: values[k] for k in values},
        "status": status,
        "note": note,
        "gemm_bound": gemm_bound,
    }


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The speed targets (training vs the NumPy MLP and PyTorch, thread scaling, the
    fused softmax-CE, memory bandwidth, cold start, ...), evaluated on this run
    (ratios within the run)."""
    out = []
    sys_ = _fastnn(results)
    big = "784-256-128-10"
    for batch, thr in TRAIN_TARGETS.items():
        vals = {}
        for s in sys_:
            r = _train(results, s, big, batch)
            ok = r and r["baseline"] == "numpy-mlp"
            vals[s] = r["ratio_vs_baseline"]["median"] if ok else None
        out.append(
            _target(
                f"train-{batch}",
                f"{big}, batch {batch}: >= {thr}x NumPy MLP",
                thr,
                "x",
                vals,
                gemm_bound=_needs(results, "numpy-mlp", big, batch, thr),
            )
        )
    vals = {}
    for s in sys_:
        a, t = _train(results, s, big, 32), _train(results, "torch-eager", big, 32)
        vals[s] = (
            stat(pair_ratios(t["samples_s"], a["samples_s"]), "x")["median"]
            if a and t
            else None
        )
    out.append(
        _target(
            "torch-32",
            f"{big}, batch 32: >= 4x PyTorch eager",
            4.0,
            "x",
            vals,
            ""
            if any(v is not None for v in vals.values())
            else "torch not installed: skipped",
            gemm_bound=_needs(results, "torch-eager", big, 32, 4.0),
        )
    )
    vals = {}
    for s in sys_:
        r = _train(results, s, "64-32-10", 32)
        vals[s] = (
            r["ratio_vs_baseline"]["median"]
            if r and r["baseline"] == "numpy-mlp"
            else None
        )
    out.append(
        _target(
            "train-small",
            f"64-32-10, batch 32: >= {SMALL_TARGET:g}x NumPy MLP",
            SMALL_TARGET,
            "x",
            vals,
            gemm_bound=_needs(results, "numpy-mlp", "64-32-10", 32, SMALL_TARGET),
        )
    )
    out.extend(_peer_floor_targets(results))
    out.extend(_own_gemm_targets(results))
    vals = {}
    top = max(results["config"]["threads"])
    for s in sys_:
        rows = [
            r
            for r in results["scaling"]
            if r["system"] == s and r["batch_size"] == 512 and r["threads"] == 2
        ]
        vals[s] = rows[0]["speedup_vs_1_thread"]["median"] if rows else None
    out.append(
        _target(
            "scaling",
            "784-256-128-10, batch 512: 2 threads >= 1.7x 1 thread",
            1.7,
            "x",
            vals,
            "" if top >= 2 else "run with --threads 1,2",
        )
    )
    vals = {}
    for s in sys_:
        rows = [
            r
            for r in results["ops"]
            if f"fastnn-{r['backend']}" == s
            and r["op"] == "softmax_cross_entropy"
            and r["shape"] == "1024x10"
        ]
        vals[s] = rows[0]["speedup_vs_numpy"]["median"] if rows else None
    out.append(
        _target(
            "softmax-ce",
            "fused softmax-CE fwd+bwd 1024x10: >= 4x NumPy",
            4.0,
            "x",
            vals,
        )
    )
    vals = {}
    for s in sys_:
        rows = [
            r
            for r in results["ops"]
            if f"fastnn-{r['backend']}" == s
            and r["kind"] == "memory"
            and r["level"] == "memory"
        ]
        vals[s] = min(r["pct_of_peak"] for r in rows) if rows else None
    out.append(
        _target(
            "bandwidth",
            "memory-bound element-wise kernels past the caches: "
            ">= 70% of copy bandwidth (worst op)",
            70.0,
            "%",
            vals,
        )
    )
    # the first run after `pip install`, which fills Numba's cache (setup.py runs
    # fastnn.precompile): the "installed" row where measured, else the empty cache's
    cold = {
        f"fastnn-{r['backend']}": r
        for r in sorted(results["compile"], key=lambda r: r["cache"] == "installed")
        if r["cache"] in ("cold", "installed", "n/a")
    }
    warm = {
        f"fastnn-{r['backend']}": r
        for r in results["compile"]
        if r["cache"] in ("warm", "n/a")
    }
    # "at least" targets: store the margin so that >= threshold means met
    out.append(
        _target(
            "cold-start",
            "first run after install (numba: with the cache that pip install "
            "precompiles): import + compile + first step < 10 s (value: 10 s minus it)",
            0.0,
            "s",
            {
                s: 10.0 - cold[s]["time_to_first_step_s"] if s in cold else None
                for s in sys_
            },
            every=True,  # "for every backend"
        )
    )
    out.append(
        _target(
            "warm-start",
            "later runs: import + first step < 2 s (value: 2 s minus it)",
            0.0,
            "s",
            {
                s: 2.0 - warm[s]["time_to_first_step_s"] if s in warm else None
                for s in sys_
            },
            every=True,
        )
    )
    mem = {f"fastnn-{r['backend']}": r for r in results.get("memory", [])}
    any_row = next(iter(mem.values()), None)
    out.append(
        _target(
            "memory",
            "training peak RSS <= 1.5x (weights + gradients + optimizer state + one "
            "batch of activations + the dataset)",
            1.5,
            "x",
            {s: mem[s]["ratio"] if s in mem else None for s in sys_},
            (
                f"{any_row['workload']}, Adam, batch {any_row['batch_size']}, "
                f"{any_row['n_samples']:,} samples "
                f"({any_row['dataset_bytes'] / 1e6:.0f} MB of data), "
                f"{any_row['epochs']} epoch(s); see Training memory"
                if any_row
                else "no backend measured: see Skipped"
            ),
            at_most=True,
        )
    )
    out.extend(_estimator_targets(results))
    out.extend(_regressor_targets(results))
    out.append(_side_effect_target(results))
    out.append(_distributed_target(results))
    return out


def _worst_ratio(results, system: str, peer: str) -> float | None:
    """The smallest median ratio system / peer over the training workloads both ran
    (paired by round), or None."""
    ratios = []
    for t in results["training"]:
        if t["system"] != system:
            continue
        p = _train(results, peer, t["workload"], t["batch_size"])
        if p:
            ratios.append(
                stat(pair_ratios(p["samples_s"], t["samples_s"]), "x")["median"]
            )
    return min(ratios) if ratios else None


def _peer_floor_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Never below the NumPy MLP, and at or above JAX jit (when installed), on any
    benchmarked training workload: the worst workload's ratio."""
    out = []
    for tid, peer, text, absent in (
        ("floor-numpy", "numpy-mlp", "NumPy MLP", "numpy-mlp not measured"),
        ("floor-jax", "jax-jit", "JAX jit", "JAX not installed: skipped"),
    ):
        vals = {s: _worst_ratio(results, s, peer) for s in _fastnn(results)}
        measured = any(v is not None for v in vals.values())
        out.append(
            _target(
                tid,
                f"every training workload: >= 1x {text} (value: the worst workload)",
                1.0,
                "x",
                vals,
                "" if measured else absent,
            )
        )
    return out


def _own_gemm_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """fastnn's GEMM on a step's eight products vs OpenBLAS as its users run it
    (``np.matmul``, OpenBLAS's own threads), per batch size (the own GEMM section's
    rows; one value: the CPU the run measured)."""
    out = []
    for r in results.get("own_gemm", []):
        out.append(
            _target(
                f"own-gemm-{r['batch_size']}",
                f"the eight products of a 784-256-128-10 step, batch "
                f"{r['batch_size']}, {r['threads']} threads: fastnn's GEMM >= "
                f"{r['target']:g}x OpenBLAS (np.matmul, its own threads)",
                r["target"],
                "x",
                {r["isa"]: r["speedup_vs_numpy"]["median"]},
                f"{r['own_gflops']:.3g} vs {r['numpy_gflops']:.3g} GFLOP/s "
                f"({r['cpu']}); OpenBLAS in fastnn's blocks "
                f"{r['openblas_gflops']:.3g} GFLOP/s, own "
                f"{r['speedup']['median']:.3g}x that"
                + (
                    f"; the measured plan {r['plan_gflops']:.3g} GFLOP/s, "
                    f"{r['plan_speedup_vs_numpy']['median']:.3g}x np.matmul"
                    if "plan_gflops" in r
                    else ""
                ),
            )
        )
    return out


def _distributed_target(results: dict[str, Any]) -> dict[str, Any]:
    """2 MPI ranks x 1 thread train >= 1.7x the samples/s of 1 rank x 1 thread at
    global batch 256 on 784-256-128-10, per compiled backend."""
    rows = [r for r in results.get("distributed", []) if r["ranks"] == 2]
    vals = {r["system"]: r["speedup_vs_1_rank"]["median"] for r in rows}
    return _target(
        "distributed",
        "2 MPI ranks x 1 thread: >= 1.7x the throughput of 1 rank x 1 thread "
        "(fastnn.distributed.fit, 784-256-128-10, global batch 256)",
        1.7,
        "x",
        vals,
        "" if vals else "not measured: see Skipped",
    )


def _side_effect_target(results: dict[str, Any]) -> dict[str, Any]:
    """A NumPy MLP in a process that imported fastnn (or ran a fastnn fit) keeps
    >= 0.97x the throughput of its own plain process; value: the worst workload."""
    rows = [r for r in results.get("side_effect", []) if r["variant"] != "plain"]
    # every variant is a condition of the target: one whose runs failed is listed
    # as not measured (not met) instead of being left out
    vals: dict[str, float | None] = {
        f"after {variant}": None
        for variant in SIDE_EFFECT_VARIANTS
        if rows and variant != "plain"
    }
    for variant in dict.fromkeys(r["variant"] for r in rows):
        ratios = [
            r["ratio_vs_plain"]["median"] for r in rows if r["variant"] == variant
        ]
        vals[f"after {variant}"] = min(ratios)
    return _target(
        "side-effect",
        "a NumPy MLP next to fastnn (its process imported fastnn, or ran a fastnn "
        "fit): >= 0.97x its throughput in a plain process (worst workload)",
        0.97,
        "x",
        vals,
        "" if vals else "not measured: see Skipped",
        every=True,  # after the import and after a fit
    )


def _speedup(rows_by_system: dict[str, Any], system: str) -> float | None:
    r = rows_by_system.get(system)
    return r["speedup_vs_sklearn"]["median"] if r and r["speedup_vs_sklearn"] else None


def _estimator_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The estimator target: fastnn.MLPClassifier fits >= ESTIMATOR_TARGET x
    faster than scikit-learn's, per solver; the note gives the ratio of the same
    steps' products alone."""
    from .workloads import GEMM_ONLY

    rows = results.get("estimator", [])
    out = []
    for solver in sorted({r["solver"] for r in rows}, key=["sgd", "adam"].index):
        by = {r["system"]: r for r in rows if r["solver"] == solver}
        any_row = next(iter(by.values()))
        ref = any_row["dataset"], any_row["layers"][1:-1], any_row["epochs"]
        gemm = _speedup(by, GEMM_ONLY)
        out.append(
            _target(
                f"estimator-{solver}",
                f"MLPClassifier.fit {ref[0]}, hidden {tuple(ref[1])}, {ref[2]} "
                f"epoch(s), {solver}: >= {ESTIMATOR_TARGET:g}x scikit-learn",
                ESTIMATOR_TARGET,
                "x",
                {s: _speedup(by, s) for s in _fastnn(results)},
                (
                    f"the same steps' matrix products alone: {gemm:.3g}x "
                    "scikit-learn (no fit whose products run at BLAS speed is faster)"
                    if gemm is not None
                    else "scikit-learn not measured: see Skipped"
                ),
            )
        )
        out.append(
            _target(
                f"estimator-{solver}-vs-sequential-fit",
                f"MLPClassifier.fit, {solver}: >= 0.95x the throughput of "
                "Sequential.fit on the same network, data and batch size",
                0.95,
                "x",
                {
                    s: by[s]["ratio_vs_sequential_fit"]["median"]
                    if s in by and "ratio_vs_sequential_fit" in by[s]
                    else None
                    for s in _fastnn(results)
                },
            )
        )
    return out


def _regressor_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """fastnn.MLPRegressor fits >= 2x faster than scikit-learn's on the first
    regression problem of the preset (20000x784 -> 1), per solver."""
    rows = results.get("regressor", [])
    if not rows:
        return []
    first = rows[0]["dataset"]
    out = []
    for solver in sorted({r["solver"] for r in rows}, key=["sgd", "adam"].index):
        by = {
            r["system"]: r
            for r in rows
            if r["solver"] == solver and r["dataset"] == first
        }
        layers = next(iter(by.values()))["layers"]
        out.append(
            _target(
                f"regressor-{solver}",
                f"MLPRegressor.fit {first}, hidden {tuple(layers[1:-1])}, "
                f"{rows[0]['epochs']} epoch(s), {solver}: >= 2x scikit-learn",
                2.0,
                "x",
                {s: _speedup(by, s) for s in _fastnn(results)},
                "" if "sklearn" in by else "scikit-learn not measured: see Skipped",
            )
        )
    return out


# ------------------------------------------------------------------ formatting
def _f(x, digits=3):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def _s(st, scale=1.0, digits=3):
    """median [q1, q3] of a stat."""
    if not st or not st.get("n"):
        return "-"
    return (
        f"{_f(st['median'] * scale, digits)} "
        f"[{_f(st['q1'] * scale, digits)}, {_f(st['q3'] * scale, digits)}]"
    )


def _loads(values) -> str:
    """Load averages as the uptime command shows them: two decimals."""
    if not values or any(v is None for v in values):
        return "-"
    return ", ".join(f"{v:.2f}" for v in values)


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------ plots
def _plots(results, out: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    made = {}
    t = max(results["config"]["threads"])
    env = results["environment"]
    foot = f"{env['cpu']['model']}, {env['cpu']['cores']} cores; {results['created']}"

    def save(fig, key):
        fig.text(0.99, 0.005, foot, ha="right", va="bottom", fontsize=7, color="gray")
        fig.tight_layout(rect=(0, 0.02, 1, 1))
        fig.savefig(out / PLOTS[key], dpi=110)
        plt.close(fig)
        made[key] = PLOTS[key]

    # per-op speed-up
    ops = [r for r in results["ops"] if r["backend"] != "numpy"]
    cases = list(dict.fromkeys(f"{r['op']}|{r['shape']}" for r in results["ops"]))
    backends = list(dict.fromkeys(r["backend"] for r in ops))
    if cases and backends:
        fig, ax = plt.subplots(
            figsize=(8, 0.32 * len(cases) * max(1, len(backends)) + 1.5)
        )
        h = 0.8 / len(backends)
        for j, b in enumerate(backends):
            ys, xs, lo, hi = [], [], [], []
            for i, c in enumerate(cases):
                r = next(
                    (
                        r
                        for r in ops
                        if r["backend"] == b and f"{r['op']}|{r['shape']}" == c
                    ),
                    None,
                )
                if r:
                    s = r["speedup_vs_numpy"]
                    ys.append(i + j * h)
                    xs.append(s["median"])
                    lo.append(s["median"] - s["q1"])
                    hi.append(s["q3"] - s["median"])
            ax.barh(ys, xs, height=h, xerr=[lo, hi], label=b, capsize=2)
        ax.axvline(1.0, color="k", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_yticks([i + 0.4 - h / 2 for i in range(len(cases))], cases, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("speed-up over the NumPy backend (x, log scale; bars: IQR)")
        ax.set_ylabel("op | shape")
        ax.set_title(f"Per-op speed-up over NumPy (float32, {t} threads)")
        ax.legend(title="backend")
        save(fig, "ops_speedup")

    # training throughput
    tr = results["training"]
    if tr:
        fig, (a1, a2) = plt.subplots(
            1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [2, 1]}
        )
        systems = list(dict.fromkeys(r["system"] for r in tr))
        for s in systems:
            rows = sorted(
                (
                    r
                    for r in tr
                    if r["system"] == s and r["workload"] == "784-256-128-10"
                ),
                key=lambda r: r["batch_size"],
            )
            if rows:
                x = [r["batch_size"] for r in rows]
                y = [r["samples_per_s"]["median"] for r in rows]
                e = [
                    [
                        r["samples_per_s"]["median"] - r["samples_per_s"]["q1"]
                        for r in rows
                    ],
                    [
                        r["samples_per_s"]["q3"] - r["samples_per_s"]["median"]
                        for r in rows
                    ],
                ]
                a1.errorbar(x, y, yerr=e, marker="o", capsize=3, label=s)
        a1.set_xscale("log", base=2)
        a1.set_xlabel("batch size (samples)")
        a1.set_ylabel("training throughput (samples/s)")
        a1.set_title("784-256-128-10 MLP, SGD, one epoch")
        a1.legend(fontsize=8)
        small = [r for r in tr if r["workload"] == "64-32-10"]
        if small:
            a2.bar(
                range(len(small)),
                [r["samples_per_s"]["median"] for r in small],
                yerr=[
                    [
                        r["samples_per_s"]["median"] - r["samples_per_s"]["q1"]
                        for r in small
                    ],
                    [
                        r["samples_per_s"]["q3"] - r["samples_per_s"]["median"]
                        for r in small
                    ],
                ],
                capsize=3,
            )
            a2.set_xticks(
                range(len(small)),
                [r["system"] for r in small],
                rotation=30,
                ha="right",
                fontsize=8,
            )
        a2.set_xlabel("system")
        a2.set_ylabel("training throughput (samples/s)")
        a2.set_title("64-32-10 MLP, batch 32")
        fig.suptitle(f"Training throughput (float32, {t} threads; error bars: IQR)")
        save(fig, "training_throughput")

    # thread scaling
    sc = results["scaling"]
    if sc:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        keys = list(dict.fromkeys((r["system"], r["batch_size"]) for r in sc))
        counts = sorted({r["threads"] for r in sc})
        for s, b in keys:
            rows = sorted(
                (r for r in sc if (r["system"], r["batch_size"]) == (s, b)),
                key=lambda r: r["threads"],
            )
            x = [r["threads"] for r in rows]
            a1.errorbar(
                x,
                [r["speedup_vs_1_thread"]["median"] for r in rows],
                yerr=[
                    [
                        r["speedup_vs_1_thread"]["median"]
                        - r["speedup_vs_1_thread"]["q1"]
                        for r in rows
                    ],
                    [
                        r["speedup_vs_1_thread"]["q3"]
                        - r["speedup_vs_1_thread"]["median"]
                        for r in rows
                    ],
                ],
                marker="o",
                capsize=3,
                label=f"{s}, batch {b}",
            )
            a2.plot(
                x,
                [100 * r["efficiency"] for r in rows],
                marker="o",
                label=f"{s}, batch {b}",
            )
        a1.plot(counts, counts, "k--", lw=0.8, label="ideal")
        a1.set_xlabel("threads")
        a1.set_ylabel("speed-up over 1 thread (x)")
        a1.set_title("Thread scaling, 784-256-128-10 training")
        a1.set_xticks(counts)
        a1.legend(fontsize=7)
        a2.axhline(100, color="k", lw=0.8, ls="--")
        a2.set_xlabel("threads")
        a2.set_ylabel("parallel efficiency (%)")
        a2.set_title("Parallel efficiency (speed-up / threads)")
        a2.set_xticks(counts)
        a2.set_ylim(0, 120)
        save(fig, "thread_scaling")

    # % of peak: one row per op and shape (training: per network and batch), one
    # marker per implementation, so the chart stays readable with many backends
    points = [
        (f"{r['op']} | {r['shape']}", r["backend"], r["pct_of_peak"], r["kind"])
        for r in results["ops"]
        if r["pct_of_peak"] is not None
    ]
    points += [
        (
            f"train {r['workload']} | b{r['batch_size']}",
            r["system"].removeprefix("fastnn-"),
            r["pct_of_sgemm_peak"],
            "training",
        )
        for r in tr
        if r.get("pct_of_sgemm_peak") is not None
    ]
    if points:
        rows = list(dict.fromkeys(p[0] for p in points))
        who = list(dict.fromkeys(p[1] for p in points))
        markers = {"gemm": "o", "memory": "s", "training": "^"}
        fig, ax = plt.subplots(figsize=(9, 0.3 * len(rows) + 1.8))
        for k, name in enumerate(who):
            for kind, marker in markers.items():
                mine = [p for p in points if p[1] == name and p[3] == kind]
                if mine:
                    ax.scatter([p[2] for p in mine], [rows.index(p[0]) for p in mine],
                               color=f"C{k}", marker=marker, s=28, alpha=0.85,
                               zorder=3)  # fmt: skip
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.grid(axis="x", alpha=0.3)
        ax.axvline(100, color="k", lw=0.8, ls="--")
        ax.set_xlabel(
            "% of measured ceiling (GEMM/training: sgemm GFLOP/s; "
            "memory-bound: copy GB/s)"
        )
        ax.set_ylabel("op | shape")
        ax.set_title(f"Share of this machine's measured peak ({t} threads)")
        from matplotlib.lines import Line2D

        handles = [
            Line2D([], [], ls="none", marker="o", color=f"C{k}", label=name)
            for k, name in enumerate(who)
        ] + [
            Line2D([], [], ls="none", marker=m, color="0.4", label=kind)
            for kind, m in markers.items()
            if any(p[3] == kind for p in points)
        ]
        ax.legend(handles=handles, fontsize=8, loc="center left",
                  bbox_to_anchor=(1.01, 0.5))  # fmt: skip
        save(fig, "pct_of_peak")

    # compile time
    cp = results["compile"]
    if cp:
        fig, ax = plt.subplots(figsize=(9, 4))
        labels = [f"{r['backend']} ({r['cache']} cache)" for r in cp]
        parts = [
            ("import fastnn", [r["import_s"] for r in cp]),
            ("load backend", [r["load_s"] for r in cp]),
            ("first step - steady (compile)", [r["compile_s"] for r in cp]),
            ("steady step", [r["steady_step_s"]["median"] for r in cp]),
        ]
        left = [0.0] * len(cp)
        for name, vals in parts:
            ax.barh(range(len(cp)), vals, left=left, label=name)
            left = [a + b for a, b in zip(left, vals, strict=True)]
        ax.set_yticks(range(len(cp)), labels)
        ax.invert_yaxis()
        ax.set_xlabel("seconds from `import fastnn` to the end of the first step (s)")
        ax.set_ylabel("backend (cache state)")
        for i, total in enumerate(left):
            ax.annotate(f" {total:.2f} s", (total, i), va="center", fontsize=8)
        ax.set_xlim(0, 1.15 * max(left))  # room for the totals
        ax.set_title("Cold start: JIT compile vs steady state (fresh process)")
        # beside the axes: inside, it hid the short segments
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
        save(fig, "compile_time")
    return made


# ------------------------------------------------------------------ markdown
def _markdown(res: dict[str, Any], plots: dict[str, str], plot_note: str) -> str:
    cfg, env = res["config"], res["environment"]
    t = max(cfg["threads"])
    L = [
        f"# fastnn benchmark report ({cfg['mode']})",
        "",
        f"{res['created']} - {env['cpu']['model']}, {env['cpu']['cores']} cores - "
        f"float32 - {res['duration_s']:.0f} s to run - schema `{res['schema']}`",
        "",
    ]
    if plot_note:
        L += [f"> {plot_note}", ""]
    load = env.get("loadavg_start") or [0.0]
    if load[0] > 0.5 * env["cpu"]["cores"]:
        L += [
            f"> Warning: the machine was busy (1-minute load average {load[0]:.2f} "
            f"on {env['cpu']['cores']} cores at the start, "
            f"{_loads((env.get('loadavg_end') or [None])[:1])} at the end). "
            "Multi-threaded BLAS calls suffer most from a busy core; "
            "trust ratios within this run more than absolute numbers, and rerun on an "
            "idle machine before publishing.",
            "",
        ]

    def img(key, alt):
        return [f"![{alt}]({plots[key]})", ""] if key in plots else []

    # Summary
    L += ["## Summary", ""]
    tr = res["training"]
    if tr:
        systems = list(dict.fromkeys(r["system"] for r in tr))
        wls = list(dict.fromkeys((r["workload"], r["batch_size"]) for r in tr))
        base = next((r["baseline"] for r in tr if r["baseline"]), None)
        rows = []
        for w, b in wls:
            cells = [w, b]
            for s in systems:
                r = _train(res, s, w, b)
                cells.append(
                    "-"
                    if r is None
                    else f"{_f(r['samples_per_s']['median'])} "
                    f"({_f(r['ratio_vs_baseline']['median'])}x)"
                    if r["ratio_vs_baseline"]
                    else _f(r["samples_per_s"]["median"])
                )
            rows.append(cells)
        L += [
            f"Training throughput, samples/s (median; in brackets: ratio to {base}, "
            f"paired by round), {t} threads:",
            "",
            _table(["workload", "batch", *systems], rows),
            "",
        ]
    L += img("training_throughput", "training throughput")
    # Targets
    L += [
        "## Targets",
        "",
        "Ratios measured within this run. A value per fastnn backend; for the start-up "
        "targets the value is the margin left under the limit (>= 0 means met); for "
        "the memory target it is peak RSS increase / needed memory (<= 1.5 means "
        "met). For the throughput targets, the last column gives the samples/s the "
        "target needs (the ratio x the baseline's median samples/s in this run) next "
        "to the GEMM-only bound of that workload (see GEMM-only bound): a target "
        "above the bound needs the whole training step to run faster than NumPy's "
        "OpenBLAS runs the step's matrix products alone on this machine.",
        "",
    ]
    rows = []
    for tg in res["targets"]:
        vals = (
            ", ".join(
                f"{k.removeprefix('fastnn-')} {_f(v)}"
                for k, v in tg["values"].items()
                if v is not None
            )
            or "-"
        )
        rows.append(
            [
                tg["target"],
                vals,
                tg["status"] + (f" ({tg['note']})" if tg["note"] else ""),
                _needs_text(tg),
            ]
        )
    L += [
        _table(["target", "measured", "status", "needs vs the GEMM-only bound"], rows),
        "",
    ]
    # Environment
    cpu = env["cpu"]
    blas = "; ".join(
        f"{b['library']} {b['version']} ({b['architecture']}), {b['threads']} threads"
        for b in env["blas"]
    )
    omp = (
        "; ".join(
            f"{o['path'].rsplit('/', 1)[-1]} ({o['threads']} threads)"
            for o in env["openmp"]
        )
        or "none loaded"
    )
    nb = env.get("numba_threading", {})
    pk = env["packages"]
    src = env.get("source") or {}
    L += [
        "## Environment",
        "",
        _table(
            ["", ""],
            [
                [
                    "CPU",
                    f"{cpu['model']} ({cpu['machine']}), {cpu['cores']} cores, "
                    f"{_f(cpu.get('mhz'))} MHz reported",
                ],
                ["SIMD", ", ".join(cpu["simd"]) or "-"],
                [
                    "caches",
                    ", ".join(
                        f"{k} {v // 1024} KiB"
                        for k, v in cpu.get("caches", {}).items()
                        if v
                    )
                    or "-",
                ],
                ["BLAS", blas],
                ["OpenMP runtimes", omp],
                ["ISA", _isa(cpu["simd"])],
                ["ISA of the Cython kernels", _kernel_isa(env)],
                [
                    "OpenBLAS core type",
                    ", ".join(
                        f"{b['architecture']}"
                        for b in env["blas"]
                        if b["library"] == "openblas"
                    )
                    or "-",
                ],
                [
                    "thread variables set",
                    ", ".join(
                        f"{k}={v}"
                        for k, v in env["thread_env"].items()
                        if v is not None
                    )
                    or "none (every library's defaults; fastnn sets none)",
                ],
                [
                    "Numba threading layer",
                    f"{nb.get('active') or nb.get('configured')}",
                ],
                [
                    "threads used",
                    f"{cfg['threads']} (fastnn: n_threads; baselines: their defaults "
                    "at the core count, the usual thread variables below it)",
                ],
                ["versions", ", ".join(f"{k} {v}" for k, v in pk.items())],
                [
                    "fastnn",
                    f"{env['fastnn']} ({src.get('commit') or 'no git'}"
                    f"{', uncommitted changes' if src.get('dirty') else ''})",
                ],
                ["Python", f"{env['python']} on {env['platform']}"],
                [
                    "load average (1, 5, 15 min)",
                    f"start {_loads(env.get('loadavg_start'))}, "
                    f"end {_loads(env.get('loadavg_end'))}",
                ],
                ["date", env["date"]],
            ],
        ),
        "",
    ]
    # Ceilings
    pk_ = res["peak"]
    rows = [
        [f"sgemm n={g['n']}", g["threads"], _s(g["gflops"]), "GFLOP/s"]
        for g in pk_["sgemm"]
    ]
    rows += [
        [
            f"copy, {c['level']} ({c['array_bytes'] / 2**20:.3g} MiB arrays)",
            c["threads"],
            _s(c["gbps"]),
            "GB/s",
        ]
        for c in pk_["copy"]
    ]
    L += [
        "## Machine ceilings",
        "",
        "NumPy float32 matmul (2n^3 FLOP) and np.copyto split over t threads (bytes = "
        "read + write). Median [q1, q3]:",
        "",
        _table(["measure", "threads", "median [q1, q3]", "unit"], rows),
        "",
    ]
    # Ops
    ops = res["ops"]
    backends = list(dict.fromkeys(r["backend"] for r in ops))
    cases = list(dict.fromkeys((r["op"], r["shape"]) for r in ops))
    rows = []
    for op, shape in cases:
        cells = [op, shape]
        for b in backends:
            r = next(
                (
                    r
                    for r in ops
                    if (r["op"], r["shape"], r["backend"]) == (op, shape, b)
                ),
                None,
            )
            if r is None:
                cells.append("skipped")
            elif b == "numpy":
                cells.append(_s(r["time"], 1e6))
            else:
                cells.append(_s(r["speedup_vs_numpy"]))
        rows.append(cells)
    hdr = [
        "op",
        "shape",
        *[
            ("numpy time (us)" if b == "numpy" else f"{b} speed-up (x)")
            for b in backends
        ],
    ]
    L += [
        "## Per-op speed-up over NumPy",
        "",
        f"fastnn's kernels vs its NumPy reference backend, {t} threads, median "
        "[q1, q3]; speed-ups paired round by round. Cases from "
        "benchmarks/kernel_cases.py, plus past-the-cache variants of the memory-bound "
        "ops.",
        "",
        _table(hdr, rows),
        "",
    ] + img("ops_speedup", "per-op speed-up")
    # Training
    rows = [
        [
            r["workload"],
            r["batch_size"],
            r["system"],
            _s(r["samples_per_s"]),
            _s(r["ratio_vs_baseline"]) if r["ratio_vs_baseline"] else "-",
            _f(r["gflops"]),
            _f(r["pct_of_sgemm_peak"]),
        ]
        for r in tr
    ]
    L += [
        "## Training throughput",
        "",
        "One shuffled epoch of synthetic data (float32), SGD (lr 0.01, momentum 0.9), "
        "softmax cross-entropy + L2 1e-4, ReLU; each system in its own process "
        "(see Method), warm (warm-up epochs discarded). fastnn's time is fit's own "
        "epoch timer (shuffle, gather, steps: fit's one-time input checks "
        "excluded); the NumPy MLP, PyTorch and JAX time the same loop (JAX: one "
        "jitted step with the gather inside, results read once per epoch); "
        "scikit-learn is timed around partial_fit (one epoch).",
        "",
        _table(
            [
                "workload",
                "batch",
                "system",
                "samples/s [q1, q3]",
                "ratio to baseline [q1, q3]",
                "GFLOP/s",
                "% sgemm peak",
            ],
            rows,
        ),
        "",
    ]
    L += _gemm_bound_section(res)
    # Scaling
    rows = [
        [
            r["system"],
            r["batch_size"],
            r["threads"],
            _s(r["samples_per_s"]),
            _s(r["speedup_vs_1_thread"]),
            f"{100 * r['efficiency']:.0f}%",
        ]
        for r in res["scaling"]
    ]
    L += [
        "## Thread scaling",
        "",
        "784-256-128-10 training; each thread count in its own process, alternated; "
        "speed-up paired round by round against 1 thread.",
        "",
        _table(
            [
                "system",
                "batch",
                "threads",
                "samples/s [q1, q3]",
                "speed-up [q1, q3]",
                "efficiency",
            ],
            rows,
        ),
        "",
    ] + img("thread_scaling", "thread scaling")
    L += _estimator_section(res)
    L += _regressor_section(res)
    L += _inference_section(res)
    L += _side_effect_section(res)
    L += _distributed_section(res)
    L += _own_gemm_section(res)
    # % of peak
    ceil = res["peak"]["ceilings"][str(t)]
    rows = [
        [
            r["backend"],
            r["op"],
            r["shape"],
            r["kind"],
            _f(r["gflops"]) + " GFLOP/s" if r["gflops"] else _f(r["gbps"]) + " GB/s",
            f"{r['pct_of_peak']:.0f}%",
            r["peak_ref"],
        ]
        for r in ops
        if r["pct_of_peak"] is not None
    ]
    over = [r for r in ops if (r["pct_of_peak"] or 0) > 100]
    L += [
        "## % of measured peak",
        "",
        f"Ceilings at {t} threads: sgemm {_f(ceil['sgemm_gflops'])} GFLOP/s, copy "
        f"{_f(ceil['copy_gbps_memory'])} GB/s from memory, "
        f"{_f(ceil['copy_gbps_cache'])} "
        "GB/s in cache. GEMM-bound ops count 2nkm FLOP per product (forward: one, "
        "backward: two); memory-bound ops count the bytes each must read and write "
        "(no write-allocate), compared with copy bandwidth at the cache level their "
        "working set lands in. Training rows (table above) count "
        "forward + weight gradients + hidden input gradients per sample.",
        "",
        _table(
            ["backend", "op", "shape", "kind", "achieved", "% of ceiling", "ceiling"],
            rows,
        ),
        "",
    ]
    if over:
        L += [
            f"{len(over)} value(s) exceed 100%: the measured ceiling is low for this "
            "run (memcpy on a busy machine, or an access pattern that beats it), not "
            "a kernel beating the hardware.",
            "",
        ]
    L += img("pct_of_peak", "percent of peak")
    # Compile
    rows = [
        [
            r["backend"],
            r["cache"],
            _f(r["import_s"]),
            _f(r["load_s"]),
            _f(r["first_step_s"]),
            _s(r["steady_step_s"], 1e3),
            _f(r["compile_s"]),
            _f(r["time_to_first_step_s"]),
            _f(r["precompile_s"]) if "precompile_s" in r else "",
        ]
        for r in res["compile"]
    ]
    L += [
        "## JIT compile and cold start",
        "",
        "Each in a fresh Python process (784-256-128-10, batch 128). compile = first "
        "training step minus the median steady step. Numba's rows: cold, an empty "
        "NUMBA_CACHE_DIR (the first run when no cache was built for this CPU: a wheel "
        "built elsewhere, or an install with FASTNN_NUMBA_PRECOMPILE=0); installed, "
        "a fresh NUMBA_CACHE_DIR that only `python -m fastnn.precompile` filled (the "
        "first run after `pip install`, which runs it; the precompile column is its "
        "wall time, paid once by the install); warm, a second run on the cache the "
        "run before it left (every later run). Every run but a warm one also starts "
        "with an empty FASTNN_CACHE_DIR: it measures the GEMM plan of the step's "
        "products.",
        "",
        _table(
            [
                "backend",
                "cache",
                "import fastnn (s)",
                "load backend (s)",
                "first step (s)",
                "steady step (ms) [q1, q3]",
                "compile (s)",
                "import to first step done (s)",
                "precompile (s)",
            ],
            rows,
        ),
        "",
    ] + img("compile_time", "compile time")
    L += _memory_section(res)
    # Skipped
    L += ["## Skipped", ""]
    if res["skipped"]:
        seen: dict[tuple, int] = {}
        for s in res["skipped"]:
            key = (s["section"], s["system"], s["reason"])
            seen[key] = seen.get(key, 0) + 1
        L += [
            "A missing peer or backend is reported here, never an error.",
            "",
            _table(
                ["section", "system", "reason", "cases"],
                [[*k, n] for k, n in seen.items()],
            ),
            "",
        ]
    else:
        L += ["Nothing was skipped.", ""]
    # Method
    p = cfg["preset"]
    L += [
        "## Method",
        "",
        f"- Every figure is the median of {p['rounds']} samples after "
        f"{p['warmup']} warm-up sample(s), with its quartiles [q1, q3] (the IQR).",
        "- Training, scaling, MLPClassifier and side-effect figures: every system "
        "(the NumPy MLP, the GEMM-only step, PyTorch, JAX, scikit-learn and each "
        "fastnn backend) runs in a fresh process of its own, started with this "
        "process's environment unchanged (below the core count, the thread variables "
        "its users set are added: results.json records them, the pid and whether the "
        "process imported fastnn), warmed up, then asked for one sample per round. "
        "The processes alternate, the first one rotated every round, with a "
        f"{p['settle_s']:g} s pause after each sample so that no process's idle "
        "threads still spin when the next one runs. Ratios are taken round by round, "
        "then summarised, so drift of the (shared) machine hits both sides alike.",
        *(
            [
                "- Inference latency: one predict_proba call per system, each in a "
                "process of its own alternated the same way; a sample repeats the call "
                f"until it lasts >= {p['inference']['min_time'] * 1e3:g} ms (one "
                "untimed call after each pause) and is the mean per call."
            ]
            if "inference" in p
            else []
        ),
        "- Per-op figures compare fastnn's kernels with its own NumPy backend, each "
        "backend in a process of its own running every op, alternated the same way "
        "(one untimed call after each pause).",
        f"- Per-op samples repeat the call until a sample lasts >= "
        f"{p['op_min_time'] * 1e3:g} ms; all allocation happens in the setup.",
        "- Absolute numbers drift 10-30% between runs on a shared machine; compare "
        "ratios within one run. results.json holds every raw sample.",
        "- Hyper-parameters: " + json.dumps(cfg["hyperparameters"]),
        "- Seconds per section: "
        + ", ".join(f"{k} {v:.0f}" for k, v in res.get("section_times_s", {}).items()),
        "",
    ]
    return "\n".join(L)


def _isa(simd: list[str]) -> str:
    """The vector instruction sets the CPU offers, by their usual names."""
    names = [("avx2", "AVX2"), ("fma", "FMA"), ("avx512f", "AVX-512"),
             ("amx_tile", "AMX"), ("neon", "NEON"), ("asimd", "ASIMD"),
             ("sve", "SVE")]  # fmt: skip
    found = [label for flag, label in names if flag in simd]
    return ", ".join(found) or "baseline only (no AVX2)"


def _kernel_isa(env: dict[str, Any]) -> str:
    """The instruction set each compiled kernel family ran (kernels/isa.py)."""
    cython = env.get("backends", {}).get("cython", {})
    if not cython.get("available"):
        return "- (Cython backend unavailable)"
    return cython.get("isa", "-")


def _own_gemm_section(res: dict[str, Any]) -> list[str]:
    rows = res.get("own_gemm", [])
    L = ["## fastnn's own GEMM vs OpenBLAS", ""]
    if not rows:
        return L + ["Not measured in this run (see Skipped).", ""]
    L += [
        "The eight matrix products of one 784-256-128-10 training step, four ways, "
        "each in a process of its own, alternated round by round: through fastnn's "
        "GEMM entry point (fixed blocks of C, one per thread) all by fastnn's own "
        "micro-kernels (**own**), each by the kernel the measured GEMM plan gives "
        "it, as a fit runs them (**plan**), and all by OpenBLAS as fastnn calls it "
        "(**in blocks**: one single-threaded OpenBLAS call per block), and by "
        "np.matmul as NumPy's users run it (**np.matmul**: OpenBLAS's own threads, "
        "fastnn never imported; the target's baseline). Speed-ups: the baseline's "
        "time over the own kernels' (or the plan's), paired by round.",
        "",
        _table(
            [
                "CPU",
                "ISA",
                "batch",
                "threads",
                "own µs/step",
                "plan µs/step",
                "np.matmul µs/step",
                "in blocks µs/step",
                "GFLOP/s own / plan / np.matmul / in blocks",
                "speed-up vs np.matmul [q1, q3]",
                "plan vs np.matmul [q1, q3]",
                "speed-up vs in blocks [q1, q3]",
                "target",
            ],
            [
                [
                    r["cpu"],
                    r["isa"],
                    r["batch_size"],
                    r["threads"],
                    _s(r["own_step_s"], 1e6),
                    _s(r["plan_step_s"], 1e6) if "plan_step_s" in r else "-",
                    _s(r["numpy_step_s"], 1e6),
                    _s(r["openblas_step_s"], 1e6),
                    f"{_f(r['own_gflops'])} / {_f(r.get('plan_gflops'))} / "
                    f"{_f(r['numpy_gflops'])} / {_f(r['openblas_gflops'])}",
                    _s(r["speedup_vs_numpy"]),
                    _s(r["plan_speedup_vs_numpy"]) if "plan_step_s" in r else "-",
                    _s(r["speedup"]),
                    f">= {r['target']}x vs np.matmul",
                ]
                for r in rows
            ],
        ),  # fmt: skip
        "",
    ]
    return L


def _side_effect_section(res: dict[str, Any]) -> list[str]:
    rows = res.get("side_effect", [])
    L = ["## fastnn beside a NumPy MLP", ""]
    if not rows:
        return L + ["Not measured in this run (see Skipped).", ""]
    L += [
        "Does importing or using fastnn slow down other code in the same process? "
        "The NumPy MLP, each variant in a fresh process of its own, alternated round "
        "by round: as its users run it (plain), after `import fastnn`, and after one "
        "small fastnn fit (64-32-10, default backend). Ratio: throughput over the "
        "plain process's, paired by round (target >= 0.97).",
        "",
        _table(
            [
                "workload",
                "batch",
                "variant",
                "samples/s [q1, q3]",
                "ratio to plain [q1, q3]",
            ],
            [
                [
                    r["workload"],
                    r["batch_size"],
                    r["variant"],
                    _s(r["samples_per_s"]),
                    _s(r["ratio_vs_plain"]),
                ]
                for r in rows
            ],
        ),  # fmt: skip
        "",
    ]
    return L


def _distributed_section(res: dict[str, Any]) -> list[str]:
    rows = res.get("distributed", [])
    L = ["## Data-parallel training (MPI)", ""]
    if not rows:
        return L + ["Not measured in this run (see Skipped).", ""]
    L += [
        "fastnn.distributed.fit, every job a fresh `mpiexec` (ranks of 1 thread each, "
        "shared memory), one epoch per sample, the jobs alternated round by round; "
        "the global batch is split over the ranks. Speed-up: throughput over the "
        "1-rank job's, paired by round (target >= 1.7 for 2 ranks).",
        "",
        _table(
            [
                "system",
                "workload",
                "global batch",
                "ranks",
                "samples/s [q1, q3]",
                "speed-up [q1, q3]",
            ],
            [
                [
                    r["system"],
                    r["workload"],
                    r["batch_size"],
                    r["ranks"],
                    _s(r["samples_per_s"]),
                    _s(r["speedup_vs_1_rank"]),
                ]
                for r in rows
            ],
        ),  # fmt: skip
        "",
    ]
    return L


def _needs_text(tg: dict[str, Any]) -> str:
    gb = tg.get("gemm_bound")
    if not gb:
        return "-"
    pct = gb["needed_pct_of_bound"]
    return (
        f"needs {_f(gb['needed_samples_per_s'])} samples/s ({_f(tg['threshold'])} x "
        f"{gb['baseline']}'s {_f(gb['baseline_samples_per_s'])}); GEMMs alone allow "
        f"{_f(gb['bound_samples_per_s'])}: the target is {pct:.0f}% of that bound"
        + (", above it" if gb["exceeds_bound"] else "")
    )


def _gemm_bound_section(res: dict[str, Any]) -> list[str]:
    rows_ = res.get("gemm_bound", [])
    L = ["## GEMM-only bound", ""]
    if not rows_:
        return L + ["Not measured in this run.", ""]
    t = rows_[0]["threads"]
    systems = list(dict.fromkeys(s["system"] for r in rows_ for s in r["systems"]))
    table = []
    for r in rows_:
        by = {s["system"]: s for s in r["systems"]}
        n_fwd = sum(p["pass"] == "forward" for p in r["products"])
        n_wg = sum(p["pass"] == "weight_grad" for p in r["products"])
        n_ig = sum(p["pass"] == "input_grad" for p in r["products"])
        table.append(
            [
                r["workload"],
                r["batch_size"],
                f"{len(r['products'])} ({n_fwd} + {n_wg} + {n_ig})",
                _f(r["flops_per_step"] / 1e6),
                _s(r["step_time"], 1e6),
                _s(r["samples_per_s"]),
                f"{_f(r['gflops'])} ({r['pct_of_sgemm_peak']:.0f}%)",
                *[
                    f"{_f(by[s]['samples_per_s'])} "
                    f"({by[s]['pct_of_bound']['median']:.0f}%)"
                    if s in by
                    else "-"
                    for s in systems
                ],
            ]
        )
    L += [
        "The matrix products one SGD training step must do, and nothing else: "
        "forward x_l @ W_l for every layer, weight gradients a_l^T dZ_l for every "
        "layer, input gradients dZ_l W_l^T for every layer but the first (no bias, "
        "activation, loss or update). NumPy float32 np.matmul with out= on buffers "
        f"allocated once, {t} threads (OpenBLAS's own threading), in the NumPy MLP's "
        "order, in a process of its own; timed as one epoch's full batches of steps, "
        "alternated with the training systems above in the same rounds. **bound** = "
        "batch / GEMM time per step: the samples/s of a step that did only its "
        "products. Per system: the training section's median samples/s and, in "
        "brackets, its share of the bound (paired by round, median).",
        "",
        _table(
            [
                "workload",
                "batch",
                "products (fwd + dW + dX)",
                "MFLOP per step",
                "GEMM time per step (us) [q1, q3]",
                "bound (samples/s) [q1, q3]",
                "GEMM GFLOP/s (% sgemm peak)",
                *[f"{s} samples/s (% of bound)" for s in systems],
            ],
            table,
        ),
        "",
        "The bound is NumPy's: one Python call per product, each small product "
        "threaded by OpenBLAS itself. fastnn's compiled backends call the same "
        "cblas_sgemm without the Python call and split products into fixed blocks "
        "over their own threads, so their share can exceed 100%.",
        "",
    ]
    return L


def _regressor_section(res: dict[str, Any]) -> list[str]:
    rows = res.get("regressor", [])
    L = ["## MLPRegressor vs scikit-learn", ""]
    if not rows:
        return L + ["Not measured (see Skipped).", ""]
    r0 = rows[0]
    L += [
        f"Whole fits per synthetic regression problem (float32 inputs and targets "
        f"from a random tanh teacher plus noise), {r0['epochs']} epoch(s), every other "
        "parameter at scikit-learn's default (batch 200), "
        f"{r0['threads']} threads; systems interleaved round by round, speed-ups "
        "paired by round. The target is the first problem's.",
        "",
        _table(
            [
                "problem",
                "layers",
                "solver",
                "system",
                "fit time, s [q1, q3]",
                "speed-up vs sklearn [q1, q3]",
            ],
            [
                [
                    r["dataset"],
                    "-".join(str(u) for u in r["layers"]),
                    r["solver"],
                    r["system"],
                    _s(r["fit_time"]),
                    _s(r["speedup_vs_sklearn"]) if r["speedup_vs_sklearn"] else "-",
                ]
                for r in rows
            ],
        ),
        "",
    ]
    return L


def _inference_section(res: dict[str, Any]) -> list[str]:
    rows = res.get("inference", [])
    L = ["## Inference latency", ""]
    if not rows:
        return L + ["Not measured (see Skipped).", ""]
    r0 = rows[0]
    apis = "; ".join(
        f"{s}: {a}" for s, a in dict.fromkeys((r["system"], r["api"]) for r in rows)
    )
    used = sorted({r["threads_in_use"] for r in rows if r["threads_in_use"]})
    L += [
        "Wall time of one prediction call on a float32 NumPy array of `rows` rows "
        "(class probabilities back as a NumPy array), every system fitted briefly "
        "through its own API (weights do not matter for latency) in a process of its "
        f"own, {r0['threads']} threads (fastnn: n_threads; the baselines: their "
        "defaults at the core count, the usual thread variables below it; threads "
        f"the processes report using: {', '.join(map(str, used)) or '-'}). A sample "
        f"repeats the call until {r0['min_sample_s'] * 1e3:g} ms have passed and is "
        "the mean per call; median [q1, q3] over the rounds, the processes "
        "alternated round by "
        "round; speed-ups are the baseline's time / this system's, paired by round "
        f"(> 1: faster). Calls: {apis}.",
        "",
        _table(
            [
                "network",
                "rows",
                "system",
                "µs per call [q1, q3]",
                "rows/s",
                "speed-up vs sklearn [q1, q3]",
                "speed-up vs PyTorch [q1, q3]",
            ],
            [
                [
                    r["workload"],
                    r["rows"],
                    r["system"],
                    _s(r["time"], 1e6),
                    _f(r["rows_per_s"]["median"]),
                    _s(r["speedup_vs"].get("sklearn")),
                    _s(r["speedup_vs"].get("torch-eager")),
                ]
                for r in rows
            ],
        ),
        "",
    ]
    return L


def _estimator_section(res: dict[str, Any]) -> list[str]:
    rows = res.get("estimator", [])
    L = ["## MLPClassifier vs scikit-learn", ""]
    if not rows:
        return L + ["Not measured (see Skipped).", ""]
    r0 = rows[0]
    L += [
        f"Whole fits on {r0['dataset']} (float32), layers {r0['layers']}, "
        f"{r0['epochs']} epoch(s), every other parameter at scikit-learn's default "
        f"(batch 200), {r0['threads']} threads; systems interleaved round by round, "
        "speed-ups paired by round. `numpy-gemm-only` runs the same steps' matrix "
        "products alone (NumPy/OpenBLAS): the speed-up no fit whose products run at "
        "BLAS speed can beat. `Sequential.fit`: the model API on the same network, "
        "data, batch size, optimizer and backend, in a process of its own in the "
        "same rounds; the last column is its time / the estimator's.",
        "",
        _table(
            [
                "solver",
                "system",
                "fit time, s [q1, q3]",
                "speed-up vs sklearn [q1, q3]",
                "Sequential.fit time, s [q1, q3]",
                "x Sequential.fit throughput [q1, q3]",
            ],
            [
                [
                    r["solver"],
                    r["system"],
                    _s(r["fit_time"]),
                    _s(r["speedup_vs_sklearn"]) if r["speedup_vs_sklearn"] else "-",
                    _s(r["sequential_fit"]["fit_time"])
                    if "sequential_fit" in r
                    else "-",
                    _s(r.get("ratio_vs_sequential_fit")),
                ]
                for r in rows
            ],
        ),
        "",
    ]
    return L


def _memory_section(res: dict[str, Any]) -> list[str]:
    rows_ = res.get("memory", [])
    L = ["## Training memory", ""]
    if not rows_:
        return L + ["Not measured in this run (see Skipped).", ""]
    r0 = rows_[0]

    def mb(x):
        return f"{x / 1e6:,.1f}"

    L += [
        f"Each backend in a fresh process: {r0['workload']} MLP, float32, Adam, "
        f"fit(epochs={r0['epochs']}, batch_size={r0['batch_size']}, verbose=0) on "
        f"{r0['n_samples']:,} synthetic samples. **needed** = the dataset (X and y as "
        "passed to fit) + weights + gradients + optimizer state (Adam: m and v) + one "
        "batch of activations (per layer the output, the kept pre-activation and the "
        "input gradient; the logits gradient; the batch copy of x and y), from the "
        "model's shapes. **peak increase** = ru_maxrss at the end of the fit minus "
        "the RSS (/proc/self/statm) right before the dataset is allocated, after the "
        "imports and a warm-up fit on a tiny dataset: the interpreter, the libraries, "
        "thread pools and the JIT compile (the baseline column) are excluded. "
        "**ratio** = peak increase / needed (target <= 1.5). MB = 10^6 bytes.",
        "",
        _table(
            [
                "backend",
                "dataset (MB)",
                "weights + grads + optimizer (MB)",
                "activations (MB)",
                "needed (MB)",
                "baseline RSS (MB)",
                "peak increase (MB)",
                "ratio",
                "held after fit (MB)",
            ],
            [
                [
                    r["backend"],
                    mb(r["dataset_bytes"]),
                    mb(
                        r["weights_bytes"]
                        + r["gradients_bytes"]
                        + r["optimizer_state_bytes"]
                    ),
                    mb(r["activations_bytes"]),
                    mb(r["needed_bytes"]),
                    mb(r["baseline_rss_bytes"]),
                    mb(r["peak_increase_bytes"]),
                    f"{r['ratio']:.2f}",
                    mb(r["rss_after_fit_bytes"] - r["baseline_rss_bytes"]),
                ]
                for r in rows_
            ],
        ),
        "",
    ]
    early = [
        r["backend"]
        for r in rows_
        if r["peak_rss_bytes"] <= r["maxrss_at_baseline_bytes"]
    ]
    if early:
        L += [
            f"For {', '.join(early)} the fit never exceeded the high-water mark "
            "at the baseline: the peak increase is an upper bound.",
            "",
        ]
    return L


def write(results: dict[str, Any], out, plots: bool = True) -> Path:
    """Write results.json, the PNGs (when matplotlib imports) and report.md."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    made, note = {}, ""
    if plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            note = (
                "plots skipped: matplotlib is not installed "
                '(pip install "fastnn[bench]")'
            )
            print(f"fastnn bench: {note}", file=sys.stderr)
        else:
            made = _plots(results, out)
    else:
        note = "plots skipped (disabled)"
    results["plots"] = made
    results["plots_note"] = note or None
    (out / "results.json").write_text(
        json.dumps(results, indent=1, allow_nan=False, default=_json_default) + "\n"
    )
    (out / "report.md").write_text(_markdown(results, made, note))
    return out


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
