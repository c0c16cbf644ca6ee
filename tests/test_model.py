"""Model API: layers, losses, optimizers, schedules, fit / predict / evaluate."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastnn
from fastnn.callbacks import Callback, EarlyStopping, History
from fastnn.layers import GELU, Identity, LeakyReLU, Linear, ReLU, Sigmoid, Tanh
from fastnn.losses import SoftmaxCrossEntropy
from fastnn.model import MLP, NotFittedError, Sequential
from fastnn.optim import (
    SGD,
    Adam,
    AdamW,
    ConstantLR,
    CosineAnnealingLR,
    ReduceLROnPlateau,
    StepLR,
)

BACKENDS = fastnn.available_backends()


def blobs(n=60, d=5, k=3, seed=0):
    """Separable Gaussian blobs: easy to learn, cheap to train."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=3.0, size=(k, d))
    y = np.arange(n) % k
    X = centers[y] + rng.normal(size=(n, d))
    return (X - X.mean(0)) / X.std(0), y


# ------------------------------------------------------------- backend parity
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "make_opt",
    [
        lambda: SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
        lambda: Adam(lr=0.01, weight_decay=1e-3),
        lambda: AdamW(lr=0.01),
    ],
    ids=["sgd", "adam", "adamw"],
)
def test_backend_trains_to_numpy_weights(backend, make_opt):
    X, y = blobs(40, 6, 3)
    weights = {}
    for name in ("numpy", backend):
        model = Sequential(
            [Linear(6, 16), Tanh(), Linear(16, 12), GELU(), Linear(12, 3)],
            loss=SoftmaxCrossEntropy(label_smoothing=0.1, l2=1e-3),
            optimizer=make_opt(),
            dtype=np.float64,
            backend=name,
        )
        model.initialize(7)
        start = model.get_flat_parameters()
        model.fit(X, y, epochs=1, batch_size=8, seed=3, verbose=0)  # 5 steps
        assert model.optimizer.steps == 5
        weights[name] = model.get_flat_parameters()
        assert not np.allclose(weights[name], start)  # it did train
    np.testing.assert_allclose(weights[backend], weights["numpy"], rtol=0, atol=1e-8)


# ---------------------------------------------------------- gradient checks
@pytest.mark.parametrize("backend", BACKENDS)
def test_whole_network_gradient_matches_finite_differences(backend):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(7, 4))
    y = np.array([0, 1, 2, 1, 0, 2, 2])
    sw = rng.uniform(0.5, 2.0, size=7)
    model = Sequential(
        [
            Linear(4, 5),
            Tanh(),
            Linear(5, 6),
            GELU(),
            Linear(6, 4, bias=False),
            Sigmoid(),
            Linear(4, 3),
        ],
        loss=SoftmaxCrossEntropy(class_weight={1: 2.0}, label_smoothing=0.2, l2=0.3),
        dtype=np.float64,
        backend=backend,
    )
    model.initialize(0)
    model.classes_ = np.arange(3)
    loss, grads = model.loss_and_gradients(X, y, sample_weight=sw)
    eps = 1e-6
    for (name, p), g in zip(model.named_parameters(), grads, strict=True):
        numeric = np.empty_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + eps
            up, _ = model.loss_and_gradients(X, y, sample_weight=sw)
            p[i] = old - eps
            down, _ = model.loss_and_gradients(X, y, sample_weight=sw)
            p[i] = old
            numeric[i] = (up - down) / (2 * eps)
        np.testing.assert_allclose(g, numeric, rtol=1e-5, atol=1e-7, err_msg=name)
    assert np.isfinite(loss) and loss > 0


def test_l2_term_covers_weights_not_biases():
    X, y = blobs(12, 4, 3)
    model = MLP((4, 5, 3), dtype=np.float64, backend="numpy")
    model.fit(X, y, epochs=1, seed=0, verbose=0)
    plain, g0 = model.loss_and_gradients(X, y)
    model.loss = SoftmaxCrossEntropy(l2=0.5)
    reg, g1 = model.loss_and_gradients(X, y)
    sq = sum(np.sum(lin.weight**2) for lin in model.linears)
    assert reg - plain == pytest.approx(0.25 * sq, rel=1e-12)
    for (name, p), a, b in zip(model.named_parameters(), g0, g1, strict=True):
        expected = a + 0.5 * p if name.endswith("weight") else a
        np.testing.assert_allclose(b, expected, rtol=1e-12, atol=1e-14)


