"""The one training loop (fastnn.training): its plug-in points and the package's
import structure around it."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import fastnn
from fastnn import explain, training
from fastnn.callbacks import Callback
from fastnn.losses import SoftmaxCrossEntropy
from fastnn.optim import SGD, Adam

PACKAGE = Path(fastnn.__file__).resolve().parent
BACKENDS = fastnn.available_backends()


def data(n=50):
    """Three classes of 6 features, every class present in the first 3 rows."""
    rng = np.random.default_rng(7)
    y = np.resize([0, 1, 2], n)
    return rng.normal(size=(n, 6)) + y[:, None], y


def model(backend="numpy", l2=0.0, optimizer=None):
    return fastnn.MLP(
        (6, 8, 3),
        optimizer=optimizer or SGD(lr=0.05, momentum=0.9),
        loss=SoftmaxCrossEntropy(l2=l2),
        dtype=np.float64,
        backend=backend,
    )


def test_batch_order_decides_the_batches():
    """A pluggable order: training on the rows in a given order is training on the
    data in that order without shuffling (scikit-learn shuffles with a state of its
    own and cuts consecutive batches)."""
    X, y = data()
    order = np.random.default_rng(3).permutation(len(y))
    calls = []

    def fixed_order(n, rng):
        calls.append(n)
        return order

    a = model()
    training.fit(a, X, y, epochs=2, batch_size=16, seed=0, verbose=0,
                 batch_order=fixed_order)  # fmt: skip
    b = model()
    b.fit(X[order], y[order], epochs=2, batch_size=16, seed=0, verbose=0,
          shuffle=False)  # fmt: skip
    assert calls == [len(y), len(y)]  # once per epoch
    assert a.get_flat_parameters().tobytes() == b.get_flat_parameters().tobytes()


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_l2_is_the_l2_of_each_batch(backend):
    """scikit-learn's alpha / batch rows, the last short batch included: the same
    weights as steps taken by hand with that L2, and a constant batch_l2 is the
    loss's own l2."""
    X, y = data(n=40)
    alpha = 0.3
    a = model(backend)
    hist = training.fit(a, X, y, epochs=1, batch_size=16, shuffle=False, seed=0,
                        verbose=0, batch_l2=lambda rows: alpha / rows)  # fmt: skip
    b = model(backend)
    b.initialize(np.random.Generator(np.random.PCG64(
        np.random.SeedSequence(0).spawn(3)[0])))  # fmt: skip
    b.classes_ = np.arange(3)
    b.optimizer.bind(b._kernels(), b._params, b._grads, b._n_decay)
    losses = []
    for i in range(0, 40, 16):
        xb = np.ascontiguousarray(X[i : i + 16])
        yb = np.ascontiguousarray(y[i : i + 16], dtype=np.intp)
        losses.append(b._train_step(xb, yb, None, alpha / len(yb))[0] * len(yb))
    np.testing.assert_allclose(a.get_flat_parameters(), b.get_flat_parameters(),
                               rtol=0, atol=1e-13)  # fmt: skip
    assert hist["loss"][0] == pytest.approx(sum(losses) / 40, abs=1e-13)
    c = model(backend, l2=0.02)
    c.fit(X, y, epochs=1, batch_size=16, shuffle=False, seed=0, verbose=0)
    d = model(backend)
    training.fit(d, X, y, epochs=1, batch_size=16, shuffle=False, seed=0, verbose=0,
                 batch_l2=lambda rows: 0.02)  # fmt: skip
    assert c.get_flat_parameters().tobytes() == d.get_flat_parameters().tobytes()


def test_one_epoch_fits_continue_like_one_fit():
    """partial_fit / warm_start: a fitted model keeps its weights and its optimizer
    state, so two one-epoch fits are one two-epoch fit (same order each epoch)."""
    X, y = data()
    a = model(optimizer=Adam(lr=0.01))
    a.fit(X, y, epochs=2, batch_size=8, shuffle=False, seed=1, verbose=0)
    b = model(optimizer=Adam(lr=0.01))
    for _ in range(2):
        b.fit(X, y, epochs=1, batch_size=8, shuffle=False, seed=1, verbose=0)
    assert a.get_flat_parameters().tobytes() == b.get_flat_parameters().tobytes()
    assert a.optimizer.steps == b.optimizer.steps == 2 * 7


