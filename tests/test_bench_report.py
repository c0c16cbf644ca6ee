"""`fastnn bench` end to end on the tiny configuration: files, schema, plots."""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path

import pytest

from fastnn.bench import Options, run, schema
from fastnn.bench import report as bench_report

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmark-schema.md"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    # torch and jax are listed on purpose: where one is missing it must show up as
    # skipped
    results = run(
        Options(
            mode="tiny",
            out=out,
            threads=[1, 2],
            backends=["numpy", "cython", "numba"],
            peers=["numpy", "torch", "jax", "sklearn"],
            progress=False,
        )
    )
    return out, results


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_results_json_follows_the_schema(tiny_run):
    out, results = tiny_run
    on_disk = json.loads((out / "results.json").read_text())
    assert schema.errors(on_disk) == []
    assert on_disk["schema"] == "fastnn-bench/5"
    for section in (
        "ops", "training", "gemm_bound", "scaling", "estimator", "side_effect",
        "compile", "memory", "inference",
    ):  # fmt: skip
        assert on_disk[section], f"section {section} is empty"


def test_schema_rejects_broken_results(tiny_run):
    _, results = tiny_run
    broken = json.loads(json.dumps(results))
    del broken["training"][0]["samples_per_s"]
    broken["ops"][0]["kind"] = "magic"
    broken["peak"]["sgemm"][0]["gflops"]["median"] = "fast"
    del broken["memory"][0]["ratio"]
    broken["memory"][0]["peak_rss_bytes"] = 1.5
    broken["targets"][-1]["comparison"] = "<"
    del broken["gemm_bound"][0]["step_time"]
    broken["gemm_bound"][0]["products"][0]["pass"] = "sideways"
    broken["targets"][0]["gemm_bound"] = {"needed_samples_per_s": 1.0}
    broken["inference"][0]["rows"] = 0
    del broken["inference"][1]["speedup_vs"]
    broken["inference"][2]["speedup_vs"]["sklearn"] = 1.0
    errs = schema.errors(broken)
    assert any("samples_per_s" in e for e in errs)
    assert any("magic" in e for e in errs)
    assert any("gflops.median" in e for e in errs)
    assert any("memory[0]: missing 'ratio'" in e for e in errs)
    assert any("memory[0].peak_rss_bytes" in e for e in errs)
    assert any("comparison" in e for e in errs)
    assert any("gemm_bound[0]: missing 'step_time'" in e for e in errs)
    assert any("sideways" in e for e in errs)
    assert any("targets[0].gemm_bound: missing 'exceeds_bound'" in e for e in errs)
    assert any("inference[0].rows: 0 < 1" in e for e in errs)
    assert any("inference[1]: missing 'speedup_vs'" in e for e in errs)
    assert any("inference[2].speedup_vs.sklearn" in e for e in errs)
    del broken["memory"]
    assert any("missing 'memory'" in e for e in schema.errors(broken))
    with pytest.raises(ValueError):
        schema.validate(broken)


def test_figures_are_measured_not_made_up(tiny_run):
    _, r = tiny_run
    for row in r["ops"]:
        assert row["time"]["n"] == r["config"]["preset"]["rounds"]
        assert len(row["samples_s"]) == row["time"]["n"]
        assert row["time"]["q1"] <= row["time"]["median"] <= row["time"]["q3"]
        if row["backend"] == "numpy":
            assert row["speedup_vs_numpy"]["median"] == pytest.approx(1.0)
    gemm = [o for o in r["ops"] if o["kind"] == "gemm"]
    assert gemm and all(o["pct_of_peak"] > 0 for o in gemm)
    systems = {t["system"] for t in r["training"]}
    assert {"numpy-mlp", "sklearn", "fastnn-numpy"} <= systems
    for row in r["training"]:
        assert row["samples_per_s"]["median"] > 0
    base = [t for t in r["training"] if t["system"] == "numpy-mlp"]
    assert all(t["ratio_vs_baseline"]["median"] == pytest.approx(1.0) for t in base)
    one = [s for s in r["scaling"] if s["threads"] == 1]
    assert one and all(
        s["speedup_vs_1_thread"]["median"] == pytest.approx(1.0) for s in one
    )
    assert r["peak"]["ceilings"]["1"]["sgemm_gflops"] > 0
    assert {c["backend"] for c in r["compile"]} >= {"numpy"}