def test_class_weight_equals_sample_weight():
    X, y = blobs(12, 4, 3)
    a = MLP(
        (4, 5, 3), dtype=np.float64, loss=SoftmaxCrossEntropy(class_weight={2: 3.0})
    )
    a.initialize(0)
    a.classes_ = np.arange(3)
    b = MLP((4, 5, 3), dtype=np.float64)
    b.initialize(0)
    b.classes_ = np.arange(3)
    la, _ = a.loss_and_gradients(X, y)
    lb, _ = b.loss_and_gradients(X, y, sample_weight=np.where(y == 2, 3.0, 1.0))
    assert la == pytest.approx(lb, rel=1e-12)
    balanced = SoftmaxCrossEntropy(class_weight="balanced")
    np.testing.assert_allclose(
        balanced.class_weights(np.arange(2), np.array([0, 0, 0, 1])), [2 / 3, 2.0]
    )


# ---------------------------------------------------------------- training
def test_fit_learns_and_reports_history():
    X, y = blobs(90, 5, 3)
    model = MLP((5, 16, 3), backend="numpy", optimizer=Adam(lr=0.02))
    hist = model.fit(
        X, y, epochs=15, batch_size=16, seed=0, verbose=0, validation_split=0.2
    )
    assert isinstance(hist, History) and len(hist) == 15
    for key in (
        "loss",
        "accuracy",
        "val_loss",
        "val_accuracy",
        "lr",
        "time",
        "samples_per_sec",
    ):
        assert len(hist[key]) == 15
    assert hist["loss"][-1] < hist["loss"][0]
    assert hist["val_accuracy"][-1] >= 0.9
    assert model.score(X, y) >= 0.9
    res = model.evaluate(X, y)
    assert set(res) == {"loss", "accuracy"} and res["loss"] > 0
    proba = model.predict_proba(X)
    assert proba.dtype == np.float32 and proba.shape == (90, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(model.predict(X), model.classes_[proba.argmax(1)])


def test_forward_matches_plain_numpy():
    X, y = blobs(20, 4, 3)
    model = Sequential(
        [Linear(4, 6), LeakyReLU(0.1), Linear(6, 3), Identity()],
        dtype=np.float64,
        backend="numpy",
    )
    model.fit(X, y, epochs=2, seed=0, verbose=0)
    w0, w1 = model.linears[0].weight, model.linears[1].weight
    h = X @ w0 + model.linears[0].bias
    h = np.where(h > 0, h, 0.1 * h)
    z = h @ w1 + model.linears[1].bias
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(model.predict_proba(X), p, rtol=1e-12)
    np.testing.assert_allclose(model.decision_function(X), z, rtol=1e-12)


def test_last_partial_batch_is_used_and_buffers_reused():
    X, y = blobs(10, 3, 2)
    model = MLP((3, 4, 2), optimizer=SGD(lr=0.1))
    model.fit(X, y, epochs=2, batch_size=4, seed=0, verbose=0)
    assert model.optimizer.steps == 6  # 4 + 4 + 2 rows per epoch
    train_keys = {k for k in model._workspaces if k[1]}
    assert train_keys == {(4, True), (2, True)}
    buf = model._workspaces[(4, True)].x
    model.fit(X, y, epochs=1, batch_size=4, verbose=0)
    assert model._workspaces[(4, True)].x is buf  # allocated once per batch shape


def test_float64_on_request_and_float32_default():
    X, y = blobs(12, 3, 2)
    m32 = MLP((3, 4, 2))
    m64 = MLP((3, 4, 2), dtype=np.float64)
    m32.fit(X, y, epochs=1, verbose=0, seed=0)
    m64.fit(X, y, epochs=1, verbose=0, seed=0)
    assert all(p.dtype == np.float32 for p in m32.parameters())
    assert all(p.dtype == np.float64 for p in m64.parameters())
    assert m64.predict_proba(X).dtype == np.float64
    # Same seed: same initial draw up to rounding.
    a, b = MLP((3, 4, 2)).initialize(5), MLP((3, 4, 2), dtype=np.float64).initialize(5)
    np.testing.assert_allclose(a.parameters()[0], b.parameters()[0], rtol=1e-6)


@pytest.mark.parametrize(
    "labels",
    [
        np.array(["cat", "dog", "emu"]),
        np.array([-1, 1, 7]),
        np.array([0.0, 1.0, 3.0]),
        np.array(["b", "a", "c"], dtype=object),
    ],
    ids=["str", "signed", "float", "object"],
)
def test_labels_round_trip_through_classes(labels):
    X, y = blobs(60, 4, 3)
    y_lab = labels[y]
    model = MLP((4, 8, 3), optimizer=Adam(lr=0.02))
    model.fit(X, y_lab, epochs=20, batch_size=8, seed=0, verbose=0)
    np.testing.assert_array_equal(model.classes_, np.unique(labels))
    pred = model.predict(X)
    assert set(pred.tolist()) <= set(labels.tolist())
    assert np.mean(pred == y_lab) >= 0.9


def test_same_seed_same_weights_and_refit():
    X, y = blobs(30, 4, 3)
    runs = []
    for _ in range(2):
        model = MLP((4, 8, 3))
        model.fit(X, y, epochs=3, batch_size=7, seed=42, verbose=0)
        runs.append(model.get_flat_parameters())
    assert runs[0].tobytes() == runs[1].tobytes()
    other = MLP((4, 8, 3))
    other.fit(X, y, epochs=3, batch_size=7, seed=43, verbose=0)
    assert other.get_flat_parameters().tobytes() != runs[0].tobytes()


def test_same_seed_in_two_processes_gives_identical_weights(tmp_path):
    script = textwrap.dedent(
        """
        import sys, numpy as np
        import fastnn
        from fastnn.model import MLP
        fastnn.set_num_threads(1)
        rng = np.random.default_rng(0)
        X = rng.normal(size=(50, 6)); y = np.arange(50) % 3
        m = MLP((6, 10, 3))
        m.fit(X, y, epochs=3, batch_size=8, seed=11, verbose=0)
        sys.stdout.write(m.get_flat_parameters().tobytes().hex())
        """
    )
    outs = [
        subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout
        for _ in range(2)
    ]
    assert len(outs[0]) > 0 and outs[0] == outs[1]


def test_row_by_row_and_permuted_predictions_agree():
    X, y = blobs(30, 4, 3)
    model = MLP((4, 8, 3))
    model.fit(X, y, epochs=3, seed=0, verbose=0)
    full = model.predict_proba(X)
    rows = np.vstack([model.predict_proba(X[i : i + 1]) for i in range(len(X))])
    np.testing.assert_allclose(rows, full, rtol=1e-5, atol=1e-7)
    perm = np.random.default_rng(0).permutation(len(X))
    np.testing.assert_array_equal(model.predict(X[perm]), model.predict(X)[perm])


# ------------------------------------------------------------ validation
@pytest.fixture(scope="module")
def fitted():
    X, y = blobs(24, 8, 3)
    model = MLP((8, 6, 3))
    model.fit(X, y, epochs=1, seed=0, verbose=0)
    return model


@pytest.mark.parametrize(
    "X, message",
    [
        (np.array([[1.0, np.nan] * 4]), "Input X contains NaN"),
        (np.array([[1.0, np.inf] * 4]), "Input X contains infinity"),
        (np.array([[1e300] * 8]), r"value too large for dtype\('float32'\)"),
        (np.empty((0, 8)), r"Found array with 0 sample\(s\) \(shape=\(0, 8\)\)"),
        (np.empty((12, 0)), r"Found array with 0 feature\(s\) \(shape=\(12, 0\)\)"),
        (np.arange(8.0), "Reshape your data"),
        (np.ones((2, 3)), "X has 3 features, but MLP is expecting 8 features as input"),
        (np.ones((2, 2, 2)), "Found array with dim 3"),
        (np.array([["a"] * 8]), "must be numeric"),
    ],
    ids=["nan", "inf", "overflow", "no-rows", "no-cols", "1d", "width", "3d", "str"],
)
def test_invalid_X_is_rejected(fitted, X, message):
    with pytest.raises(ValueError, match=message):
        fitted.predict(X)


def test_invalid_y_is_rejected():
    X, _ = blobs(12, 4, 3)
    model = MLP((4, 5, 3))
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        model.fit(X, np.linspace(0, 1, 12), verbose=0)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        model.fit(X, np.zeros(11), verbose=0)
    with pytest.raises(ValueError, match="Input y contains NaN"):
        model.fit(X, np.r_[np.nan, np.arange(11) % 3.0], verbose=0)
    with pytest.raises(ValueError, match="2 classes but the model has 3 outputs"):
        model.fit(X, np.arange(12) % 2, verbose=0)
    assert not hasattr(model, "classes_")  # failed fits leave the model unfitted
    with pytest.raises(NotFittedError, match="not fitted"):
        model.predict(X)


def test_incomparable_labels_and_bad_seeds_are_named():
    # NumPy's "'<' not supported between 'NoneType' and 'str'" (from inside
    # scikit-learn's type_of_target) and SeedSequence's "expected non-negative
    # integer" named neither y nor seed
    X, _ = blobs(12, 4, 3)
    model = MLP((4, 5, 3))
    y = np.array(["a", "b", "c"] * 4, dtype=object)
    y[5] = None
    with pytest.raises(ValueError, match="labels must be mutually comparable"):
        model.fit(X, y, verbose=0)
    y = np.arange(12) % 3
    for seed in (-1, "a", 1.5, True):
        with pytest.raises(ValueError, match="seed must be"):
            model.fit(X, y, epochs=1, verbose=0, seed=seed)
    model.fit(X, y, epochs=1, verbose=0, seed=np.int64(3))
    assert not np.isnan(model.predict_proba(X)).any()


def test_odd_X_values_raise_value_error_and_large_finite_ones_do_not_warn():
    X, y = blobs(12, 4, 3)
    model = MLP((4, 5, 3), dtype=np.float64)
    model.fit(X, y, epochs=1, verbose=0, seed=0, callbacks=None)  # Keras' default
    # Python ints beyond float64: OverflowError from NumPy's cast
    with pytest.raises(ValueError, match="too large"):
        model.predict([[10**400, 1, 1, 1]])
    with pytest.raises(ValueError, match="datetime64"):
        model.predict(np.ones((2, 4)).astype("M8[s]"))
    with pytest.raises(ValueError, match="timedelta64"):
        model.predict(np.ones((2, 4)).astype("m8[s]"))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the finiteness check's sum overflowed
        # 256 x 1e306 overflows that sum; one row (4 x 1e306) stays finite through
        # the network (1e308 in a row could overflow it, by the weights drawn)
        assert model.predict(np.full((64, 4), 1e306)).shape == (64,)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows", [64, 70000], ids=["element-check", "sum"])
def test_the_finiteness_check_tells_an_overflowing_sum_from_a_non_finite_value(
    dtype, rows
):
    # past _ELEMENT_CHECK_BYTES the check sums X in its own dtype: values of 3e37
    # (float32) or 1e306 (float64) overflow that sum although each is finite
    from fastnn import _validation
    from fastnn._validation import check_X

    big = np.finfo(dtype).max / 10
    X = np.full((rows, 4), big, dtype)
    assert (X.nbytes > _validation._ELEMENT_CHECK_BYTES) == (rows > 64)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_X(X, np.dtype(dtype)) is X
    for bad, message in ((np.nan, "contains NaN"), (np.inf, "contains infinity"),
                         (-np.inf, "contains infinity")):  # fmt: skip
        X[37, 2] = bad
        with pytest.raises(ValueError, match=message):
            check_X(X, np.dtype(dtype))
        X[37, 2] = big


def test_a_float16_X_is_checked_without_an_element_wise_pass(monkeypatch):
    # summed in float16 the sum of ordinary values overflows past 65504 (here
    # 90,000 ones), and every such X took the slow isnan / isinf passes
    import types

    from fastnn import _validation

    def slow(a):
        raise AssertionError("the element-wise pass ran")

    fake = types.SimpleNamespace(**{k: getattr(np, k) for k in dir(np) if k[0] != "_"})
    fake.isnan = fake.isinf = slow
    monkeypatch.setattr(_validation, "np", fake)
    X = np.ones((300, 300), np.float16)
    assert _validation.check_X(X, np.dtype(np.float32)).dtype == np.float32
    monkeypatch.undo()
    X[7, 7] = np.nan
    with pytest.raises(ValueError, match="contains NaN"):
        _validation.check_X(X, np.dtype(np.float32))
    X[7, 7] = -np.inf
    with pytest.raises(ValueError, match="contains infinity"):
        _validation.check_X(X, np.dtype(np.float32))


def test_sample_weights_beyond_the_model_dtype_are_refused():
    # cast to float32 they were inf: NaN losses, then "training diverged"
    X, y = blobs(12, 4, 3)
    model = MLP((4, 5, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="sample_weight .* too large for float32"):
        model.fit(X, y, epochs=1, verbose=0, sample_weight=np.full(12, 1e300))
    model.fit(X, y, epochs=1, verbose=0, sample_weight=np.full(12, 1e30))
    with pytest.raises(ValueError, match="too large for float32"):
        model.evaluate(X, y, sample_weight=np.full(12, 1e300))


def test_unseen_labels_on_refit(fitted):
    X, y = blobs(24, 8, 3)
    with pytest.raises(ValueError, match="previously unseen labels"):
        fitted.fit(X, y + 5, epochs=1, verbose=0)


def test_inputs_are_never_modified():
    X, y = blobs(20, 4, 3)
    X32 = np.ascontiguousarray(X, dtype=np.float32)
    sw = np.linspace(0.5, 1.5, 20)
    copies = [X.copy(), X32.copy(), y.copy(), sw.copy()]
    model = MLP((4, 6, 3), loss=SoftmaxCrossEntropy(class_weight="balanced"))
    for data in (X, X32):
        model.fit(data, y, epochs=2, batch_size=6, seed=0, verbose=0, sample_weight=sw)
        model.predict(data)
        model.evaluate(data, y, sample_weight=sw)
    for original, now in zip(copies, [X, X32, y, sw], strict=True):
        np.testing.assert_array_equal(original, now)


def test_read_only_and_fortran_inputs():
    X, y = blobs(20, 4, 3)
    Xf = np.asfortranarray(X)
    Xr = X.copy()
    Xr.flags.writeable = False
    a, b = MLP((4, 6, 3)), MLP((4, 6, 3))
    a.fit(Xf, y, epochs=2, seed=0, verbose=0)
    b.fit(Xr, y, epochs=2, seed=0, verbose=0)
    np.testing.assert_array_equal(a.get_flat_parameters(), b.get_flat_parameters())
    np.testing.assert_array_equal(a.predict(Xr), b.predict(Xf))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"validation_split": 1.0}, "validation_split"),
        ({"checkpoint_every": 0}, "checkpoint_every must be >= 1"),
        ({"resume": True}, "needs a checkpoint path"),
        ({"validation_data": (np.ones((2, 4)),)}, "pair"),
        ({"sample_weight": -np.ones(12)}, "Negative values"),
    ],
)
def test_fit_argument_errors(kwargs, message):
    X, y = blobs(12, 4, 3)
    with pytest.raises(ValueError, match=message):
        MLP((4, 5, 3)).fit(X, y, verbose=0, **kwargs)


