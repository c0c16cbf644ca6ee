"""fastnn.MLPClassifier against scikit-learn's MLPClassifier: same math and results."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from _estimator_cases import SOLVERS
from numpy.testing import assert_allclose, assert_array_equal
from sklearn import config_context as sklearn_config
from sklearn.datasets import (
    load_digits,
    make_classification,
    make_multilabel_classification,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier as SkMLP
from sklearn.utils.class_weight import compute_sample_weight
from threadpoolctl import threadpool_limits

import fastnn
from fastnn.estimator import MLPClassifier

BACKENDS = fastnn.available_backends()
TOL = 1e-10  # parity bound, float64


@pytest.fixture(autouse=True)
def _no_convergence_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _targets(kind, n=60, seed=0):
    """X (n, 7) float64 and y of the given kind: multiclass, binary or multilabel."""
    if kind == "multilabel":
        X, y = make_multilabel_classification(
            n_samples=n, n_features=7, n_classes=3, random_state=seed
        )
        return X / X.max(), y
    X, y = make_classification(
        n_samples=n,
        n_features=7,
        n_informative=4,
        n_classes=2 if kind == "binary" else 4,
        n_clusters_per_class=1,
        random_state=seed,
    )
    return X, y


def _max_param_diff(a, b):
    return max(
        float(np.max(np.abs(p - q)))
        for p, q in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_, strict=True)
    )


def _pair(backend, **params):
    return MLPClassifier(backend=backend, **params), SkMLP(**params)


# ------------------------------------------------------------------------ init
@pytest.mark.parametrize("activation", ["relu", "logistic"])
def test_init_weights_equal_sklearns_and_glorot(activation):
    # lr = 1e-300 makes the one training step vanish below the rounding of the weights,
    # so the fitted weights are the initial ones.
    X, y = _targets("multiclass")
    params = dict(
        hidden_layer_sizes=(5, 4), activation=activation, solver="sgd", momentum=0.0,
        learning_rate_init=1e-300, max_iter=1, random_state=7, shuffle=False,
    )  # fmt: skip
    ours = MLPClassifier(**params).fit(X, y)
    theirs = SkMLP(**params).fit(X, y)
    for p, q in zip(
        ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_, strict=True
    ):
        assert_array_equal(p, q)
    rng = np.random.RandomState(7)
    factor = 2.0 if activation == "logistic" else 6.0
    for coef, intercept in zip(ours.coefs_, ours.intercepts_, strict=True):
        fan_in, fan_out = coef.shape
        bound = np.sqrt(factor / (fan_in + fan_out))
        assert_array_equal(coef, rng.uniform(-bound, bound, (fan_in, fan_out)))
        assert_array_equal(intercept, rng.uniform(-bound, bound, fan_out))


# ---------------------------------------------------------------------- parity
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["multiclass", "binary", "multilabel"])
@pytest.mark.parametrize("solver", list(SOLVERS))
def test_partial_fit_steps_match_sklearn(backend, kind, solver):
    X, y = _targets(kind)
    params = dict(hidden_layer_sizes=(6, 5), batch_size=20, alpha=1e-3, random_state=0,
                  **SOLVERS[solver])  # fmt: skip
    ours, theirs = _pair(backend, **params)
    classes = np.arange(y.shape[1]) if kind == "multilabel" else np.unique(y)
    ours.partial_fit(X[:20], y[:20], classes=classes)
    theirs.partial_fit(X[:20], y[:20], classes=classes)
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
    for _ in range(2):  # 3 steps each; the second call carries the optimizer state
        ours.partial_fit(X, y)
        theirs.partial_fit(X, y)
        assert _max_param_diff(ours, theirs) < TOL
        assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-12)
    assert ours.out_activation_ == theirs.out_activation_
    assert all(c.dtype == np.float64 for c in ours.coefs_)
    assert_allclose(
        ours.predict_proba(X), theirs.predict_proba(X), rtol=1e-9, atol=1e-12
    )
    assert_array_equal(ours.predict(X), theirs.predict(X))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "extra",
    [
        dict(solver="sgd", learning_rate="invscaling", learning_rate_init=0.5),
        dict(solver="sgd", learning_rate="adaptive", tol=0.5, n_iter_no_change=1),
        dict(solver="adam", early_stopping=True, n_iter_no_change=2),
        dict(solver="adam", tol=0.05, n_iter_no_change=1),
        dict(solver="sgd", shuffle=False, momentum=0.5),
    ],
    ids=["invscaling", "adaptive", "early_stopping", "n_iter_no_change", "no-shuffle"],
)
def test_fit_matches_sklearn(backend, extra):
    X, y = _targets("multiclass", n=120)
    params = dict(hidden_layer_sizes=(8,), batch_size=32, max_iter=12, random_state=3)
    ours, theirs = _pair(backend, **params, **extra)
    ours.fit(X, y)
    theirs.fit(X, y)
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.t_ == theirs.t_
    assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-10)
    assert _max_param_diff(ours, theirs) < TOL
    if ours.early_stopping:
        assert ours.best_loss_ is None
        assert ours.validation_scores_ == theirs.validation_scores_
        assert ours.best_validation_score_ == theirs.best_validation_score_
    else:
        assert ours.validation_scores_ is None
        assert ours.best_loss_ == pytest.approx(theirs.best_loss_, rel=1e-10)


def test_adaptive_learning_rate_really_decays():
    X, y = _targets("multiclass", n=120)
    est = MLPClassifier(
        hidden_layer_sizes=(8,), solver="sgd", learning_rate="adaptive", tol=0.5,
        n_iter_no_change=1, max_iter=12, random_state=3,
    )  # fmt: skip
    est.fit(X, y)
    assert est._optimizer.learning_rate < est.learning_rate_init / 5


@pytest.mark.parametrize("backend", BACKENDS)
def test_sample_weight_matches_sklearn(backend):
    X, y = _targets("multiclass")
    sw = np.random.default_rng(0).uniform(0.2, 3.0, len(y))
    params = dict(hidden_layer_sizes=(6,), max_iter=5, batch_size=16, random_state=0)
    ours, theirs = _pair(backend, **params)
    ours.fit(X, y, sample_weight=sw)
    theirs.fit(X, y, sample_weight=sw)
    assert _max_param_diff(ours, theirs) < TOL
    assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-10)


def test_warm_start_and_sparse_input_match_sklearn():
    X, y = _targets("multiclass")
    params = dict(hidden_layer_sizes=(6,), max_iter=3, warm_start=True, random_state=0)
    ours, theirs = _pair("auto", **params)
    for _ in range(2):
        ours.fit(sp.csr_matrix(X), y)
        theirs.fit(X, y)
    assert len(ours.loss_curve_) == 6
    assert _max_param_diff(ours, theirs) < TOL


def test_lbfgs_matches_sklearn():
    X, y = _targets("multiclass", n=150)
    params = dict(hidden_layer_sizes=(10,), solver="lbfgs", max_iter=60, random_state=0)
    ours, theirs = _pair("auto", **params)
    ours.fit(X, y)
    theirs.fit(X, y)
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-6)
    assert abs(ours.score(X, y) - theirs.score(X, y)) <= 0.01
    assert not hasattr(ours, "loss_curve_")
    with pytest.raises(AttributeError, match="partial_fit"):
        ours.partial_fit(X, y)


def test_lbfgs_float32_keeps_dtype_and_converges():
    X, y = _targets("binary", n=150)
    ours = MLPClassifier(hidden_layer_sizes=(10,), solver="lbfgs", max_iter=200,
                         random_state=0).fit(X.astype(np.float32), y)  # fmt: skip
    theirs = SkMLP(hidden_layer_sizes=(10,), solver="lbfgs", max_iter=200,
                   random_state=0).fit(X, y)  # fmt: skip
    assert all(c.dtype == np.float32 for c in ours.coefs_ + ours.intercepts_)
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-2, abs=1e-3)


# ---------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_keeps_float32_and_agrees_with_float64(backend):
    X, y = _targets("multiclass", n=120)
    params = dict(hidden_layer_sizes=(8,), max_iter=10, random_state=0, backend=backend)
    m32 = MLPClassifier(**params).fit(X.astype(np.float32), y)
    m64 = MLPClassifier(**params).fit(X, y)
    assert all(p.dtype == np.float32 for p in m32.coefs_ + m32.intercepts_)
    assert m32.predict_proba(X.astype(np.float32)).dtype == np.float32
    assert_allclose(m32.predict_proba(X), m64.predict_proba(X), atol=1e-4)


# ------------------------------------------------------------------ accuracy
@pytest.mark.slow
def test_digits_default_accuracy_within_one_point_of_sklearn():
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X / 16.0, y, test_size=0.25, random_state=0, stratify=y
    )
    ours, theirs = [], []
    for seed in range(3):
        ours.append(MLPClassifier(random_state=seed).fit(X_train, y_train)
                    .score(X_test, y_test))  # fmt: skip
        # One BLAS thread: on a busy 2-core machine OpenBLAS's spinning threads made
        # this small fit 20x slower; the result does not depend on it.
        with threadpool_limits(1, user_api="blas"):
            theirs.append(SkMLP(random_state=seed).fit(X_train, y_train)
                          .score(X_test, y_test))  # fmt: skip
    assert abs(np.mean(ours) - np.mean(theirs)) <= 0.01, (ours, theirs)
    assert min(ours) > 0.95, ours


# -------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "params",
    [
        dict(hidden_layer_sizes=(0,)),
        dict(hidden_layer_sizes=(5, -1)),
        dict(activation="softplus"),
        dict(solver="newton"),
        dict(alpha=-1.0),
        dict(batch_size=0),
        dict(learning_rate="cosine"),
        dict(learning_rate_init=0.0),
        dict(max_iter=0),
        dict(momentum=1.5),
        dict(validation_fraction=1.0),
        dict(beta_1=1.0),
        dict(beta_2=-0.1),
        dict(epsilon=0.0),
        dict(n_iter_no_change=0),
        dict(max_fun=0),
        dict(backend="gpu"),
        dict(n_threads=0),
        dict(class_weight="auto"),
        dict(dropout=1.0),
        dict(dropout=-0.1),
    ],
)
def test_invalid_parameters_raise_value_error(params):
    X, y = _targets("multiclass", n=30)
    with pytest.raises(ValueError):
        MLPClassifier(**{"max_iter": 1, **params}).fit(X, y)


def test_partial_fit_needs_classes_and_known_labels():
    X, y = _targets("multiclass", n=30)
    est = MLPClassifier(hidden_layer_sizes=(4,))
    with pytest.raises(ValueError, match="classes must be passed"):
        est.partial_fit(X, y)
    est.partial_fit(X, y, classes=[0, 1, 2, 3, 4])
    assert_array_equal(est.classes_, [0, 1, 2, 3, 4])
    with pytest.raises(ValueError, match="not in `self.classes_`"):
        est.partial_fit(X, y + 10)
    with pytest.raises(ValueError, match="early_stopping"):
        est.set_params(early_stopping=True).partial_fit(X, y)


def test_max_iter_warns_convergence():
    X, y = _targets("multiclass", n=40)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        with pytest.raises(ConvergenceWarning, match="Maximum iterations"):
            MLPClassifier(hidden_layer_sizes=(4,), max_iter=2).fit(X, y)


# ------------------------------------------------------------ fastnn extras
def test_class_weight_equals_sample_weight():
    X, y = _targets("multiclass")
    params = dict(hidden_layer_sizes=(6,), max_iter=4, batch_size=16, random_state=0)
    weights = {0: 3.0, 1: 0.5, 2: 1.0, 3: 2.0}
    with_cw = MLPClassifier(class_weight=weights, **params).fit(X, y)
    with_sw = MLPClassifier(**params).fit(X, y, sample_weight=[weights[c] for c in y])
    assert _max_param_diff(with_cw, with_sw) < 1e-12
    sw = np.linspace(0.5, 1.5, len(y))
    bal = MLPClassifier(class_weight="balanced", **params).fit(X, y, sample_weight=sw)
    ref = MLPClassifier(**params).fit(
        X, y, sample_weight=sw * compute_sample_weight("balanced", y)
    )
    assert _max_param_diff(bal, ref) < 1e-12


def test_class_weight_shifts_predictions_toward_heavy_class():
    X, y = make_classification(n_samples=200, n_features=6, weights=[0.8, 0.2],
                               flip_y=0.1, random_state=0)  # fmt: skip
    params = dict(hidden_layer_sizes=(8,), solver="lbfgs", max_iter=50, random_state=0)
    plain = MLPClassifier(**params).fit(X, y)
    heavy = MLPClassifier(class_weight={0: 1.0, 1: 10.0}, **params).fit(X, y)
    assert (heavy.predict(X) == 1).sum() > (plain.predict(X) == 1).sum()


def test_class_weight_rejections():
    X, y = _targets("multilabel", n=30)
    with pytest.raises(ValueError, match="multilabel"):
        MLPClassifier(class_weight={0: 1.0}, max_iter=1).fit(X, y)
    X, y = _targets("multiclass", n=30)
    with pytest.raises(ValueError, match="partial_fit"):
        MLPClassifier(class_weight="balanced").partial_fit(X, y, classes=np.unique(y))
    with pytest.raises(ValueError):
        MLPClassifier(class_weight={99: 2.0}, max_iter=1).fit(X, y)


def test_sample_weight_zero_equals_removal_with_lbfgs():
    X, y = _targets("multiclass", n=60)
    sw = np.ones(len(y))
    sw[::3] = 0.0
    params = dict(hidden_layer_sizes=(6,), solver="lbfgs", max_iter=50, random_state=0)
    weighted = MLPClassifier(**params).fit(X, y, sample_weight=sw)
    removed = MLPClassifier(**params).fit(X[sw > 0], y[sw > 0])
    assert_allclose(weighted.predict_proba(X), removed.predict_proba(X), atol=1e-6)


def test_dropout_trains_reproducibly_and_predicts_deterministically():
    X, y = _targets("multiclass", n=200)
    params = dict(hidden_layer_sizes=(32,), learning_rate_init=1e-2, max_iter=40,
                  random_state=0)  # fmt: skip
    plain = MLPClassifier(**params).fit(X, y)
    drop = MLPClassifier(dropout=0.3, **params).fit(X, y)
    again = MLPClassifier(dropout=0.3, **params).fit(X, y)
    assert _max_param_diff(drop, again) == 0.0
    assert _max_param_diff(drop, plain) > 1e-3
    assert drop.loss_curve_[-1] > plain.loss_curve_[-1]  # noisier training loss
    assert_array_equal(drop.predict_proba(X), drop.predict_proba(X))
    assert drop.score(X, y) > 0.7


def test_dropout_trains_a_float32_model():
    # float32 X gives a float32 model: its dropout masks are float32 (the draw into
    # them raised TypeError, "Supplied output array has the wrong type")
    X, y = _targets("multiclass", n=80)
    X32 = X.astype(np.float32)
    params = dict(hidden_layer_sizes=(8,), max_iter=3, random_state=0, dropout=0.3)
    drop = MLPClassifier(**params).fit(X32, y)
    again = MLPClassifier(**params).fit(X32, y)
    assert drop.coefs_[0].dtype == np.float32
    assert _max_param_diff(drop, again) == 0.0
    assert np.isfinite(drop.loss_curve_).all()


def test_fitted_means_a_fit_built_the_network():
    """scikit-learn's check_is_fitted asks __sklearn_is_fitted__: True once a fit
    built the network; an attribute set by hand on an unfitted estimator (which the
    generic check took for a fit) gives NotFittedError, not an AttributeError."""
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    X, y = _targets("multiclass", n=60)
    clf = MLPClassifier(hidden_layer_sizes=(6,), max_iter=2, random_state=0)
    assert not clf.__sklearn_is_fitted__()
    clf.coefs_ = [np.zeros((X.shape[1], 6)), np.zeros((6, 3))]
    for call in (clf.predict, clf.predict_proba):
        with pytest.raises(NotFittedError, match="not fitted yet"):
            call(X)
    del clf.coefs_
    clf.fit(X, y)
    assert clf.__sklearn_is_fitted__()
    check_is_fitted(clf)
    reg = fastnn.MLPRegressor(hidden_layer_sizes=(6,), max_iter=2)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        reg.predict(X)


def test_n_threads_is_applied_and_restored():
    X, y = _targets("multiclass", n=60)
    before = fastnn.get_num_threads()
    one = MLPClassifier(
        hidden_layer_sizes=(6,), max_iter=3, random_state=0, n_threads=1
    )
    one.fit(X, y)
    assert fastnn.get_num_threads() == before
    default = MLPClassifier(hidden_layer_sizes=(6,), max_iter=3, random_state=0).fit(
        X, y
    )
    assert _max_param_diff(one, default) < 1e-12


# ------------------------------------------------- inference input shortcut
def _through_validate_data(monkeypatch):
    """Make prediction validate every X with scikit-learn's validate_data."""
    from fastnn import _sklearn_compat, estimator

    def slow(est, X):
        return _sklearn_compat.validate_data(
            est, X, accept_sparse=["csr", "csc"], reset=False
        )

    monkeypatch.setattr(estimator, "validate_predict_X", slow)


