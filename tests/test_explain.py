"""fastnn.explain: input gradients, gradient x input, integrated gradients, feature
reliance, feature tables, saliency maps, and the spurious-digits example."""

from __future__ import annotations

import csv
import functools
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from plotting import assert_titled_and_labelled, capture_figures

import fastnn
from fastnn import explain
from fastnn.layers import GELU, Linear, Sigmoid, Tanh

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ helpers
def _logsoftmax(z):
    m = z.max(axis=1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


def _objective(model, X, kind, idx, smoothing=0.0):
    """f of each row in float64 NumPy, from the model's logits."""
    z = model.decision_function(X).astype(np.float64)
    rows = np.arange(X.shape[0])
    if kind == "logit":
        return z[rows, idx]
    logp = _logsoftmax(z)
    if kind == "probability":
        return np.exp(logp[rows, idx])
    t = np.full_like(z, smoothing / z.shape[1])
    t[rows, idx] += 1 - smoothing
    return -(t * logp).sum(axis=1)


def _central_differences(model, X, kind, idx, smoothing=0.0, h=1e-5):
    fd = np.empty_like(X)
    for j in range(X.shape[1]):
        e = np.zeros_like(X)
        e[:, j] = h
        up = _objective(model, X + e, kind, idx, smoothing)
        down = _objective(model, X - e, kind, idx, smoothing)
        fd[:, j] = (up - down) / (2 * h)
    return fd


def _small_model(backend_name, layers, dtype=np.float64, smoothing=0.0):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(48, 5))
    y = np.arange(48) % 3
    model = fastnn.Sequential(
        layers,
        dtype=dtype,
        backend=backend_name,
        loss=fastnn.SoftmaxCrossEntropy(label_smoothing=smoothing),
    )
    model.fit(X, y, epochs=3, batch_size=8, seed=0, verbose=0)
    return model, X, y


def _architectures():
    return {
        "mlp-tanh": lambda: [Linear(5, 8), Tanh(), Linear(8, 6), Tanh(), Linear(6, 3)],
        # lone activations (one first, one after a fused pair): the unfused path
        "lone-acts": lambda: [Tanh(), Linear(5, 7), GELU(), Sigmoid(), Linear(7, 3)],
    }


@functools.cache
def _digits_model(backend_name: str, activation: str, dtype: str = "float64"):
    X_tr, X_te, y_tr, y_te = fastnn.load_digits_split()
    model = fastnn.MLP(
        (64, 32, 10), activation=activation, dtype=np.dtype(dtype), backend=backend_name
    )
    model.fit(X_tr, y_tr, epochs=15, seed=0, verbose=0)
    return model, X_te.astype(dtype)


# ------------------------------------------------------------ input gradients
@pytest.mark.parametrize("arch", list(_architectures()))
@pytest.mark.parametrize(
    "target, output, with_y",
    [
        (None, "logit", True),  # loss against y
        (None, "logit", False),  # loss against the predicted labels
        (2, "logit", False),  # one class's logit
        ("predicted", "probability", False),
        ("rows", "logit", False),  # one label per row
    ],
    ids=["loss-y", "loss-pred", "logit", "proba-pred", "per-row"],
)
def test_input_gradients_match_central_differences(
    backend, arch, target, output, with_y
):
    model, X, y = _small_model(backend.name, _architectures()[arch](), smoothing=0.1)
    pred = model.decision_function(X).argmax(axis=1)
    if target == "rows":
        target = (np.arange(X.shape[0]) * 7) % 3
    g = explain.input_gradients(
        model, X, target, y=y if with_y else None, output=output, batch_size=20
    )
    assert g.shape == X.shape and g.dtype == np.float64
    if target is None:
        kind, idx = "loss", (y if with_y else pred)
    elif isinstance(target, str):
        kind, idx = output, pred
    else:
        kind, idx = output, np.broadcast_to(target, (X.shape[0],))
    fd = _central_differences(model, X, kind, idx, smoothing=0.1)
    scale = np.abs(fd).max()
    assert scale > 1e-3
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8 * scale)