def test_layer_and_model_construction_errors():
    with pytest.raises(ValueError, match="unknown init"):
        Linear(3, 4, init="zeros")
    with pytest.raises(ValueError, match="out_features must be >= 1"):
        Linear(3, 0)
    with pytest.raises(ValueError, match="expects 5 inputs"):
        Sequential([Linear(3, 4), ReLU(), Linear(5, 2)])
    with pytest.raises(ValueError, match="unknown activation"):
        MLP((3, 4, 2), activation="swish")
    with pytest.raises(ValueError, match="float32 or float64"):
        MLP((3, 4, 2), dtype=np.int32)
    with pytest.raises(ValueError, match="unknown backend"):
        MLP((3, 4, 2), backend="fortran")


def test_linear_init_statistics():
    lin = Linear(400, 300, init="he_normal")
    w = lin.init_weight(np.random.default_rng(0))
    assert w.shape == (400, 300)  # (in, out), the transpose of PyTorch's layout
    assert w.std() == pytest.approx(np.sqrt(2 / 400), rel=0.02)
    w = Linear(400, 300, init="glorot_uniform").init_weight(np.random.default_rng(0))
    assert np.abs(w).max() <= np.sqrt(6 / 700)
    assert w.std() == pytest.approx(np.sqrt(2 / 700), rel=0.02)


