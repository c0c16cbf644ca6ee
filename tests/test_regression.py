"""Regression with fastnn.Sequential / fastnn.MLP: MeanSquaredError through the
engine's fused squared-error path and the one training loop."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

import fastnn
from fastnn import checkpoint, explain
from fastnn.layers import Linear, Tanh

BACKENDS = fastnn.available_backends()
COMPILED = [b for b in BACKENDS if b != "numpy"]


def regression_data(n: int = 60, d: int = 4, k: int = 1, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    Y = np.stack([np.sin(X[:, j % d]) + 0.3 * X[:, (j + 1) % d] for j in range(k)], 1)
    Y += 0.05 * rng.normal(size=Y.shape)
    return X, (Y[:, 0] if k == 1 else Y), rng.uniform(0.5, 2.0, size=n)


def regressor(backend="numpy", k=1, l2=0.0, optimizer=None, **kwargs):
    return fastnn.MLP(
        (4, 7, 5, k),
        activation="tanh",
        loss=fastnn.MeanSquaredError(l2=l2),
        optimizer=optimizer or fastnn.SGD(lr=0.05, momentum=0.9),
        dtype=np.float64,
        backend=backend,
        **kwargs,
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fused", [True, False], ids=["loss_grad", "layer_by_layer"])
def test_gradients_match_finite_differences(backend, fused):
    X, Y, w = regression_data(9, k=2)
    model = regressor(backend, k=2, l2=0.03, compiled_step=fused)
    model.fit(X, Y, epochs=1, batch_size=9, verbose=0, seed=0)
    loss, grads = model.loss_and_gradients(X, Y, sample_weight=w)
    flat = model.get_flat_parameters()
    eps = 1e-6
    for (_, sl, shape), g in zip(model._param_specs, grads, strict=True):
        for i in range(0, int(np.prod(shape)), 3):
            p = flat.copy()
            p[sl.start + i] += eps
            model.set_flat_parameters(p)
            up = model.loss_and_gradients(X, Y, sample_weight=w)[0]
            p[sl.start + i] -= 2 * eps
            model.set_flat_parameters(p)
            down = model.loss_and_gradients(X, Y, sample_weight=w)[0]
            assert abs((up - down) / (2 * eps) - g.ravel()[i]) < 1e-7
        model.set_flat_parameters(flat)
    # the loss itself: (1/n) sum_i w_i 1/2 ||yhat_i - y_i||^2 + (l2/2) sum ||W||^2
    pred = model.predict(X)
    weights = [layer.weight for layer in model.linears]
    expected = np.mean(w * 0.5 * ((pred - Y) ** 2).sum(1)) + 0.015 * sum(
        float((W**2).sum()) for W in weights
    )
    assert abs(loss - expected) < 1e-12


def _numpy_sgd_step(Ws, bs, X, Y, lr, l2):
    """One plain SGD step of a tanh MLP with squared error, by hand."""
    acts = [X]
    for i, (W, b) in enumerate(zip(Ws, bs, strict=True)):
        z = acts[-1] @ W + b
        acts.append(z if i == len(Ws) - 1 else np.tanh(z))
    n = X.shape[0]
    d = (acts[-1] - Y) / n
    new_W, new_b = [None] * len(Ws), [None] * len(Ws)
    for i in range(len(Ws) - 1, -1, -1):
        dW = acts[i].T @ d + l2 * Ws[i]
        new_W[i], new_b[i] = Ws[i] - lr * dW, bs[i] - lr * d.sum(0)
        if i:
            d = (d @ Ws[i].T) * (1 - acts[i] ** 2)
    return new_W, new_b


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k", [1, 3])
def test_one_sgd_step_matches_numpy_by_hand(backend, k):
    X, Y, _ = regression_data(16, k=k)
    model = regressor(backend, k=k, l2=0.01, optimizer=fastnn.SGD(lr=0.1))
    model.initialize(3)
    Ws = [layer.weight.copy() for layer in model.linears]
    bs = [layer.bias.copy() for layer in model.linears]
    model.fit(X, Y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    new_W, new_b = _numpy_sgd_step(Ws, bs, X, Y.reshape(16, k), 0.1, 0.01)
    for layer, W, b in zip(model.linears, new_W, new_b, strict=True):
        np.testing.assert_allclose(layer.weight, W, rtol=0, atol=1e-10)
        np.testing.assert_allclose(layer.bias, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("backend", COMPILED)
def test_compiled_step_gives_the_numpy_backends_weights(backend):
    X, Y, w = regression_data(50, k=2)
    runs = []
    for name in ("numpy", backend):
        model = regressor(name, k=2, l2=1e-3, optimizer=fastnn.Adam(lr=0.01))
        model.fit(X, Y, epochs=3, batch_size=8, seed=1, verbose=0, sample_weight=w)
        runs.append(model.get_flat_parameters())
    np.testing.assert_allclose(runs[1], runs[0], rtol=0, atol=1e-10)


@pytest.mark.parametrize("backend", COMPILED)
def test_weights_do_not_depend_on_the_thread_count(backend):
    X, Y, _ = regression_data(300, k=2)
    runs = []
    for threads in (1, 2):
        model = fastnn.MLP(
            (4, 64, 2),
            loss=fastnn.MeanSquaredError(l2=1e-4),
            backend=backend,
            n_threads=threads,
        )
        model.fit(X, Y, epochs=2, batch_size=128, seed=0, verbose=0)
        runs.append(model.get_flat_parameters().tobytes())
    assert runs[0] == runs[1]


def _crashing_fit(model, X, y, path, crash_at=None, **kwargs):
    original = model._train_step
    calls = [0]

    def step(xb, yb, sw, *l2):
        calls[0] += 1
        if calls[0] == crash_at:
            raise RuntimeError("simulated crash")
        return original(xb, yb, sw, *l2)

    model._train_step = step
    return model.fit(
        X, y, epochs=3, batch_size=7, seed=5, verbose=0, checkpoint=path,
        checkpoint_every=4, resume=True, validation_split=0.2, **kwargs,
    )  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
def test_crash_then_resume_is_bitwise_the_uninterrupted_fit(tmp_path, backend):
    X, y, w = regression_data(40)
    ref = regressor(backend, l2=1e-3)
    ref_hist = _crashing_fit(ref, X, y, tmp_path / "ref.npz", sample_weight=w)
    path = tmp_path / "run.npz"
    with pytest.raises(RuntimeError, match="simulated crash"):
        _crashing_fit(regressor(backend, l2=1e-3), X, y, path, 11, sample_weight=w)
    meta, _ = checkpoint.read(path)
    assert meta["train_state"]["step"] == 8 and meta["target_ndim"] == 1
    resumed = regressor(backend, l2=1e-3)
    hist = _crashing_fit(resumed, X, y, path, sample_weight=w)
    assert (
        resumed.get_flat_parameters().tobytes() == ref.get_flat_parameters().tobytes()
    )
    assert hist.history["loss"] == ref_hist.history["loss"]
    assert hist.history["val_mse"] == ref_hist.history["val_mse"]
    assert "accuracy" not in hist.history
    loaded = fastnn.load(path, backend=backend)
    assert isinstance(loaded.loss, fastnn.MeanSquaredError) and loaded.loss.l2 == 1e-3
    assert loaded.predict(X).tobytes() == ref.predict(X).tobytes()


def test_save_load_keeps_the_target_shape_and_loss(tmp_path):
    X, Y, _ = regression_data(30, k=2)
    for y in (Y, Y[:, :1]):  # (n, 2) and (n, 1) targets: predict answers alike
        model = regressor(k=y.shape[1])
        model.fit(X, y, epochs=2, verbose=0, seed=0)
        model.save(tmp_path / "m.npz")
        loaded = fastnn.load(tmp_path / "m.npz", backend="numpy")
        assert loaded.predict(X).shape == y.shape
        assert loaded.predict(X).tobytes() == model.predict(X).tobytes()
        assert loaded.get_config()["loss"] == {"type": "mean_squared_error", "l2": 0.0}
    model = regressor()
    model.fit(X, Y[:, 0], epochs=1, verbose=0, seed=0)
    assert model.predict(X).shape == (30,)


def test_evaluate_gives_scikit_learns_metrics():
    X, Y, w = regression_data(50, k=2)
    model = regressor(k=2, l2=0.01)
    model.fit(X, Y, epochs=5, verbose=0, seed=0)
    pred = model.predict(X)
    for sw in (None, w):
        got = model.evaluate(X, Y, sample_weight=sw)
        assert got["mse"] == pytest.approx(
            mean_squared_error(Y, pred, sample_weight=sw)
        )
        assert got["mae"] == pytest.approx(
            mean_absolute_error(Y, pred, sample_weight=sw)
        )
        assert got["r2"] == pytest.approx(r2_score(Y, pred, sample_weight=sw))
        rows = np.ones(50) if sw is None else sw
        penalty = 0.005 * sum(float((L.weight**2).sum()) for L in model.linears)
        loss = np.mean(rows * 0.5 * ((pred - Y) ** 2).sum(1)) + penalty
        assert got["loss"] == pytest.approx(loss, rel=1e-12)
    assert model.score(X, Y) == pytest.approx(r2_score(Y, pred))


def test_bad_targets_and_classifier_methods_give_clear_errors():
    X, Y, _ = regression_data(20, k=2)
    model = regressor(k=2)
    with pytest.raises(ValueError, match=r"\(n_samples,\) has 1 target.*2 outputs"):
        model.fit(X, Y[:, 0], verbose=0)
    with pytest.raises(ValueError, match=r"\(n_samples, 3\) has 3 target"):
        model.fit(X, np.c_[Y, Y[:, 0]], verbose=0)
    with pytest.raises(ValueError, match="NaN or infinity"):
        model.fit(X, np.where(np.eye(20, 2) > 0, np.nan, Y), verbose=0)
    with pytest.raises(ValueError, match="must be numeric"):
        model.fit(X, np.array([["a", "b"]] * 20), verbose=0)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        model.fit(X, Y[:5], verbose=0)
    with pytest.raises(ValueError, match="shape"):
        model.fit(X, Y[:, :, None], verbose=0)
    with pytest.raises(fastnn.NotFittedError):
        model.predict(X)
    before = Y.copy()
    model.fit(X, Y, epochs=1, verbose=0)
    assert np.array_equal(Y, before)  # inputs never modified
    with pytest.raises(AttributeError, match="predict_proba is for classifiers"):
        model.predict_proba(X)
    with pytest.raises(AttributeError, match="confidence is for classifiers"):
        model.confidence(X)
    with pytest.raises(TypeError, match="works on classifiers"):
        explain.input_gradients(model, X)
    with pytest.raises(ValueError, match="classes= is for classifiers"):
        model.fit(X, Y, classes=[0, 1], verbose=0)
    with pytest.raises(ValueError, match="unknown loss"):
        fastnn.MLP((4, 1), loss="hinge")
    assert isinstance(fastnn.MLP((4, 1), loss="mse").loss, fastnn.MeanSquaredError)
    with pytest.raises(ValueError, match="l2"):
        fastnn.MeanSquaredError(l2=-1.0)


def test_validation_split_is_random_and_reports_mse():
    X, y, _ = regression_data(50)
    model = regressor()
    hist = model.fit(X, y, epochs=2, validation_split=0.2, verbose=0, seed=0)
    assert set(hist.history) >= {"loss", "val_loss", "val_mse"}
    assert "accuracy" not in hist.history and "val_accuracy" not in hist.history


def test_callbacks_see_the_regression_logs():
    X, y, _ = regression_data(50)
    seen = []
    model = regressor()
    model.fit(
        X, y, epochs=30, verbose=0, seed=0, validation_split=0.2,
        callbacks=[
            lambda epoch, logs: seen.append(logs["val_mse"]),
            fastnn.EarlyStopping("val_loss", patience=0),
        ],
    )  # fmt: skip
    assert 1 <= len(seen) < 30


@pytest.mark.parametrize("backend", COMPILED)
def test_sequential_regressor_with_a_lone_activation_takes_the_layer_path(backend):
    X, y, _ = regression_data(40)
    runs = []
    for name in ("numpy", backend):
        model = fastnn.Sequential(
            [Linear(4, 6), Tanh(), Tanh(), Linear(6, 1)],
            loss=fastnn.MeanSquaredError(),
            optimizer=fastnn.Adam(lr=0.01),
            dtype=np.float64,
            backend=name,
        )
        assert not model._uses_fused_kernels()
        hist = model.fit(X, y, epochs=20, verbose=0, seed=0)
        assert hist.history["loss"][-1] < 0.5 * hist.history["loss"][0]
        runs.append(model.get_flat_parameters())
    np.testing.assert_allclose(runs[1], runs[0], rtol=0, atol=1e-10)


def test_onnx_export_of_a_regressor_predicts_as_the_model(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    X, Y, _ = regression_data(30, k=2)
    for y in (Y, Y[:, 0]):
        k = 1 if y.ndim == 1 else 2
        model = regressor(k=k)
        model.fit(X, y, epochs=2, verbose=0, seed=0)
        model.to_onnx(tmp_path / "m.onnx")
        sess = ort.InferenceSession(str(tmp_path / "m.onnx"))
        (out,) = sess.run(["predictions"], {"input": X})
        np.testing.assert_allclose(out, model.predict(X), rtol=1e-12, atol=1e-12)


def test_classifier_checkpoints_keep_their_format(tmp_path):
    """Files written before regression existed (no loss type, no target_ndim) are
    classifiers: the classifier format is unchanged and loads as before."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 4)), np.arange(30) % 3
    model = fastnn.MLP((4, 5, 3), dtype=np.float64, backend="numpy")
    model.fit(X, y, epochs=1, verbose=0, seed=0)
    model.save(tmp_path / "c.npz")
    meta, arrays = checkpoint.read(tmp_path / "c.npz")
    assert "type" not in meta["model"]["config"]["loss"] and "target_ndim" not in meta
    loaded = fastnn.load(tmp_path / "c.npz", backend="numpy")
    assert isinstance(loaded.loss, fastnn.SoftmaxCrossEntropy)
    assert np.array_equal(loaded.classes_, [0, 1, 2]) and not loaded.is_regressor
    assert np.array_equal(loaded.predict_proba(X), model.predict_proba(X))
