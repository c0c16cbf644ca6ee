"""``fastnn train --task regression``, the task inference, and predict / evaluate of
regression models."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import r2_score
from sklearn.neural_network import MLPRegressor

import fastnn
from fastnn.cli import main
from fastnn.data import infer_task, load_diabetes_split


def _train_json(capsys, *args: str) -> dict:
    assert main(["train", "--json", "--quiet", *args]) == 0
    captured = capsys.readouterr()
    return json.loads(captured.out)


def test_diabetes_split_standardizes_x_with_the_training_rows_only():
    X_tr, X_te, y_tr, y_te = load_diabetes_split(0.25, 0)
    assert X_tr.shape == (331, 10) and X_te.shape == (111, 10)
    assert X_tr.dtype == np.float32 and y_tr.dtype == np.float64
    np.testing.assert_allclose(X_tr.mean(axis=0), 0, atol=1e-5)
    assert abs(X_te.mean()) > 1e-3  # the test rows' own statistics are not used
    assert 25 <= y_tr.min() and y_tr.max() <= 346  # the target in its own units
    again = load_diabetes_split(0.25, 0)
    assert np.array_equal(again[0], X_tr) and np.array_equal(again[3], y_te)


def test_regression_on_the_built_in_data_reaches_scikit_learns_r2(capsys):
    """The CLI's defaults for a regressor (hidden 64, relu, adam, lr 1e-3, batch
    32, 100 epochs, no L2) against MLPRegressor with the same hyper-parameters, on
    the same split and standardized targets, over five seeds (a single split of
    111 test rows moves R² by several hundredths between seeds, in both)."""
    ours, theirs = [], []
    for seed in range(5):
        result = _train_json(capsys, "--task", "regression", "--seed", str(seed))
        assert result["task"] == "regression" and result["dataset"] == "diabetes"
        assert result["layers"] == [10, 64, 1] and result["epochs"] == 100
        ours.append(result["test_r2"])
        X_tr, X_te, y_tr, y_te = load_diabetes_split(0.25, seed)
        mean, std = y_tr.mean(), y_tr.std()
        sk = MLPRegressor(
            hidden_layer_sizes=(64,), activation="relu", solver="adam",
            learning_rate_init=1e-3, alpha=0.0, batch_size=32, max_iter=100,
            shuffle=True, random_state=seed, tol=0.0, n_iter_no_change=10**9,
        )  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter reached
            sk.fit(X_tr, (y_tr - mean) / std)
        theirs.append(r2_score(y_te, sk.predict(X_te) * std + mean))
    assert np.mean(ours) >= np.mean(theirs) - 0.02, (ours, theirs)


def test_regression_text_output_names_r2_and_mse(capsys):
    argv = ["train", "--task", "regression", "--epochs", "3", "--backend", "numpy"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "test R²" in out and "test MSE" in out and "test MAE" in out
    assert "on diabetes" in out and "accuracy" not in out


def _csv(tmp_path, y, n=None):
    """A CSV of 3 features and a target column: ``y``, or ``y(X)`` for n rows."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(len(y) if n is None else n, 3))
    y = y(X) if callable(y) else y
    path = tmp_path / "d.csv"
    rows = [",".join(map(str, [*x, t])) for x, t in zip(X, y, strict=True)]
    path.write_text("a,b,c,target\n" + "\n".join(rows) + "\n")
    return path, X


def test_auto_task_regresses_float_labels_and_says_so(tmp_path, capsys):
    path, _ = _csv(tmp_path, lambda X: 1000 + 50 * np.sin(X[:, 0]), 80)
    argv = ["--data", str(path), "--epochs", "2", "--backend", "numpy"]
    assert main(["train", "--json", "--quiet", *argv]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["task"] == "regression"
    assert "float labels: training a regressor (--task classification" in captured.err
    assert {"test_r2", "test_mse", "test_mae", "test_loss"} <= set(result)
    assert result["train_accuracy"] is None and "test_accuracy" not in result


def test_auto_task_classifies_integer_labels_and_task_overrides(tmp_path, capsys):
    path, _ = _csv(tmp_path, np.arange(60) % 3)
    argv = ["--data", str(path), "--epochs", "1", "--backend", "numpy"]
    assert main(["train", "--json", "--quiet", *argv]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["task"] == "classification" and "test_accuracy" in result
    assert captured.err == ""  # integer labels classify, as they always did
    assert infer_task(np.array([0.0, 1.0, 2.0, 1.0])) == "classification"
    result = _train_json(capsys, *argv, "--task", "regression")
    assert result["task"] == "regression" and "test_r2" in result
    assert infer_task(np.array([0.5, 1.5]), "classification") == "classification"
    assert infer_task(np.array([0.5, 1.5])) == "regression"
    with pytest.raises(ValueError, match="task must be one of"):
        infer_task(np.array([1.0]), "ranking")


def test_predict_and_evaluate_a_regressor_in_the_targets_units(tmp_path, capsys):
    def target(X):
        return 1000 + 50 * np.sin(X[:, 0]) + 20 * X[:, 1]

    path, X = _csv(tmp_path, target, 120)
    y = target(X)
    model_path = tmp_path / "m.npz"
    result = _train_json(
        capsys, "--data", str(path), "--task", "regression", "--test-size", "0",
        "--epochs", "200", "--lr", "0.01", "--out", str(model_path),
        "--backend", "numpy", "--dtype", "float64",
    )  # fmt: skip
    assert result["model"] == str(model_path)
    model = fastnn.load(model_path, backend="numpy")
    assert model.is_regressor and model.predict(X).shape == (120,)
    assert r2_score(y, model.predict(X)) > 0.9  # the scaling is folded into the model
    # predict: one value per row, in the targets' units
    out = tmp_path / "pred.csv"
    assert main(["predict", "--model", str(model_path), "--data", str(path),
                 "--out", str(out), "--backend", "numpy"]) == 0  # fmt: skip
    lines = out.read_text().splitlines()
    assert lines[0] == "prediction" and len(lines) == 121
    np.testing.assert_allclose(
        np.array(lines[1:], dtype=float), model.predict(X), rtol=1e-12
    )
    # evaluate: R², MSE, MAE as fastnn.evaluate (scikit-learn's metrics)
    common = ["--model", str(model_path), "--data", str(path), "--backend", "numpy"]
    assert main(["evaluate", *common, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    expected = model.evaluate(X, y)
    assert got == pytest.approx(expected) and set(got) == {"loss", "mse", "mae", "r2"}
    assert main(["evaluate", *common]) == 0
    text = capsys.readouterr().out
    assert text.startswith("R² ") and "MSE" in text and "MAE" in text
    assert main(["predict", *common, "--proba"]) == 1
    assert "--proba is for classifiers" in capsys.readouterr().err


def test_info_and_export_describe_a_regressor(tmp_path, capsys):
    path, _ = _csv(tmp_path, np.linspace(0.5, 2.5, 40))
    model_path = tmp_path / "m.npz"
    _train_json(capsys, "--data", str(path), "--epochs", "1", "--out", str(model_path))
    assert main(["info", "--model", str(model_path)]) == 0
    assert "regression targets: 1" in capsys.readouterr().out
    pytest.importorskip("onnx")
    assert main(["export", "--model", str(model_path), "--onnx",
                 str(tmp_path / "m.onnx")]) == 0  # fmt: skip
    assert "output 'predictions'" in capsys.readouterr().out