# ------------------------------------------------------------- optimizers
@pytest.mark.parametrize(
    "factory, message",
    [
        (lambda: SGD(lr=-0.1), "lr must lie in"),
        (lambda: SGD(lr=float("nan")), "lr must be finite"),
        (lambda: SGD(lr="fast"), "lr must be a real number"),
        (lambda: SGD(momentum=-0.5), "momentum must lie in"),
        (lambda: SGD(nesterov=True), "nesterov momentum requires momentum > 0"),
        (lambda: SGD(weight_decay=-1), "weight_decay must lie in"),
        (lambda: Adam(beta1=1.0), "beta1 must lie in"),
        (lambda: Adam(beta2=-0.1), "beta2 must lie in"),
        (lambda: Adam(eps=-1e-8), "eps must lie in"),
        (lambda: AdamW(weight_decay=float("inf")), "weight_decay must be finite"),
        (lambda: SGD(schedule="cosine"), "schedule must be an LRSchedule"),
        (lambda: StepLR(step_size=0), "step_size must be >= 1"),
        (lambda: StepLR(step_size=2, gamma=0.0), "gamma must lie in"),
        (lambda: CosineAnnealingLR(t_max=0), "t_max must be >= 1"),
        (lambda: ReduceLROnPlateau(factor=1.0), "factor must lie in"),
        (lambda: ReduceLROnPlateau(patience=-1), "patience must be >= 0"),
        (lambda: ReduceLROnPlateau(mode="up"), "mode must be"),
        (lambda: SoftmaxCrossEntropy(label_smoothing=1.5), "label_smoothing must lie"),
        (lambda: SoftmaxCrossEntropy(l2=-1.0), "l2 must lie"),
        (lambda: SoftmaxCrossEntropy(class_weight="auto"), "class_weight must be"),
        (lambda: SoftmaxCrossEntropy(class_weight={0: -1}), "class_weight"),
        (lambda: EarlyStopping(patience=-2), "patience must be >= 0"),
    ],
)
def test_invalid_hyper_parameters_raise_at_construction(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


def test_weight_decay_applies_to_weights_only():
    X, y = blobs(12, 3, 2)
    model = MLP((3, 4, 2), dtype=np.float64, optimizer=SGD(lr=0.1, weight_decay=0.5))
    model.fit(X, y, epochs=1, seed=0, verbose=0)
    model.linears[0].bias[...] = 1.0
    before = [p.copy() for p in model.parameters()]
    model._grads.fill(0)  # zero gradient: only decay moves parameters
    model.optimizer.step()
    for (name, p), old in zip(model.named_parameters(), before, strict=True):
        expected = old * (1 - 0.1 * 0.5) if name.endswith("weight") else old
        np.testing.assert_allclose(p, expected, rtol=1e-15, err_msg=name)


def test_schedules_set_the_learning_rate():
    sched = StepLR(step_size=2, gamma=0.5)
    assert [sched.next_lr(e, {}, 1.0, 1.0) for e in range(1, 6)] == [
        1.0,
        0.5,
        0.5,
        0.25,
        0.25,
    ]
    cos = CosineAnnealingLR(t_max=4, eta_min=0.1)
    lrs = [cos.next_lr(e, {}, 1.0, 1.0) for e in range(0, 6)]
    assert lrs[0] == pytest.approx(1.0) and lrs[2] == pytest.approx(0.55)
    assert lrs[4] == lrs[5] == pytest.approx(0.1)
    assert ConstantLR().next_lr(3, {}, 0.3, 1.0) == 0.3
    plateau = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=0)
    lr = 1.0
    for loss in [1.0, 0.9, 0.95, 0.96, 0.97, 0.5]:
        lr = plateau.next_lr(0, {"loss": loss}, lr, 1.0)
    assert lr == 0.5
    with pytest.raises(ValueError, match="not among the epoch metrics"):
        ReduceLROnPlateau(monitor="val_loss").next_lr(0, {"loss": 1.0}, 1.0, 1.0)
    X, y = blobs(12, 3, 2)
    model = MLP((3, 4, 2), optimizer=SGD(lr=0.4, schedule=StepLR(1, gamma=0.5)))
    hist = model.fit(X, y, epochs=3, seed=0, verbose=0)
    assert hist["lr"] == [0.4, 0.2, 0.1]