def test_memory_is_measured_per_backend(tiny_run):
    out, r = tiny_run
    rows = {m["backend"]: m for m in r["memory"]}
    assert set(rows) == set(r["config"]["backends"])
    n = r["config"]["preset"]["memory_samples"]
    for m in rows.values():
        assert m["n_samples"] == n and m["batch_size"] == 128
        # X float32 (n, 784) and y int64 (n,) as passed to fit
        assert m["dataset_bytes"] == n * (784 * 4 + 8)
        # 784-256-128-10: 235,146 parameters; Adam keeps two state buffers
        assert m["weights_bytes"] == m["gradients_bytes"] == 235_146 * 4
        assert m["optimizer_state_bytes"] == 2 * m["weights_bytes"]
        parts = ("dataset", "weights", "gradients", "optimizer_state", "activations")
        assert m["needed_bytes"] == sum(m[f"{k}_bytes"] for k in parts)
        assert m["peak_increase_bytes"] == m["peak_rss_bytes"] - m["baseline_rss_bytes"]
        assert m["ratio"] == pytest.approx(m["peak_increase_bytes"] / m["needed_bytes"])
        # the dataset really lies above the baseline, and the peak is the fit's own
        # (an inherited ru_maxrss of the parent would give a ratio in the tens; the
        # warm-up's first-fit measurements, freed before the baseline, 3.6-4.0)
        assert m["peak_increase_bytes"] >= 0.9 * m["dataset_bytes"]
        assert 0.5 < m["ratio"] < 2
    target = next(t for t in r["targets"] if t["id"] == "memory")
    assert target["comparison"] == "<=" and target["threshold"] == 1.5
    assert target["status"] != "not measured"
    assert target["values"] == {
        f"fastnn-{b}": rows[b]["ratio"] for b in r["config"]["backends"]
    }
    text = (out / "report.md").read_text()
    assert "ru_maxrss" in text and "| numpy |" in text.split("## Training memory")[1]


def test_gemm_step_is_exactly_the_products_of_an_sgd_step():
    import numpy as np

    from fastnn.bench._worker import _gemm_only_epoch
    from fastnn.bench.workloads import Workload, gemm_step

    products, calls = gemm_step((64, 32, 10), 4)
    got = [(p["pass"], p["layer"], p["m"], p["k"], p["n"]) for p in products]
    assert got == [
        ("forward", 0, 4, 64, 32),  # x0 @ W0
        ("forward", 1, 4, 32, 10),  # a1 @ W1
        ("weight_grad", 1, 32, 4, 10),  # a1^T dZ1
        ("input_grad", 1, 4, 10, 32),  # dZ1 W1^T -> dZ0
        ("weight_grad", 0, 64, 4, 32),  # x0^T dZ0
    ]
    wl = Workload((64, 32, 10), 4, 8)
    assert sum(p["flops"] for p in products) == 4 * wl.flops_per_sample
    for (A, B, C), p in zip(calls, products, strict=True):
        assert A.shape == (p["m"], p["k"]) and B.shape == (p["k"], p["n"])
        assert C.shape == (p["m"], p["n"]) and C.dtype == np.float32
    # the layers chain through the buffers as in training
    assert calls[1][0] is calls[0][2] and calls[2][0].base is calls[0][2]
    assert calls[4][1] is calls[3][2]
    epoch = _gemm_only_epoch({"sizes": wl.sizes, "batch_size": 4, "n_samples": 8})
    assert epoch() > 0
    A, B, C = calls[0]
    np.matmul(A, B, out=C)
    np.testing.assert_allclose(C, A.astype(np.float64) @ B, rtol=1e-4, atol=1e-4)


def test_gemm_bound_per_training_workload(tiny_run):
    from fastnn.bench.runner import stat

    out, r = tiny_run
    rows = r["gemm_bound"]
    train = {(t["workload"], t["batch_size"]) for t in r["training"]}
    assert {(g["workload"], g["batch_size"]) for g in rows} == train
    rounds = r["config"]["preset"]["rounds"]
    for g in rows:
        L = len(g["layers"]) - 1
        assert len(g["products"]) == 3 * L - 1
        assert g["threads"] == max(r["config"]["threads"])
        tr = [t for t in r["training"] if t["workload"] == g["workload"]]
        tr = [t for t in tr if t["batch_size"] == g["batch_size"]]
        fps = tr[0]["flops_per_sample"]
        assert g["flops_per_step"] == pytest.approx(g["batch_size"] * fps)
        assert sum(p["flops"] for p in g["products"]) == g["flops_per_step"]
        assert g["steps"] == tr[0]["n_samples"] // g["batch_size"]
        st = g["step_time"]
        assert st["n"] == len(g["samples_s"]) == rounds
        assert 0 < st["q1"] <= st["median"] <= st["q3"]
        bound = g["samples_per_s"]["median"]
        assert bound == pytest.approx(g["batch_size"] / st["median"])
        assert g["gflops"] == pytest.approx(g["flops_per_step"] / st["median"] / 1e9)
        assert {s["system"] for s in g["systems"]} == {t["system"] for t in tr}
        for s in g["systems"]:
            t = next(t for t in tr if t["system"] == s["system"])
            assert s["samples_per_s"] == t["samples_per_s"]["median"]
            assert s["pct_of_bound"]["n"] == rounds and s["pct_of_bound"]["unit"] == "%"
            # paired per round, from the stored samples of both processes
            share = [
                100.0 * step * t["n_samples"] / g["batch_size"] / epoch
                for step, epoch in zip(g["samples_s"], t["samples_s"], strict=True)
            ]
            assert s["pct_of_bound"] == stat(share, "%")
    by_id = {t["id"]: t for t in r["targets"]}
    mlp = {
        (t["workload"], t["batch_size"]): t["samples_per_s"]["median"]
        for t in r["training"]
        if t["system"] == "numpy-mlp"
    }
    bounds = {(g["workload"], g["batch_size"]): g for g in rows}
    checked = 0
    for tid, key in (
        ("train-32", ("784-256-128-10", 32)),
        ("train-128", ("784-256-128-10", 128)),
        ("train-512", ("784-256-128-10", 512)),
        ("train-small", ("64-32-10", 32)),
    ):
        gb = by_id[tid]["gemm_bound"]
        if key not in mlp:  # batch not in the tiny preset
            assert gb is None
            continue
        checked += 1
        assert gb["baseline"] == "numpy-mlp"
        needed = by_id[tid]["threshold"] * mlp[key]
        assert gb["needed_samples_per_s"] == pytest.approx(needed)
        b = bounds[key]["samples_per_s"]["median"]
        assert gb["bound_samples_per_s"] == b
        assert gb["exceeds_bound"] == (needed > b)
        assert gb["needed_pct_of_bound"] == pytest.approx(100 * needed / b)
    assert checked >= 2
    assert by_id["memory"]["gemm_bound"] is None
    text = (out / "report.md").read_text()
    section = text.split("## GEMM-only bound")[1].split("## ")[0]
    assert "| 784-256-128-10 | 128 | 8 (3 + 3 + 2) |" in section
    assert "| 64-32-10 | 32 | 5 (2 + 2 + 1) |" in section
    assert "GEMMs alone allow" in text.split("## Targets")[1].split("## ")[0]