def test_float32_gradients_follow_float64(backend):
    m64, X, y = _small_model(backend.name, _architectures()["mlp-tanh"]())
    m32 = fastnn.Sequential(_architectures()["mlp-tanh"](), backend=backend.name)
    for p32, p64 in zip(m32.parameters(), m64.parameters(), strict=True):
        p32[...] = p64
    m32.classes_ = m64.classes_
    g64 = explain.input_gradients(m64, X, y=y)
    g32 = explain.input_gradients(m32, X, y=y)
    assert g32.dtype == np.float32
    np.testing.assert_allclose(g32, g64, rtol=1e-3, atol=1e-5 * np.abs(g64).max())


def test_linear_model_gradients_are_exact():
    """A single Linear layer: d logit_c / dx = W[:, c], and IG is exact."""
    rng = np.random.default_rng(0)
    model = fastnn.Sequential([Linear(4, 3)], dtype=np.float64, backend="numpy")
    model.fit(rng.normal(size=(30, 4)), np.arange(30) % 3, epochs=2, verbose=0)
    W = model.linears[0].weight
    X = rng.normal(size=(5, 4))
    g = explain.input_gradients(model, X, 1)
    np.testing.assert_allclose(g, np.tile(W[:, 1], (5, 1)), rtol=1e-12)
    np.testing.assert_allclose(
        explain.gradient_x_input(model, X, 1), X * W[:, 1], rtol=1e-12
    )
    ig, delta = explain.integrated_gradients(
        model, X, 1, n_steps=1, baseline=X[0], return_delta=True
    )
    np.testing.assert_allclose(ig, (X - X[0]) * W[:, 1], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(delta, 0, atol=1e-12)


def test_gradient_x_input_is_gradient_times_input(backend):
    model, X, y = _small_model(backend.name, _architectures()["mlp-tanh"]())
    np.testing.assert_allclose(
        explain.gradient_x_input(model, X, "predicted"),
        explain.input_gradients(model, X, "predicted") * X,
        rtol=1e-12,
    )


def test_explaining_leaves_training_untouched(backend):
    """Own buffers: parameters, gradients, optimizer state and the continued fit are
    bitwise those of a twin that was never explained."""
    a, X, y = _small_model(backend.name, _architectures()["mlp-tanh"]())
    b, _, _ = _small_model(backend.name, _architectures()["mlp-tanh"]())
    grads = a._grads.copy()
    state = {k: v.copy() for k, v in a.optimizer.state.items()}
    explain.input_gradients(a, X, y=y)
    explain.integrated_gradients(a, X, n_steps=8)
    explain.feature_reliance(a, X, y, n_repeats=2, random_state=0)
    a.confidence(X)
    np.testing.assert_array_equal(a._grads, grads)
    for k, v in state.items():
        np.testing.assert_array_equal(a.optimizer.state[k], v)
    a.fit(X, y, epochs=2, batch_size=8, seed=1, verbose=0)
    b.fit(X, y, epochs=2, batch_size=8, seed=1, verbose=0)
    np.testing.assert_array_equal(a.get_flat_parameters(), b.get_flat_parameters())


def test_inputs_are_not_modified():
    model, X, y = _small_model("numpy", _architectures()["mlp-tanh"]())
    X.flags.writeable = False
    explain.integrated_gradients(model, X, baseline=np.ones(5), n_steps=4)
    explain.input_gradients(model, X, y=y)
    explain.feature_reliance(model, X, y, n_repeats=1)


# ----------------------------------------------------- integrated gradients
@pytest.mark.parametrize("method", ["midpoint", "trapezoid"])
def test_integrated_gradients_completeness_smooth(backend, method):
    """sum_j IG_j = f(x) - f(baseline) within 1% per row at 64 steps (tanh net)."""
    model, X = _digits_model(backend.name, "tanh")
    X = X[:120]
    ig, delta = explain.integrated_gradients(
        model, X, n_steps=64, method=method, batch_size=1000, return_delta=True
    )
    pred = model.decision_function(X).argmax(axis=1)
    gap = _objective(model, X, "logit", pred) - _objective(
        model, np.zeros_like(X), "logit", pred
    )
    assert np.abs(gap).min() > 0.1
    np.testing.assert_allclose(ig.sum(axis=1), gap, rtol=0.01)
    np.testing.assert_allclose(delta, ig.sum(axis=1) - gap, atol=1e-9)


@pytest.mark.parametrize("target, output", [(None, "logit"), (4, "probability")])
def test_integrated_gradients_completeness_other_targets(target, output):
    model, X = _digits_model("numba", "tanh")
    X = X[:60]
    baseline = X.mean(axis=0)
    ig, delta = explain.integrated_gradients(
        model, X, target, output=output, baseline=baseline, return_delta=True
    )
    idx = model.decision_function(X).argmax(axis=1) if target is None else 4
    kind = "loss" if target is None else output
    idx = np.broadcast_to(idx, (X.shape[0],))
    gap = _objective(model, X, kind, idx) - _objective(
        model, np.tile(baseline, (X.shape[0], 1)), kind, idx
    )
    np.testing.assert_allclose(delta, ig.sum(axis=1) - gap, atol=1e-9)
    keep = np.abs(gap) > 1e-3  # rows where a 1% gap is meaningful
    np.testing.assert_allclose(ig.sum(axis=1)[keep], gap[keep], rtol=0.01)


def test_integrated_gradients_completeness_relu():
    """ReLU nets have kinks along the path (the error decays as 1/n_steps): at 64
    steps the attributions still sum to f(x) - f(0) within 1% overall and for at
    least 97% of the rows."""
    model, X = _digits_model("cython", "relu")
    _, delta = explain.integrated_gradients(model, X, n_steps=64, return_delta=True)
    pred = model.decision_function(X).argmax(axis=1)
    gap = _objective(model, X, "logit", pred) - _objective(
        model, np.zeros_like(X), "logit", pred
    )
    assert np.abs(delta).sum() <= 0.01 * np.abs(gap).sum()
    assert np.mean(np.abs(delta) <= 0.01 * np.abs(gap)) >= 0.97


def test_integrated_gradients_batching_and_dtype(backend):
    model, X = _digits_model(backend.name, "tanh", "float32")
    X = X[:13]
    a = explain.integrated_gradients(model, X, n_steps=10, batch_size=7)
    b = explain.integrated_gradients(model, X, n_steps=10, batch_size=10_000)
    assert a.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    ref, _ = _digits_model(backend.name, "tanh", "float64")
    c = explain.integrated_gradients(ref, X.astype(np.float64), n_steps=10)
    np.testing.assert_allclose(a, c, rtol=2e-3, atol=2e-4 * np.abs(c).max())


# ---------------------------------------------------------------- arguments
def test_gradient_argument_errors():
    model, X, y = _small_model("numpy", _architectures()["mlp-tanh"]())
    with pytest.raises(ValueError, match="pass y or target, not both"):
        explain.input_gradients(model, X, 1, y=y)
    with pytest.raises(ValueError, match="previously unseen labels"):
        explain.input_gradients(model, X, 7)
    with pytest.raises(ValueError, match="one label per row"):
        explain.input_gradients(model, X, [0, 1])
    with pytest.raises(ValueError, match="output must be one of"):
        explain.input_gradients(model, X, 1, output="proba")
    with pytest.raises(ValueError, match="X has 4 features"):
        explain.input_gradients(model, X[:, :4])
    with pytest.raises(ValueError, match="contains NaN"):
        explain.input_gradients(model, np.full((2, 5), np.nan))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        explain.input_gradients(model, X, batch_size=0)
    with pytest.raises(ValueError, match="baseline must be"):
        explain.integrated_gradients(model, X, baseline=np.zeros(3))
    with pytest.raises(ValueError, match="NaN or infinity"):
        explain.integrated_gradients(model, X, baseline=np.inf)
    with pytest.raises(ValueError, match="method must be"):
        explain.integrated_gradients(model, X, method="simpson")
    with pytest.raises(ValueError, match="n_steps must be >= 1"):
        explain.integrated_gradients(model, X, n_steps=0)
    with pytest.raises(fastnn.NotFittedError):
        explain.input_gradients(fastnn.MLP((5, 3)), X)
    with pytest.raises(TypeError, match="needs a fitted fastnn"):
        explain.input_gradients(object(), X)
    with pytest.raises(TypeError, match="TemperatureScaled.model"):
        explain.input_gradients(fastnn.calibration.TemperatureScaled(model, 2.0), X)


def test_string_class_labels_as_targets():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 4))
    y = np.array(["cat", "dog", "eel"])[np.arange(30) % 3]
    model = fastnn.MLP((4, 6, 3), dtype=np.float64, backend="numpy")
    model.fit(X, y, epochs=2, verbose=0)
    np.testing.assert_array_equal(
        explain.input_gradients(model, X, "dog"),
        explain.input_gradients(model, X, np.full(30, "dog")),
    )
    assert explain.input_gradients(model, X, y=y).shape == X.shape


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_mlpclassifier_is_accepted():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 4))
    for n_classes in (3, 2):  # softmax output, and one logistic unit
        y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 1) * (n_classes - 2)
        # a model that has learned the rule (accuracy ~0.9), so that the features
        # it uses rank first
        clf = fastnn.MLPClassifier(
            hidden_layer_sizes=(6,),
            activation="tanh",
            max_iter=50,
            learning_rate_init=0.05,
            random_state=0,
        )
        clf.fit(X.astype(np.float64), y)
        from fastnn._insight import as_sequential

        seq = as_sequential(clf)
        np.testing.assert_allclose(
            seq.predict_proba(X), clf.predict_proba(X), rtol=1e-10, atol=1e-12
        )
        g = explain.input_gradients(clf, X, y=y)
        pred = seq.decision_function(X).argmax(axis=1)
        fd = _central_differences(seq, X, "logit", pred)
        np.testing.assert_allclose(
            explain.input_gradients(clf, X, "predicted"), fd, rtol=1e-6, atol=1e-8
        )
        assert g.shape == X.shape
        rel = explain.feature_reliance(clf, X, y, n_repeats=2, random_state=0)
        assert rel.ranking[0] in (0, 1)


