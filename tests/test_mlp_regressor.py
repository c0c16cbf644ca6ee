"""fastnn.MLPRegressor against scikit-learn's MLPRegressor: same math and results."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from _estimator_cases import SOLVERS, spy_raw_kernel
from fastnn.kernels import contract
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import ConvergenceWarning, DataConversionWarning
from sklearn.metrics import r2_score
from sklearn.model_selection import cross_val_score
from sklearn.neural_network import MLPRegressor as SkMLP

import fastnn
from fastnn import MLPRegressor

BACKENDS = fastnn.available_backends()
COMPILED = [b for b in BACKENDS if b != "numpy"]
TOL = 1e-10  # parity bound, float64


@pytest.fixture(autouse=True)
def _no_convergence_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _data(n_outputs=1, n=60, seed=0):
    """X (n, 7) float64 and a smooth nonlinear target: (n,) for one output, else
    (n, n_outputs)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 7))
    Y = np.column_stack(
        [X[:, 0] - 0.5 * X[:, 1] ** 2, np.sin(2 * X[:, 2]), X[:, 3] * X[:, 4] + 1.0]
    )
    return X, (Y[:, 0] if n_outputs == 1 else Y[:, :n_outputs])


def _max_param_diff(a, b):
    return max(
        float(np.max(np.abs(p - q)))
        for p, q in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_, strict=True)
    )


def _pair(backend, **params):
    return MLPRegressor(backend=backend, **params), SkMLP(**params)


# ------------------------------------------------------------------------ init
@pytest.mark.parametrize("activation", ["relu", "logistic"])
def test_init_weights_equal_sklearns(activation):
    # lr = 1e-300 makes the one training step vanish below the rounding of the
    # weights, so the fitted weights are the initial ones (Glorot, factor 6 or 2).
    X, y = _data(2)
    params = dict(
        hidden_layer_sizes=(5, 4), activation=activation, solver="sgd", momentum=0.0,
        learning_rate_init=1e-300, max_iter=1, random_state=7, shuffle=False,
    )  # fmt: skip
    ours = MLPRegressor(**params).fit(X, y)
    theirs = SkMLP(**params).fit(X, y)
    for p, q in zip(
        ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_, strict=True
    ):
        assert_array_equal(p, q)


# ---------------------------------------------------------------------- parity
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic", "identity"])
@pytest.mark.parametrize("n_outputs", [1, 3])
@pytest.mark.parametrize("solver", list(SOLVERS))
def test_partial_fit_steps_match_sklearn(backend, activation, n_outputs, solver):
    X, y = _data(n_outputs)
    params = dict(hidden_layer_sizes=(6, 5), activation=activation, batch_size=20,
                  alpha=1e-3, random_state=0, **SOLVERS[solver])  # fmt: skip
    ours, theirs = _pair(backend, **params)
    ours.partial_fit(X[:20], y[:20])
    theirs.partial_fit(X[:20], y[:20])
    # Copy one set of random weights into both and restart both optimizers.
    rng = np.random.default_rng(1)
    start = [
        rng.normal(scale=0.5, size=p.shape) for p in theirs.coefs_ + theirs.intercepts_
    ]
    for est in (ours, theirs):
        k = len(est.coefs_)
        est.coefs_ = [s.copy() for s in start[:k]]
        est.intercepts_ = [s.copy() for s in start[k:]]
        del est._optimizer
    ours.partial_fit(X[:20], y[:20])  # one step
    theirs.partial_fit(X[:20], y[:20])
    assert _max_param_diff(ours, theirs) < TOL
    for _ in range(2):  # 3 steps each; the second call carries the optimizer state
        ours.partial_fit(X, y)
        theirs.partial_fit(X, y)
        assert _max_param_diff(ours, theirs) < TOL
        # the loss averages the squared error over the outputs (L2 term included)
        assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-12)
    assert ours.out_activation_ == theirs.out_activation_ == "identity"
    assert ours.n_outputs_ == theirs.n_outputs_ == n_outputs
    assert all(c.dtype == np.float64 for c in ours.coefs_)
    assert ours.predict(X).shape == theirs.predict(X).shape == y.shape
    assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "extra",
    [
        dict(solver="sgd", learning_rate="invscaling", learning_rate_init=0.05),
        dict(solver="sgd", learning_rate="adaptive", tol=0.5, n_iter_no_change=1),
        dict(solver="adam", early_stopping=True, n_iter_no_change=2),
        dict(solver="adam", tol=0.05, n_iter_no_change=1),
        dict(solver="sgd", shuffle=False, momentum=0.5),
    ],
    ids=["invscaling", "adaptive", "early_stopping", "n_iter_no_change", "no-shuffle"],
)
@pytest.mark.parametrize("n_outputs", [1, 2])
def test_fit_matches_sklearn(backend, extra, n_outputs):
    X, y = _data(n_outputs, n=120)
    params = dict(hidden_layer_sizes=(8,), batch_size=32, max_iter=12,
                  learning_rate_init=0.01, random_state=3)  # fmt: skip
    ours, theirs = _pair(backend, **{**params, **extra})
    ours.fit(X, y)
    theirs.fit(X, y)
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.t_ == theirs.t_
    assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-10)
    assert _max_param_diff(ours, theirs) < TOL
    if ours.early_stopping:
        assert ours.best_loss_ is None
        # R² of the held-out split, per epoch; the best weights restored
        assert_allclose(ours.validation_scores_, theirs.validation_scores_, rtol=1e-10)
        assert ours.best_validation_score_ == pytest.approx(
            theirs.best_validation_score_, rel=1e-10
        )
    else:
        assert ours.validation_scores_ is None
        assert ours.best_loss_ == pytest.approx(theirs.best_loss_, rel=1e-10)


