"""The measured GEMM plan (fastnn/_gemm_wisdom.py): the kernels' table, the choice it
makes in both compiled backends, and the file that keeps it between processes."""

from __future__ import annotations

import importlib
import io
import json
import os
import stat
import subprocess
import sys
import warnings

import numpy as np
import pytest
from fastnn.kernels import gemm as gemm_plan
from fastnn.kernels import tuning
from fastnn.kernels.cy import GEMM_PLAN
from fastnn.kernels.cy import gemm as ext

import fastnn
from fastnn import _gemm_wisdom as wisdom

# (fastnn.kernels.nb.matmul, the attribute, is the function of that name)
nb_matmul = importlib.import_module("fastnn.kernels.nb.matmul")


@pytest.fixture
def fresh_plan(tmp_path, monkeypatch):
    """An empty table and cache folder, measuring on; emptied again afterwards."""
    monkeypatch.setenv("FASTNN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("FASTNN_GEMM_PLAN", raising=False)
    wisdom._forget()
    yield tmp_path / "cache"
    wisdom._forget()


def _operands(shape, dtype, seed=0):
    m, n, k, ta, tb = shape
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    return a, b


def _cython(a, b, shape, mode):
    m, n, _, ta, tb = shape
    out = np.empty((m, n), a.dtype)
    ext.gemm(a, b, out, ta, tb, 1.0, 0.0, mode)
    return out


def _numba(a, b, shape):
    m, n, _, ta, tb = shape
    out = np.empty((m, n), a.dtype)
    nb_matmul.matmul(a, b, out, ta, tb, False)  # the plan (MODE_PLAN)
    return out


def test_table_holds_each_product_apart(fresh_plan):
    assert ext._plan_lookup(32, 256, 784, False, False, False) is None
    assert ext._plan_set(32, 256, 784, False, False, False, True)
    assert ext._plan_set(32, 256, 784, False, True, False, False)
    assert ext._plan_set(32, 256, 784, False, False, True, False)
    assert ext._plan_lookup(32, 256, 784, False, False, False) is True
    assert ext._plan_lookup(32, 256, 784, False, True, False) is False
    assert ext._plan_lookup(32, 256, 784, False, False, True) is False
    assert ext._plan_lookup(32, 256, 784, True, False, False) is None
    assert ext._plan_lookup(256, 32, 784, False, False, False) is None
    assert ext._plan_set(32, 256, 784, False, False, False, False)  # replaced
    assert ext._plan_lookup(32, 256, 784, False, False, False) is False
    # dimensions of 2**20 and more stay with the rule
    assert not ext._plan_set(1 << 20, 8, 8, False, False, False, True)
    assert ext._plan_lookup(1 << 20, 8, 8, False, False, False) is None
    ext._plan_clear()
    assert ext._plan_lookup(32, 256, 784, False, True, False) is None


def test_table_refuses_entries_past_half_its_slots(fresh_plan):
    taken = 0
    while ext._plan_set(taken + 1, 3, 5, False, False, False, True):
        taken += 1
    assert taken == 2048
    assert ext._plan_lookup(taken, 3, 5, False, False, False) is True
    assert ext._plan_lookup(taken + 1, 3, 5, False, False, False) is None
    # an entry already held can still change
    assert ext._plan_set(7, 3, 5, False, False, False, False)
    assert ext._plan_lookup(7, 3, 5, False, False, False) is False


# shapes whose bits differ between the two kernels (float64 needs k > 256 for that);
# the rule gives the first three to OpenBLAS (k > max_k), the last to the own GEMM
_DIFFERING = [
    ((32, 256, 784, False, False), np.float32),
    ((32, 256, 784, False, False), np.float64),
    ((64, 200, 300, True, False), np.float32),
    ((64, 200, 300, True, False), np.float64),
    ((48, 200, 300, False, True), np.float32),
    ((48, 200, 300, False, True), np.float64),
    ((784, 256, 32, True, False), np.float32),
]


@pytest.mark.parametrize(
    "shape, dtype", _DIFFERING,
    ids=[f"{'x'.join(map(str, s[:3]))}-{'NT'[s[3]]}{'NT'[s[4]]}-{np.dtype(d).name}"
         for s, d in _DIFFERING],
)  # fmt: skip
def test_the_measured_choice_runs_in_both_backends(fresh_plan, shape, dtype):
    """An entry sends its product to the kernel it names, whatever the rule says, in
    the Cython and the Numba backend; products without one keep the rule."""
    a, b = _operands(shape, dtype)
    own = _cython(a, b, shape, gemm_plan.MODE_OWN)
    blas = _cython(a, b, shape, gemm_plan.MODE_BLAS)
    assert not np.array_equal(own, blas)  # else this test could not tell them apart
    m, n, k, ta, tb = shape
    rule_own = GEMM_PLAN.rule_takes(m, n, k, tb)
    assert rule_own == (k == 32)  # both rule outcomes are covered
    for choice in (True, False):
        ext._plan_clear()
        want = own if choice else blas
        assert ext._plan_set(m, n, k, ta, tb, dtype == np.float64, choice)
        np.testing.assert_array_equal(_cython(a, b, shape, gemm_plan.MODE_PLAN), want)
        np.testing.assert_array_equal(_numba(a, b, shape), want)
        # the other dtype's entry is another product: the rule
        ext._plan_clear()
        assert ext._plan_set(m, n, k, ta, tb, dtype != np.float64, choice)
        rule = own if rule_own else blas
        np.testing.assert_array_equal(_cython(a, b, shape, gemm_plan.MODE_PLAN), rule)
        np.testing.assert_array_equal(_numba(a, b, shape), rule)


@pytest.mark.parametrize(
    "ratio, rule, own",
    [(0.94, False, True), (0.96, False, False), (0.96, True, True), (1.04, True, True),
     (1.06, True, False), (1.04, False, False)],
)  # fmt: skip
def test_a_measurement_overrides_the_rule_only_past_the_margin(ratio, rule, own):
    class Plan:
        def rule_takes(self, m, n, k, trans_b):
            return rule

    product = wisdom.Product(32, 256, 784, False, False)
    assert wisdom.MARGIN == 0.05
    assert wisdom._choice(Plan(), product, ratio) == {
        "own": own,
        "ratio": ratio,
        "rule": rule,
    }


def test_a_step_too_large_to_time_is_left_to_the_rule(fresh_plan, monkeypatch):
    monkeypatch.setattr(wisdom, "_measure_step", lambda *a: pytest.fail("measured"))
    monkeypatch.setattr(wisdom, "MAX_STEP_FLOPS", 5e4)
    wisdom.plan_training(32, [(20, 24), (24, 3)], np.float32)  # 7.5e4 flops
    assert wisdom.loaded() == {} and not fresh_plan.exists()


def test_the_step_is_timed_product_by_product():
    """Every product of the step gets a ratio, one per shape, positive."""
    widths = [(30, 40), (40, 40), (40, 5)]  # two layers of one shape
    ratios = wisdom._measure_step(ext, gemm_plan, 16, widths, np.dtype(np.float32))
    assert set(ratios) == set(wisdom.training_products(16, widths))
    assert all(0 < r < 100 for r in ratios.values())


def test_training_products_are_the_steps():
    assert wisdom.training_products(32, [(784, 256), (256, 10)]) == [
        (32, 256, 784, False, False),
        (784, 256, 32, True, False),
        (32, 10, 256, False, False),
        (256, 10, 32, True, False),
        (32, 256, 10, False, True),
    ]


def _model(backend, dtype=np.float32, **kw):
    return fastnn.Sequential(
        [fastnn.Linear(20, 24), fastnn.ReLU(), fastnn.Linear(24, 16), fastnn.Tanh(),
         fastnn.Linear(16, 3)],
        backend=backend, dtype=dtype, **kw,
    )  # fmt: skip


def _data(n=70):
    rng = np.random.default_rng(1)
    return rng.standard_normal((n, 20)).astype(np.float32), rng.integers(0, 3, n)


@pytest.mark.parametrize("compiled_step", [True, False], ids=["fused", "layers"])
@pytest.mark.parametrize("backend", ["cython", "numba"])
def test_planning_covers_every_product_of_training(fresh_plan, backend, compiled_step):
    """A fit looks up no product it did not plan: each one runs its measured kernel,
    the same in every process (none falls back to the rule mid-fit)."""
    X, y = _data()
    model = _model(backend)
    model.fit(X, y, epochs=1, batch_size=16, verbose=0, compiled_step=compiled_step)
    ext._plan_record(True)
    try:
        model.fit(X, y, epochs=2, batch_size=16, verbose=0,
                  compiled_step=compiled_step)  # fmt: skip
    finally:
        missed = ext._plan_record(False)
    assert missed == []
    # both batch shapes (16 rows and the last 6) were measured and kept
    keys = set(wisdom.loaded())
    for rows in (16, 6):
        for p in wisdom.training_products(rows, [(20, 24), (24, 16), (16, 3)]):
            assert p.key(np.float32) in keys


def test_the_plan_is_measured_once_and_kept(fresh_plan, monkeypatch):
    X, y = _data()
    old_umask = os.umask(0o027)
    try:
        _model("cython").fit(X, y, epochs=1, batch_size=32, verbose=0)
    finally:
        os.umask(old_umask)
    files = list(fresh_plan.glob("gemm-plan-*.json"))
    assert len(files) == 1
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o640  # 0666 less the umask
    doc = json.loads(files[0].read_text())
    assert doc["format"] == wisdom.FORMAT and doc["machine"]["isa"] == GEMM_PLAN.isa
    products = doc["products"]
    expected = {
        p.key(np.float32)
        for rows in (32, 6)
        for p in wisdom.training_products(rows, [(20, 24), (24, 16), (16, 3)])
    }
    assert set(products) == expected
    for v in products.values():  # the faster kernel past the margin, else the rule
        assert v["own"] == (
            v["ratio"] < 1 - wisdom.MARGIN
            or (v["rule"] and v["ratio"] <= 1 + wisdom.MARGIN)
        )
    before = wisdom.loaded()

    def fail(*args):
        raise AssertionError("measured a product the file holds")

    monkeypatch.setattr(wisdom, "_measure_step", fail)
    wisdom._forget()  # as a new process: the file's choices, none measured
    _model("numba").fit(X, y, epochs=1, batch_size=32, verbose=0)
    assert wisdom.loaded() == before
    for key, own in before.items():
        dtype, shape, trans = key.split(" ")
        m, n, k = map(int, shape.split("x"))
        got = ext._plan_lookup(m, n, k, trans[0] == "T", trans[1] == "T", False)
        assert got is own


def test_an_unwritable_folder_leaves_every_product_to_the_rule(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("FASTNN_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setattr(wisdom, "_measure_step", lambda *a: pytest.fail("measured"))
    wisdom._forget()
    try:
        X, y = _data()
        _model("cython").fit(X, y, epochs=1, batch_size=32, verbose=0)
        assert wisdom.loaded() == {}
        assert ext._plan_lookup(32, 24, 20, False, False, False) is None
        assert "the rule alone (cannot keep the plan" in wisdom.status()["how"]
    finally:
        wisdom._forget()


def test_info_tells_an_unwritable_folder_before_any_fit(tmp_path, monkeypatch):
    """README: a cache folder that cannot be written uses the rule, and `fastnn info`
    shows which; before, info said "measured" until a fit had failed to write."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("FASTNN_CACHE_DIR", str(blocker / "cache"))
    wisdom._forget()
    try:
        how = wisdom.status()["how"]
        assert how.startswith("the rule alone (cannot keep the plan"), how
        assert "is not a folder" in how
        fine = tmp_path / "new" / "cache"  # missing folders info must not create
        monkeypatch.setenv("FASTNN_CACHE_DIR", str(fine))
        assert wisdom.status()["how"].startswith("measured per product shape")
        assert not (tmp_path / "new").exists()
    finally:
        wisdom._forget()


def test_rule_mode_measures_nothing(fresh_plan, monkeypatch):
    monkeypatch.setenv("FASTNN_GEMM_PLAN", "rule")
    monkeypatch.setattr(wisdom, "_measure_step", lambda *a: pytest.fail("measured"))
    X, y = _data()
    _model("cython").fit(X, y, epochs=1, batch_size=32, verbose=0)
    assert wisdom.loaded() == {} and not fresh_plan.exists()
    assert "FASTNN_GEMM_PLAN=rule" in wisdom.status()["how"]


@pytest.mark.parametrize(
    "content",
    ["{not json", '{"format": "other"}', None],
    ids=["garbled", "foreign", "another-machine"],
)
def test_a_bad_plan_file_is_named_and_measured_again(fresh_plan, content):
    X, y = _data()
    _model("cython").fit(X, y, epochs=1, batch_size=32, verbose=0)
    (path,) = fresh_plan.glob("gemm-plan-*.json")
    doc = json.loads(path.read_text())
    if content is None:
        doc["machine"]["cpu"] = "another CPU"
        content = json.dumps(doc)
    path.write_text(content)
    wisdom._forget()
    with pytest.warns(RuntimeWarning, match="ignoring the GEMM plan .*measured again"):
        _model("cython").fit(X, y, epochs=1, batch_size=32, verbose=0)
    assert set(json.loads(path.read_text())["products"]) == set(doc["products"])


_PROCESS = """
import json, numpy as np
from fastnn import _gemm_wisdom as w
w.plan_training(48, [(300, 200), (200, 40)], np.float32)
print(json.dumps(w.loaded(), sort_keys=True))
"""


def test_processes_that_start_together_run_one_plan(fresh_plan):
    """Two processes planning the same products at once: one measures, the other
    waits on the file lock and reads its choices."""
    env = dict(os.environ, FASTNN_CACHE_DIR=str(fresh_plan))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PROCESS], env=env, stdout=subprocess.PIPE, text=True
        )  # fmt: skip
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    first, second = (json.loads(o) for o in outs)
    assert first == second and len(first) == 5


def test_info_says_how_products_are_chosen(fresh_plan):
    X, y = _data()
    _model("cython").fit(X, y, epochs=1, batch_size=32, verbose=0)
    state = wisdom.status()
    assert state["how"].startswith("measured per product shape")
    assert state["kept"] == state["in_use"] == len(wisdom.loaded()) > 0
    out = subprocess.run(
        [sys.executable, "-m", "fastnn.cli", "info"], capture_output=True, text=True,
        env=dict(os.environ, FASTNN_CACHE_DIR=str(fresh_plan)), check=True,
    ).stdout  # fmt: skip
    (line,) = [x for x in out.splitlines() if x.startswith("GEMM plan:")]
    assert "measured per product shape" in line
    assert f"{state['kept']} kept in {state['file']}" in line


def test_info_says_why_there_is_no_own_gemm():
    """A FASTNN_ISA the kernels refuse: no compiled backend loads, so the plan line
    must not claim that products run on OpenBLAS instead; it gives the reason."""
    out = subprocess.run(
        [sys.executable, "-m", "fastnn.cli", "info"], capture_output=True, text=True,
        env=dict(os.environ, FASTNN_ISA="no-such-isa"), check=True,
    ).stdout  # fmt: skip
    (line,) = [x for x in out.splitlines() if x.startswith("GEMM plan:")]
    assert "none: fastnn's own GEMM does not load" in line
    assert "ISAError" in line and "no-such-isa" in line
    (line,) = [x for x in out.splitlines() if x.startswith("parallel:")]
    assert line.endswith("(not measured)")


def test_the_file_keeps_the_latest_products(fresh_plan, monkeypatch):
    monkeypatch.setattr(wisdom, "MAX_KEPT", 7)
    widths = [(20, 24), (24, 3)]  # 5 products a step
    for rows in (16, 8):
        wisdom.plan_training(rows, widths, np.float32)
    (path,) = fresh_plan.glob("gemm-plan-*.json")
    kept = list(json.loads(path.read_text())["products"])
    keys = [p.key(np.float32) for rows in (16, 8)
            for p in wisdom.training_products(rows, widths)]  # fmt: skip
    assert kept == keys[-7:]
    assert len(wisdom.loaded()) == 10  # this process still runs all it measured


def test_a_full_file_still_gives_a_step_its_oldest_products(fresh_plan, monkeypatch):
    """A step whose first products are the file's oldest and whose others are new:
    the new ones push the oldest out of the file, and the step still runs each of
    its products with the choice the file held (no KeyError)."""
    monkeypatch.setattr(wisdom, "MAX_KEPT", 7)
    wisdom.plan_training(16, [(20, 24), (24, 3)], np.float32)  # 5 products
    wisdom._forget()  # as a new process
    widths = [(20, 24), (24, 5)]  # the first layer's 2 products kept, 3 new
    wisdom.plan_training(16, widths, np.float32)
    keys = [p.key(np.float32) for p in wisdom.training_products(16, widths)]
    assert set(keys) <= set(wisdom.loaded())
    (path,) = fresh_plan.glob("gemm-plan-*.json")
    assert len(json.loads(path.read_text())["products"]) == 7


_HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666)
fcntl.lockf(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(120)
"""


def test_a_lock_held_too_long_leaves_the_rule_not_a_hang(fresh_plan, monkeypatch):
    fcntl = pytest.importorskip("fcntl")  # noqa: F841 (POSIX only)
    widths = [(20, 24), (24, 3)]
    wisdom.plan_training(16, widths, np.float32)  # creates the file and its lock
    (path,) = fresh_plan.glob("gemm-plan-*.json")
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(path) + ".lock"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(wisdom, "LOCK_WAIT_S", 0.3)
        monkeypatch.setattr(wisdom, "_measure_step", lambda *a: pytest.fail("measured"))
        wisdom.plan_training(8, widths, np.float32)
    finally:
        holder.kill()
        holder.wait()
    how = wisdom.status()["how"]
    assert "held" in how and "the rule alone" in how
    eight = {p.key(np.float32) for p in wisdom.training_products(8, widths)}
    assert not eight & set(wisdom.loaded())


def test_past_the_budget_new_shapes_are_kept_as_the_rule(fresh_plan, monkeypatch):
    """A process that has spent its measuring time enters new shapes unmeasured, as
    the rule's choice, and keeps them so: every process then runs them alike."""
    widths = [(20, 24), (24, 3)]
    wisdom.plan_training(16, widths, np.float32)  # measured
    monkeypatch.setattr(wisdom, "BUDGET_S", 0.0)
    monkeypatch.setattr(wisdom, "_measure_step", lambda *a: pytest.fail("measured"))
    wisdom.plan_training(9, widths, np.float32)
    (path,) = fresh_plan.glob("gemm-plan-*.json")
    products = json.loads(path.read_text())["products"]
    for p in wisdom.training_products(9, widths):
        entry = products[p.key(np.float32)]
        assert entry == {"own": entry["rule"], "ratio": None, "rule": entry["rule"]}
        assert entry["rule"] == GEMM_PLAN.rule_takes(p.m, p.n, p.k, p.trans_b)
        assert wisdom.loaded()[p.key(np.float32)] is entry["rule"]
    assert all(
        products[p.key(np.float32)]["ratio"] is not None
        for p in wisdom.training_products(16, widths)
    )


def test_a_malformed_key_makes_the_file_foreign(fresh_plan):
    wisdom.plan_training(16, [(20, 24), (24, 3)], np.float32)
    (path,) = fresh_plan.glob("gemm-plan-*.json")
    doc = json.loads(path.read_text())
    doc["products"]["float32 16x0x20 NN"] = {"own": True}
    path.write_text(json.dumps(doc))
    wisdom._forget()
    with pytest.warns(RuntimeWarning, match="ignoring the GEMM plan"):
        wisdom.plan_training(16, [(20, 24), (24, 3)], np.float32)
    assert "float32 16x0x20 NN" not in json.loads(path.read_text())["products"]


def _fake_measurement(ratio):
    """_measure_step stand-in: every product of the step measured at ``ratio``."""
    return lambda ext, plan_module, rows, widths, dtype: {
        p: ratio for p in wisdom.training_products(rows, widths)
    }


def test_a_fit_trains_with_its_own_steps_choices_only(fresh_plan, monkeypatch):
    """The file holds the steps of every program run on the machine; a fit enters
    its own step's (a prediction adds the forward products of its rows, if kept)."""
    monkeypatch.setattr(wisdom, "_measure_step", _fake_measurement(0.5))  # own wins
    widths = [(784, 256), (256, 10)]
    wisdom.plan_training(20, widths, np.float32)  # another program's batches of 20
    wisdom._forget()
    rng = np.random.default_rng(2)
    X = rng.standard_normal((64, 784)).astype(np.float32)
    y = rng.integers(0, 10, 64)
    model = fastnn.Sequential(
        [fastnn.Linear(784, 256), fastnn.ReLU(), fastnn.Linear(256, 10)],
        backend="cython",
    )  # fmt: skip
    model.fit(X, y, epochs=1, batch_size=32, verbose=0, seed=0)
    step = {p.key(np.float32) for p in wisdom.training_products(32, widths)}
    assert set(wisdom.loaded()) == step
    model.decision_function(X[:20])
    forward = {
        wisdom.Product(20, o, i, False, False).key(np.float32) for i, o in widths
    }
    assert set(wisdom.loaded()) == step | forward


_PREDICT = """
import sys, numpy as np, fastnn
model = fastnn.load(sys.argv[1])
X = np.load(sys.argv[2])
np.save(sys.argv[3], model.decision_function(X))
"""


@pytest.mark.parametrize("backend", ["cython", "numba"])
def test_a_loaded_model_predicts_its_batch_rows_as_in_training(
    fresh_plan, monkeypatch, tmp_path, backend
):
    """A model predicts n rows with the kernels its training on batches of n rows
    ran: in the process that trained it and in a new one that loads it."""
    monkeypatch.setattr(wisdom, "_measure_step", _fake_measurement(0.5))  # own wins
    rng = np.random.default_rng(3)
    X = rng.standard_normal((96, 784)).astype(np.float32)
    y = rng.integers(0, 10, 96)
    model = fastnn.Sequential(
        [fastnn.Linear(784, 256), fastnn.ReLU(), fastnn.Linear(256, 10)],
        backend=backend,
    )  # fmt: skip
    model.fit(X, y, epochs=1, batch_size=32, verbose=0, seed=0)
    assert ext._plan_lookup(32, 256, 784, False, False, False) is True
    assert not GEMM_PLAN.rule_takes(32, 256, 784, False)  # the rule's kernel differs
    here = model.decision_function(X[:32])
    path = tmp_path / "model.npz"
    model.save(path)
    np.save(tmp_path / "x.npy", X[:32])
    subprocess.run(
        [sys.executable, "-c", _PREDICT, str(path), str(tmp_path / "x.npy"),
         str(tmp_path / "out.npy")],
        check=True, env=dict(os.environ, FASTNN_CACHE_DIR=str(fresh_plan)),
    )  # fmt: skip
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), here)
    # a new process without the plan's choices predicts other bits: the test can fail
    subprocess.run(
        [sys.executable, "-c", _PREDICT, str(path), str(tmp_path / "x.npy"),
         str(tmp_path / "rule.npy")],
        check=True, env=dict(os.environ, FASTNN_GEMM_PLAN="rule"),
    )  # fmt: skip
    assert not np.array_equal(np.load(tmp_path / "rule.npy"), here)


@pytest.mark.parametrize("value", ["rules", "off", "0", "Measure please"])
def test_an_unknown_plan_setting_is_named(fresh_plan, monkeypatch, value):
    monkeypatch.setenv("FASTNN_GEMM_PLAN", value)
    monkeypatch.setattr(wisdom, "_measure_step", lambda *a: pytest.fail("measured"))
    X, y = _data()
    with pytest.raises(ValueError, match=f"FASTNN_GEMM_PLAN={value!r}: expected"):
        _model("cython").fit(X, y, epochs=1, batch_size=32, verbose=0)
    assert not fresh_plan.exists()
    assert f"FASTNN_GEMM_PLAN={value!r}" in wisdom.status()["how"]  # info still runs


@pytest.mark.parametrize("value", ["", " Rule ", "MEASURE"])
def test_plan_settings_read_like_fastnn_isa(fresh_plan, monkeypatch, value):
    monkeypatch.setenv("FASTNN_GEMM_PLAN", value)
    X, y = _data()
    _model("cython").fit(X, y, epochs=1, batch_size=32, verbose=0)
    assert fresh_plan.exists() == (value.strip().lower() != "rule")


_ESTIMATOR_FITS = {
    "sgd-weighted": lambda est, X, y, w: est.fit(X, y, sample_weight=w),
    "adam-partial": lambda est, X, y, w: est.partial_fit(X, y, classes=[0, 1, 2]),
    "lbfgs": lambda est, X, y, w: est.fit(X, y),
}


@pytest.mark.parametrize("how", list(_ESTIMATOR_FITS))
@pytest.mark.parametrize("backend", ["cython", "numba"])
def test_planning_covers_every_product_of_an_estimators_fit(fresh_plan, backend, how):
    from fastnn.estimator import MLPClassifier

    X, y = _data()
    w = np.linspace(0.5, 1.5, len(y))
    solver = {"sgd-weighted": "sgd", "adam-partial": "adam"}.get(how, how)
    est = MLPClassifier(hidden_layer_sizes=(24, 16), solver=solver, batch_size=16,
                        max_iter=2, backend=backend, random_state=0)  # fmt: skip
    ext._plan_record(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # not converged
            _ESTIMATOR_FITS[how](est, X, y, w)
    finally:
        missed = ext._plan_record(False)
    assert missed == []


# ------------------------------------------------------------ the serial threshold
def _file(folder):
    (path,) = folder.glob("gemm-plan-*.json")
    return json.loads(path.read_text())


def test_the_serial_threshold_is_measured_once_per_thread_count_and_kept(
    fresh_plan, monkeypatch
):
    """A first fit on 2 threads times serial and parallel kernels, keeps the size
    they cross at for 2 threads and runs the kernels with it; a fit on 1 thread
    measures none (nothing runs in parallel); a new process reads the kept one."""
    timed = []

    def ratios(threads):  # parallel ahead from 32,768 on (a busy machine is random)
        timed.append(threads)
        return {size: 1.5 if size < 32768 else 0.8 for size in wisdom.THRESHOLD_SIZES}

    monkeypatch.setattr(wisdom, "_parallel_ratios", ratios)
    X, y = _data()
    _model("cython", n_threads=1).fit(X, y, epochs=1, batch_size=16, verbose=0)
    assert _file(fresh_plan).get("parallel", {}) == {} and timed == []
    assert fastnn.kernels.parallel_min_work(1) == tuning.PARALLEL_MIN_WORK
    _model("cython", n_threads=2).fit(X, y, epochs=1, batch_size=16, verbose=0)
    assert timed == [2]
    entry = _file(fresh_plan)["parallel"]["2"]
    assert entry["min_work"] == 32768
    assert fastnn.kernels.parallel_min_work(2) == entry["min_work"]
    assert wisdom.status()["parallel"] == {2: entry["min_work"]}
    out = subprocess.run(
        [sys.executable, "-m", "fastnn.cli", "info"], capture_output=True, text=True,
        env=dict(os.environ, FASTNN_CACHE_DIR=str(fresh_plan)), check=True,
    ).stdout  # fmt: skip
    (line,) = [x for x in out.splitlines() if x.startswith("parallel:")]
    assert f"from {entry['min_work']:,} work units on 2 threads (measured)" in line
    wisdom._forget()  # as a new process
    assert fastnn.kernels.parallel_min_work(2) == tuning.PARALLEL_MIN_WORK
    monkeypatch.setattr(wisdom, "_parallel_ratios", lambda t: pytest.fail("measured"))
    _model("numba", n_threads=2).fit(X, y, epochs=1, batch_size=8, verbose=0)
    assert fastnn.kernels.parallel_min_work(2) == entry["min_work"]
    with fastnn.num_threads(2):  # what the compiled kernels were given
        from fastnn.kernels.nb import _options

        assert _options.TUNE.min_work == entry["min_work"]


def test_no_threshold_is_measured_by_rule(fresh_plan, monkeypatch):
    monkeypatch.setenv("FASTNN_GEMM_PLAN", "rule")
    monkeypatch.setattr(wisdom, "_parallel_ratios", lambda t: pytest.fail("measured"))
    X, y = _data()
    _model("cython", n_threads=2).fit(X, y, epochs=1, batch_size=16, verbose=0)
    assert fastnn.kernels.parallel_min_work(2) == tuning.PARALLEL_MIN_WORK
    assert not list(fresh_plan.glob("gemm-plan-*.json"))


@pytest.mark.parametrize(
    "ratios,expected",
    [
        ({4096: 1.3, 8192: 0.9, 16384: 0.97, 32768: 0.8, 65536: 0.7}, 32768),
        ({4096: 0.9, 8192: 0.8}, 4096),  # parallel ahead everywhere: the smallest
        ({4096: 1.3, 8192: 0.96}, None),  # never ahead by MARGIN: none
        ({4096: 0.5, 8192: 1.2}, None),  # behind at the largest: none below either
    ],
)
def test_the_threshold_is_where_parallel_wins_at_every_larger_size(ratios, expected):
    assert wisdom._min_work(ratios) == expected


def test_a_real_measurement_keeps_its_threshold_or_none(fresh_plan, monkeypatch):
    """The relu timing itself, on 2 threads: every size timed, and the file keeps the
    threshold its ratios call for, in use; or, where parallel was never ahead (a
    busy machine), nothing, and the default stays in use."""
    measured = []
    real = wisdom._parallel_ratios
    monkeypatch.setattr(
        wisdom, "_parallel_ratios", lambda t: measured.append(real(t)) or measured[-1]
    )
    X, y = _data()
    _model("cython", n_threads=2).fit(X, y, epochs=1, batch_size=16, verbose=0)
    (ratios,) = measured
    assert sorted(ratios) == list(wisdom.THRESHOLD_SIZES)
    assert all(r > 0 for r in ratios.values())
    kept = _file(fresh_plan).get("parallel", {}).get("2")
    if wisdom._min_work(ratios) is None:
        assert kept is None
        assert fastnn.kernels.parallel_min_work(2) == tuning.PARALLEL_MIN_WORK
    else:
        assert kept["min_work"] == wisdom._min_work(ratios)
        assert fastnn.kernels.parallel_min_work(2) == kept["min_work"]


def test_parallel_never_ahead_is_not_kept(fresh_plan, monkeypatch):
    """A measurement in which parallel never wins (most likely a busy machine) is not
    kept for good: the default holds, and the next process measures again."""
    timed = []
    monkeypatch.setattr(
        wisdom, "_parallel_ratios",
        lambda t: timed.append(t) or dict.fromkeys(wisdom.THRESHOLD_SIZES, 3.0),
    )  # fmt: skip
    X, y = _data()
    _model("cython", n_threads=2).fit(X, y, epochs=1, batch_size=16, verbose=0)
    assert timed == [2]
    assert _file(fresh_plan).get("parallel", {}) == {}
    assert fastnn.kernels.parallel_min_work(2) == tuning.PARALLEL_MIN_WORK
    _model("cython", n_threads=2).fit(X, y, epochs=1, batch_size=16, verbose=0)
    assert timed == [2]  # once per process
    wisdom._forget()  # as a new process
    _model("cython", n_threads=2).fit(X, y, epochs=1, batch_size=16, verbose=0)
    assert timed == [2, 2]


@pytest.mark.parametrize("backend", ["cython", "numba"])
def test_the_serial_threshold_changes_no_result(fresh_plan, monkeypatch, backend):
    """Every kernel in parallel against every kernel serial: the same weights (the
    threshold may be measured differently on every machine and run)."""
    monkeypatch.setenv("FASTNN_GEMM_PLAN", "rule")  # the thresholds set here hold
    rng = np.random.default_rng(3)
    X = rng.standard_normal((300, 40)).astype(np.float32)
    y = rng.integers(0, 5, 300)
    weights = []
    for min_work in (0, 2**62):
        fastnn.kernels.set_parallel_min_work(2, min_work)
        try:
            model = fastnn.MLP((40, 300, 64, 5), backend=backend, n_threads=2)
            model.fit(X, y, epochs=2, batch_size=100, verbose=0, seed=0)
        finally:
            fastnn.kernels.set_parallel_min_work(2, None)
        weights.append(model.get_flat_parameters().tobytes())
    assert weights[0] == weights[1]


@pytest.mark.parametrize("bad", [0, -5, True, 2.0**20, "4096", 2**62 + 1, 10**20])
def test_a_kept_threshold_out_of_range_is_measured_again(fresh_plan, monkeypatch, bad):
    """A threshold the compiled code cannot hold (Numba typed 10**20 as a Python
    object and every fused step failed) makes the file not a plan: a warning, and
    the threshold is measured again."""
    monkeypatch.setattr(wisdom, "_parallel_ratios", lambda t: {4096: 0.5})
    wisdom.plan_parallel(2)
    (path,) = fresh_plan.glob("gemm-plan-*.json")
    doc = json.loads(path.read_text())
    doc["parallel"]["2"]["min_work"] = bad
    path.write_text(json.dumps(doc))
    wisdom._forget()  # as a new process
    monkeypatch.setattr(wisdom, "_parallel_ratios", lambda t: {8192: 0.5})
    with pytest.warns(RuntimeWarning, match="ignoring the GEMM plan"):
        wisdom.plan_parallel(2)
    assert fastnn.kernels.parallel_min_work(2) == 8192
    X, y = _data()
    _model("numba", n_threads=2).fit(X, y, epochs=1, batch_size=16, verbose=0)


@pytest.mark.parametrize("bad,error", [(10**20, ValueError), (-1, ValueError),
                                       (1.5, TypeError)])  # fmt: skip
def test_a_threshold_the_kernels_cannot_hold_is_refused(bad, error):
    with pytest.raises(error):
        fastnn.kernels.set_parallel_min_work(2, bad)
    assert fastnn.kernels.parallel_min_work(2) == tuning.PARALLEL_MIN_WORK


def _parallel_line() -> str:
    out = io.StringIO()
    fastnn.show_config(file=out)
    (line,) = [x for x in out.getvalue().splitlines() if x.startswith("parallel:")]
    return line


def test_info_promises_a_measured_threshold_only_where_one_is_measured(
    fresh_plan, monkeypatch
):
    """By the rule, or with the plan's folder unusable, no fit measures a threshold:
    fastnn info must not say one will be."""
    default = f"from {tuning.PARALLEL_MIN_WORK:,} work units"
    assert _parallel_line().endswith(
        f"{default} (measured when a model first trains on 2+ threads)"
    )
    monkeypatch.setattr(wisdom, "_disabled", "cannot keep the plan in /x: denied")
    assert _parallel_line().endswith(f"{default} (not measured)")
    monkeypatch.setattr(wisdom, "_disabled", None)
    monkeypatch.setenv("FASTNN_GEMM_PLAN", "rule")
    assert _parallel_line().endswith(f"{default} (not measured)")


def test_a_model_trained_on_one_thread_plans_its_threshold_for_two(
    fresh_plan, monkeypatch
):
    """A model's workspaces outlive a change of n_threads: its first fit on 2
    threads still measures (or reads) the 2-thread threshold, as a Sequential and
    as a warm-started estimator."""
    measured = []
    monkeypatch.setattr(
        wisdom, "_parallel_ratios", lambda t: measured.append(t) or {4096: 0.5}
    )
    X, y = _data()
    model = _model("cython", n_threads=1)
    model.fit(X, y, epochs=1, batch_size=16, verbose=0)
    model.n_threads = 2
    model.fit(X, y, epochs=1, batch_size=16, verbose=0)
    assert measured == [2]
    assert fastnn.kernels.parallel_min_work(2) == 4096
    clf = fastnn.MLPClassifier((24,), n_threads=1, max_iter=2, batch_size=16,
                               backend="numba", warm_start=True)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not converged in 2 iterations
        clf.fit(X, y)
        clf.set_params(n_threads=3)
        clf.fit(X, y)
    assert measured == [2, 3]


def test_with_the_budget_spent_a_count_is_looked_up_once(fresh_plan, monkeypatch):
    """No threshold kept and none measured (the budget spent): each later fit must
    not read the file again under its lock."""
    monkeypatch.setattr(wisdom, "_spent_s", wisdom.BUDGET_S)
    monkeypatch.setattr(wisdom, "_parallel_ratios", lambda t: pytest.fail("measured"))
    reads = []
    read = wisdom._read
    monkeypatch.setattr(wisdom, "_read", lambda *a: reads.append(a) or read(*a))
    for _ in range(3):
        wisdom.plan_parallel(2)
    assert len(reads) == 1
    assert fastnn.kernels.parallel_min_work(2) == tuning.PARALLEL_MIN_WORK
    assert wisdom.status()["parallel"] == {}
