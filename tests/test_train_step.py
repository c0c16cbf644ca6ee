"""The compiled whole-minibatch training step (``train_step``) against the
layer-by-layer path of the same backend and against the NumPy backend."""

from __future__ import annotations

import numpy as np
import pytest
from fastnn.kernels import contract

from fastnn.layers import GELU, LeakyReLU, Linear, ReLU, Sigmoid, Tanh
from fastnn.losses import SoftmaxCrossEntropy
from fastnn.model import MLP, Sequential
from fastnn.optim import SGD, Adam, AdamW, StepLR

COMPILED = ("numba", "cython")
OPTIMIZERS = {
    "sgd": lambda: SGD(lr=0.1, weight_decay=1e-3),
    "momentum": lambda: SGD(lr=0.05, momentum=0.9, weight_decay=1e-3),
    "nesterov": lambda: SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": lambda: Adam(lr=0.01, weight_decay=1e-3),
    "adamw": lambda: AdamW(lr=0.01, weight_decay=0.05),
}
# (batch size, sample weights, label smoothing, l2): 5 steps each, the last partial
VARIANTS = {
    "b7": (7, False, 0.0, 0.0),
    "b32-sw-ls": (32, True, 0.1, 0.0),
    "b1-sw-ls-l2": (1, True, 0.05, 1e-3),
}


def _data(n, d=10, k=4, seed=0, weights=False):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = np.arange(n) % k
    sw = rng.uniform(0.2, 2.0, size=n) if weights else None
    return X, y, sw


def _fit(model_factory, backend, compiled, X, y, sw, batch_size, n_threads=None):
    model = model_factory(backend)
    if n_threads is not None:
        model.n_threads = n_threads
    hist = model.fit(X, y, epochs=1, batch_size=batch_size, seed=3, verbose=0,
                     sample_weight=sw, compiled_step=compiled)  # fmt: skip
    assert model._uses_compiled_step() == (backend in COMPILED)
    return model, hist