# -------------------------------------------------------------- callbacks
def test_early_stopping_stops_and_restores_best():
    X, y = blobs(60, 4, 3)
    rng = np.random.default_rng(0)
    y_noise = rng.permutation(y)  # unlearnable validation labels: val_loss rises
    snapshots = []

    class Snap(Callback):
        def on_epoch_end(self, epoch, logs, model):
            snapshots.append(model.get_flat_parameters())

    stop = EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    model = MLP((4, 32, 3), optimizer=Adam(lr=0.05))
    hist = model.fit(
        X,
        y,
        epochs=50,
        batch_size=8,
        seed=0,
        verbose=0,
        validation_data=(X, y_noise),
        callbacks=[stop, Snap()],
    )
    assert len(hist) < 50 and stop.stopped_epoch == len(hist) - 1
    assert len(hist) - 1 - stop.best_epoch == 3  # patience 2: stop on the 3rd miss
    np.testing.assert_array_equal(
        model.get_flat_parameters(), snapshots[stop.best_epoch]
    )
    assert hist["val_loss"][stop.best_epoch] == min(hist["val_loss"])


def test_early_stopping_needs_its_metric():
    X, y = blobs(12, 3, 3)
    with pytest.raises(ValueError, match="pass validation_data"):
        MLP((3, 4, 3)).fit(X, y, epochs=2, verbose=0, callbacks=[EarlyStopping()])