def test_binary_mlpclassifier_explains_both_classes():
    # its one logistic unit z used to become the logits (0, z): the logit of the
    # first class was the constant 0, so integrated gradients of the predicted
    # class (the default) were all zero on every row predicted as that class
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 4))
    y = (X[:, 0] > 0).astype(int)
    clf = fastnn.MLPClassifier(hidden_layer_sizes=(8,), max_iter=50, random_state=0)
    with pytest.warns(Warning):  # ConvergenceWarning
        clf.fit(X, y)
    neg = clf.predict(X) == 0
    assert 0 < neg.sum() < len(X)
    g0 = explain.input_gradients(clf, X, 0)
    g1 = explain.input_gradients(clf, X, 1)
    assert np.abs(g0[neg]).min(axis=1).max() > 0
    np.testing.assert_allclose(g0, -g1, rtol=1e-12, atol=1e-15)
    ig = explain.integrated_gradients(clf, X, n_steps=16)
    assert (np.abs(ig[neg]).sum(axis=1) > 0).all()


# ----------------------------------------------------------- feature reliance
def test_feature_reliance_ranks_the_feature_in_use(backend):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 6))
    y = (X[:, 2] > 0).astype(int)
    model = fastnn.MLP((6, 16, 2), backend=backend.name)
    model.fit(X, y, epochs=30, seed=0, verbose=0)
    rel = explain.feature_reliance(model, X, y, n_repeats=4, random_state=0)
    assert rel.importances.shape == (6, 4)
    assert rel.baseline_score == pytest.approx(model.score(X, y))
    assert rel.ranking[0] == 2 and rel.rank_of(2) == 1 and rel.rank_of("x2") == 1
    assert rel.importances_mean[2] > 0.3
    assert np.all(rel.importances_std >= 0)
    np.testing.assert_allclose(rel.importances_std, rel.importances.std(axis=1))
    again = explain.feature_reliance(model, X, y, n_repeats=4, random_state=0)
    np.testing.assert_array_equal(again.importances, rel.importances)
    nll = explain.feature_reliance(
        model, X, y, n_repeats=2, scoring="neg_log_loss", random_state=0
    )
    assert nll.ranking[0] == 2 and nll.baseline_score < 0
    assert nll.baseline_score == pytest.approx(-model.evaluate(X, y)["loss"], rel=1e-4)


