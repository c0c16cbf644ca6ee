"""fastnn's scikit-learn estimators import only what every declared version has."""

from __future__ import annotations

import ast
import importlib.metadata
import re
from pathlib import Path

import sklearn

import fastnn

# the modules that import scikit-learn for the estimators
_MODULES = ("estimator.py", "regressor.py", "_sklearn_compat.py")
# the one bridge to a private name, taken only where the public one is missing
_BRIDGE = "validate_data"


def _sklearn_imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every ``from sklearn... import name`` in a source file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "sklearn"
        ):
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(a.name, "") for a in node.names if a.name.startswith("sklearn")]
    return found


def test_no_private_sklearn_imports():
    root = Path(fastnn.__file__).parent
    private = []
    for name in _MODULES:
        for module, imported in _sklearn_imports(root / name):
            parts = module.split(".") + ([imported] if imported else [])
            if any(p.startswith("_") for p in parts):
                private.append(f"{name}: from {module} import {imported}")
    assert private == []


def test_declared_minimum_is_a_version_with_numpy_2_wheels():
    """scikit-learn < 1.4.2 requires NumPy < 2 (pip will not install it beside the
    NumPy >= 2 that fastnn requires); the declared minimum must not promise it."""
    requires = importlib.metadata.requires("fastnn")
    spec = next(r for r in requires if re.match(r"scikit-learn\b", r))
    low = re.search(r">=\s*([\d.]+)", spec).group(1)
    assert tuple(int(p) for p in low.split(".")) >= (1, 4, 2), spec


def test_import_and_fit_on_installed_sklearn():
    from fastnn import MLPClassifier

    X = [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]] * 5
    y = [0, 1, 1, 0] * 5
    est = MLPClassifier(hidden_layer_sizes=(4,), solver="lbfgs", random_state=0)
    est.fit(X, y)
    assert est.predict_proba(X).shape == (20, 2)
    assert sklearn.__version__  # the version this ran against shows in failures


def test_regressor_import_and_fit_on_installed_sklearn():
    from fastnn import MLPRegressor

    X = [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]] * 5
    y = [0.5, 1.0, 1.5, 0.0] * 5
    est = MLPRegressor(hidden_layer_sizes=(4,), solver="lbfgs", random_state=0)
    assert est.fit(X, y).predict(X).shape == (20,)
    assert sklearn.__version__
