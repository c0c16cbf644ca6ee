"""fastnn.MLPClassifier and MLPRegressor pass scikit-learn's estimator checks; the
classifier works in its tools (the regressor's: tests/test_mlp_regressor.py)."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

try:
    from sklearn.utils.estimator_checks import estimator_checks_generator
except ImportError:  # scikit-learn < 1.6 (CI runs these tests on the lowest declared)
    from sklearn.utils.estimator_checks import check_estimator

    def estimator_checks_generator(estimator, legacy=True):
        return check_estimator(estimator, generate_only=True)


import fastnn
from fastnn.estimator import MLPClassifier
from fastnn.regressor import MLPRegressor

# Small and fast, like scikit-learn's own test instances (MLPClassifier(max_iter=100),
# MLPRegressor(max_iter=100)). The regressor keeps the default hidden layer: with
# (10,) neither scikit-learn's nor fastnn's reaches check_regressors_train's R² > 0.5.
CHECKED = [
    MLPClassifier(hidden_layer_sizes=(10,), max_iter=100),
    MLPClassifier(hidden_layer_sizes=(10,), solver="lbfgs", max_iter=50),
    MLPRegressor(max_iter=100),
    MLPRegressor(solver="lbfgs", max_iter=50),
]


# Checks that cannot apply to these estimators, as to scikit-learn's own MLPs: they
# have no decision_function, and they do not claim array-API support (that check
# only runs with SCIPY_ARRAY_API=1 and array-api-strict). scikit-learn would skip them.
NOT_APPLICABLE = {
    "check_classifiers_multilabel_output_format_decision_function",
    "check_array_api_input",
}


def _check_name(check) -> str:
    return getattr(check, "func", check).__name__


def _applicable_checks():
    """parametrize_with_checks(CHECKED), less the checks that cannot apply."""
    for est in CHECKED:
        for estimator, check in estimator_checks_generator(est, legacy=True):
            if _check_name(check) not in NOT_APPLICABLE:
                name = f"{type(est).__name__}-{est.solver}-{_check_name(check)}"
                yield pytest.param(estimator, check, id=name)


def test_not_applicable_checks_exist():
    """The excluded names are real checks (a renamed check must not slip out)."""
    names = {_check_name(c) for _, c in estimator_checks_generator(CHECKED[0])}
    assert NOT_APPLICABLE <= names


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("estimator, check", list(_applicable_checks()))
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(
        n_samples=120, n_features=8, n_informative=5, n_classes=3, random_state=0
    )
    return X, y


def _small(**kw):
    return MLPClassifier(
        hidden_layer_sizes=(8,),
        learning_rate_init=1e-2,
        max_iter=50,
        random_state=0,
        **kw,
    )


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def test_pipeline(data):
    X, y = data
    pipe = make_pipeline(StandardScaler(), _small()).fit(X, y)
    assert pipe.predict(X).shape == y.shape
    assert pipe.score(X, y) > 0.5


def test_grid_search(data):
    X, y = data
    grid = GridSearchCV(
        _small(), {"alpha": [1e-4, 1e-1], "solver": ["adam", "sgd"]}, cv=3
    )
    grid.fit(X, y)
    assert set(grid.best_params_) == {"alpha", "solver"}
    assert len(grid.cv_results_["mean_test_score"]) == 4


def test_cross_val_score(data):
    X, y = data
    scores = cross_val_score(_small(), X, y, cv=3)
    assert scores.shape == (3,)
    assert np.all((scores >= 0) & (scores <= 1))


def test_clone_keeps_params_and_drops_fit(data):
    X, y = data
    est = _small(dropout=0.2, class_weight="balanced", backend="numpy").fit(X, y)
    copy = clone(est)
    assert copy.get_params() == est.get_params()
    assert not hasattr(copy, "coefs_")


@pytest.mark.parametrize("backend", fastnn.available_backends())
def test_pickle_round_trip(data, backend):
    X, y = data
    est = _small(backend=backend).fit(X, y)
    loaded = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))
    loaded.partial_fit(X, y)  # the optimizer state survives the round trip
    assert loaded.n_iter_ == 1
