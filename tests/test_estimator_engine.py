"""MLPClassifier runs on the engine: a Sequential, its compiled step, loss_grad."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from _estimator_cases import spy_raw_kernel
from fastnn.kernels import contract
from numpy.testing import assert_array_equal
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning

import fastnn
from fastnn import Sequential
from fastnn._insight import as_sequential
from fastnn.estimator import MLPClassifier

COMPILED = [b for b in fastnn.available_backends() if b != "numpy"]


@pytest.fixture(autouse=True)
def _no_convergence_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _data(n_classes=3, n=90):
    return make_classification(
        n_samples=n, n_features=6, n_informative=4, n_classes=n_classes,
        n_clusters_per_class=1, random_state=0,
    )  # fmt: skip


def _count_calls(monkeypatch, module, name):
    """The rows of each step of the raw ``name`` kernel (``train_step``'s steps
    include those run several per ``train_steps`` call)."""
    calls = []

    def spy_on(kernel, rows):
        real = getattr(module, kernel)

        def spy(*args):
            calls.extend(rows(args))
            return real(*args)

        monkeypatch.setattr(module, kernel, spy)

    spy_on(name, lambda args: [args[0].shape[0]])
    if name == "train_step":  # (X, ..., batch_x (7th), ..., losses, correct)
        spy_on("train_steps", lambda args: [args[6].shape[0]] * len(args[-2]))
    return calls


def test_coefs_and_intercepts_are_views_of_the_models_flat_buffer():
    X, y = _data()
    est = MLPClassifier(hidden_layer_sizes=(5, 4), max_iter=3, random_state=0)
    est.fit(X, y)
    flat = est._model._params
    for p in est.coefs_ + est.intercepts_:
        assert np.shares_memory(p, flat)
    before = est.predict_proba(X)
    est.coefs_[-1][:] = 0.0
    est.intercepts_[-1][:] = 0.0  # all logits equal: uniform probabilities
    assert not np.allclose(before, est.predict_proba(X))
    assert np.allclose(est.predict_proba(X), 1.0 / 3)


def test_views_survive_pickle_and_assigned_weights_reach_the_model():
    X, y = _data()
    est = MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, random_state=0).fit(X, y)
    loaded = pickle.loads(pickle.dumps(est))
    for p in loaded.coefs_ + loaded.intercepts_:
        assert np.shares_memory(p, loaded._model._params)
    assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))
    # weights assigned as new arrays (as users and scikit-learn's tests do) are
    # copied into the model by the next partial_fit, which then trains them
    est.set_params(solver="sgd", learning_rate_init=1e-300, momentum=0.0)
    del est._optimizer
    new = [np.full_like(c, 0.01) for c in est.coefs_]
    est.coefs_ = [c.copy() for c in new]
    est.partial_fit(X, y)
    for c, expected in zip(est.coefs_, new, strict=True):
        assert np.shares_memory(c, est._model._params)
        assert_array_equal(c, expected)


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_multiclass_steps_are_the_engines_compiled_train_step(
    monkeypatch, backend, solver
):
    X, y = _data(n=90)
    calls = _count_calls(monkeypatch, fastnn.get_backend(backend).raw, "train_step")
    est = MLPClassifier(hidden_layer_sizes=(5,), solver=solver, batch_size=40,
                        max_iter=2, random_state=0, backend=backend)  # fmt: skip
    est.fit(X, y)
    assert calls == [40, 40, 10] * 2  # every batch, the short last one included


def _multilabel_data(n=90):
    X, y = _data(n=n)
    return X, np.column_stack([y == 0, y != 1, X[:, 0] > 0]).astype(int)


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("solver", ["sgd", "adam"])
@pytest.mark.parametrize("target", ["binary", "multilabel"])
def test_logistic_steps_are_the_engines_compiled_train_step(
    monkeypatch, backend, solver, target
):
    """Binary and multilabel steps: one compiled train_step call per batch with the
    sigmoid cross-entropy loss code and float 0/1 targets (no layer-by-layer
    pass), and the loss it returns is the loss_curve_'s."""
    X, y = _data(n_classes=2, n=90) if target == "binary" else _multilabel_data()
    codes, targets_shapes = spy_raw_kernel(monkeypatch, backend, "train_step")
    monkeypatch.setattr(
        Sequential, "_backward", lambda *a, **k: pytest.fail("layer-by-layer pass")
    )
    est = MLPClassifier(hidden_layer_sizes=(5,), solver=solver, batch_size=40,
                        max_iter=2, random_state=0, backend=backend)  # fmt: skip
    est.fit(X, y)
    n_out = 1 if target == "binary" else 3
    assert est.out_activation_ == "logistic" and est.n_outputs_ == n_out
    assert codes == [contract.TRAIN_LOSSES["sigmoid_cross_entropy"]] * 6
    assert targets_shapes == [(40, n_out), (40, n_out), (10, n_out)] * 2
    assert len(est.loss_curve_) == 2 and np.all(np.isfinite(est.loss_curve_))