def _fitted_pair(dtype):
    X, y = _targets("multiclass", n=60)
    X = X.astype(dtype)
    clf = MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, random_state=0).fit(X, y)
    reg = fastnn.MLPRegressor(hidden_layer_sizes=(5,), max_iter=3, random_state=0)
    return X, clf, reg.fit(X, X[:, :2] @ np.ones(2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "view",
    [
        lambda X: X,
        lambda X: X[:1],
        np.asfortranarray,
        lambda X: X[::3],
        lambda X: X.astype(np.float16),
        lambda X: X.astype(np.int64),
        lambda X: X.tolist(),
        lambda X: sp.csr_matrix(X),
    ],
    ids=["c", "one_row", "fortran", "strided", "float16", "int", "list", "sparse"],
)
def test_prediction_input_shortcut_answers_as_validate_data(dtype, view, monkeypatch):
    X, clf, reg = _fitted_pair(dtype)
    Xv = view(X)
    fast = [clf.predict_proba(Xv), clf.predict(Xv), reg.predict(Xv)]
    _through_validate_data(monkeypatch)
    slow = [clf.predict_proba(Xv), clf.predict(Xv), reg.predict(Xv)]
    for a, b in zip(fast, slow, strict=True):
        assert a.dtype == b.dtype
        assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float16, np.longdouble, ">f4", ">f8"])