def test_feature_reliance_of_an_unused_feature_is_zero():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3))
    y = np.arange(50) % 2
    model = fastnn.Sequential([Linear(3, 2)], backend="numpy", dtype=np.float64)
    model.fit(X, y, epochs=2, verbose=0)
    model.linears[0].weight[1] = 0.0  # feature 1 cannot matter
    rel = explain.feature_reliance(model, X, y, n_repeats=3, random_state=0)
    np.testing.assert_array_equal(rel.importances[1], 0.0)


def test_feature_reliance_is_sklearns_permutation_importance():
    """The same permutations and scores as scikit-learn's permutation_importance
    on the model's predictions (accuracy), and reproducible by seed."""
    from sklearn.inspection import permutation_importance

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 9))
    y = (X[:, 4] > 0).astype(int)
    model = fastnn.MLP((9, 8, 2), backend="numpy", dtype=np.float64)
    model.fit(X, y, epochs=5, verbose=0, seed=0)
    ours = explain.feature_reliance(model, X, y, n_repeats=3, random_state=5)
    again = explain.feature_reliance(model, X, y, n_repeats=3, random_state=5)
    np.testing.assert_array_equal(ours.importances, again.importances)

    def accuracy(_estimator, A, labels):
        return float(np.mean(model.predict(A) == labels))

    ref = permutation_importance(
        model, X, y, scoring=accuracy, n_repeats=3, random_state=5
    )
    np.testing.assert_allclose(ours.importances, ref.importances, atol=1e-12)
    assert ours.ranking[0] == 4


