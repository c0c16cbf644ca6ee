"""Several training steps in one compiled call (train_steps) and the loop that uses it.

The kernel gathers each batch itself and must leave the weights bitwise as the same
steps run one train_step call at a time; the loop runs its full batches through it
and must train exactly as one call per step (checkpoints, resume and Ctrl-C on the
same step boundaries).
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from test_train_step import _net

from fastnn import training
from fastnn.estimator import MLPClassifier
from fastnn.layers import Linear, ReLU
from fastnn.losses import MeanSquaredError
from fastnn.model import MLP, Sequential
from fastnn.optim import SGD, Adam, AdamW
from fastnn.regressor import MLPRegressor

LOSSES = ("softmax_cross_entropy", "squared_error", "sigmoid_cross_entropy")


def _problem(dtype, loss, rng, n_x=37, n=29):
    """test_train_step's 6-9-5-3 network (one layer without bias), X with more rows
    than the training set (x_rows picks them), targets and weights of the training
    rows."""
    layout, params, n_decay = _net(dtype, rng)
    d, n_out = int(layout[0, 2]), int(layout[-1, 3])
    X = rng.normal(size=(n_x, d)).astype(dtype)
    x_rows = rng.permutation(n_x)[:n].astype(np.intp)
    if loss == "softmax_cross_entropy":
        y = rng.integers(0, n_out, size=n)
    elif loss == "squared_error":
        y = rng.normal(size=(n, n_out)).astype(dtype)
    else:
        y = (rng.uniform(size=(n, n_out)) < 0.5).astype(dtype)
    sw = rng.uniform(0.5, 1.5, size=n).astype(dtype)
    return layout, params, n_decay, X, x_rows, y, sw


def _optimizer_kw(optimizer, params):
    states = {"velocity": np.zeros_like(params)}
    if optimizer != "sgd":
        states = {"m": np.zeros_like(params), "v": np.zeros_like(params)}
    return dict(optimizer=optimizer, lr=0.02, momentum=0.9 if optimizer == "sgd"
                else 0.0, nesterov=optimizer == "sgd", weight_decay=0.01,
                **states)  # fmt: skip


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_kernel_equals_one_train_step_per_batch(backend, dtype, optimizer, loss):
    """Bitwise the weights, optimizer state, losses and hits of train_step called
    once per batch on the gathered rows, steps numbered from ``step``."""
    rng = np.random.default_rng(3)
    layout, p0, n_decay, X, x_rows, y, sw = _problem(dtype, loss, rng)
    alphas = np.array([0.01, -0.1, 0.01])
    bs, k = 4, 5
    rows = rng.permutation(len(y))[: bs * k].astype(np.intp)
    smoothing = 0.1 if loss == "softmax_cross_entropy" else 0.0
    common = dict(loss=loss, label_smoothing=smoothing, l2=1e-2, weights_end=n_decay)
    params = p0.copy()
    kw = _optimizer_kw(optimizer, params)
    step_eps = np.linspace(1e-8, 1e-3, k) if optimizer != "sgd" else None
    losses, hits = backend.train_steps(
        X, y, rows, bs, params, np.zeros_like(p0), layout, alphas, x_rows=x_rows,
        sample_weight=sw, step=4, step_eps=step_eps, **common, **kw,
    )  # fmt: skip
    one = p0.copy()
    kw_one = _optimizer_kw(optimizer, one)
    grads = np.zeros_like(p0)
    for s in range(k):
        idx = rows[s * bs : (s + 1) * bs]
        value, correct = backend.train_step(
            np.ascontiguousarray(X[x_rows[idx]]), np.ascontiguousarray(y[idx]), one,
            grads, layout, alphas, sample_weight=np.ascontiguousarray(sw[idx]),
            step=4 + s, **common, **kw_one,
            **({} if step_eps is None else {"eps": float(step_eps[s])}),
        )  # fmt: skip
        assert losses[s] == value and hits[s] == correct
    assert losses.dtype == np.float64 and hits.dtype == np.int64
    assert params.tobytes() == one.tobytes()
    for name in ("velocity", "m", "v"):
        if name in kw:
            assert kw[name].tobytes() == kw_one[name].tobytes()
    assert np.isfinite(losses).all() and not np.array_equal(params, p0)
    if loss == "softmax_cross_entropy":
        assert hits.sum() > 0


@pytest.mark.parametrize("loss", LOSSES)
def test_compiled_kernel_matches_numpy_twin(compiled, oracle, dtype, loss):
    rng = np.random.default_rng(5)
    layout, p0, n_decay, _, _, y, sw = _problem(dtype, loss, rng, n_x=29)
    X = rng.normal(size=(29, 6)).astype(dtype)
    rows = np.arange(24, dtype=np.intp)[::-1].copy()
    out = []
    for kb in (oracle, compiled):
        params = p0.copy()
        kw = _optimizer_kw("adam", params)
        losses, hits = kb.train_steps(
            X, y, rows, 8, params, np.zeros_like(p0), layout,
            np.array([0.01, -0.1, 0.01]), loss=loss, sample_weight=sw,
            weights_end=n_decay, **kw,
        )  # fmt: skip
        out.append((params, kw["m"], kw["v"], losses, hits))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for a, b in zip(*out, strict=True):
        np.testing.assert_allclose(b, a, rtol=tol, atol=tol)


def test_kernel_validates_before_touching_memory(backend):
    rng = np.random.default_rng(0)
    layout, params, n_decay, X, x_rows, y, _ = _problem(
        np.float64, "softmax_cross_entropy", rng
    )
    before = params.copy()
    grads = np.zeros_like(params)
    alphas = np.full(3, 0.01)
    rows = np.arange(8, dtype=np.intp)

    def call(**changes):
        args = dict(X=X, y=y, rows=rows, batch_size=4, x_rows=x_rows)
        args.update(changes)
        backend.train_steps(
            args["X"], args["y"], args["rows"], args["batch_size"], params, grads,
            layout, alphas, x_rows=args["x_rows"], lr=0.1, weights_end=n_decay,
        )  # fmt: skip

    with pytest.raises(ValueError, match="rows must lie in"):
        call(rows=np.array([0, 1, 2, len(y)], dtype=np.intp))
    with pytest.raises(ValueError, match="rows must lie in"):
        call(rows=np.array([0, 1, 2, -1], dtype=np.intp))
    with pytest.raises(ValueError, match="multiple of batch_size"):
        call(rows=rows[:6])
    with pytest.raises(ValueError, match="multiple of batch_size"):
        call(rows=rows[:0])
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        call(batch_size=0)
    with pytest.raises(ValueError, match="dtype intp"):
        call(rows=rows.astype(np.int32))
    with pytest.raises(ValueError, match="x_rows must lie in"):
        call(x_rows=np.full(len(y), len(X), dtype=np.intp))
    with pytest.raises(ValueError, match="x_rows has"):
        call(x_rows=x_rows[:-1])
    with pytest.raises(ValueError, match="pass x_rows"):
        call(x_rows=None)
    with pytest.raises(ValueError, match="labels must lie"):
        call(y=np.full(len(y), 3))
    with pytest.raises(TypeError, match="mixed dtypes"):
        call(X=X.astype(np.float32))
    with pytest.raises(ValueError, match="one label or target row"):
        call(y=np.int64(1))
    assert params.tobytes() == before.tobytes()


def test_kernel_rejects_step_numbers_past_int64(backend):
    """The last step's number (step + steps - 1) must fit the kernels' int64:
    wrapped, Adam's bias correction would silently turn the weights to garbage."""
    rng = np.random.default_rng(0)
    layout, params, n_decay, X, x_rows, y, _ = _problem(
        np.float64, "softmax_cross_entropy", rng
    )
    before = params.copy()
    kw = _optimizer_kw("adam", params)
    last = np.iinfo(np.int64).max
    with pytest.raises(ValueError, match="step"):
        backend.train_steps(
            X, y, np.arange(8, dtype=np.intp), 4, params, np.zeros_like(params),
            layout, np.full(3, 0.01), x_rows=x_rows, weights_end=n_decay,
            step=last, **kw,
        )  # fmt: skip
    assert params.tobytes() == before.tobytes()