def _n_samples(batch_size):
    """Rows for 5 steps per epoch, the last one partial when batch_size > 1."""
    return 4 * batch_size + max(1, batch_size // 2 - 1) if batch_size > 1 else 5


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("act", ["relu", "tanh", "gelu", "leaky_relu", "sigmoid"])
@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
@pytest.mark.parametrize("backend", COMPILED)
def test_compiled_step_matches_layer_by_layer_and_numpy(backend, opt, act, variant):
    batch_size, weighted, smoothing, l2 = VARIANTS[variant]
    X, y, sw = _data(_n_samples(batch_size), weights=weighted)

    def factory(name):
        return MLP((10, 16, 12, 4), act, dtype=np.float64, backend=name,
                   optimizer=OPTIMIZERS[opt](),
                   loss=SoftmaxCrossEntropy(label_smoothing=smoothing,
                                            l2=l2))  # fmt: skip

    fused, h_fused = _fit(factory, backend, True, X, y, sw, batch_size)
    layered, h_layered = _fit(factory, backend, False, X, y, sw, batch_size)
    oracle, _ = _fit(factory, "numpy", True, X, y, sw, batch_size)
    assert fused.optimizer.steps == layered.optimizer.steps == 5
    w_fused, w_layered = fused.get_flat_parameters(), layered.get_flat_parameters()
    np.testing.assert_allclose(w_fused, w_layered, rtol=0, atol=1e-10)
    np.testing.assert_allclose(w_fused, oracle.get_flat_parameters(), rtol=0, atol=1e-8)
    for name, buf in fused.optimizer.state.items():
        np.testing.assert_allclose(
            buf, layered.optimizer.state[name], rtol=0, atol=1e-10
        )
    assert h_fused.history["accuracy"] == h_layered.history["accuracy"]
    np.testing.assert_allclose(h_fused.history["loss"], h_layered.history["loss"],
                               rtol=1e-13)  # fmt: skip


@pytest.mark.parametrize("backend", COMPILED)
def test_no_bias_mixed_activations_keep_z_and_schedule(backend):
    """No bias anywhere, leaky_relu with a negative slope (z kept), an activation
    after the last Linear, a learning-rate schedule over two epochs."""
    X, y, _ = _data(45, d=8, k=3)

    def factory(name):
        return Sequential(
            [Linear(8, 12, bias=False), LeakyReLU(negative_slope=-0.2),
             Linear(12, 10, bias=False), GELU(), Linear(10, 9, bias=False), ReLU(),
             Linear(9, 3, bias=False), Sigmoid()],
            optimizer=Adam(lr=0.02, schedule=StepLR(1, gamma=0.5)),
            loss=SoftmaxCrossEntropy(l2=1e-2), dtype=np.float64, backend=name,
        )  # fmt: skip

    models = {}
    for name, compiled in ((backend, True), (backend, False), ("numpy", True)):
        model = factory(name)
        model.fit(X, y, epochs=2, batch_size=10, seed=1, verbose=0,
                  compiled_step=compiled)  # fmt: skip
        models[name, compiled] = model
    fused = models[backend, True]
    assert fused._train_layout[:, 1].tolist() == [-1] * 4
    assert fused._train_layout[:, 5].tolist() == [1, 1, 0, 0]
    assert fused.optimizer.current_lr == pytest.approx(0.005)
    ref = models[backend, False].get_flat_parameters()
    np.testing.assert_allclose(fused.get_flat_parameters(), ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(fused.get_flat_parameters(),
                               models["numpy", True].get_flat_parameters(), rtol=0,
                               atol=1e-8)  # fmt: skip


@pytest.mark.parametrize("backend", COMPILED)
def test_padded_model_step_leaves_the_l2_gradient_to_the_update(backend):
    """The flat buffer pads every matrix to whole cache lines (54 float32 weights
    take 64), so params[:n_decay] has gaps: the fused step still adds l2 W in the
    update, and each layer's grad_weight holds the data term's gradient."""
    X, y, _ = _data(8, d=6)

    def factory(l2):
        return MLP((6, 9, 7, 4), "relu", dtype=np.float32, backend=backend,
                   optimizer=SGD(lr=0.1), loss=SoftmaxCrossEntropy(l2=l2))  # fmt: skip

    model, data_term = factory(0.5), factory(0.0)
    model.fit(X, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    assert model._param_specs[1][1].start > 6 * 9  # a gap after the first matrix
    data_term.fit(X, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    data_term.set_flat_parameters(model.get_flat_parameters())
    _, grads = data_term.loss_and_gradients(X, y)
    model.fit(X, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    for lin, grad in zip(model.linears, grads[:3], strict=True):
        # with l2 W in it, grad_weight would be off by 0.5 W (~0.2)
        np.testing.assert_allclose(lin.grad_weight, grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", COMPILED)
def test_threads_do_not_change_float32_results(backend):
    """Big enough for parallel GEMM blocks, epilogues, losses and updates."""
    X, y, sw = _data(300, d=200, k=10, weights=True)

    def factory(name):
        return MLP((200, 512, 10), "gelu", backend=name, optimizer=Adam(lr=1e-3),
                   loss=SoftmaxCrossEntropy(label_smoothing=0.1))  # fmt: skip

    runs = {}
    for threads in (1, 2):
        for compiled in (True, False):
            model, hist = _fit(factory, backend, compiled, X, y, sw, 256, threads)
            runs[threads, compiled] = (model.get_flat_parameters(), hist.history)
    first = runs[1, True]
    for key, (params, history) in runs.items():
        np.testing.assert_array_equal(params, first[0], err_msg=str(key))
        assert history["accuracy"] == first[1]["accuracy"]
        np.testing.assert_allclose(history["loss"], first[1]["loss"], rtol=1e-6)


# ------------------------------------------------------------- the kernel itself
def _net(dtype, rng):
    sizes, acts, keep = (6, 9, 5, 3), (5, 2, 0), (1, 0, 0)
    rows, off = [], 0
    for i in range(3):
        rows.append([off, -1, sizes[i], sizes[i + 1], acts[i], keep[i]])
        off += sizes[i] * sizes[i + 1]
    n_decay = off
    for i in (0, 2):  # layer 1 without bias
        rows[i][1] = off
        off += sizes[i + 1]
    params = rng.normal(scale=0.5, size=off).astype(dtype)
    return np.array(rows, dtype=np.int64), params, n_decay


@pytest.mark.parametrize(
    "loss", ["softmax_cross_entropy", "squared_error", "sigmoid_cross_entropy"]
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_kernel_matches_numpy_twin(compiled, oracle, dtype, optimizer, loss):
    rng = np.random.default_rng(7)
    layout, p0, n_decay = _net(dtype, rng)
    x = rng.normal(size=(11, 6)).astype(dtype)
    if loss == "squared_error":  # float targets, one column per output
        labels, smoothing = rng.normal(size=(11, 3)).astype(dtype), 0.0
    elif loss == "sigmoid_cross_entropy":  # 0/1 targets, one column per output
        labels, smoothing = (rng.uniform(size=(11, 3)) < 0.5).astype(dtype), 0.0
    else:
        labels, smoothing = rng.integers(0, 3, size=11), 0.1
    sw = rng.uniform(0.5, 1.5, size=11).astype(dtype)
    alphas = np.array([0.01, -0.1, 0.01])
    results = []
    for kb in (oracle, compiled):
        params, grads = p0.copy(), np.zeros_like(p0)
        sa, sb = np.zeros_like(p0), np.zeros_like(p0)
        work = np.empty(contract.train_workspace_layout(layout, 11)[2], dtype)
        out = []
        for step in range(1, 4):
            out.append(kb.train_step(
                x, labels, params, grads, layout, alphas, work, loss=loss,
                sample_weight=sw, label_smoothing=smoothing, l2=1e-2,
                weights_end=n_decay, optimizer=optimizer,
                lr=0.01, momentum=0.9, nesterov=True, weight_decay=0.01, step=step,
                **({"velocity": sa} if optimizer == "sgd" else {"m": sa, "v": sb}),
            ))  # fmt: skip
        results.append((params, grads, sa, out))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for a, b in zip(results[0][:3], results[1][:3], strict=True):
        np.testing.assert_allclose(b, a, rtol=tol, atol=tol)
    for (loss_a, hits_a), (loss_b, hits_b) in zip(results[0][3], results[1][3],
                                                  strict=True):  # fmt: skip
        assert hits_a == hits_b
        assert loss_b == pytest.approx(loss_a, rel=tol)


def test_kernel_validates_before_touching_memory(compiled):
    rng = np.random.default_rng(0)
    layout, params, n_decay = _net(np.float64, rng)
    grads = np.zeros_like(params)
    x = rng.normal(size=(4, 6))
    labels = np.array([0, 1, 2, 1])
    alphas = np.full(3, 0.01)
    before = params.copy()
    kw = dict(lr=0.1, weights_end=n_decay)
    with pytest.raises(ValueError, match="labels must lie"):
        compiled.train_step(x, np.array([0, 1, 3, 0]), params, grads, layout, alphas,
                            **kw)  # fmt: skip
    bad = layout.copy()
    bad[1, 2] = 8
    with pytest.raises(ValueError, match="in_features"):
        compiled.train_step(x, labels, params, grads, bad, alphas, **kw)
    bad = layout.copy()
    bad[2, 0] = 0  # weights overlap
    with pytest.raises(ValueError, match="disjoint"):
        compiled.train_step(x, labels, params, grads, bad, alphas, **kw)
    with pytest.raises(ValueError, match="velocity is required"):
        compiled.train_step(x, labels, params, grads, layout, alphas, momentum=0.9,
                            **kw)  # fmt: skip
    with pytest.raises(ValueError, match="at least"):
        compiled.train_step(x, labels, params, grads, layout, alphas,
                            np.empty(3), **kw)  # fmt: skip
    with pytest.raises(TypeError, match="mixed dtypes"):
        compiled.train_step(x.astype(np.float32), labels, params, grads, layout,
                            alphas, **kw)  # fmt: skip
    np.testing.assert_array_equal(params, before)


def test_layer_by_layer_path_when_not_eligible():
    lone = Sequential([Linear(4, 5), ReLU(), Tanh(), Linear(5, 2)], backend="cython")
    assert lone._train_layout is None and not lone._uses_compiled_step()
    off = MLP((4, 5, 2), backend="numba", compiled_step=False)
    assert off._train_layout is not None and not off._uses_compiled_step()
    numpy_model = MLP((4, 5, 2), backend="numpy")
    X, y, _ = _data(12, d=4, k=2)
    numpy_model.fit(X, y, epochs=1, verbose=0)
    assert not numpy_model._uses_compiled_step()
    with pytest.raises(ValueError, match="compiled_step"):
        MLP((4, 5, 2), compiled_step="yes")
    # the lone-activation model still trains (layer by layer)
    lone.fit(X, y, epochs=1, verbose=0)
    assert lone.optimizer.steps == 1