def test_feature_reliance_errors():
    model, X, y = _small_model("numpy", _architectures()["mlp-tanh"]())
    with pytest.raises(ValueError, match="scoring must be"):
        explain.feature_reliance(model, X, y, scoring="f1")
    with pytest.raises(ValueError, match="n_repeats must be >= 1"):
        explain.feature_reliance(model, X, y, n_repeats=0)
    with pytest.raises(ValueError, match="feature_names has 2 entries"):
        explain.feature_reliance(model, X, y, feature_names=["a", "b"])
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        explain.feature_reliance(model, X, y[:-1])
    # rank_of said "tuple.index(x): x not in tuple" / "index 0 is out of bounds
    # for axis 0 with size 0"
    rel = explain.feature_reliance(model, X, y, n_repeats=1, random_state=0)
    with pytest.raises(ValueError, match="no feature named 'z'.*'x0'"):
        rel.rank_of("z")
    with pytest.raises(IndexError, match="feature index 9 out of range for 5"):
        rel.rank_of(9)
    assert rel.rank_of(-1) == rel.rank_of(4)


# ------------------------------------------------------------------ reports
def test_feature_table_ranks_and_writes_csv(tmp_path):
    A = np.array([[0.1, -3.0, 0.5], [0.3, 1.0, -0.5]])
    rows = explain.feature_table(A, feature_names=["a", "b", "c"])
    assert [r["feature"] for r in rows] == ["b", "c", "a"]
    assert rows[0] == {
        "rank": 1,
        "feature": "b",
        "index": 1,
        "mean_abs_attribution": 2.0,
        "mean_attribution": -1.0,
    }
    rel = explain.FeatureReliance(
        np.array([[0.0, 0.0], [0.1, 0.3], [0.5, 0.5]]), 0.9, "accuracy", ("a", "b", "c")
    )
    rows = explain.feature_table(A, feature_names=["a", "b", "c"], reliance=rel, top=2)
    assert len(rows) == 2 and rows[0]["reliance_rank"] == 2
    assert rows[0]["reliance_mean"] == pytest.approx(0.2)
    assert rows[0]["reliance_std"] == pytest.approx(0.1)
    path = explain.write_feature_table(tmp_path / "t.csv", rows)
    with open(path, newline="") as f:
        read = list(csv.DictReader(f))
    assert read[0]["feature"] == "b" and read[1]["rank"] == "2"
    assert list(read[0]) == list(rows[0])
    with pytest.raises(ValueError, match="must be 2-D"):
        explain.feature_table(np.ones(3))