# ------------------------------------------------------------------ the loop
def _spy_steps(model):
    """Count the model's compiled multi-step calls and the steps they ran."""
    seen = {"calls": 0, "steps": 0}
    original = model._train_steps

    def spy(X, x_rows, rows, y, sw, batch_size, l2=None):
        seen["calls"] += 1
        seen["steps"] += len(rows) // batch_size
        return original(X, x_rows, rows, y, sw, batch_size, l2)

    model._train_steps = spy
    return seen


def _one_call_per_step(monkeypatch):
    monkeypatch.setattr(training, "WORK_AT_ONCE", 0)


FITS = {
    "classify-shuffled-val": dict(
        make=lambda b: MLP((6, 12, 3), backend=b, optimizer=Adam(lr=0.01)),
        fit=dict(validation_split=0.2, batch_size=7, epochs=3),
        weighted=True,
    ),
    "classify-data-order": dict(
        make=lambda b: MLP(
            (6, 12, 3), backend=b, optimizer=SGD(lr=0.05, momentum=0.9, nesterov=True)
        ),
        fit=dict(shuffle=False, batch_size=5, epochs=2),
        weighted=False,
    ),  # fmt: skip
    "regress-adamw": dict(
        make=lambda b: Sequential(
            [Linear(6, 8), ReLU(), Linear(8, 2)],
            loss=MeanSquaredError(l2=1e-3),
            optimizer=AdamW(lr=0.01, weight_decay=0.01),
            backend=b,
        ),
        fit=dict(batch_size=4, epochs=2),
        weighted=True,
    ),
}