def test_floor_and_own_gemm_targets(tiny_run):
    """Never below the NumPy MLP (and JAX jit when measured) on any workload: the
    worst paired ratio; the own-GEMM rows' speed-ups against their targets."""
    from fastnn.bench.runner import pair_ratios, stat

    _, r = tiny_run
    by_id = {t["id"]: t for t in r["targets"]}
    for tid, peer in (("floor-numpy", "numpy-mlp"), ("floor-jax", "jax-jit")):
        for system, value in by_id[tid]["values"].items():
            ratios = [
                stat(pair_ratios(p["samples_s"], t["samples_s"]), "x")["median"]
                for t in r["training"]
                if t["system"] == system
                for p in r["training"]
                if p["system"] == peer
                and (p["workload"], p["batch_size"]) == (t["workload"], t["batch_size"])
            ]
            assert value == (min(ratios) if ratios else None)
    assert any(v is not None for v in by_id["floor-numpy"]["values"].values())
    for row in r["own_gemm"]:
        tg = by_id[f"own-gemm-{row['batch_size']}"]
        assert tg["threshold"] == row["target"]
        assert tg["values"] == {row["isa"]: row["speedup_vs_numpy"]["median"]}


def test_estimator_fits_against_sklearn(tiny_run):
    """Issue 4's comparison: every solver x (sklearn, each backend, the GEMM-only
    products), interleaved; speed-ups paired by round from the stored samples."""
    from fastnn.bench.runner import pair_ratios, stat
    from fastnn.bench.workloads import GEMM_ONLY

    out, r = tiny_run
    spec = r["config"]["preset"]["estimator"]
    systems = {"sklearn", GEMM_ONLY, *(f"fastnn-{b}" for b in r["config"]["backends"])}
    rows = r["estimator"]
    assert {(e["solver"], e["system"]) for e in rows} == {
        (s, name) for s in ("sgd", "adam") for name in systems
    }
    for e in rows:
        assert e["layers"] == [spec["features"], *spec["hidden"], spec["classes"]]
        assert e["epochs"] == spec["epochs"]
        assert e["fit_time"]["n"] == len(e["samples_s"]) == spec["rounds"]
        assert min(e["samples_s"]) > 0
        sk = next(
            x for x in rows if (x["solver"], x["system"]) == (e["solver"], "sklearn")
        )
        expected = stat(pair_ratios(sk["samples_s"], e["samples_s"]), "x")
        assert e["speedup_vs_sklearn"] == expected
    by_id = {t["id"]: t for t in r["targets"]}
    for solver in ("sgd", "adam"):
        tg = by_id[f"estimator-{solver}"]
        assert tg["threshold"] == 2.5 and tg["gemm_bound"] is None
        for name, value in tg["values"].items():
            row = next(x for x in rows if (x["solver"], x["system"]) == (solver, name))
            assert value == row["speedup_vs_sklearn"]["median"]
        gemm = next(
            x for x in rows if (x["solver"], x["system"]) == (solver, GEMM_ONLY)
        )
        assert f"{gemm['speedup_vs_sklearn']['median']:.3g}x" in tg["note"]
    section = (
        (out / "report.md").read_text().split("## MLPClassifier vs scikit-learn")[1]
    )
    assert f"| adam | {GEMM_ONLY} |" in section.split("## ")[0]