@pytest.mark.parametrize("backend", fastnn.available_backends())
@pytest.mark.parametrize("target", ["binary", "multilabel"])
def test_logistic_lbfgs_evaluates_the_engines_loss_grad(monkeypatch, backend, target):
    X, y = _data(n_classes=2) if target == "binary" else _multilabel_data()
    codes, _ = spy_raw_kernel(monkeypatch, backend, "loss_grad")
    est = MLPClassifier(hidden_layer_sizes=(5,), solver="lbfgs", max_iter=5,
                        random_state=0, backend=backend).fit(X, y)  # fmt: skip
    assert len(codes) >= est.n_iter_ > 0
    assert set(codes) == {contract.TRAIN_LOSSES["sigmoid_cross_entropy"]}


@pytest.mark.parametrize("backend", fastnn.available_backends())
def test_lbfgs_evaluates_the_engines_loss_grad(monkeypatch, backend):
    X, y = _data()
    calls = _count_calls(monkeypatch, fastnn.get_backend(backend).raw, "loss_grad")
    est = MLPClassifier(hidden_layer_sizes=(5,), solver="lbfgs", max_iter=5,
                        random_state=0, backend=backend).fit(X, y)  # fmt: skip
    assert len(calls) >= est.n_iter_ > 0
    assert set(calls) == {len(X)}


def test_insight_uses_the_multiclass_estimators_own_model():
    X, y = _data()
    est = MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, random_state=0).fit(X, y)
    model = as_sequential(est)
    assert model is est._model
    np.testing.assert_allclose(model.predict_proba(X), est.predict_proba(X))
    binary = MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, random_state=0)
    Xb, yb = _data(n_classes=2)
    binary.fit(Xb, yb)
    np.testing.assert_allclose(
        as_sequential(binary).predict_proba(Xb), binary.predict_proba(Xb), rtol=1e-5
    )


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(hidden_layer_sizes="ab"), "'hidden_layer_sizes' parameter .* array-like"),
        (dict(verbose="yes"), "'verbose' parameter .* a bool or an int"),
        (dict(alpha=True), r"'alpha' parameter .* a float in the range \[0, inf\)"),
        (dict(solver="newton"), "'solver' parameter .* one of 'adam', 'lbfgs'"),
    ],
)
def test_invalid_parameters_are_named_in_the_error(params, message):
    X, y = _data()
    with pytest.raises(ValueError, match=message):
        MLPClassifier(max_iter=1, **params).fit(X, y)


def test_all_zero_sample_weights_are_rejected():
    X, y = _data()
    with pytest.raises(ValueError, match="at least one non-zero"):
        MLPClassifier(max_iter=1).fit(X, y, sample_weight=np.zeros(len(y)))


# ------------------------------------------- the model's step, per-call settings
def _model(optimizer, l2=0.0, backend="numpy"):
    loss = fastnn.SoftmaxCrossEntropy(l2=l2)
    model = fastnn.MLP(
        (6, 5, 3), loss=loss, optimizer=optimizer, dtype=np.float64, backend=backend
    )
    model.initialize(0)
    kb = model._kernels()
    model.optimizer.bind(kb, model._params, model._grads, model._n_decay)
    return model


@pytest.mark.parametrize("backend", fastnn.available_backends())
def test_train_step_l2_and_eps_per_call_equal_the_models_own(backend):
    X, y = _data()
    x = np.ascontiguousarray(X[:32])
    labels = np.ascontiguousarray(y[:32], dtype=np.intp)
    own = _model(fastnn.Adam(lr=0.01, eps=1e-3), l2=0.05, backend=backend)
    per_call = _model(fastnn.Adam(lr=0.01), backend=backend)
    for _ in range(3):
        a = own._train_step(x, labels, None)
        b = per_call._train_step(x, labels, None, l2=0.05, eps=1e-3)
        assert a == b
    assert_array_equal(own._params, per_call._params)
    assert per_call.loss.l2 == 0.0 and per_call.optimizer.eps == 1e-8  # untouched