def test_early_stopping_restores_the_best_weights():
    X, y = _data(2, n=200)
    params = dict(hidden_layer_sizes=(16,), learning_rate_init=0.05,
                  early_stopping=True, n_iter_no_change=3, random_state=0)  # fmt: skip
    est = MLPRegressor(max_iter=60, **params).fit(X, y)
    scores = est.validation_scores_
    assert len(scores) == est.n_iter_ < 60  # stopped early
    best = int(np.argmax(scores))
    assert est.best_validation_score_ == scores[best]
    assert best < len(scores) - 1  # later epochs were worse: restoring matters
    # a fit that ends at the best epoch (same draws up to there) ends on its weights
    short = MLPRegressor(max_iter=best + 1, **params).fit(X, y)
    assert short.validation_scores_ == scores[: best + 1]
    assert _max_param_diff(est, short) == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n_outputs", [1, 3])
@pytest.mark.parametrize("early_stopping", [False, True])
def test_sample_weight_matches_sklearn(backend, n_outputs, early_stopping):
    # scikit-learn's MLPRegressor takes sample_weight from 1.7 on (CI's run on the
    # lowest declared version deselects this test); with early stopping the
    # validation R² is weighted too
    X, y = _data(n_outputs, n=80)
    sw = np.random.default_rng(0).uniform(0.2, 3.0, len(y))
    params = dict(hidden_layer_sizes=(6,), max_iter=5, batch_size=16, alpha=1e-2,
                  learning_rate_init=0.01, early_stopping=early_stopping,
                  validation_fraction=0.2, random_state=0)  # fmt: skip
    ours, theirs = _pair(backend, **params)
    ours.fit(X, y, sample_weight=sw)
    theirs.fit(X, y, sample_weight=sw)
    assert _max_param_diff(ours, theirs) < TOL
    assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-10)
    if early_stopping:
        assert_allclose(ours.validation_scores_, theirs.validation_scores_, rtol=1e-10)


def test_sample_weight_zero_equals_removal_with_lbfgs():
    X, y = _data(2)
    sw = np.ones(len(y))
    sw[::3] = 0.0
    params = dict(hidden_layer_sizes=(6,), solver="lbfgs", max_iter=50, random_state=0)
    weighted = MLPRegressor(**params).fit(X, y, sample_weight=sw)
    removed = MLPRegressor(**params).fit(X[sw > 0], y[sw > 0])
    assert_allclose(weighted.predict(X), removed.predict(X), atol=1e-6)


def test_warm_start_and_sparse_input_match_sklearn():
    X, y = _data(2)
    params = dict(hidden_layer_sizes=(6,), max_iter=3, warm_start=True,
                  learning_rate_init=0.01, random_state=0)  # fmt: skip
    ours, theirs = _pair("auto", **params)
    for _ in range(2):
        ours.fit(sp.csr_matrix(X), y)
        theirs.fit(X, y)
    assert len(ours.loss_curve_) == 6
    assert _max_param_diff(ours, theirs) < TOL


@pytest.mark.parametrize("n_outputs", [1, 3])
def test_lbfgs_matches_sklearn(n_outputs):
    X, y = _data(n_outputs, n=150)
    params = dict(hidden_layer_sizes=(10,), solver="lbfgs", max_iter=60,
                  alpha=1e-2, random_state=0)  # fmt: skip
    ours, theirs = _pair("auto", **params)
    ours.fit(X, y)
    theirs.fit(X, y)
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-6)
    assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-5, atol=1e-6)
    assert not hasattr(ours, "loss_curve_")
    with pytest.raises(AttributeError, match="partial_fit"):
        ours.partial_fit(X, y)