def test_regressor_fits_against_sklearn(tiny_run):
    """MLPRegressor vs scikit-learn's: every problem x solver x (sklearn, each
    backend), each system in a process of its own, speed-ups paired by round from
    the stored samples; the >= 2x targets read the first problem's rows."""
    from fastnn.bench.runner import pair_ratios, stat

    out, r = tiny_run
    spec = r["config"]["preset"]["regressor"]
    systems = {"sklearn", *(f"fastnn-{b}" for b in r["config"]["backends"])}
    rows = r["regressor"]
    n = spec["n_samples"]
    datasets = [f"synthetic-regression-{n}x{f}->{o}" for f, o in spec["problems"]]
    assert {(e["dataset"], e["solver"], e["system"]) for e in rows} == {
        (d, s, name) for d in datasets for s in ("sgd", "adam") for name in systems
    }
    for e in rows:
        features, outputs = spec["problems"][datasets.index(e["dataset"])]
        assert e["layers"] == [features, *spec["hidden"], outputs]
        assert e["fit_time"]["n"] == len(e["samples_s"]) == spec["rounds"]
        assert min(e["samples_s"]) > 0
        assert e["process"]["imported_fastnn"] == e["system"].startswith("fastnn-")
        sk = next(
            x
            for x in rows
            if (x["dataset"], x["solver"], x["system"])
            == (e["dataset"], e["solver"], "sklearn")
        )
        expected = stat(pair_ratios(sk["samples_s"], e["samples_s"]), "x")
        assert e["speedup_vs_sklearn"] == expected
    pids = [e["process"]["pid"] for e in rows]
    assert len(set(pids)) == len(pids) and os.getpid() not in pids
    by_id = {t["id"]: t for t in r["targets"]}
    for solver in ("sgd", "adam"):
        tg = by_id[f"regressor-{solver}"]
        assert tg["threshold"] == 2.0 and datasets[0] in tg["target"]
        for name, value in tg["values"].items():
            row = next(
                x
                for x in rows
                if (x["dataset"], x["solver"], x["system"])
                == (datasets[0], solver, name)
            )
            assert value == row["speedup_vs_sklearn"]["median"]
    section = (
        (out / "report.md").read_text().split("## MLPRegressor vs scikit-learn")[1]
    )
    assert f"| {datasets[1]} | 16-16-8-3 | adam | sklearn |" in section.split("## ")[0]


def test_estimator_rows_carry_sequential_fit_of_the_same_network(tiny_run):
    """The MLPClassifier-vs-Sequential.fit comparison: every fastnn row holds the
    same backend's Sequential.fit timed in a process of its own in the same rounds,
    and the ratio (Sequential.fit time / the estimator's) paired by round."""
    import os

    from fastnn.bench.runner import pair_ratios, stat

    out, r = tiny_run
    spec = r["config"]["preset"]["estimator"]
    fastnn_rows = [e for e in r["estimator"] if e["system"].startswith("fastnn-")]
    assert {e["system"] for e in fastnn_rows} == {
        f"fastnn-{b}" for b in r["config"]["backends"]
    }
    by_id = {t["id"]: t for t in r["targets"]}
    for e in fastnn_rows:
        seq = e["sequential_fit"]
        assert len(seq["samples_s"]) == spec["rounds"] and min(seq["samples_s"]) > 0
        assert seq["process"]["pid"] not in (os.getpid(), e["process"]["pid"])
        assert seq["process"]["imported_fastnn"]
        expected = stat(pair_ratios(seq["samples_s"], e["samples_s"]), "x")
        assert e["ratio_vs_sequential_fit"] == expected
        target = by_id[f"estimator-{e['solver']}-vs-sequential-fit"]
        assert target["threshold"] == 0.95
        assert target["values"][e["system"]] == expected["median"]
    section = (out / "report.md").read_text().split("## MLPClassifier vs")[1]
    assert "x Sequential.fit throughput" in section.split("## ")[0]


def test_needed_bytes_from_the_model_shapes():
    import numpy as np

    import fastnn
    from fastnn.bench.memory import needed_bytes

    X, y = np.zeros((7, 4), np.float32), np.zeros(7, np.int64)
    sgd = fastnn.MLP((4, 3, 2), optimizer=fastnn.SGD(lr=0.1, momentum=0.9))
    got = needed_bytes(sgd, X, y, batch_size=5)
    act = 4 * (5 * 4 + 5 * 3 + 5 * 2 + 5 * 3 + 5 * 2) + 8 * 5  # x, y1, y2, dx2, dlogits
    assert got == {
        "dataset": 7 * 4 * 4 + 7 * 8,
        "weights": 4 * (4 * 3 + 3 + 3 * 2 + 2),
        "gradients": 4 * 23,
        "optimizer_state": 4 * 23,  # the velocity
        "activations": act,
        "needed": 7 * 4 * 4 + 7 * 8 + 3 * 4 * 23 + act,
    }
    # GELU's backward needs the pre-activation; a batch larger than X is clipped
    gelu = fastnn.MLP((4, 3, 2), activation="gelu", optimizer=fastnn.Adam())
    got = needed_bytes(gelu, X, y, batch_size=128)
    assert got["optimizer_state"] == 2 * got["weights"]
    assert got["activations"] == 4 * (7 * 4 + 2 * 7 * 3 + 7 * 2 + 7 * 3 + 7 * 2) + 8 * 7


