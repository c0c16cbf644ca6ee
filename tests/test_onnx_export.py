"""ONNX export: onnxruntime's probabilities and labels against fastnn's, for every
activation, both dtypes, MLPClassifier (multiclass, binary) and the CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import fastnn
from fastnn.onnx_export import OPSET

onnx = pytest.importorskip("onnx")  # the onnx extra (part of the test extra)
ort = pytest.importorskip("onnxruntime")

ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh", "gelu", "identity")


def _run(onnx_model, X):
    session = ort.InferenceSession(
        onnx_model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    label, proba = session.run(["label", "probabilities"], {"input": X})
    return label, proba


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    y = np.arange(200) % 4
    X = rng.normal(size=(4, 12))[y] * 2 + rng.normal(size=(200, 12))
    return X, y


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_round_trip_matches_fastnn(activation, dtype, data, tmp_path):
    X, y = data
    model = fastnn.MLP((12, 16, 8, 4), activation=activation, dtype=dtype)
    model.fit(X, y, epochs=3, seed=0, verbose=0)
    Xd = X.astype(dtype)
    path = tmp_path / "m.onnx"
    proto = model.to_onnx(path)
    assert proto.opset_import[0].version == OPSET
    label, proba = _run(onnx.load(path), Xd)
    assert proba.dtype == dtype
    np.testing.assert_allclose(proba, model.predict_proba(Xd), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(label, model.predict(Xd))


def test_float64_leaky_relu_keeps_its_slope_in_float64(data):
    # ONNX's LeakyRelu takes alpha as a float32 attribute: 0.3 became
    # 0.30000001192..., probabilities off by ~1e-8 in a float64 graph
    X, y = data
    model = fastnn.Sequential(
        [fastnn.Linear(12, 16), fastnn.LeakyReLU(0.3), fastnn.Linear(16, 4)],
        dtype=np.float64,
    )
    model.fit(X, y, epochs=3, seed=0, verbose=0)
    label, proba = _run(model.to_onnx(), X)
    np.testing.assert_allclose(proba, model.predict_proba(X), rtol=0, atol=1e-13)
    np.testing.assert_array_equal(label, model.predict(X))


def test_string_labels_lone_activations_and_no_bias(data):
    X, y = data
    names = np.array(["ant", "bee", "cat", "dog"])[y]
    model = fastnn.Sequential(
        [
            fastnn.Linear(12, 10),
            fastnn.Tanh(),
            fastnn.ReLU(),
            fastnn.Linear(10, 4, bias=False),
        ]
    )
    model.fit(X, names, epochs=2, seed=0, verbose=0)
    Xf = X.astype(np.float32)
    label, proba = _run(model.to_onnx(), Xf)
    np.testing.assert_allclose(proba, model.predict_proba(Xf), atol=1e-5)
    assert label.tolist() == model.predict(Xf).tolist()


def test_bool_labels_stay_bool(data):
    # bool classes_ were exported as an int64 table: labels 0 / 1, not False / True
    X, y = data
    model = fastnn.Sequential([fastnn.Linear(12, 2)])
    model.fit(X, y % 2 == 1, epochs=2, seed=0, verbose=0)
    label, _ = _run(model.to_onnx(), X.astype(np.float32))
    assert label.dtype == np.bool_
    np.testing.assert_array_equal(label, model.predict(X.astype(np.float32)))


@pytest.mark.parametrize("activation", ["relu", "logistic", "tanh", "identity"])
@pytest.mark.parametrize("n_classes", [2, 4])
def test_mlpclassifier_round_trip(activation, n_classes, data):
    X, y = data
    y = y % n_classes
    Xf = X.astype(np.float32)
    clf = fastnn.MLPClassifier(
        hidden_layer_sizes=(16,), activation=activation, max_iter=5, random_state=0
    )
    with pytest.warns(Warning):  # ConvergenceWarning: 5 epochs
        clf.fit(Xf, y)
    label, proba = _run(clf.to_onnx(), Xf)
    np.testing.assert_allclose(proba, clf.predict_proba(Xf), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(label, clf.predict(Xf))


@pytest.mark.parametrize("n_labels", [2, 3])
def test_multilabel_mlpclassifier_round_trip(n_labels, data):
    # two labels used to be taken for a binary problem (two classes_): the graph
    # gave (N, 4) probabilities and one label per row instead of (N, 2) indicators
    X, y = data
    Y = np.stack([(y >> k) & 1 for k in range(n_labels)], axis=1)
    Xf = X.astype(np.float32)
    clf = fastnn.MLPClassifier(hidden_layer_sizes=(16,), max_iter=5, random_state=0)
    with pytest.warns(Warning):  # ConvergenceWarning: 5 epochs
        clf.fit(Xf, Y)
    label, proba = _run(clf.to_onnx(), Xf)
    assert proba.shape == label.shape == (Xf.shape[0], n_labels)
    np.testing.assert_allclose(proba, clf.predict_proba(Xf), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(label, clf.predict(Xf))


def test_unfitted_models_are_refused():
    with pytest.raises(fastnn.NotFittedError):
        fastnn.MLP((3, 2)).to_onnx()
    with pytest.raises(ValueError, match="not fitted"):
        fastnn.MLPClassifier().to_onnx()


def test_cli_export(data, tmp_path):
    X, y = data
    model = fastnn.MLP((12, 8, 4), activation="gelu")
    model.fit(X, y, epochs=2, seed=0, verbose=0)
    model.save(tmp_path / "m.npz")
    out = subprocess.run(
        [sys.executable, "-m", "fastnn.cli", "export", "--model",
         str(tmp_path / "m.npz"), "--onnx", str(tmp_path / "m.onnx")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "m.onnx" in out.stdout and f"opset {OPSET}" in out.stdout
    Xf = X.astype(np.float32)
    _, proba = _run(onnx.load(tmp_path / "m.onnx"), Xf)
    np.testing.assert_allclose(proba, model.predict_proba(Xf), atol=1e-5)


@pytest.mark.parametrize("activation", ["relu", "logistic", "tanh", "identity"])
@pytest.mark.parametrize("n_outputs", [1, 3])
def test_mlpregressor_round_trip(activation, n_outputs, data):
    X, _ = data
    rng = np.random.default_rng(4)
    Xf = X.astype(np.float32)
    y = Xf[:, :n_outputs] @ rng.normal(size=(n_outputs, n_outputs))
    reg = fastnn.MLPRegressor(
        hidden_layer_sizes=(16, 8), activation=activation, max_iter=5, random_state=0
    )
    with pytest.warns(Warning):  # ConvergenceWarning: 5 epochs
        reg.fit(Xf, y.ravel() if n_outputs == 1 else y)
    session = ort.InferenceSession(
        reg.to_onnx().SerializeToString(), providers=["CPUExecutionProvider"]
    )
    (pred,) = session.run(["predictions"], {"input": Xf})
    expected = reg.predict(Xf)
    assert pred.shape == expected.shape  # raveled for one output, as predict
    np.testing.assert_allclose(pred, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="MLPRegressor is not fitted"):
        fastnn.MLPRegressor().to_onnx()