def test_verbose_output(caplog, capsys):
    # Keras: off a terminal, verbose 1 and 2 both log one line per epoch
    X, y = blobs(12, 3, 3)
    for verbose in (1, 2):
        caplog.clear()
        with caplog.at_level("INFO", logger="fastnn.train"):
            MLP((3, 4, 3)).fit(X, y, epochs=2, verbose=verbose)
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 2 and lines[1].startswith("epoch 2/2")
        assert "samples/s" in lines[1]
    caplog.clear()
    with caplog.at_level("INFO", logger="fastnn.train"):
        MLP((3, 4, 3)).fit(X, y, epochs=2, verbose=0)
    assert caplog.records == [] and capsys.readouterr() == ("", "")


# ------------------------------------------------- concurrency and pickling
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("serial", [True, False], ids=["1-thread", "threads"])
def test_concurrent_inference_on_one_model_matches_calls_made_alone(backend, serial):
    """8 threads calling predict_proba / evaluate on one fitted model, each at the
    thread count of the calls made alone, get what the same call gets alone:
    bitwise on the compiled backends (their kernels share one process-wide pin of
    BLAS to one thread) and on the NumPy backend at one thread; the NumPy backend's
    calls on several threads share OpenBLAS's thread pool and may move the last
    bit."""
    import threading

    rng = np.random.default_rng(1)
    y = np.arange(600) % 4
    X = rng.normal(size=(600, 64))
    model = MLP((64, 256, 4), backend=backend)
    model.fit(X, y, epochs=1, batch_size=64, seed=0, verbose=0)
    # a few inputs per batch size: calls of one size share a workspace shape
    inputs = [rng.normal(size=(n, 64)) for n in (300, 300, 300, 17, 17)]
    labels = [np.arange(a.shape[0]) % 4 for a in inputs]

    def call(k):
        i = k % len(inputs)
        if k % 2:
            return model.predict_proba(inputs[i])
        return np.array(list(model.evaluate(inputs[i], labels[i]).values()))

    results = []
    start = threading.Barrier(8)

    count = 1 if serial else None

    def worker(t):
        start.wait()
        with fastnn.num_threads(count):  # a block's count is its thread's alone
            for c in range(30):
                k = (t + c) % 10
                results.append((k, call(k)))

    with fastnn.num_threads(count):
        alone = {k: call(k) for k in range(10)}
        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    assert len(results) == 240
    for k, got in results:
        if serial or backend != "numpy":
            assert got.tobytes() == alone[k].tobytes()
        else:
            np.testing.assert_allclose(got, alone[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fitted_model_pickles_deep_copies_and_joblib_dumps(tmp_path, backend):
    import copy
    import pickle

    import joblib

    X, y = blobs(n=90)
    model = MLP((5, 16, 3), optimizer=Adam(lr=0.01), backend=backend)
    model.fit(X, y, epochs=2, batch_size=8, seed=0, verbose=0)
    joblib.dump(model, tmp_path / "m.joblib")
    copies = [
        pickle.loads(pickle.dumps(model)),
        copy.deepcopy(model),
        joblib.load(tmp_path / "m.joblib"),
    ]
    expected = model.predict_proba(X).tobytes()
    for other in copies:
        assert type(other) is MLP and other.backend == backend
        assert other.predict_proba(X).tobytes() == expected
        np.testing.assert_array_equal(other.classes_, model.classes_)
        # the layers and the optimizer use the copy's own (aligned) flat buffers
        assert np.shares_memory(other.layers[0].weight, other._params)
        assert not np.shares_memory(other._params, model._params)
        assert other._params.ctypes.data % 64 == 0
        assert other.optimizer._params is other._params
    # training on continues exactly as the original does (optimizer state kept)
    for other in copies:
        other.fit(X, y, epochs=1, batch_size=8, seed=1, verbose=0)
    model.fit(X, y, epochs=1, batch_size=8, seed=1, verbose=0)
    for other in copies:
        assert other.get_flat_parameters().tobytes() == (
            model.get_flat_parameters().tobytes()
        )


def test_terminate_on_nan_stops_a_diverging_fit_and_keeps_a_finite_checkpoint(
    tmp_path,
):
    X, y = blobs()
    path = tmp_path / "c.npz"
    stop = fastnn.TerminateOnNaN()
    model = MLP((5, 16, 3), optimizer=SGD(lr=1e4))
    with np.errstate(all="ignore"):
        history = model.fit(X, y, epochs=30, batch_size=8, verbose=0, seed=0,
                            callbacks=[stop], checkpoint=path,
                            checkpoint_every=1)  # fmt: skip
    assert stop.stopped_epoch == len(history) - 1 < 29
    assert not np.isfinite(history["loss"][-1])
    from fastnn import checkpoint

    meta, arrays = checkpoint.read(path)
    assert not meta["train_state"]["finished"]
    # without the callback fit runs on (as Keras does), saying why the
    # checkpoint stops following
    model = MLP((5, 16, 3), optimizer=SGD(lr=1e4))
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning, match="diverged"):
        history = model.fit(X, y, epochs=5, batch_size=8, verbose=0, seed=0,
                            checkpoint=tmp_path / "d.npz")  # fmt: skip
    assert len(history) == 5


@pytest.mark.parametrize("backend", BACKENDS)
def test_inputs_that_overflow_float32_get_an_error_not_nan(backend):
    X, y = blobs()
    model = MLP((5, 16, 3), backend=backend)
    model.fit(X, y, epochs=2, seed=0, verbose=0)
    huge = np.full((3, 5), 3e38)
    huge[0] = X[0]
    for method in (model.predict_proba, model.predict, model.decision_function):
        with pytest.raises(ValueError, match="X row 1 .* overflow float32"):
            method(huge)
    with pytest.raises(ValueError, match="overflow float32"):
        model.evaluate(huge, y[:3])
    wide = MLP((5, 16, 3), backend=backend, dtype=np.float64)
    wide.fit(X, y, epochs=2, seed=0, verbose=0)
    proba = wide.predict_proba(huge)
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_predict_with_diverged_weights_says_so():
    X, y = blobs()
    model = MLP((5, 16, 3), optimizer=SGD(lr=1e4))
    with np.errstate(all="ignore"):
        history = model.fit(X, y, epochs=3, batch_size=8, seed=0, verbose=0,
                            validation_split=0.2)  # fmt: skip
    assert len(history) == 3 and not np.isfinite(history["val_loss"][-1])
    with pytest.raises(ValueError, match="training diverged"):
        model.predict(X)