def test_at_most_targets():
    row = bench_report._target(
        "m", "x <= 1.5", 1.5, "x", {"a": 1.2, "b": 1.7}, "", True
    )
    assert row["comparison"] == "<=" and row["status"] == "met by a"
    row = bench_report._target("t", "x >= 1.5", 1.5, "x", {"a": 1.2, "b": 1.7})
    assert row["comparison"] == ">=" and row["status"] == "met by b"


def test_every_value_targets_are_missed_by_one_failing_condition():
    """A target whose values are conditions (after import and after a fit; every
    backend's start-up) is not met by one of them."""
    row = bench_report._target(
        "t", "x >= 0.97", 0.97, "x", {"after import": 0.95, "after fit": 0.98},
        every=True,
    )  # fmt: skip
    assert row["status"] == "missed by after import"
    row = bench_report._target("t", "x", 0.97, "x", {"a": 0.99, "b": 1.0}, every=True)
    assert row["status"] == "met"
    side = bench_report._side_effect_target(
        {
            "side_effect": [
                {"variant": "import fastnn", "ratio_vs_plain": {"median": 0.95}},
                {"variant": "fastnn fit", "ratio_vs_plain": {"median": 0.98}},
            ]
        }
    )
    assert side["status"] == "missed by after import fastnn"


def test_every_value_targets_are_not_met_with_a_condition_unmeasured():
    """A backend whose start-up was not measured keeps "for every backend" from
    being met by the others."""
    row = bench_report._target(
        "t", "x", 0.0, "s", {"fastnn-numba": 4.0, "fastnn-cython": None}, every=True
    )
    assert row["status"] == "not measured: fastnn-cython"
    row = bench_report._target(
        "t", "x", 0.0, "s", {"a": -1.0, "b": float("nan"), "c": 2.0}, every=True
    )
    assert row["status"] == "missed by a; not measured: b"
    side = bench_report._side_effect_target(
        {"side_effect": [{"variant": "import fastnn", "ratio_vs_plain": {"median": 1}}]}
    )  # the fit variant's runs failed: no row
    assert side["status"] == "not measured: after fastnn fit"


def test_missing_peer_is_skipped_not_an_error(tiny_run):
    import importlib.util

    _, r = tiny_run
    for module, system in (("torch", "torch-eager"), ("jax", "jax-jit")):
        if importlib.util.find_spec(module) is None:
            assert any(s["system"] == system for s in r["skipped"])
            assert system not in {t["system"] for t in r["training"]}
        else:
            assert system in {t["system"] for t in r["training"]}


def test_inference_latency_per_system_network_and_rows(tiny_run):
    """One predict_proba call on 1, 32 and 1000 rows of both networks: fastnn's
    MLPClassifier on each compiled backend, Sequential.predict_proba on one,
    scikit-learn's MLPClassifier, PyTorch eager (when importable) and the NumPy MLP,
    each in a process of its own for all its cases, alternated round by round;
    microseconds per call from samples of calls repeated for min_time, speed-ups
    paired by round from the stored samples."""
    import importlib.util

    from fastnn.bench import sections
    from fastnn.bench.runner import pair_ratios, scaled, stat
    from fastnn.bench.workloads import INFERENCE_NETWORKS, INFERENCE_ROWS

    out, r = tiny_run
    rows = r["inference"]
    rounds = r["config"]["preset"]["inference"]["rounds"]
    compiled = [b for b in r["config"]["backends"] if b != "numpy"]
    assert compiled, "no compiled backend in this build"
    expected = {f"fastnn-{b}" for b in compiled} | {"sklearn"}
    expected.add(
        "fastnn-sequential-cython"
        if "cython" in compiled
        else f"fastnn-sequential-{compiled[0]}"
    )
    if importlib.util.find_spec("torch") is not None:
        expected.add("torch-eager")
    else:  # a missing optional peer: recorded, not an error
        assert any(
            (s["section"], s["system"]) == ("inference", "torch-eager")
            for s in r["skipped"]
        )
    expected.add("numpy-mlp")  # NumpyMLP.predict_proba
    opts = Options(
        mode="tiny", backends=r["config"]["backends"], peers=r["config"]["peers"]
    ).resolve()
    assert set(sections.inference_systems(opts)) >= expected
    cases = {
        ("-".join(map(str, n)), k) for n in INFERENCE_NETWORKS for k in INFERENCE_ROWS
    }
    assert {(x["workload"], x["rows"], x["system"]) for x in rows} == {
        (w, k, s) for w, k in cases for s in expected
    }
    pids = {}
    for x in rows:
        pids.setdefault(x["system"], set()).add(x["process"]["pid"])
        assert x["layers"] == [int(u) for u in x["workload"].split("-")]
        assert x["threads"] == max(r["config"]["threads"])
        assert x["time"]["n"] == len(x["samples_s"]) == rounds
        assert x["time"] == stat(x["samples_s"], "s") and min(x["samples_s"]) > 0
        assert x["min_sample_s"] == r["config"]["preset"]["inference"]["min_time"]
        assert x["rows_per_s"] == scaled(x["time"], x["rows"], "rows/s")
        assert x["process"]["imported_fastnn"] == x["system"].startswith("fastnn-")
        assert x["process"]["same_environment"]
        if x["system"].startswith("fastnn-"):
            assert x["threads_in_use"] == x["threads"]
        api = {
            "sklearn": "MLPClassifier.predict_proba",
            "torch-eager": "torch.no_grad()",
            "numpy-mlp": "NumpyMLP.predict_proba",
        }.get(x["system"])
        if x["system"].startswith("fastnn-sequential-"):
            api = "Sequential.predict_proba"
        elif x["system"].startswith("fastnn-"):
            api = "MLPClassifier.predict_proba"
        assert x["api"].startswith(api)
        same = {
            y["system"]: y
            for y in rows
            if (y["workload"], y["rows"]) == (x["workload"], x["rows"])
        }
        assert set(x["speedup_vs"]) == {
            b for b in ("sklearn", "torch-eager", "numpy-mlp") if b in same
        }
        for b, got in x["speedup_vs"].items():
            assert got == stat(pair_ratios(same[b]["samples_s"], x["samples_s"]), "x")
    # one process per system, serving all its cases; none is this one
    assert all(len(p) == 1 for p in pids.values())
    flat = [p for ps in pids.values() for p in ps]
    assert len(set(flat)) == len(flat) and os.getpid() not in flat
    text = (out / "report.md").read_text()
    section = text.split("## Inference latency")[1].split("## ")[0]
    assert "µs per call" in section and "speed-up vs sklearn" in section
    for b in compiled:
        assert f"| 64-32-10 | 1 | fastnn-{b} |" in section
    assert "| 784-256-128-10 | 1000 | sklearn | " in section
    method = text.split("## Method")[1]
    assert "- Inference latency: one predict_proba call per system" in method