def test_prediction_input_shortcut_takes_every_float_dtype(dtype, monkeypatch):
    """docs/performance.md: float16, long double and byte-swapped float arrays take
    the shortcut (validate_data returns them unchanged too: the test above compares
    the answers), while integer data does not."""
    from fastnn import _sklearn_compat

    X, clf, _ = _fitted_pair(np.float64)
    Xd = X.astype(dtype)
    assert _sklearn_compat.validate_predict_X(clf, Xd) is Xd

    def called(*args, **kwargs):
        raise AssertionError("validate_data called")

    monkeypatch.setattr(_sklearn_compat, "validate_data", called)
    assert _sklearn_compat.validate_predict_X(clf, Xd) is Xd
    with pytest.raises(AssertionError, match="validate_data called"):
        _sklearn_compat.validate_predict_X(clf, X.astype(np.int64))


@pytest.mark.parametrize("sparse", [False, True])
def test_prediction_rejects_values_past_the_models_dtype(sparse):
    """A float64 value finite for validate_data but past float32's range became inf in
    the cast to a float32 model: predict_proba answered NaN and predict the first class,
    silently (scikit-learn's MLP computes in float64 and answers). Now the error that
    fastnn's Sequential gives, once the output shows it (an inf that a ReLU clips to 0
    answers as the float64 value would); set_config(assume_finite=True) still lets it
    through."""
    X, clf, reg = _fitted_pair(np.float32)
    assert clf._model.dtype == np.float32
    bad = X[:3].astype(np.float64)
    bad[1, 2] = 1e300
    bad = sp.csr_matrix(bad) if sparse else bad
    for call in (clf.predict_proba, clf.predict, reg.predict):
        with pytest.raises(ValueError, match="Input X contains infinity or a value "
                           "too large for dtype\\('float32'\\)"):  # fmt: skip
            call(bad)
    with sklearn_config(assume_finite=True):
        assert np.isnan(clf.predict_proba(bad)[1]).all()
    assert np.isfinite(clf.predict_proba(X[:3].astype(np.float64))).all()