def _fit_data(name, n=61):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(n, 6))
    if name.startswith("regress"):
        y = X[:, :2] @ rng.normal(size=(2, 2)) + 0.1 * rng.normal(size=(n, 2))
    else:
        y = np.arange(n) % 3
    sw = rng.uniform(0.5, 2.0, size=n)
    return X, y, sw


@pytest.mark.parametrize("name", sorted(FITS))
def test_fit_in_chunks_equals_one_call_per_step(compiled, name, monkeypatch):
    spec = FITS[name]
    X, y, sw = _fit_data(name)
    kw = dict(spec["fit"], seed=4, verbose=0)
    if spec["weighted"]:
        kw["sample_weight"] = sw
    chunked = spec["make"](compiled.name)
    seen = _spy_steps(chunked)
    hist = chunked.fit(X, y, **kw)
    assert seen["calls"] >= 2 and seen["steps"] > seen["calls"]
    _one_call_per_step(monkeypatch)
    single = spec["make"](compiled.name)
    seen_single = _spy_steps(single)
    hist_single = single.fit(X, y, **kw)
    assert seen_single["calls"] == seen_single["steps"] == single.optimizer.steps
    assert chunked.get_flat_parameters().tobytes() == (
        single.get_flat_parameters().tobytes()
    )
    assert chunked.optimizer.steps == single.optimizer.steps
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert hist.history.get(key) == hist_single.history.get(key)


def test_chunks_stop_at_checkpoints_and_resume_exactly(compiled, tmp_path):
    X, y, _ = _fit_data("classify")

    def model():
        return MLP((6, 12, 3), backend=compiled.name, optimizer=Adam(lr=0.01))

    kw = dict(batch_size=4, seed=1, verbose=0, checkpoint_every=5)
    ref = model()
    ref.fit(X, y, epochs=3, checkpoint=tmp_path / "ref.npz", **kw)
    path = tmp_path / "run.npz"
    first = model()
    saved_at = []
    original = first._train_steps

    def spy(*args):
        out = original(*args)
        saved_at.append(first.optimizer.steps)
        return out

    first._train_steps = spy
    first.fit(X, y, epochs=1, checkpoint=path, **kw)
    # the first step alone, then chunks that end on a multiple of checkpoint_every
    # or at the epoch's last full batch, then the short batch alone (16 steps: 15
    # full batches of 4 rows and one of 1)
    assert saved_at == [1, 5, 10, 15, 16]
    resumed = model()
    resumed.fit(X, y, epochs=3, checkpoint=path, resume=True, **kw)
    assert resumed.get_flat_parameters().tobytes() == (
        ref.get_flat_parameters().tobytes()
    )


def test_ctrl_c_lands_on_a_chunk_boundary_then_resumes(compiled, tmp_path):
    X, y, _ = _fit_data("classify")

    def model():
        return MLP((6, 12, 3), backend=compiled.name, optimizer=Adam(lr=0.01))

    kw = dict(batch_size=4, seed=1, verbose=0, checkpoint_every="epoch")
    ref = model()
    ref.fit(X, y, epochs=2, checkpoint=tmp_path / "ref.npz", **kw)
    path = tmp_path / "run.npz"
    interrupted = model()
    original = interrupted._train_steps

    calls = []

    def steps(*args):
        calls.append(len(args[2]))
        if len(calls) == 2:  # the first chunk (the first step ran alone)
            os.kill(os.getpid(), signal.SIGINT)  # deferred to the end of the call
        return original(*args)

    interrupted._train_steps = steps
    found = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            interrupted.fit(X, y, epochs=2, checkpoint=path, **kw)
    finally:
        signal.signal(signal.SIGINT, found)
    steps_done = interrupted.optimizer.steps
    assert 1 < steps_done < 16  # the first step, then one chunk
    resumed = model()
    resumed.fit(X, y, epochs=2, checkpoint=path, resume=True, **kw)
    assert resumed.get_flat_parameters().tobytes() == (
        ref.get_flat_parameters().tobytes()
    )


def test_strategies_with_their_own_step_run_one_call_per_step():
    class OwnStep(training.LocalStrategy):
        def step(self, model, ws, weighted, batch_rows, l2):
            return super().step(model, ws, weighted, batch_rows, l2)

    model = MLP((6, 12, 3), backend="cython")
    seen = _spy_steps(model)
    X, y, _ = _fit_data("classify")
    training.fit(model, X, y, strategy=OwnStep(), epochs=1, batch_size=4, verbose=0)
    assert seen["calls"] == 0 and model.optimizer.steps == 16