def _timed_rows(r):
    for section in (
        "ops", "training", "gemm_bound", "scaling", "estimator", "side_effect",
        "inference",
    ):  # fmt: skip
        for row in r[section]:
            if section == "ops":
                row = {**row, "system": f"fastnn-{row['backend']}"}
            yield section, row


def test_every_system_is_timed_in_a_process_of_its_own(tiny_run):
    """The method, not the numbers: each baseline and each fastnn backend ran in a
    fresh process (not this one, a different one per system in a table), with this
    process's environment, and only fastnn's processes imported fastnn."""
    import os

    _, r = tiny_run
    rows = list(_timed_rows(r))
    assert {section for section, _ in rows} == {
        "ops", "training", "gemm_bound", "scaling", "estimator", "side_effect",
        "inference",
    }  # fmt: skip
    for section, row in rows:
        p = row["process"]
        system = row.get("system", "numpy-gemm-only")
        assert p["pid"] != os.getpid(), (section, system)
        assert p["same_environment"], (section, system)
        fastnn_system = system.startswith("fastnn-") or row.get("variant") not in (
            None,
            "plain",
        )
        assert p["imported_fastnn"] == fastnn_system, (section, system)
    # one process per system within a table (a workload, a solver, a thread set)
    for key in ("workload", "solver", "op"):
        groups: dict = {}
        for section, row in rows:
            if key in row and section != "gemm_bound":
                group = (section, row[key], row.get("batch_size"), row.get("shape"),
                         row.get("rows"))  # fmt: skip
                groups.setdefault(group, []).append(row["process"]["pid"])
        for group, pids in groups.items():
            assert len(pids) == len(set(pids)), group
    # at the core count every process got the environment as it is; one thread for
    # a baseline adds the variables its users set, fastnn takes n_threads instead
    cores = max(r["config"]["threads"])
    for _, row in rows:
        added = row["process"]["environment_added"]
        system = row.get("system", "numpy-gemm-only")
        if row["threads"] == cores or system.startswith("fastnn-"):
            assert added == {}
        else:
            assert added["OPENBLAS_NUM_THREADS"] == str(row["threads"])
    assert any(
        s["process"]["environment_added"] for s in r["scaling"] if s["threads"] == 1
    )


def test_side_effect_row_is_paired_from_the_stored_samples(tiny_run):
    from fastnn.bench.runner import pair_ratios, stat

    out, r = tiny_run
    rows = r["side_effect"]
    rounds = r["config"]["preset"]["side_effect_rounds"]
    workloads = {row["workload"] for row in rows}
    assert workloads == {"784-256-128-10", "64-32-10"}
    for w in workloads:
        by = {row["variant"]: row for row in rows if row["workload"] == w}
        assert set(by) == {"plain", "import fastnn", "fastnn fit"}
        plain = by["plain"]["samples_s"]
        for row in by.values():
            assert len(row["samples_s"]) == rounds and min(row["samples_s"]) > 0
            assert row["ratio_vs_plain"] == stat(
                pair_ratios(plain, row["samples_s"]), "x"
            )
        assert by["plain"]["ratio_vs_plain"]["median"] == pytest.approx(1.0)
    target = next(t for t in r["targets"] if t["id"] == "side-effect")
    assert target["threshold"] == 0.97
    for variant in ("import fastnn", "fastnn fit"):
        worst = min(
            row["ratio_vs_plain"]["median"] for row in rows if row["variant"] == variant
        )
        assert target["values"][f"after {variant}"] == worst
    section = (out / "report.md").read_text().split("## fastnn beside a NumPy MLP")[1]
    assert "| 784-256-128-10 | 32 | import fastnn |" in section.split("## ")[0]