def test_lbfgs_float32_keeps_dtype_and_converges():
    X, y = _data(1, n=150)
    params = dict(hidden_layer_sizes=(10,), solver="lbfgs", max_iter=200,
                  random_state=0)  # fmt: skip
    ours = MLPRegressor(**params).fit(X.astype(np.float32), y.astype(np.float32))
    theirs = SkMLP(**params).fit(X, y)
    assert all(c.dtype == np.float32 for c in ours.coefs_ + ours.intercepts_)
    assert ours.predict(X.astype(np.float32)).dtype == np.float32
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-2, abs=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_keeps_float32_and_agrees_with_float64(backend):
    X, y = _data(2, n=120)
    params = dict(hidden_layer_sizes=(8,), max_iter=10, learning_rate_init=0.01,
                  random_state=0, backend=backend)  # fmt: skip
    m32 = MLPRegressor(**params).fit(X.astype(np.float32), y)
    m64 = MLPRegressor(**params).fit(X, y)
    assert all(p.dtype == np.float32 for p in m32.coefs_ + m32.intercepts_)
    assert m32.predict(X.astype(np.float32)).dtype == np.float32
    assert_allclose(m32.predict(X), m64.predict(X), atol=1e-4)


# --------------------------------------------------------------------- shapes
def test_predict_shape_follows_y():
    X, y2 = _data(3)
    params = dict(hidden_layer_sizes=(4,), max_iter=2, random_state=0)
    one = MLPRegressor(**params).fit(X, y2[:, 0])
    assert one.predict(X).shape == (len(X),) and one.n_outputs_ == 1
    multi = MLPRegressor(**params).fit(X, y2)
    assert multi.predict(X).shape == (len(X), 3) and multi.n_outputs_ == 3
    with pytest.warns(DataConversionWarning):  # a column vector: as scikit-learn
        column = MLPRegressor(**params).fit(X, y2[:, :1])
    assert column.predict(X).shape == (len(X),)
    assert_array_equal(column.predict(X), one.predict(X))
    # integer targets are numbers too
    assert MLPRegressor(**params).fit(X, np.arange(len(X))).predict(X).dtype.kind == "f"


def test_score_is_r2_with_sample_weight():
    X, y = _data(2, n=80)
    est = MLPRegressor(hidden_layer_sizes=(8,), solver="lbfgs", max_iter=100,
                       random_state=0).fit(X, y)  # fmt: skip
    sw = np.linspace(0.1, 2.0, len(X))
    assert est.score(X, y, sample_weight=sw) == pytest.approx(
        r2_score(y, est.predict(X), sample_weight=sw)
    )


# ------------------------------------------------------------------- fitting
def test_partial_fit_and_warm_start_need_the_same_number_of_outputs():
    X, y = _data(3, n=30)
    est = MLPRegressor(hidden_layer_sizes=(4,)).partial_fit(X, y)
    with pytest.raises(ValueError, match="same number of outputs"):
        est.partial_fit(X, y[:, :2])
    warm = MLPRegressor(hidden_layer_sizes=(4,), max_iter=2, warm_start=True)
    warm.fit(X, y)
    with pytest.raises(ValueError, match="same number of outputs"):
        warm.fit(X, y[:, 0])
    with pytest.raises(ValueError, match="early_stopping"):
        est.set_params(early_stopping=True).partial_fit(X, y)


def test_partial_fit_continues_where_fit_stopped():
    X, y = _data(2)
    params = dict(hidden_layer_sizes=(6,), solver="sgd", batch_size=20,
                  learning_rate_init=0.01, random_state=0, shuffle=False)  # fmt: skip
    fitted = MLPRegressor(max_iter=3, **params).fit(X, y)
    stepped = MLPRegressor(max_iter=1, **params).fit(X, y)
    stepped.partial_fit(X, y)
    stepped.partial_fit(X, y)
    assert _max_param_diff(fitted, stepped) == 0.0
    assert stepped.n_iter_ == 1 and stepped.t_ == fitted.t_ == 3 * len(X)


@pytest.mark.parametrize(
    "params",
    [
        dict(loss="poisson"),
        dict(loss="absolute_error"),
        dict(hidden_layer_sizes=(0,)),
        dict(activation="softplus"),
        dict(solver="newton"),
        dict(alpha=-1.0),
        dict(learning_rate_init=0.0),
        dict(validation_fraction=1.0),
        dict(backend="gpu"),
        dict(n_threads=0),
        dict(dropout=1.0),
    ],
)
def test_invalid_parameters_raise_value_error(params):
    X, y = _data(1, n=30)
    with pytest.raises(ValueError):
        MLPRegressor(**{"max_iter": 1, **params}).fit(X, y)