@pytest.mark.parametrize(
    "make, fit_kw, fused",
    [
        (lambda b: MLPClassifier((8,), solver="adam", backend=b), {}, True),
        (lambda b: MLPClassifier((8,), solver="sgd", backend=b), {}, True),
        (lambda b: MLPRegressor((8,), backend=b), {"regress": True}, True),
        (lambda b: MLPClassifier((8,), backend=b), {"weighted": True}, False),
        (lambda b: MLPClassifier((8,), backend=b, dropout=0.1), {}, False),
        (lambda b: MLPRegressor((8,), backend=b), {"regress": 2}, False),
    ],
    ids=["adam", "sgd", "regressor", "weighted", "dropout", "regressor-2-outputs"],
)
def test_estimators_fuse_their_plain_steps(compiled, make, fit_kw, fused):
    """scikit-learn's steps run several per compiled call unless a batch's loss
    or weights need Python (sample weights, dropout, a loss averaged over outputs);
    the parity tests check the numbers either way."""
    import warnings

    X, y, sw = _fit_data("classify")
    if fit_kw.get("regress"):
        y = X[:, : int(fit_kw["regress"])].sum(axis=1, keepdims=True)
        y = (
            np.repeat(y, int(fit_kw["regress"]), axis=1)
            if fit_kw["regress"] == 2
            else y.ravel()
        )
    est = make(compiled.name).set_params(batch_size=8, max_iter=2, random_state=0)
    seen = {"calls": 0}
    original = Sequential._train_steps

    def spy(self, *args, **kw):
        seen["calls"] += 1
        return original(self, *args, **kw)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: 2 epochs
        Sequential._train_steps = spy
        try:
            est.fit(X, y, sample_weight=sw if fit_kw.get("weighted") else None)
        finally:
            Sequential._train_steps = original
    assert (seen["calls"] > 0) == fused


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_estimators_fused_steps_equal_one_call_per_step(compiled, solver, monkeypatch):
    """Bitwise the weights and loss curve of the same fit with one call per step
    (as a weighted fit runs: unit weights must not change a bit), the short last
    batch's L2 strength included: alpha * (1 / rows), as the unfused step has it,
    not alpha / rows, which differs in the last bit for these sizes."""
    import warnings

    from fastnn.estimator import _EstimatorSteps

    X, y, _ = _fit_data("classify", n=70)  # batches of 7 (0.3 / 7 != 0.3 * (1 / 7))
    y = np.arange(70) % 3

    def fit(sample_weight=None):
        est = MLPClassifier(
            (6,), solver=solver, alpha=0.3, batch_size=7, max_iter=3,
            random_state=0, backend=compiled.name,
        )  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning: 3 epochs
            return est.fit(X, y, sample_weight=sample_weight)

    fused = fit()
    weighted = fit(np.ones(70))
    monkeypatch.setattr(_EstimatorSteps, "fuses_steps", lambda self, model, data: False)
    single = fit()
    for other in (single, weighted):
        for a, b in zip(fused.coefs_ + fused.intercepts_,
                        other.coefs_ + other.intercepts_, strict=True):  # fmt: skip
            assert a.tobytes() == b.tobytes()
        assert fused.loss_curve_ == other.loss_curve_


def _order_fit(backend, order):
    X, y, _ = _fit_data("classify", n=64)
    model = MLP((6, 12, 3), backend=backend, optimizer=SGD(lr=0.05))
    training.fit(model, X, y, batch_order=order, epochs=2, batch_size=4, seed=0,
                 verbose=0)  # fmt: skip
    return model.get_flat_parameters()


def test_a_custom_batch_order_is_checked_before_the_compiled_gather(compiled):
    """The compiled steps gather the order's rows unchecked: an index out of range
    or negative is a clear error (it read out of bounds), a short order too (its
    last steps went missing), and any integer array-like order trains as the same
    order in intp (int32 and lists were rejected mid-fit)."""

    def reversed_as(kind):
        def order(n_rows, rng):
            p = np.arange(n_rows)[::-1]
            if kind == "oob":
                p[40] = n_rows + 10**6
            elif kind == "negative":
                p[40] = -5
            elif kind == "short":
                p = p[:-3]
            elif kind == "int32":
                p = p.astype(np.int32)
            elif kind == "list":
                p = p.tolist()
            return p

        return order

    for kind, match in (("oob", r"lie in \[0, 64\)"),
                        ("negative", r"lie in \[0, 64\)"),
                        ("short", "64 integer row indices")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            _order_fit(compiled.name, reversed_as(kind))
    expected = _order_fit(compiled.name, reversed_as("intp"))
    for kind in ("int32", "list"):
        assert _order_fit(compiled.name, reversed_as(kind)).tobytes() == (
            expected.tobytes()
        )