def test_epoch_hooks_read_the_loss_set_the_rate_and_stop():
    """A callback sees the epoch's mean loss (what scikit-learn's loss_curve_
    records), changes the learning rate for the next epoch and stops training."""

    class Schedule(Callback):
        def __init__(self):
            self.curve = []

        def on_epoch_end(self, epoch, logs, model):
            self.curve.append(logs["loss"])
            model.optimizer.current_lr /= 5
            if epoch == 2:
                model.stop_training = True

    X, y = data()
    hook = Schedule()
    m = model()
    hist = m.fit(X, y, epochs=10, batch_size=8, seed=0, verbose=0, callbacks=[hook])
    assert len(hist) == 3 and hook.curve == hist["loss"]
    assert hist["lr"] == pytest.approx([0.05, 0.01, 0.002])


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_come_from_the_fused_kernel(backend, monkeypatch):
    """loss_and_gradients and explain's loss and probability gradients of the
    standard stack run the backend's loss_grad: no layer-by-layer backward."""
    X, y = data()
    m = model(backend)
    m.fit(X, y, epochs=2, verbose=0, seed=0)
    ref_loss, ref_grads = m.loss_and_gradients(X, y)
    ref_in = explain.input_gradients(m, X, y=y)
    ref_p = explain.input_gradients(m, X, target=1, output="probability")
    kb = m._kernels()
    calls = []
    real = kb.loss_grad

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    def refuse(*args, **kwargs):
        raise AssertionError("the layer-by-layer backward ran")

    monkeypatch.setattr(kb, "loss_grad", counted)
    monkeypatch.setattr(kb, "linear_backward", refuse)
    loss, grads = m.loss_and_gradients(X, y)
    assert loss == ref_loss
    for g, r in zip(grads, ref_grads, strict=True):
        assert g.tobytes() == r.tobytes()
    assert explain.input_gradients(m, X, y=y).tobytes() == ref_in.tobytes()
    got_p = explain.input_gradients(m, X, target=1, output="probability")
    assert got_p.tobytes() == ref_p.tobytes()
    assert len(calls) == 3


@pytest.mark.parametrize("output", ["loss", "probability"])
def test_fused_input_gradients_match_the_layer_by_layer_pass(output):
    """The loss_grad route and the seeded layer-by-layer pass (used for class
    logits and non-standard stacks) give the same input gradients."""
    X, y = data()
    m = model()
    m.fit(X, y, epochs=2, verbose=0, seed=0)
    kwargs = {"y": y} if output == "loss" else {"target": 2, "output": output}
    fused = explain.input_gradients(m, X, **kwargs)
    m.compiled_step = False  # forces the layer-by-layer pass
    layered = explain.input_gradients(m, X, **kwargs)
    np.testing.assert_allclose(fused, layered, rtol=1e-12, atol=1e-15)


# ------------------------------------------------------------ package structure
def _relative(node: ast.ImportFrom) -> list[str]:
    """The fastnn modules a relative import names (first component)."""
    if node.module:
        return [node.module.split(".")[0]]
    return [alias.name for alias in node.names]


def _imports(path: Path) -> tuple[set[str], list[int]]:
    """(fastnn modules a file imports at module level, lines of relative imports
    inside functions)."""
    tree = ast.parse(path.read_text())
    top = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            top.update(_relative(node))
    nested = [
        inner.lineno
        for fn in ast.walk(tree)
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
        for inner in ast.walk(fn)
        if isinstance(inner, ast.ImportFrom) and inner.level
    ]
    return top, nested


def test_package_modules_import_each_other_without_a_cycle():
    """Module-level imports inside fastnn form no cycle (so none is dodged by an
    import inside a function), and the checkpoint container imports nothing of
    fastnn."""
    graph = {}
    for path in PACKAGE.glob("*.py"):
        top, _ = _imports(path)
        graph[path.stem] = top - {path.stem}
    assert graph["checkpoint"] == set()
    state: dict[str, int] = {}

    def visit(node, trail):
        if state.get(node) == 1:
            raise AssertionError(f"import cycle: {' -> '.join([*trail, node])}")
        if state.get(node) == 2 or node not in graph:
            return
        state[node] = 1
        for nxt in graph[node]:
            visit(nxt, [*trail, node])
        state[node] = 2

    for node in graph:
        visit(node, [])


def test_engine_modules_have_no_function_level_imports():
    owned = ("model", "network", "step", "training", "serialize", "checkpoint",
             "distributed", "explain", "calibration", "_insight", "callbacks",
             "standard_callbacks", "progress")  # fmt: skip
    for name in owned:
        _, nested = _imports(PACKAGE / f"{name}.py")
        assert nested == [], (name, nested)


def test_divergence_warning_points_at_the_fit_call(tmp_path):
    """Raised deep inside the loop, the warning names the caller's line."""
    X, y = data()
    m = fastnn.MLP((6, 16, 3), optimizer=SGD(lr=1e4))  # float32: overflows soon
    with (
        np.errstate(all="ignore"),
        pytest.warns(RuntimeWarning, match="diverged") as rec,
    ):
        m.fit(X, y, epochs=5, batch_size=8, verbose=0, seed=0,
              checkpoint=tmp_path / "d.npz")  # fmt: skip
    assert {Path(r.filename).resolve() for r in rec} == {Path(__file__).resolve()}