def test_non_numeric_or_non_finite_targets_are_rejected():
    X, y = _data(1, n=30)
    with pytest.raises(ValueError):
        MLPRegressor(max_iter=1).fit(X, np.where(y > 0, "a", "b"))
    y_nan = y.copy()
    y_nan[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        MLPRegressor(max_iter=1).fit(X, y_nan)


def test_dropout_trains_reproducibly_and_predicts_deterministically():
    X, y = _data(2, n=200)
    params = dict(hidden_layer_sizes=(32,), learning_rate_init=1e-2, max_iter=20,
                  random_state=0)  # fmt: skip
    plain = MLPRegressor(**params).fit(X, y)
    drop = MLPRegressor(dropout=0.3, **params).fit(X, y)
    again = MLPRegressor(dropout=0.3, **params).fit(X, y)
    assert _max_param_diff(drop, again) == 0.0
    assert _max_param_diff(drop, plain) > 1e-3
    assert_array_equal(drop.predict(X), drop.predict(X))
    assert np.isfinite(drop.loss_curve_).all()


def test_dropout_zero_is_the_plain_fit():
    # the dropout path's loss: the same scikit-learn normalisation as the compiled
    # step's (mean over the outputs), so loss_curve_ does not jump with the path
    X, y = _data(3, n=60)
    # (no shuffling: dropout draws its seed from the estimator's random state)
    params = dict(hidden_layer_sizes=(6,), max_iter=2, alpha=1e-2, random_state=0,
                  shuffle=False, backend="numpy")  # fmt: skip
    plain = MLPRegressor(**params).fit(X, y)
    theirs = SkMLP(**{k: v for k, v in params.items() if k != "backend"}).fit(X, y)
    assert_allclose(plain.loss_curve_, theirs.loss_curve_, rtol=1e-10)
    est = MLPRegressor(dropout=1e-300, **params).fit(X, y)  # masks keep every unit
    assert_allclose(est.loss_curve_, theirs.loss_curve_, rtol=1e-10)


# ------------------------------------------------------------------ engine
def test_coefs_are_views_and_survive_pickle():
    X, y = _data(2)
    est = MLPRegressor(hidden_layer_sizes=(5,), max_iter=3, learning_rate_init=0.01,
                       random_state=0).fit(X, y)  # fmt: skip
    for p in est.coefs_ + est.intercepts_:
        assert np.shares_memory(p, est._model._params)
    loaded = pickle.loads(pickle.dumps(est))
    for p in loaded.coefs_ + loaded.intercepts_:
        assert np.shares_memory(p, loaded._model._params)
    assert_array_equal(loaded.predict(X), est.predict(X))
    loaded.coefs_[-1][:] = 0.0  # writing the views changes the model
    loaded.intercepts_[-1][:] = 2.5
    assert_array_equal(loaded.predict(X), np.full((len(X), 2), 2.5))
    loaded.partial_fit(X, y)  # the optimizer state survives the round trip
    assert loaded.n_iter_ == 1


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_steps_are_the_engines_compiled_train_step(monkeypatch, backend, solver):
    """One compiled train_step call per batch with the squared-error loss code and
    (n, n_outputs) float targets; no layer-by-layer pass."""
    X, y = _data(2, n=90)
    codes, targets_shapes = spy_raw_kernel(monkeypatch, backend, "train_step")
    monkeypatch.setattr(
        fastnn.Sequential,
        "_backward",
        lambda *a, **k: pytest.fail("layer-by-layer pass"),
    )
    est = MLPRegressor(hidden_layer_sizes=(5,), solver=solver, batch_size=40,
                       max_iter=2, random_state=0, backend=backend)  # fmt: skip
    est.fit(X, y)
    assert codes == [contract.TRAIN_LOSSES["squared_error"]] * 6
    assert targets_shapes == [(40, 2), (40, 2), (10, 2)] * 2
    assert len(est.loss_curve_) == 2 and np.all(np.isfinite(est.loss_curve_))


@pytest.mark.parametrize("backend", BACKENDS)
def test_lbfgs_evaluates_the_engines_loss_grad(monkeypatch, backend):
    X, y = _data(1)
    codes, _ = spy_raw_kernel(monkeypatch, backend, "loss_grad")
    est = MLPRegressor(hidden_layer_sizes=(5,), solver="lbfgs", max_iter=5,
                       random_state=0, backend=backend).fit(X, y)  # fmt: skip
    assert len(codes) >= est.n_iter_ > 0
    assert set(codes) == {contract.TRAIN_LOSSES["squared_error"]}


def test_works_in_scikit_learns_tools():
    X, y = _data(1, n=90)
    scores = cross_val_score(
        MLPRegressor(hidden_layer_sizes=(8,), solver="lbfgs", max_iter=100,
                     random_state=0), X, y, cv=3,
    )  # fmt: skip
    assert scores.shape == (3,) and np.all(scores > 0.0)