def test_saliency_map_png_has_title_and_labels(tmp_path, monkeypatch):
    figures = capture_figures(monkeypatch, explain)
    rng = np.random.default_rng(0)
    p = explain.saliency_map(
        rng.normal(size=64), tmp_path / "s.png", image_shape=(8, 8), image=np.ones(64)
    )
    q = explain.saliency_map(
        np.abs(rng.normal(size=12)), tmp_path / "m.png", image_shape=(3, 4)
    )
    for path in (p, q):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(figures) == 2
    for fig in figures:
        assert_titled_and_labelled(fig)
        assert any(
            ax.get_label() == "<colorbar>" and ax.get_ylabel() for ax in fig.axes
        )
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp file
    with pytest.raises(ValueError, match="needs 64"):
        explain.saliency_map(np.ones(10), tmp_path / "x.png", image_shape=(8, 8))


def test_saliency_map_title_is_not_repeated(tmp_path, monkeypatch):
    # the CLI's mean map: the figure's title already names the quantity
    figures = capture_figures(monkeypatch, explain)
    for name, title, label in (
        ("m.png", "Mean |gradient| over 10 rows", "mean |gradient|"),
        ("r.png", "Row 0: predicted 3", "gradient"),
    ):
        explain.saliency_map(
            np.ones(64), tmp_path / name, image_shape=(8, 8), title=title, label=label
        )
    titles = [
        [fig._suptitle.get_text()]
        + [ax.get_title() for ax in fig.axes if ax.get_title()]
        for fig in figures
    ]
    assert titles == [
        ["Mean |gradient| over 10 rows", "per pixel"],
        ["Row 0: predicted 3", "gradient"],
    ]


def test_lazy_module_access():
    assert fastnn.explain is explain
    assert fastnn.explain.feature_reliance is explain.feature_reliance


# ----------------------------------------------------------------- example
@pytest.mark.slow
def test_spurious_digits_example(tmp_path):
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "spurious_digits.py"),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout

    def number(pattern):
        match = re.search(pattern, out)
        assert match, (pattern, out)
        return float(match.group(1))

    agree = number(r"agrees with the label:\s+([\d.]+)")
    disagree = number(r"disagrees \(shifted test\):\s+([\d.]+)")
    drop = number(r"accuracy drop:\s+([\d.]+)")
    assert agree >= 0.95 and drop >= 0.1
    assert drop == pytest.approx(agree - disagree, abs=2e-3)
    assert number(r"integrated gradients\|:\s+rank (\d+)") == 1
    assert number(r"gradient x input\|:\s+rank (\d+)") == 1
    assert number(r"feature reliance .*?rank (\d+)") == 1
    assert (tmp_path / "spurious_saliency_mean.png").exists()
    assert wall < 60