def test_pngs_exist_and_are_valid(tiny_run):
    out, r = tiny_run
    pytest.importorskip("matplotlib")
    assert set(r["plots"]) == set(bench_report.PLOTS)
    for name in r["plots"].values():
        w, h = _png_size(out / name)
        assert w > 300 and h > 200


def test_report_has_every_section(tiny_run):
    out, r = tiny_run
    text = (out / "report.md").read_text()
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    assert headings == list(bench_report.SECTION_TITLES)
    for name in r["plots"].values():
        assert f"]({name})" in text
    assert r["environment"]["cpu"]["model"] in text


def test_environment_names_the_isa_of_each_kernel_family(tiny_run):
    from fastnn.kernels import cy

    out, _ = tiny_run
    env = (out / "report.md").read_text().split("## Environment")[1]
    isa = cy.BACKEND_INFO["isa"]
    assert isa.startswith(f"GEMM {cy.GEMM_PLAN.isa}, element-wise {cy.ELEMENTWISE_ISA}")
    assert f"| ISA of the Cython kernels | {isa} |" in env


def test_doc_describes_every_field():
    text = DOC.read_text()

    def keys(s, prefix=""):
        for k, sub in s.get("properties", {}).items():
            yield k
            yield from keys(sub, k)
            if "items" in sub:
                yield from keys(sub["items"], k)
            if "additional" in sub and isinstance(sub["additional"], dict):
                yield from keys(sub["additional"], k)

    missing = sorted({k for k in keys(schema.RESULTS) if f"`{k}`" not in text})
    assert not missing, f"docs/benchmark-schema.md lacks {missing}"


def test_cli_bench_json(tmp_path, capsys, monkeypatch):
    from fastnn import cli
    from fastnn.bench import sections

    # the memory and inference processes are exercised by tiny_run; here only the
    # CLI is under test
    monkeypatch.setattr(sections, "memory", lambda opts, skipped, tick: [])
    monkeypatch.setattr(sections, "inference", lambda opts, skipped, tick: [])

    monkeypatch.setitem(
        __import__("fastnn.bench", fromlist=["PRESETS"]).PRESETS,
        "quick",
        __import__("fastnn.bench", fromlist=["PRESETS"]).PRESETS["tiny"],
    )
    status = cli.main(
        [
            "bench",
            "--quick",
            "--out",
            str(tmp_path),
            "--threads",
            "1",
            "--backends",
            "numpy",
            "--peers",
            "numpy",
            "--json",
        ]
    )
    assert status == 0
    results = json.loads(capsys.readouterr().out)
    assert results["config"]["threads"] == [1]
    assert (tmp_path / "report.md").exists()
    assert schema.errors(results) == []


def test_report_without_matplotlib(tiny_run, tmp_path, monkeypatch, capsys):
    import builtins

    _, r = tiny_run
    real_import = builtins.__import__

    def fake_import(name, *a, **k):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("no matplotlib")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    bench_report.write(json.loads(json.dumps(r)), tmp_path)
    assert "matplotlib is not installed" in capsys.readouterr().err
    assert (tmp_path / "report.md").exists() and not list(tmp_path.glob("*.png"))
    assert schema.errors(json.loads((tmp_path / "results.json").read_text())) == []


def test_load_averages_have_two_decimals(tiny_run):
    out, _ = tiny_run
    text = (out / "report.md").read_text()
    line = next(s for s in text.splitlines() if s.startswith("| load average"))
    numbers = re.findall(r"\d+\.\d+", line)
    assert len(numbers) == 6 and all(len(n.split(".")[1]) == 2 for n in numbers)