@pytest.mark.parametrize("fast", [True, False])
def test_prediction_input_shortcut_keeps_sklearns_errors_and_warnings(
    fast, monkeypatch
):
    pd = pytest.importorskip("pandas")
    X, clf, _ = _fitted_pair(np.float64)
    if not fast:
        _through_validate_data(monkeypatch)
    with pytest.raises(ValueError, match="X has 6 features, but MLPClassifier is "
                       "expecting 7 features as input"):  # fmt: skip
        clf.predict(X[:, :6])
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        clf.predict_proba(bad)
    bad[3, 2] = np.inf
    with pytest.raises(ValueError, match="Input X contains infinity"):
        clf.predict(bad)
    with sklearn_config(assume_finite=True):  # scikit-learn lets it through
        assert np.isnan(clf.predict_proba(bad)[3]).all()
    with pytest.raises(ValueError, match="0 sample"):
        clf.predict(X[:0])
    named = MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, random_state=0)
    named.fit(pd.DataFrame(X, columns=[f"f{i}" for i in range(7)]), clf.classes_[
        np.arange(60) % 4])  # fmt: skip
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        named.predict(X)
    with pytest.warns(UserWarning, match="X has feature names"):
        clf.predict(pd.DataFrame(X, columns=[f"f{i}" for i in range(7)]))


@pytest.mark.parametrize(
    "labels", [[3, 1, 2, 0], ["b", "a", "c", "d"], [0, 1], ["no", "yes"], [True, False]]
)
def test_label_decoding_equals_label_binarizer(labels):
    from sklearn.preprocessing import LabelBinarizer

    from fastnn.estimator import _decode_labels

    binarizer = LabelBinarizer().fit(labels)
    k = 1 if len(labels) == 2 else len(labels)
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        y = rng.random((40, k)).astype(dtype)
        y[:4] = 0.5  # ties: first maximum, and not above the binary threshold
        y[4, 0] = np.nan
        y[5] = np.nan
        y = y.ravel() if k == 1 else y
        got, want = _decode_labels(binarizer, y), binarizer.inverse_transform(y)
        assert got.dtype == want.dtype
        assert_array_equal(got, want)