def test_distributed_rows_pair_two_mpi_ranks_with_one(tiny_run):
    """2 MPI ranks x 1 thread against 1 rank x 1 thread at global batch 256: every
    job a fresh mpiexec of its own, one epoch per sample, the speed-up paired by
    round and checked against the 1.7x target."""
    import os

    from fastnn.bench import sections
    from fastnn.bench.runner import pair_ratios, stat

    out, r = tiny_run
    target = next(t for t in r["targets"] if t["id"] == "distributed")
    assert target["threshold"] == 1.7
    why = sections._mpi_missing()
    if why is not None:  # the optional mpi extra is not installed: said, not hidden
        assert r["distributed"] == []
        assert any(s["section"] == "distributed" for s in r["skipped"])
        pytest.skip(why)
    rows = r["distributed"]
    systems = {row["system"] for row in rows}
    assert systems == {"fastnn-cython", "fastnn-numba"}
    rounds = r["config"]["preset"]["rounds"]
    pids = [row["process"]["pid"] for row in rows]
    assert len(set(pids)) == len(pids) and os.getpid() not in pids
    for system in systems:
        by = {row["ranks"]: row for row in rows if row["system"] == system}
        assert set(by) == {1, 2}
        for row in by.values():
            assert (row["batch_size"], row["threads_per_rank"]) == (256, 1)
            assert row["workload"] == "784-256-128-10"
            assert row["process"]["imported_fastnn"]
            assert len(row["samples_s"]) == rounds and min(row["samples_s"]) > 0
            assert row["speedup_vs_1_rank"] == stat(
                pair_ratios(by[1]["samples_s"], row["samples_s"]), "x"
            )
        assert by[1]["speedup_vs_1_rank"]["median"] == pytest.approx(1.0)
        assert target["values"][system] == by[2]["speedup_vs_1_rank"]["median"]
    section = (out / "report.md").read_text().split("## Data-parallel training")[1]
    assert "| fastnn-numba | 784-256-128-10 | 256 | 2 |" in section.split("## ")[0]


def test_own_gemm_rows_compare_the_step_products_in_four_processes(tiny_run):
    """fastnn's own GEMM, the measured plan, OpenBLAS in fastnn's blocks and
    np.matmul on the eight products of a 784-256-128-10 step, each in a process of
    its own (np.matmul's never imported fastnn), at batch 32 and 128, CPU and ISA
    recorded; speed-ups paired by round."""
    from fastnn.kernels.cy import GEMM_PLAN

    from fastnn.bench.workloads import gemm_step

    out, r = tiny_run
    rows = r["own_gemm"]
    assert [row["batch_size"] for row in rows] == [32, 128]
    for row in rows:
        assert row["isa"] == GEMM_PLAN.isa
        assert row["cpu"] == r["environment"]["cpu"]["model"]
        procs = row["process"]
        assert set(procs) == {"own", "plan", "openblas", "numpy"}
        pids = {p["pid"] for p in procs.values()}
        assert len(pids) == 4 and os.getpid() not in pids
        assert not procs["numpy"]["imported_fastnn"]
        assert all(procs[n]["imported_fastnn"] for n in ("own", "plan", "openblas"))
        flops = sum(
            p["flops"] for p in gemm_step((784, 256, 128, 10), row["batch_size"])[0]
        )
        for name in ("own", "plan", "openblas", "numpy"):
            assert row[f"{name}_gflops"] == pytest.approx(
                flops / row[f"{name}_step_s"]["median"] / 1e9
            )
        rounds = r["config"]["preset"]["own_gemm_rounds"]
        assert row["speedup"]["n"] == row["own_step_s"]["n"] == rounds
        assert row["speedup_vs_numpy"]["n"] == row["numpy_step_s"]["n"] == rounds
        assert row["plan_speedup_vs_numpy"]["n"] == row["plan_step_s"]["n"] == rounds
    section = (
        (out / "report.md").read_text().split("## fastnn's own GEMM vs OpenBLAS")[1]
    )
    assert f"| {GEMM_PLAN.isa} | 32 |" in section.split("## ")[0]


def test_cold_start_target_is_the_first_run_after_pip_install(tiny_run):
    """Numba's row with the cache that fastnn.precompile alone filled (what pip
    install leaves) scores the cold-start target where it was measured; the empty
    cache's row where it was not."""
    import copy

    _, results = tiny_run
    r = copy.deepcopy(results)
    numba = next(c for c in r["compile"] if c["backend"] == "numba")
    r["compile"] = [c for c in r["compile"] if c["backend"] != "numba"] + [
        dict(numba, cache="cold", time_to_first_step_s=60.0),
        dict(numba, cache="warm", time_to_first_step_s=1.5),
    ]

    def numba_value():
        by_id = {t["id"]: t for t in bench_report.targets(r)}
        return by_id["cold-start"]["values"]["fastnn-numba"]

    assert numba_value() == pytest.approx(10.0 - 60.0)
    installed = dict(numba, cache="installed", time_to_first_step_s=3.0)
    r["compile"].insert(0, dict(installed, precompile_s=200.0))
    assert schema.errors(r) == []
    assert numba_value() == pytest.approx(10.0 - 3.0)


def test_a_failed_precompile_is_skipped_with_its_error(monkeypatch):
    """The installed row's precompile failing: the skip reason names its error (it
    was CalledProcessError's command line and status only)."""
    import subprocess

    from fastnn.bench import sections

    def run(command, **kwargs):
        err = "Traceback (most recent call last):\nImportError: numba is broken\n"
        return subprocess.CompletedProcess(command, 1, "", err)

    monkeypatch.setattr(subprocess, "run", run)
    with pytest.raises(RuntimeError, match="exit status 1: ImportError: numba is br"):
        sections._precompile({}, dict(os.environ))
